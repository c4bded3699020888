"""``zsar prepare``: transcode a dataset folder into a codec the fast decoding path reads.

DALI decodes H.264 on the GPU and only VP8/VP9/MJPEG on the CPU (DESIGN §7), while datasets ship
as whatever their uploaders used (AVI/XviD for UCF101 and HMDB51, MP4 and WebM for Kinetics).
:func:`prepare_dataset` walks a folder, re-encodes every video into H.264 (``.mp4``) or VP9
(``.webm``) under a destination folder with the same relative tree, keeps the audio track, runs
in a process pool with a progress bar, and can be re-run: outputs that already hold every frame
are skipped. It never writes into the source folder.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .video import VIDEO_EXTENSIONS, VideoError, _require_av, probe_video, write_video

#: Target codec -> container extension of the outputs.
OUTPUT_EXTENSIONS = {"h264": ".mp4", "vp9": ".webm"}


@dataclass
class PrepareSummary:
    """What :func:`prepare_dataset` did: paths relative to the source folder."""

    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # a valid output was already there
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason); only with skip_errors

    @property
    def total(self) -> int:
        """Number of source videos found."""
        return len(self.converted) + len(self.skipped) + len(self.failed)

    def __str__(self) -> str:
        return (f"{self.total} videos: {len(self.converted)} converted, {len(self.skipped)} already "
                f"prepared (skipped), {len(self.failed)} failed")


def find_videos(src_dir) -> list[Path]:
    """Video files under ``src_dir`` (by extension, see :data:`VIDEO_EXTENSIONS`), relative to it, sorted.

    Hidden files and folders (names starting with ``.``) are left out: they include the
    temporary ``.partial`` files of interrupted writes.
    """
    src_dir = Path(src_dir)
    found = []
    for root, dirs, files in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                found.append((Path(root) / name).relative_to(src_dir))
    return sorted(found)


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


def transcode_video(src, dst, codec: str = "h264", size: int | None = None) -> Path:
    """Re-encode the video file ``src`` into ``dst`` with ``codec`` (``"h264"`` or ``"vp9"``).

    Every frame is kept at the source frame rate; ``size`` resizes the short side (aspect kept);
    odd sizes lose their last row/column. The first audio track is kept (mono or stereo, at its
    sample rate; more channels are downmixed to stereo). Frames are decoded and encoded one at a
    time, so memory does not grow with the video's length (the audio track is read whole first).
    Raises :class:`VideoError` naming ``src`` when it cannot be read; ``dst`` then does not exist.
    """
    av = _require_av()
    info = probe_video(src)
    src = str(src)
    w, h = output_size(info.width, info.height, size)
    try:
        audio, rate = _read_audio_track(av, src) if info.has_audio else (None, 16000)
    except Exception as e:  # FFmpeg's decode errors come in several flavours
        raise VideoError(f"{src}: cannot decode the audio track ({e})") from e
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
            write_video(dst, frames(container), fps=info.fps if info.fps > 0 else 25, codec=codec, audio=audio,
                        sample_rate=rate)
        except ValueError as e:
            if decoded == 0 and not isinstance(e, VideoError):
                raise VideoError(f"{src}: no frame could be decoded") from e
            raise
    return Path(dst)


def _read_audio_track(av, path: str):
    """The first audio stream as float32 ``(channels, samples)`` (1 or 2 channels) and its rate."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    if not chunks:
        return None, 16000
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(rate)


def _is_prepared(src, out: Path, codec: str, size: int | None) -> bool:
    """True when ``out`` exists, decodes as ``codec`` at the expected size and has every source frame."""
    if not out.exists():
        return False
    try:
        have = probe_video(out)
    except VideoError:
        return False  # half-written or damaged: convert again
    info = probe_video(src)
    return (have.codec == codec and have.num_frames == info.num_frames
            and (have.width, have.height) == output_size(info.width, info.height, size))


def _prepare_one(src: str, out: str, codec: str, size: int | None) -> tuple[str, str]:
    """One job of the pool: ``("skipped" | "converted" | "failed", reason)``; never raises."""
    try:
        if _is_prepared(src, Path(out), codec, size):
            return "skipped", ""
        transcode_video(src, out, codec=codec, size=size)
        return "converted", ""
    except VideoError as e:
        return "failed", str(e)
    except Exception as e:  # encoder or disk errors: name the source anyway
        return "failed", f"{src}: {type(e).__name__}: {e}"


def _plan(src_dir: Path, dst_dir: Path, codec: str) -> list[tuple[Path, Path, Path]]:
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
    rels = find_videos(src_dir)
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


def prepare_dataset(src_dir, dst_dir, codec: str = "h264", workers: int | None = None, size: int | None = None,
                    progress: bool = True, skip_errors: bool = False) -> PrepareSummary:
    """Transcode every video under ``src_dir`` into ``dst_dir`` with the same relative tree.

    ``codec``: ``"h264"`` (``.mp4``; what DALI decodes on the GPU) or ``"vp9"`` (``.webm``; what
    DALI decodes on the CPU). ``workers``: processes (default: the CPUs this process may use; 1
    runs in this process). ``size``: resize the short side to this many pixels (even), keeping the
    aspect ratio; default: keep the size (odd sizes lose a row/column). Audio tracks are kept.

    Resumable: an output that already decodes as ``codec`` with every source frame at the
    expected size is skipped, and outputs are written under a temporary name and renamed, so an
    interrupted run leaves no half-written file under a final name. The source folder is never
    written to: a destination equal to or inside it, or outputs that would land in it, are
    refused (``ValueError``), as are two sources that would map onto the same output.

    A source that cannot be read raises :class:`VideoError` naming it (outputs finished so far
    stay); with ``skip_errors=True`` it is counted and listed in the summary instead. Returns a
    :class:`PrepareSummary`.

    With ``workers > 1`` the workers are started fresh (fork server or spawn), so a script that
    calls this must guard its top level with ``if __name__ == "__main__":``.
    """
    if codec not in OUTPUT_EXTENSIONS:
        raise ValueError(f"prepare_dataset: codec must be one of {sorted(OUTPUT_EXTENSIONS)}, got {codec!r}")
    if size is not None and (not isinstance(size, int) or size < 2 or size % 2):
        raise ValueError(f"prepare_dataset: size must be an even number of pixels >= 2 (4:2:0 video), got {size!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"prepare_dataset: workers must be a positive int, got {workers!r}")
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} does not exist or is not a folder")
    if dst_dir.exists() and not dst_dir.is_dir():
        raise ValueError(f"destination {dst_dir} exists and is not a folder")
    jobs = _plan(src_dir, dst_dir, codec)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))

    from tqdm.auto import tqdm

    summary = PrepareSummary()
    bar = tqdm(total=len(jobs), unit="video", desc=f"prepare -> {codec}", disable=not progress)

    def record(rel: Path, status: str, reason: str) -> None:
        if status == "failed":
            if not skip_errors:
                raise VideoError(reason)
            summary.failed.append((str(rel), reason))
            bar.set_postfix(failed=len(summary.failed))
        else:
            (summary.converted if status == "converted" else summary.skipped).append(str(rel))
        bar.update()

    try:
        if workers == 1:
            for rel, src, out in jobs:
                record(rel, *_prepare_one(str(src), str(out), codec, size))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
                pending = {pool.submit(_prepare_one, str(src), str(out), codec, size): rel
                           for rel, src, out in jobs}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            record(pending.pop(fut), *fut.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # let started jobs finish their files
                    raise
    finally:
        bar.close()
    for lst in (summary.converted, summary.skipped):
        lst.sort()
    summary.failed.sort()
    return summary
