"""``zsar prepare``: transcode a dataset folder into a codec the fast decoding path reads.

DALI decodes H.264 on the GPU and only VP8/VP9/MJPEG on the CPU, while datasets ship
as whatever their uploaders used (AVI/XviD for UCF101 and HMDB51, MP4 and WebM for Kinetics).
:func:`prepare_dataset` walks a folder, re-encodes every video into H.264 (``.mp4``) or VP9
(``.webm``) under a destination folder with the same relative tree, keeps the audio track, runs
in a process pool with a progress bar, and can be re-run: outputs that already hold every frame
are skipped. It never writes into the source folder.

The workers die with the process that started them (each watches it) and write nothing once it
is gone: a killed ``zsar prepare`` leaves finished outputs and no process, no half-written file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import multiprocessing
import os
import select
import shutil
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._utils import read_json
from .video import (AUDIO_CODECS, VIDEO_EXTENSIONS, VideoError, _require_av, audio_encoder_rate, probe_video,
                    write_video)

log = logging.getLogger(__name__)

#: Target codec -> container extension of the outputs.
OUTPUT_EXTENSIONS = {"h264": ".mp4", "vp9": ".webm"}
#: In the destination folder: the sources that decode to fewer frames than their headers declare
#: (truncated files), so that their shorter outputs count as prepared on the next run.
RECORD_FILE = ".zsar-prepare.json"
#: Prefix of a worker's temporary folder beside the output it is writing (hidden: never a source).
TMP_PREFIX = ".zsar-prepare-tmp."


#: Prefix of the ``comment`` tag in which every output records the settings it was prepared with.
SETTINGS_TAG = "zsar-prepare "


@dataclass(frozen=True)
class PrepareSettings:
    """How :func:`prepare_dataset` encodes; each output records them in its ``comment`` tag, and an
    output prepared with other settings is converted again.

    Attributes:
        codec: ``"h264"`` or ``"vp9"``.
        short_side: resize so the short side has this many pixels (even); None keeps the size.
        gop: a keyframe exactly every ``gop`` frames (a seek then decodes fewer than ``gop`` frames
            it does not want: what random clips and all-views evaluation need); None: the encoder's
            default (x264: up to 250).
        fps: resample to this frame rate (frames repeated or dropped by time); None keeps the source's.
    """

    codec: str = "h264"
    short_side: int | None = None
    gop: int | None = None
    fps: float | None = None

    def __post_init__(self):
        if self.codec not in OUTPUT_EXTENSIONS:
            raise ValueError(f"prepare: codec must be one of {sorted(OUTPUT_EXTENSIONS)}, got {self.codec!r}")
        ss = self.short_side
        if ss is not None and (isinstance(ss, bool) or not isinstance(ss, int) or ss < 2 or ss % 2):
            raise ValueError(f"prepare: short side must be an even number of pixels >= 2 (4:2:0 video), got {ss!r}")
        if self.gop is not None and (isinstance(self.gop, bool) or not isinstance(self.gop, int) or self.gop < 1):
            raise ValueError(f"prepare: gop must be a positive number of frames, got {self.gop!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 1000):
            raise ValueError(f"prepare: fps must be a frame rate in (0, 1000], got {self.fps!r}")

    def comment(self) -> str:
        """The ``comment`` tag of an output prepared with these settings."""
        return SETTINGS_TAG + json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def of_output(cls, path) -> "PrepareSettings | None":
        """The settings an output recorded, or None for a file without the tag (an output of an
        earlier zsar, or any other video)."""
        av = _require_av()
        try:
            with av.open(str(path)) as container:
                tags = {k.lower(): v for k, v in container.metadata.items()}
        except Exception:
            return None
        text = tags.get("comment", "")
        if not text.startswith(SETTINGS_TAG):
            return None
        try:
            return cls(**json.loads(text[len(SETTINGS_TAG):]))
        except (ValueError, TypeError):
            return None


def output_frames(frames: int, src_fps: float, fps: float | None) -> int:
    """Frames of an output at ``fps`` made from ``frames`` at ``src_fps``: every output frame whose
    time lies inside the source (``ceil(frames * fps / src_fps)``); ``frames`` when the rate is kept."""
    if fps is None or src_fps <= 0:
        return frames
    ratio = _rate(fps) / _rate(src_fps)
    return max(1, math.ceil(frames * ratio))


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _resampled(frames, src_fps: float, fps: float | None):
    """Source frames → output frames at ``fps``: output frame ``j`` (time ``j / fps``) is the source
    frame shown then, ``floor(j * src_fps / fps)``; each source frame is repeated or dropped to match."""
    if fps is None or src_fps <= 0:
        yield from frames
        return
    ratio = _rate(fps) / _rate(src_fps)  # output frames per source frame
    j = 0
    for i, frame in enumerate(frames):
        end = math.ceil((i + 1) * ratio)  # output frames j < end show source frame i or earlier
        while j < end:
            yield frame
            j += 1


class WorkerLost(RuntimeError):
    """A worker process of :func:`prepare_dataset` died (killed, or out of memory)."""


@dataclass
class PrepareSummary:
    """What :func:`prepare_dataset` did: paths relative to the source folder."""

    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # a valid output was already there
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason); only with skip_errors
    #: (path, frames decoded, frames its header declares) of converted sources that were truncated
    truncated: list[tuple[str, int, int]] = field(default_factory=list)
    #: (folder, why) of folders under the source that were not searched (symbolic links, loops, unreadable)
    skipped_folders: list[tuple[str, str]] = field(default_factory=list)
    #: what every output was prepared with (each records it in its comment tag)
    settings: "PrepareSettings | None" = None

    @property
    def total(self) -> int:
        """Number of source videos found."""
        return len(self.converted) + len(self.skipped) + len(self.failed)

    def __str__(self) -> str:
        text = f"{self.total} videos: {len(self.converted)} converted"
        if self.truncated:
            text += f" ({len(self.truncated)} from truncated sources, with the frames they hold)"
        text += f", {len(self.skipped)} already prepared (skipped), {len(self.failed)} failed"
        if self.skipped_folders:
            text += f"; {len(self.skipped_folders)} folders not searched (symbolic links or unreadable)"
        return text


def find_videos(src_dir, follow_symlinks: bool = False) -> list[Path]:
    """Video files under ``src_dir`` (by extension, see :data:`VIDEO_EXTENSIONS`), relative to it, sorted.

    Hidden files and folders (names starting with ``.``) are left out: they include the
    temporary ``.partial`` files of interrupted writes. Symbolically linked folders are searched
    only with ``follow_symlinks`` (see :func:`scan_videos`, which also lists the folders left out).
    """
    return scan_videos(src_dir, follow_symlinks)[0]


def scan_videos(src_dir, follow_symlinks: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """``(videos, skipped folders)`` under ``src_dir``: the sorted relative paths of :func:`find_videos`,
    and ``(relative folder, why)`` for each folder not searched: a symbolic link (without
    ``follow_symlinks``), a link back into a folder it is inside (a loop), or an unreadable folder.
    Linked video files are always taken."""
    src_dir = Path(src_dir)
    videos: list[Path] = []
    skipped: list[tuple[str, str]] = []
    # (folder, real paths of it and the folders above it: following a link to one of them would loop)
    stack = [(src_dir, frozenset({os.path.realpath(src_dir)}))]
    while stack:
        folder, chain = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((str(folder.relative_to(src_dir)), f"cannot be read ({e.strerror})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = Path(entry.path).relative_to(src_dir)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                if os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS:
                    videos.append(rel)
                continue
            real = os.path.realpath(entry.path)
            if entry.is_symlink():
                if not follow_symlinks:
                    skipped.append((str(rel), "symbolic link, not followed (follow it with --follow-symlinks)"))
                    continue
                if real in chain:
                    skipped.append((str(rel), f"symbolic link to {real}, a folder it is inside (a loop)"))
                    continue
            stack.append((Path(entry.path), chain | {real}))
    return sorted(videos), sorted(skipped)


def output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Output ``(width, height)``: the source size, or its short side scaled to ``size`` keeping the
    aspect ratio; rounded to even numbers because 4:2:0 video needs them."""
    if size is None:
        w, h = width, height
    else:
        scale = size / min(width, height)
        w, h = (size, round(height * scale)) if width <= height else (round(width * scale), size)
    w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


def transcode_video(src, dst, codec: str = "h264", size: int | None = None, *, gop: int | None = None,
                    fps: float | None = None) -> Path:
    """Re-encode the video file ``src`` into ``dst`` with ``codec`` (``"h264"`` or ``"vp9"``).

    Every frame is kept at the source frame rate unless ``fps`` resamples it (see
    :class:`PrepareSettings`, which ``gop`` and the output's recorded settings come from too);
    ``size`` resizes the short side (aspect kept);
    odd sizes lose their last row/column. The first audio track is kept (mono or stereo, at its
    sample rate, or the nearest one the audio encoder takes; more channels are downmixed to
    stereo). Frames and audio are decoded and encoded a piece at a time, so memory does not grow
    with the video's or the audio track's length.
    Raises :class:`VideoError` naming ``src`` when it cannot be read; ``dst`` then does not exist.
    """
    settings = PrepareSettings(codec, size, gop, fps)
    av = _require_av()
    info = probe_video(src)
    src = str(src)
    w, h = output_size(info.width, info.height, size)
    audio, rate = None, 16000
    if info.has_audio:
        rate = audio_encoder_rate(AUDIO_CODECS[OUTPUT_EXTENSIONS[codec]], info.audio_sample_rate or 16000)
        audio = _audio_track_chunks(av, src, rate)
    decoded = 0

    def frames(container):
        nonlocal decoded
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"  # frame threads: decoding is most of the cost
        try:
            for frame in container.decode(vs):
                if size is not None:
                    image = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                else:
                    image = frame.to_ndarray(format="rgb24")[:h, :w]
                decoded += 1
                yield image
        except Exception as e:
            raise VideoError(f"{src}: cannot decode frame {decoded} ({e})") from e

    with av.open(src) as container:
        try:
            source_fps = info.fps if info.fps > 0 else 25
            write_video(dst, _resampled(frames(container), source_fps, fps), fps=fps or source_fps, codec=codec,
                        audio=audio, sample_rate=rate, gop=gop, comment=settings.comment())
        except ValueError as e:
            if decoded == 0 and not isinstance(e, VideoError):
                raise VideoError(f"{src}: no frame could be decoded") from e
            raise
    return Path(dst)


def _audio_track_chunks(av, path: str, rate: int):
    """The first audio stream of ``path`` as float32 ``(channels, samples)`` pieces (1 or 2
    channels) at ``rate`` Hz, decoded as they are consumed. Raises :class:`VideoError` naming
    ``path`` when it cannot be decoded."""
    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            channels = 1 if stream.codec_context.channels == 1 else 2
            # Packed float: PyAV miscounts the planes of planar audio with 8+ channels.
            resampler = av.AudioResampler(format="flt", layout="mono" if channels == 1 else "stereo", rate=rate)
            for frame in itertools.chain(container.decode(stream), [None]):
                for f in resampler.resample(frame):
                    yield f.to_ndarray().reshape(-1, channels).T.astype(np.float32)
    except VideoError:
        raise
    except Exception as e:  # FFmpeg's decode errors come in several flavours
        raise VideoError(f"{path}: cannot decode the audio track ({e})") from e


def _source_stamp(src) -> dict:
    st = os.stat(src)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _truncation_record(src, settings: PrepareSettings, header_frames: int, frames: int) -> dict:
    return {"source": _source_stamp(src), "codec": settings.codec, "size": settings.short_side, "gop": settings.gop,
            "fps": settings.fps, "header_frames": header_frames, "frames": frames}


def _expected_frames(src, header_frames: int, truncation: dict | None, settings: PrepareSettings,
                     src_fps: float) -> int:
    """Frames a finished output of ``src`` holds: the header's count (at the output's frame rate), or
    what a truncated source gave when it was converted (its record), as long as the source and
    settings are unchanged."""
    t = truncation
    if t and t.get("source") == _source_stamp(src) and t.get("codec") == settings.codec \
            and t.get("size") == settings.short_side and t.get("gop") == settings.gop and t.get("fps") == settings.fps \
            and t.get("header_frames") == header_frames and isinstance(t.get("frames"), int):
        return t["frames"]
    return output_frames(header_frames, src_fps, settings.fps)


def _is_prepared(out: Path, settings: PrepareSettings, frames: int, width_height: tuple[int, int]) -> bool:
    """True when ``out`` exists, decodes as the settings' codec at the expected size, has ``frames``
    frames and was prepared with ``settings`` (an output without recorded settings counts as
    prepared with the defaults, as earlier versions made them)."""
    if not out.exists():
        return False
    try:
        have = probe_video(out)
    except VideoError:
        return False  # half-written or damaged: convert again
    recorded = PrepareSettings.of_output(out) or PrepareSettings(settings.codec, settings.short_side)
    return have.codec == settings.codec and have.num_frames == frames and (have.width, have.height) == width_height \
        and recorded == settings


# ---- in a pool worker: its parent, and the temporary folder of the job it is running
_parent: "_ParentWatch | None" = None
_job_tmp: Path | None = None


class _ParentWatch:
    """Watches the process that started the pool, from a worker (whose own parent may be the
    fork server, which outlives nobody: it waits for its children).

    A pidfd becomes readable when the process exits (Linux 5.3+); elsewhere its pid is polled.
    When it is gone, the watcher sends this worker SIGTERM (see :func:`_stop_worker`).
    """

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self._fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._fd = None
        threading.Thread(target=self._watch, name="zsar-prepare-parent-watch", daemon=True).start()

    def alive(self) -> bool:
        if self._fd is not None:
            return not select.select([self._fd], [], [], 0)[0]
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def _watch(self) -> None:
        while self.alive():
            if self._fd is not None:
                select.select([self._fd], [], [])
            else:
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: Ctrl-C reaches the whole process group, but only the parent acts on it
    (it stops the workers); SIGTERM stops this worker; the parent is watched."""
    global _parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    _parent = _ParentWatch(parent_pid)
    if not _parent.alive():
        _stop_worker(signal.SIGTERM, None)


def _stop_worker(signum, frame) -> None:
    """SIGTERM in a worker (from the parent stopping the pool, or from the parent watch): the job's
    temporary folder goes and the process exits at once, so nothing more is written. An output is
    only ever renamed into place whole, so what is already there stays valid."""
    if _job_tmp is not None:
        shutil.rmtree(_job_tmp, ignore_errors=True)
    os._exit(128 + signum)


def _parent_alive() -> bool:
    return _parent is None or _parent.alive()


def _transcode_into_place(src: str, out: Path, settings: PrepareSettings) -> int:
    """Transcodes into a temporary folder beside ``out`` and renames the result into place (only
    while the parent lives); returns the output's frame count. The folder's short name keeps the
    temporary file names short however long ``out``'s name is."""
    global _job_tmp
    if not _parent_alive():
        _stop_worker(signal.SIGTERM, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out.parent / f"{TMP_PREFIX}{os.getpid()}"
    _job_tmp = tmp_dir
    try:
        tmp_dir.mkdir(exist_ok=True)
        tmp_out = transcode_video(src, tmp_dir / f"video{out.suffix}", codec=settings.codec, size=settings.short_side,
                                  gop=settings.gop, fps=settings.fps)
        frames = probe_video(tmp_out).num_frames
        if not _parent_alive():
            _stop_worker(signal.SIGTERM, None)
        os.replace(tmp_out, out)
        return frames
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _job_tmp = None


def _prepare_one(src: str, out: str, settings: PrepareSettings, truncation: dict | None = None):
    """One job of the pool: ``(status, reason, truncation)``; never raises.

    ``status`` is ``"skipped"``, ``"converted"`` or ``"failed"`` (``reason`` says why).
    ``truncation`` records a truncated source (its output holds fewer frames than the source's
    header declares; see :data:`RECORD_FILE`), else None; the one passed in is from the last run.
    """
    try:
        info = probe_video(src)
        header = info.stated_frames or info.num_frames  # a truncated source holds fewer than it states
        full = output_frames(header, info.fps, settings.fps)
        expected = _expected_frames(src, header, truncation, settings, info.fps)
        if _is_prepared(Path(out), settings, expected, output_size(info.width, info.height, settings.short_side)):
            return "skipped", "", truncation if expected != full else None
        frames = _transcode_into_place(src, Path(out), settings)
        if frames >= full:
            return "converted", "", None
        return "converted", "", _truncation_record(src, settings, header, frames)
    except VideoError as e:
        return "failed", str(e), None
    except Exception as e:  # encoder or disk errors: name the source anyway
        return "failed", f"{src}: {type(e).__name__}: {e}", None


def _read_truncations(dst_dir: Path) -> dict[str, dict]:
    """The truncated-source records of an earlier run (:data:`RECORD_FILE`); unreadable ones are
    dropped (those sources are converted again)."""
    path = dst_dir / RECORD_FILE
    try:
        data = read_json(path)
        records = data["truncated_sources"]
        if not isinstance(records, dict):
            raise TypeError("not an object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s cannot be read (%s); truncated sources will be converted again", path, e)
        return {}
    return {rel: rec for rel, rec in records.items() if isinstance(rec, dict)}


def _write_truncations(dst_dir: Path, records: dict[str, dict]) -> None:
    path = dst_dir / RECORD_FILE
    if not records:
        path.unlink(missing_ok=True)
        return
    dst_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst_dir / f"{RECORD_FILE}.{os.getpid()}.partial"
    tmp.write_text(json.dumps({"truncated_sources": dict(sorted(records.items()))}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _remove_stale_tmp(folders) -> None:
    """Removes the temporary folders of workers that died without cleaning up (killed outright, or
    out of memory); those of live processes (another run into the same folder) stay."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not created yet
        for entry in entries:
            pid = entry.name[len(TMP_PREFIX):]
            if entry.name.startswith(TMP_PREFIX) and pid.isdigit() and entry.is_dir(follow_symlinks=False):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    shutil.rmtree(entry.path, ignore_errors=True)
                except PermissionError:
                    pass


def _plan(src_dir: Path, dst_dir: Path, codec: str, rels: list[Path]) -> list[tuple[Path, Path, Path]]:
    """(relative path, source, output) for every video; refuses any layout that could write into the source."""
    src_real, dst_real = src_dir.resolve(), dst_dir.resolve()
    if dst_real == src_real:
        raise ValueError(f"the destination folder {dst_dir} is the source folder; choose another folder "
                         "(the sources are never overwritten)")
    if src_real in dst_real.parents:
        raise ValueError(f"the destination folder {dst_dir} is inside the source folder {src_dir}; "
                         "choose a folder outside it (outputs there would mix with the sources and be "
                         "taken for sources on the next run)")
    ext = OUTPUT_EXTENSIONS[codec]
    jobs, by_output = [], {}
    sources = set()
    for rel in rels:
        sources.add(os.path.realpath(src_dir / rel))
    for rel in rels:
        src, out = src_dir / rel, dst_dir / rel.with_suffix(ext)
        out_real = Path(os.path.realpath(out))
        # The destination may contain the source folder: an output must still land outside it.
        if src_real in out_real.parents or str(out_real) in sources:
            raise ValueError(f"the output for {src} would be {out}, inside the source folder "
                             f"{src_dir} or onto a source file; choose a destination that does not "
                             "overlap it")
        if dst_real not in out_real.parents:  # a linked folder (or output) inside the destination
            raise ValueError(f"the output for {src} would be {out}, which links to {out_real} outside the "
                             f"destination folder {dst_dir}; remove the link (prepare writes only inside the "
                             "destination)")
        if out_real in by_output:
            raise ValueError(f"{by_output[out_real]} and {src} would both become {out}; rename "
                             "one of them")
        by_output[out_real] = src
        jobs.append((rel, src, out))
    return jobs


def _pool_context():
    """Worker processes start clean, not forked from the caller, who may hold CUDA or thread pools
    that a fork copies broken. A fork server imports zsar once and forks the workers from it (a
    spawned worker would import torch again each); spawn where there is no fork server."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to every worker: each removes its temporary folder and exits (:func:`_stop_worker`)."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def prepare_dataset(src_dir, dst_dir, codec: str = "h264", workers: int | None = None, size: int | None = None,
                    progress: bool = True, skip_errors: bool = False,
                    follow_symlinks: bool = False, *, gop: int | None = None,
                    fps: float | None = None) -> PrepareSummary:
    """Transcode every video under ``src_dir`` into ``dst_dir`` with the same relative tree.

    ``codec``: ``"h264"`` (``.mp4``; what DALI decodes on the GPU) or ``"vp9"`` (``.webm``; what
    DALI decodes on the CPU). ``workers``: processes (default: the CPUs this process may use; 1
    runs in this process). ``size``: resize the short side to this many pixels (even), keeping the
    aspect ratio; default: keep the size (odd sizes lose a row/column). ``gop``: a keyframe every
    ``gop`` frames; ``fps``: resample to this frame rate (see :class:`PrepareSettings`; every output
    records its settings, and an output made with other settings is converted again). Audio
    tracks are kept.
    ``follow_symlinks``: search symbolically linked folders too (loops are left out); by default
    they are not searched, and the summary lists them.

    Resumable: an output that already decodes as ``codec`` with every source frame at the
    expected size is skipped, and outputs are written in a temporary folder and renamed into
    place, so an interrupted run leaves no half-written file under a final name. A truncated
    source (fewer frames decode than its header declares) is converted with the frames it holds,
    listed in the summary and recorded in ``dst_dir/.zsar-prepare.json``, so that it counts as
    prepared on the next run. The source folder is never written to: a destination equal to or
    inside it, or outputs that would land in it, are refused (``ValueError``), as are two sources
    that would map onto the same output.

    A source that cannot be read raises :class:`VideoError` naming it (outputs finished so far
    stay); with ``skip_errors=True`` it is counted and listed in the summary instead. Returns a
    :class:`PrepareSummary`.

    With ``workers > 1`` the workers are started fresh (fork server or spawn), so a script that
    calls this must guard its top level with ``if __name__ == "__main__":``. They end with this
    call: on an exception here (KeyboardInterrupt included) they are stopped at once, and if this
    process dies they notice and exit without writing anything more.
    """
    if codec not in OUTPUT_EXTENSIONS:
        raise ValueError(f"prepare_dataset: codec must be one of {sorted(OUTPUT_EXTENSIONS)}, got {codec!r}")
    if size is not None and (not isinstance(size, int) or size < 2 or size % 2):
        raise ValueError(f"prepare_dataset: size must be an even number of pixels >= 2 (4:2:0 video), got {size!r}")
    settings = PrepareSettings(codec, size, gop, fps)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"prepare_dataset: workers must be a positive int, got {workers!r}")
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} does not exist or is not a folder")
    if dst_dir.exists() and not dst_dir.is_dir():
        raise ValueError(f"destination {dst_dir} exists and is not a folder")
    rels, skipped_folders = scan_videos(src_dir, follow_symlinks)
    jobs = _plan(src_dir, dst_dir, codec, rels)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    _remove_stale_tmp({out.parent for _, _, out in jobs})
    earlier = _read_truncations(dst_dir)
    truncations = {str(rel): earlier[str(rel)] for rel, _, _ in jobs if str(rel) in earlier}

    from tqdm.auto import tqdm

    summary = PrepareSummary(skipped_folders=skipped_folders, settings=settings)
    bar = tqdm(total=len(jobs), unit="video", desc=f"prepare -> {codec}", disable=not progress)

    def tally(rel: Path, status: str, reason: str, truncation: dict | None) -> None:
        if status == "failed":
            if not skip_errors:
                raise VideoError(reason)
            summary.failed.append((str(rel), reason))
            bar.set_postfix(failed=len(summary.failed))
        else:
            (summary.converted if status == "converted" else summary.skipped).append(str(rel))
        if status == "converted" and truncation is not None:
            summary.truncated.append((str(rel), truncation["frames"], truncation["header_frames"]))
        if status != "failed" and truncations.get(str(rel)) != truncation:
            if truncation is None:
                truncations.pop(str(rel), None)
            else:
                truncations[str(rel)] = truncation
            _write_truncations(dst_dir, truncations)
        bar.update()

    def job_args(rel, src, out):
        return str(src), str(out), settings, truncations.get(str(rel))

    try:
        if workers == 1:
            for rel, src, out in jobs:
                tally(rel, *_prepare_one(*job_args(rel, src, out)))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init,
                                     initargs=(os.getpid(),)) as pool:
                pending = {pool.submit(_prepare_one, *job_args(rel, src, out)): rel for rel, src, out in jobs}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            rel = pending.pop(fut)
                            try:
                                result = fut.result()
                            except BrokenProcessPool:
                                raise WorkerLost(f"a worker process died (killed, or out of memory) while "
                                                   f"converting {src_dir / rel} or another video; finished "
                                                   f"outputs are kept, run again to resume") from None
                            tally(rel, *result)
                except BaseException:
                    _stop_workers(pool)  # they remove their temporary files and exit
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    for lst in (summary.converted, summary.skipped):
        lst.sort()
    summary.failed.sort()
    summary.truncated.sort()
    return summary
