"""Clip datasets and loaders: video files in, :class:`~zsar.data.Batch` es of normalised clips out.

* :class:`VideoClipDataset`: map-style :class:`~zsar.data.Sample` s over a :class:`VideoList`,
  decoding one file at a time with any registered decoder; what the trainer and plain DataLoaders
  take (with ``collate_fn=dataset.collate_fn``).
* :class:`VideoLoader`: the iterable loader for training and evaluation. With a decoder that has a
  batch pipeline (DALI) the pipeline decodes, resizes, crops and normalises whole batches (on the
  GPU when the decoder is); otherwise a multi-worker DataLoader runs the decoder and the torch
  transforms per file. Both shard by (shard id, number of shards), reshuffle each epoch from the
  seed, and yield :class:`~zsar.data.Batch` es with labels, video ids, positions and, when asked,
  audio features.

Audio (``audio=AudioSpec(...)``): AST log-mel features (:func:`zsar.data.audio_features`) decoded
with PyAV next to the video on every path (in the DataLoader workers; in a thread pool feeding the
DALI pipeline). The window is the ``AudioSpec``'s 10.24 s (1024 frames of 10 ms) centred on the
clip's centre time (the middle of the frames the clip or clips span, at the video's frame rate),
shifted to lie inside the audio track when the track is longer; shorter tracks are zero-padded at
the end.

Bad files follow one policy (:class:`FilePolicy`): ``on_error="raise"`` stops at the first with an
error naming it, ``"skip"`` skips it and counts it in ``skipped`` (unreadable, truncated, not
decodable by the chosen decoder, or failing inside a DALI pipeline). Files without an audio track
follow ``missing_audio``: ``"zeros"`` (silent features and ``audio_present=False``), ``"skip"``
(skipped and counted like a bad file) or ``"error"`` (raise, even under ``on_error="skip"``).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..runtime import RuntimeSettings
from .audio import AudioSpec, MissingAudioError, audio_features
from .batch import Batch, Sample, collate
from .decoders import DecodeRequest, Decoder, dali, fallback_decoder, get_decoder, read_frames, select_decoder
from .records import VideoList
from .sampling import sample_rng
from .transforms import ClipPlan, ClipSpec, apply_plan, plan_clip
from .video import VideoError, VideoInfo, probe_video

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
DALI_INPUTS = ("auto", "reader", "bytes")
MISSING_AUDIO = ("zeros", "skip", "error")
T = TypeVar("T")

@dataclass(frozen=True)
class FilePolicy:
    """What a loader does with a file it cannot use; the one place that decides (see the module
    docstring for the meaning of the two settings)."""

    on_error: str = "raise"
    missing_audio: str = "zeros"

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.missing_audio not in MISSING_AUDIO:
            raise ValueError(f"missing_audio must be one of {MISSING_AUDIO}, got {self.missing_audio!r}")

    def skips(self, error: BaseException) -> bool:
        """Whether a file whose loading raised ``error`` is skipped (else the error propagates)."""
        if isinstance(error, MissingAudioError):
            return self.missing_audio == "skip"
        # VideoError and the decoders' DecoderUnavailableError are ValueErrors, as are the
        # transforms' complaints about a file (a frame smaller than the crop).
        return self.on_error == "skip" and isinstance(error, ValueError)


class SkipLog:
    """Bad files met under the skip policy: how many, and which with why (first 100 kept)."""

    def __init__(self):
        self.count = 0
        self.examples: list[tuple[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 100:
            self.examples.append((path, reason))
        log.warning("skipping %s: %s", path, reason)


def load_clip(path, spec: ClipSpec, backend: str = "auto", *, rng: np.random.Generator | None = None,
              info: VideoInfo | None = None) -> torch.Tensor:
    """One video file as model input of ``spec.output_shape()`` (decode → sample → transform).

    Evaluation specs are deterministic; training specs draw from ``rng`` (default: seed 0). The
    clip comes back on the CPU; ``auto`` keeps decoding there too, a named GPU decoder decodes on
    the GPU.
    """
    info = info or probe_video(path)
    if rng is None:
        rng = sample_rng(0, 0, 0)
    plan = plan_clip(spec, info, rng)
    frames = read_frames(info.path, plan.indices.ravel(), backend, device="cpu" if backend == "auto" else None,
                         info=info)
    return apply_plan(frames.cpu(), plan, spec)


def clip_centre_seconds(plan: ClipPlan, info: VideoInfo) -> float:
    """The middle of the frames a clip plan spans, in seconds from the video's start (frame ``i``
    covers ``[i / fps, (i + 1) / fps)``); 0 when the frame rate is unknown."""
    if info.fps <= 0:
        return 0.0
    return (int(plan.indices.min()) + int(plan.indices.max()) + 1) / 2 / info.fps


def clip_audio(path, info: VideoInfo, plan: ClipPlan, audio: AudioSpec,
               missing: str = "zeros") -> tuple[torch.Tensor, bool]:
    """The audio features that go with a clip: ``audio``'s window centred on the clip's centre
    (:func:`clip_centre_seconds`), as ``(features (target_length, mel_bins), present)``.

    ``missing="zeros"`` gives zeros and ``present=False`` for a file without audio; otherwise such a
    file raises :class:`~zsar.data.audio.MissingAudioError`.
    """
    if getattr(audio, "required", False) and missing == "zeros":
        missing = "error"  # an audio-only model has nothing else to score a silent file by
    try:
        return audio_features(path, audio.target_length, "zeros" if missing == "zeros" else "error",
                              sample_rate=audio.sample_rate, num_mel_bins=audio.mel_bins,
                              centre=clip_centre_seconds(plan, info))
    except MissingAudioError as e:
        if getattr(audio, "required", False):
            raise MissingAudioError(f"{path}: has no audio stream, and the model takes only audio (missing_audio="
                                    f"'skip' leaves such files out)") from e
        raise MissingAudioError(f"{path}: has no audio stream (missing_audio={missing!r}; 'zeros' loads "
                                f"silence with audio_present=False instead)") from e


def _check_audio_spec(audio):
    if audio is None:
        return None
    if not isinstance(audio, AudioSpec):
        raise TypeError(f"audio must be a zsar.data.AudioSpec or None, got {type(audio).__name__}")
    return audio


def _check_backend(backend: str) -> str:
    if backend != "auto":
        get_decoder(backend)  # ValueError listing the registered names
    return backend


def worker_context() -> str:
    """The start method for DataLoader workers that decode video (``multiprocessing_context=``).

    ``"fork"`` (workers start at once, nothing re-imported) unless this process has built a DALI
    pipeline: forking while DALI's threads run can deadlock or crash the child (in the test suite a
    forked worker decoding with PyAV segfaulted once, after DALI pipelines had run in the same
    process), so then ``"forkserver"``; ``"forkserver"`` also where there is no fork.
    """
    return "forkserver" if dali.threads_started() or os.name != "posix" else "fork"


class VideoClipDataset(Dataset):
    """Map-style dataset of :class:`~zsar.data.Sample` s from the videos of ``videos``.

    Args:
        videos: the split to read.
        spec: clip sampling and transform; training clips are random per (``seed``, epoch, index):
            call :meth:`set_epoch` each epoch (the trainer does).
        backend: a registered decoder name, ``"auto"`` (per file, kept on the CPU) or None (the
            default: :func:`~zsar.data.decoders.fallback_decoder`, the decoder that reads any codec; pyav).
        seed: seed of the random clips.
        on_error: ``"raise"`` or ``"skip"``: a bad file then yields ``None``, which
            :meth:`collate_fn` drops (pass it to your DataLoader), and is counted in :attr:`skipped`
            (in the process that loaded it).
        audio: the audio features to load with each clip (:class:`zsar.data.AudioSpec`), or None.
        missing_audio: ``"zeros"``, ``"skip"`` or ``"error"`` for files without an audio track.

    :meth:`load` is the clip-only hook that subclasses override (e.g. to read frames from a cache).
    In your own ``DataLoader`` with workers pass ``collate_fn=ds.collate_fn`` and
    ``multiprocessing_context=ds.worker_context()`` (:func:`worker_context`).
    """

    collate_fn = staticmethod(collate)
    worker_context = staticmethod(worker_context)

    def __init__(self, videos: VideoList, spec: ClipSpec, backend: str | None = None, seed: int = 0,
                 on_error: str = "raise", *, audio: AudioSpec | None = None, missing_audio: str = "zeros"):
        if not isinstance(videos, VideoList):
            raise TypeError(f"videos must be a zsar.data.VideoList, got {type(videos).__name__}")
        self.videos, self.spec, self.seed = videos, spec, seed
        self.backend = _check_backend(fallback_decoder() if backend is None else backend)
        self.policy = FilePolicy(on_error, missing_audio)
        self.audio = _check_audio_spec(audio)
        self.epoch = 0
        self.skipped = SkipLog()
        self._info: dict[int, VideoInfo] = {}

    @property
    def on_error(self) -> str:
        return self.policy.on_error

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def info(self, i: int) -> VideoInfo:
        """Video ``i``'s :func:`~zsar.data.probe_video` result (probed once per process)."""
        if i not in self._info:
            self._info[i] = probe_video(self.videos[i].path)
        return self._info[i]

    def plan(self, i: int, epoch: int | None = None) -> ClipPlan:
        """The frames and crops video ``i`` contributes in ``epoch`` (default: the current one)."""
        rng = sample_rng(self.seed, self.epoch if epoch is None else epoch, i)
        return plan_clip(self.spec, self.info(i), rng)

    def load(self, i: int, epoch: int | None = None) -> torch.Tensor:
        """The clip(s) of video ``i`` in ``epoch`` (default: the current one); raises on bad files."""
        rng = sample_rng(self.seed, self.epoch if epoch is None else epoch, i)
        return load_clip(self.videos[i].path, self.spec, self.backend, rng=rng, info=self.info(i))

    def load_audio(self, i: int, epoch: int | None = None) -> tuple[torch.Tensor, bool]:
        """Video ``i``'s audio features for its clip in ``epoch`` (see :func:`clip_audio`)."""
        if self.audio is None:
            raise ValueError("this dataset loads no audio (audio=None)")
        return clip_audio(self.videos[i].path, self.info(i), self.plan(i, epoch), self.audio,
                          self.policy.missing_audio)

    def sample(self, i: int, epoch: int | None = None) -> Sample:
        """Video ``i`` as a :class:`~zsar.data.Sample` (clip, label, audio when asked); raises on bad files."""
        epoch = self.epoch if epoch is None else epoch
        audio, present = self.load_audio(i, epoch) if self.audio is not None else (None, True)
        record = self.videos[i]
        return Sample(self.load(i, epoch), record.label, audio, present, record.video_id, i)

    def attempt(self, i: int, work: Callable[[], T]) -> tuple[T | None, tuple[str, str] | None]:
        """``(work(), None)``, or ``(None, (path, reason))`` when ``work`` failed on video ``i`` in a
        way :attr:`policy` skips; other failures propagate. Every loader path goes through here."""
        try:
            return work(), None
        except Exception as e:
            if not self.policy.skips(e):
                raise
            return None, (self.videos[i].path, str(e))

    def __getitem__(self, key) -> Sample | None:
        i, epoch = key if isinstance(key, tuple) else (key, None)  # (index, epoch) from VideoLoader
        sample, bad = self.attempt(i, lambda: self.sample(i, epoch))
        if bad is not None:
            self.skipped.add(*bad)
        return sample


def _shard_defaults(shard_id: int | None, num_shards: int | None) -> tuple[int, int]:
    if num_shards is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    shard_id = 0 if shard_id is None else shard_id
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    return shard_id, num_shards


def shard_positions(n: int, epoch: int, seed: int, shuffle: bool, shard_id: int, num_shards: int) -> np.ndarray:
    """This shard's dataset positions for ``epoch``: a seeded permutation (or identity) split
    round-robin, so shards are disjoint, together cover the dataset, and differ in size by ≤ 1."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return order[shard_id::num_shards]


class VideoLoader:
    """Iterable loader of :class:`~zsar.data.Batch` es over ``videos``.

    Args:
        videos: the split to read.
        spec: clip sampling and transform (:class:`ClipSpec`); ``spec.train`` picks random clips.
        batch_size: videos per batch.
        backend: ``"auto"`` (the first registered decoder that decodes the first video's codec on
            ``device``: DALI on the GPU when there is one, else DALI on the CPU for VP8/VP9/MJPEG,
            else PyAV; the choice is logged) or a decoder name (``"pyav"``, ``"dali-cpu"``,
            ``"dali-gpu"``). A later file the chosen decoder cannot decode is a bad file.
        shuffle: reshuffle every epoch (default: ``spec.train``); the order depends only on
            ``seed`` and the epoch.
        seed: seed of the order and of the random clips.
        shard_id, num_shards: this process's shard (default: the torch.distributed rank and
            world size when initialised, else the whole dataset).
        num_workers: per-file decoders: DataLoader worker processes (default: up to 8, one per
            core); batch pipelines: the pipeline's threads and the threads that read files and audio.
        drop_last: drop a final partial batch.
        on_error: ``"raise"`` (default) stops at the first bad file with an error naming it;
            ``"skip"`` skips it, counts it in :attr:`skipped` and logs it.
        device: where decoding may run (default: the current CUDA device when there is one).
        audio: the audio features each batch carries (:class:`zsar.data.AudioSpec`), or None.
        missing_audio: ``"zeros"`` (default), ``"skip"`` or ``"error"`` for files without audio.
        pin_memory: worker batches arrive in pinned host memory, so that their copy to the GPU does not
            block (default: :class:`zsar.runtime.RuntimeSettings`'s, on when ``device`` is CUDA).
        dali_input: how a DALI decoder gets its clips: ``"reader"`` (DALI's video reader opens the
            files itself from a list of files and frame ranges, one row per clip, and decodes a batch
            of clips per run; one pipeline per epoch), ``"bytes"`` (each file's encoded bytes and
            frame indices fed to DALI's in-memory decoder, which decodes the batch's files on
            ``num_workers`` threads) or ``"auto"`` (default: the reader for ``dali-gpu``, the bytes
            for ``dali-cpu``, where the reader measured 1.4-1.9x slower: 3.3-3.4 against 4.8-6.2
            videos/s on 320x240 VP9, 2 threads, load 10; bench/RESULTS.md). After a file fails
            inside a reader pipeline, the rest of the epoch goes through ``"bytes"``, which finds
            the file and applies ``on_error``.

    Iterating runs one epoch; the next ``for`` runs the next epoch (or call :meth:`set_epoch`).
    """

    def __init__(self, videos: VideoList, spec: ClipSpec, batch_size: int, backend: str = "auto",
                 shuffle: bool | None = None, seed: int = 0, shard_id: int | None = None,
                 num_shards: int | None = None, num_workers: int | None = None, drop_last: bool = False,
                 on_error: str = "raise", device: str | torch.device | None = None, *,
                 audio: AudioSpec | None = None, missing_audio: str = "zeros", pin_memory: bool | None = None,
                 dali_input: str = "auto"):
        if not isinstance(videos, VideoList):
            raise TypeError(f"videos must be a zsar.data.VideoList, got {type(videos).__name__}")
        if len(videos) == 0:
            raise ValueError("videos is empty: nothing to load")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_backend(backend)
        if dali_input not in DALI_INPUTS:
            raise ValueError(f"dali_input must be one of {DALI_INPUTS}, got {dali_input!r}")
        self._dali_input = dali_input
        policy = FilePolicy(on_error, missing_audio)
        self.videos, self.spec, self.batch_size, self.seed = videos, spec, batch_size, seed
        self.shuffle = spec.train if shuffle is None else shuffle
        self.shard_id, self.num_shards = _shard_defaults(shard_id, num_shards)
        self.drop_last, self.on_error = drop_last, policy.on_error
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.device = DecodeRequest.of(None, device).device
        self.pin_memory = RuntimeSettings.for_device(self.device).pin_memory if pin_memory is None else pin_memory
        self.decoder: Decoder = self._choose_decoder(backend)
        self.backend = self.decoder.name
        self.epoch = 0
        self._next_epoch = 0
        per_file = fallback_decoder() if self.decoder.has_clip_pipeline else self.backend
        self.dataset = VideoClipDataset(videos, spec, per_file, seed, policy.on_error, audio=audio,
                                        missing_audio=policy.missing_audio)
        self._pipeline: tuple | None = None  # (feed, DALI iterator) of the batch pipeline
        self._feed: _PipelineFeed | None = None
        self._workers: DataLoader | None = None
        self._batches = _EpochBatches()

    # ---- public -------------------------------------------------------------------------------

    @property
    def skipped(self) -> SkipLog:
        """Bad files skipped so far (counted in this process, wherever they were found)."""
        return self.dataset.skipped

    @property
    def audio(self) -> AudioSpec | None:
        return self.dataset.audio

    @property
    def dali_input(self) -> str | None:
        """How the DALI decoder gets its clips (``"reader"`` or ``"bytes"``); None for other decoders."""
        if not self.decoder.has_clip_pipeline:
            return None
        if self._dali_input == "auto":
            return "reader" if self.decoder.device_type == "cuda" else "bytes"
        return self._dali_input

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch`` (shuffle order and random clips)."""
        self._next_epoch = epoch

    def __len__(self) -> int:
        n = len(shard_positions(len(self.videos), 0, self.seed, False, self.shard_id, self.num_shards))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        self.epoch = self._next_epoch
        self._next_epoch += 1
        self.dataset.set_epoch(self.epoch)
        positions = shard_positions(len(self.videos), self.epoch, self.seed, self.shuffle, self.shard_id,
                                    self.num_shards)
        before = self.skipped.count
        if self.decoder.has_clip_pipeline and self.dali_input == "reader":
            yield from self._iter_reader(positions)
        elif self.decoder.has_clip_pipeline:
            yield from self._iter_pipeline(positions)
        else:
            yield from self._iter_workers(positions)
        if self.skipped.count > before:
            log.warning("epoch %d: skipped %d bad file(s) of %d", self.epoch, self.skipped.count - before,
                        len(positions))

    # ---- decoder choice -----------------------------------------------------------------------

    def _choose_decoder(self, backend: str) -> Decoder:
        """Pick (or check) the decoder from the first video's codec."""
        try:
            info = probe_video(self.videos[0].path)
        except VideoError:
            info = None
        if backend == "auto" and info is None:
            fallback = get_decoder(fallback_decoder())
            log.info("first video unreadable; loading with %s", fallback.name)
            return fallback
        return select_decoder(info, backend, self.device)  # logs the choice, once per kind of file

    # ---- per-file decoders in DataLoader workers ------------------------------------------------

    def _iter_workers(self, positions: np.ndarray) -> Iterator[Batch]:
        batches = [[(int(p), self.epoch) for p in positions[i:i + self.batch_size]]
                   for i in range(0, len(positions), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        self._batches.current = batches
        if self._workers is None:
            # Workers persist across epochs (indices travel from this process per batch).
            context = worker_context() if self.num_workers else None
            self._workers = DataLoader(_Reporting(self.dataset), batch_sampler=self._batches,
                                       num_workers=self.num_workers, collate_fn=_collate_reporting,
                                       persistent_workers=self.num_workers > 0, multiprocessing_context=context,
                                       pin_memory=self.pin_memory)
        for bad, error, batch in self._workers:
            for path, reason in bad:  # skips seen in worker processes, counted here
                self.skipped.add(path, reason)
            if error is not None:
                raise error
            if batch is not None:
                yield batch

    # ---- batch pipelines (DALI) -----------------------------------------------------------------

    def _pipeline_iterator(self):
        # deferred: DALI is optional (the dali extra)
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = self.decoder.clip_pipeline(self._feed, self.spec, self.batch_size, max(1, self.num_workers),
                                          self.device, self.seed)
        return DALIGenericIterator(pipe, ["clips", "position"], last_batch_policy=LastBatchPolicy.PARTIAL,
                                   auto_reset=False, prepare_first_batch=False)

    def _iter_pipeline(self, positions: np.ndarray) -> Iterator[Batch]:
        if self._feed is None:
            self._feed = _PipelineFeed(self.dataset, self.decoder, self.device, self.batch_size, self.num_workers)
        feed = self._feed
        feed.start(positions, self.epoch)
        if self._pipeline is None:
            it = self._pipeline_iterator()
        else:
            it = self._pipeline
            it.reset()
        self._pipeline = None  # kept only once the epoch ends cleanly
        while True:
            try:
                out = next(it)
            except StopIteration:
                break
            except RuntimeError as e:  # DALI failed inside the pipeline; the pipeline is now unusable
                del it
                self._recover(feed, e)
                it = self._pipeline_iterator()
                continue
            clips, pos = out[0]["clips"], out[0]["position"].reshape(-1).cpu()
            feed.done()
            if self.drop_last and clips.shape[0] < self.batch_size:
                continue
            yield self._pipeline_batch(clips, pos, feed)
        self._pipeline = it

    def _reader_clips(self, positions: np.ndarray) -> list[tuple[int, VideoInfo, ClipPlan]]:
        """The epoch's usable videos with their clip plans, probed in parallel; the file policy
        applies to the others (the checks the bytes feed makes per file)."""
        ds = self.dataset

        def plan(i: int):
            info = ds.info(i).require_complete()
            select_decoder(info, self.decoder.name, self.device)  # DecoderUnavailableError naming the file
            return info, ds.plan(i, self.epoch)

        with ThreadPoolExecutor(max(1, self.num_workers), thread_name_prefix="zsar-probe") as pool:
            results = list(pool.map(lambda i: ds.attempt(int(i), lambda: plan(int(i))), positions))
        usable = []
        for i, (planned, bad) in zip(positions, results):
            if bad is not None:
                self.skipped.add(*bad)
            else:
                usable.append((int(i), *planned))
        return usable

    def _iter_reader(self, positions: np.ndarray) -> Iterator[Batch]:
        """One epoch through DALI's video reader: a file list with one row (file, frame range) per
        clip, ``batch_size`` videos' rows decoded per pipeline run, rows regrouped into videos."""
        import tempfile

        spec, B = self.spec, self.batch_size
        if not all(dali.list_safe(os.path.abspath(self.videos[int(i)].path)) for i in positions):
            log.info("a video path holds white space, which DALI's file list cannot; this epoch feeds encoded bytes")
            yield from self._iter_pipeline(positions)
            return
        usable = self._reader_clips(positions)
        if self.drop_last:
            usable = usable[:len(usable) // B * B]
        if not usable:
            return
        per_video = 1 if spec.train else spec.num_clips
        span = (spec.frames - 1) * spec.stride + 1
        rows, geometry = [], []
        for i, info, plan in usable:
            anchors = [dali.crop_anchor(b, plan.resized, spec.size) for b in plan.boxes]
            for c in range(per_video):
                start = int(plan.indices[c, 0])
                rows.append((os.path.abspath(info.path), len(rows), start, start + span))
                geometry.append((np.array(plan.resized, np.int32), anchors))
        per_run = B * per_video
        n_runs = math.ceil(len(rows) / per_run)
        rows += [rows[-1]] * (n_runs * per_run - len(rows))  # whole runs; the copies are dropped below
        geometry += [geometry[-1]] * (len(rows) - len(geometry))
        n_crops = len(geometry[0][1])

        def geometry_of(info):  # the rows of run info.iteration, in the list's order
            k = info.iteration % n_runs
            chunk = geometry[k * per_run:(k + 1) * per_run]
            return ([g[0] for g in chunk], *([g[1][j] for g in chunk] for j in range(n_crops)))

        out_device = self.decoder.output_device(self.device)
        with tempfile.TemporaryDirectory(prefix="zsar-clips-") as tmp:
            list_file = os.path.join(tmp, "clips.txt")
            dali.write_clip_list(list_file, rows)
            pipe = dali.build_reader_pipeline(
                list_file, geometry_of, spec, per_run, self.decoder.dali_device, max(1, self.num_workers),
                out_device.index if out_device.type == "cuda" else None, self.seed + self.epoch, n_crops,
                short_videos=any(info.num_frames < span for _, info, _ in usable))
            pipe.build()
            with ThreadPoolExecutor(max(1, self.num_workers), thread_name_prefix="zsar-audio") as pool:
                for k in range(n_runs):
                    videos = usable[k * B:(k + 1) * B]
                    audio = [pool.submit(self.dataset.attempt, i, lambda i=i: self.dataset.load_audio(i, self.epoch))
                             for i, _, _ in videos] if self.audio is not None else None
                    try:
                        clips, lines = pipe.run()
                    except RuntimeError as e:  # a file failed inside DALI: the bytes feed finds it
                        log.warning("%s reader pipeline failed (%s); the epoch's remaining %d videos go through "
                                    "the bytes feed", self.decoder.name, dali.dali_reason(e), len(usable) - k * B)
                        del pipe
                        yield from self._iter_pipeline(np.array([i for i, _, _ in usable[k * B:]]))
                        return
                    lines = lines.as_cpu() if hasattr(lines, "as_cpu") else lines  # the GPU reader's labels
                    lines = np.array(lines.as_tensor()).reshape(-1)
                    expected = np.arange(k * per_run, (k + 1) * per_run)
                    real = len(videos) * per_video
                    if not np.array_equal(lines[:real], expected[:real]):
                        raise RuntimeError(f"DALI's video reader returned rows {lines[:real].tolist()} for run {k}, "
                                           f"expected {expected[:real].tolist()}")
                    clips = dali.to_torch(clips, out_device)[:real]
                    clips = clips.reshape(len(videos), *spec.output_shape())
                    batch = self._reader_batch(clips, videos, audio)
                    if batch is not None:
                        yield batch

    def _reader_batch(self, clips: torch.Tensor, videos, audio) -> Batch | None:
        keep = list(range(len(videos)))
        features = []
        if audio is not None:
            keep = []
            for j, future in enumerate(audio):
                pair, bad = future.result()
                if bad is not None:
                    self.skipped.add(*bad)
                    continue
                keep.append(j)
                features.append(pair)
            if not keep:
                return None
            if len(keep) < len(videos):
                clips = clips[torch.tensor(keep, device=clips.device)]
        pos = torch.tensor([videos[j][0] for j in keep], dtype=torch.int64)
        records = [self.videos[int(p)] for p in pos]
        return Batch(clips=clips, labels=torch.tensor([r.label for r in records], dtype=torch.int64),
                     audio=torch.stack([a for a, _ in features]) if audio is not None else None,
                     audio_present=torch.tensor([bool(ok) for _, ok in features]) if audio is not None else None,
                     video_ids=[r.video_id for r in records], positions=pos)

    def _pipeline_batch(self, clips: torch.Tensor, pos: torch.Tensor, feed: "_PipelineFeed") -> Batch:
        records = [self.videos[int(p)] for p in pos]
        audio = present = None
        if self.audio is not None:
            pairs = [feed.audio.pop(int(p)) for p in pos]
            audio = torch.stack([a for a, _ in pairs])
            present = torch.tensor([bool(ok) for _, ok in pairs])
        return Batch(clips=clips, labels=torch.tensor([r.label for r in records], dtype=torch.int64),
                     audio=audio, audio_present=present, video_ids=[r.video_id for r in records],
                     positions=pos.to(torch.int64))

    def _recover(self, feed: "_PipelineFeed", error: RuntimeError) -> None:
        """After a pipeline failure: find the file(s) that failed by decoding the in-flight samples one
        at a time with the same decoder (batch by batch, oldest first), apply the policy to them,
        and queue the rest again. Raises when no single file reproduces the failure."""
        in_flight = list(feed.in_flight)
        feed.in_flight.clear()
        requeue: list[int] = []
        found = False
        for positions in in_flight:
            if found:
                requeue.extend(positions)
                continue
            for i in positions:
                _, bad = self.dataset.attempt(i, lambda i=i: self._decode_alone(i))
                if bad is None:
                    requeue.append(i)
                else:
                    found = True
                    feed.audio.pop(i, None)
                    self.skipped.add(*bad)
        if not found:
            files = [self.videos[i].path for b in in_flight for i in b]
            raise RuntimeError(f"{self.decoder.name} pipeline failed on a batch of {len(files)} file(s) "
                               f"({', '.join(files[:4])}{' ...' if len(files) > 4 else ''}), none of which "
                               f"fails alone: {dali.dali_reason(error)}") from error
        feed.queue.extendleft(reversed(requeue))

    def _decode_alone(self, i: int) -> None:
        info = self.dataset.info(i)
        self.decoder.read_frames(info.path, self.dataset.plan(i, self.epoch).indices.ravel(), self.device, info)


class _EpochBatches:
    """A batch sampler whose batches the loader replaces every epoch (so workers can persist)."""

    def __init__(self):
        self.current: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.current)

    def __len__(self):
        return len(self.current)


class _Reporting(Dataset):
    """The loader's dataset seen from a worker: each item is ``(sample or None, skip report or None,
    error or None)``. Skips found in worker processes reach the parent's count, and a file error
    the policy does not skip travels as data, so the parent raises it with its own one-line message
    (DataLoader would wrap it in the worker's traceback)."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        i, epoch = key
        try:
            return (*self.dataset.attempt(i, lambda: self.dataset.sample(i, epoch)), None)
        except ValueError as e:  # VideoError and kin; anything else is a bug: keep its traceback
            return None, None, e


def _collate_reporting(items) -> tuple[list[tuple[str, str]], ValueError | None, Batch | None]:
    bad = [report for _, report, _ in items if report is not None]
    error = next((e for _, _, e in items if e is not None), None)
    return bad, error, collate([sample for sample, _, _ in items])


class _PipelineFeed:
    """A batch pipeline's callback: prepares each sample in Python (probe, the clip plan, so both
    paths read the same frames and crops; audio; the encoded bytes) in a thread pool, applies the
    file policy, and hands the pipeline full batches. Remembers which positions are inside the
    pipeline, so a failed run can be traced to its files.

    It holds no reference to its loader: the pipeline holds the feed, and a loader -> feed -> loader
    cycle would leave dropped DALI pipelines to the garbage collector, which may then run their
    destructors in a forked child, where DALI's threads do not exist (a hang).
    """

    def __init__(self, dataset: VideoClipDataset, decoder: Decoder, device: torch.device, batch_size: int,
                 num_threads: int):
        self.dataset, self.decoder, self.device, self.batch_size = dataset, decoder, device, batch_size
        self.epoch = 0
        self.queue: deque[int] = deque()
        self.in_flight: deque[list[int]] = deque()
        self.audio: dict[int, tuple[torch.Tensor, bool]] = {}
        self._pool = ThreadPoolExecutor(max(1, num_threads), thread_name_prefix="zsar-feed")

    def start(self, positions: np.ndarray, epoch: int) -> None:
        self.queue = deque(int(p) for p in positions)
        self.epoch = epoch
        self.in_flight.clear()
        self.audio.clear()

    def done(self) -> None:
        """The pipeline returned a batch (the oldest in flight)."""
        if self.in_flight:
            self.in_flight.popleft()

    def _prepare(self, i: int) -> tuple:
        ds = self.dataset
        info = ds.info(i).require_complete()
        select_decoder(info, self.decoder.name, self.device)  # DecoderUnavailableError naming the file
        plan = ds.plan(i, self.epoch)
        audio = ds.load_audio(i, self.epoch) if ds.audio is not None else None
        encoded = np.fromfile(info.path, dtype=np.uint8)
        anchors = [dali.crop_anchor(b, plan.resized, ds.spec.size) for b in plan.boxes]
        columns = (encoded, plan.indices.ravel().astype(np.int32), np.array(plan.resized, np.int32), *anchors,
                   np.array([i], np.int64))
        return columns, audio

    def __call__(self):
        samples, positions = [], []
        while len(samples) < self.batch_size and self.queue:
            take = [self.queue.popleft() for _ in range(min(self.batch_size - len(samples), len(self.queue)))]
            results = self._pool.map(lambda i: self.dataset.attempt(i, lambda: self._prepare(i)), take)
            for i, (prepared, bad) in zip(take, results):
                if bad is not None:
                    self.dataset.skipped.add(*bad)
                    continue
                columns, audio = prepared
                samples.append(columns)
                positions.append(i)
                if audio is not None:
                    self.audio[i] = audio
        if not samples:
            raise StopIteration
        self.in_flight.append(positions)
        return tuple(list(col) for col in zip(*samples))


def evaluation_loader(source: VideoList | Dataset, spec: ClipSpec | None = None, batch_size: int = 8, *,
                      audio: AudioSpec | None = None, backend: str = "auto", on_error: str = "skip",
                      missing_audio: str = "zeros", num_workers: int | None = None):
    """The loader every evaluation reads with: each video once, in order, on this process alone.

    Args:
        source: a :class:`VideoList` (read with ``spec`` by a :class:`VideoLoader`), or a map-style
            dataset of samples that already holds its clip spec (e.g. a
            :class:`~zsar.data.cache.CachedClipDataset`; read by a ``DataLoader`` with its ``collate_fn``).
        spec: how clips are read from a video list (``spec.train`` False: centred clips).
        batch_size: videos per batch.
        audio, backend, on_error, missing_audio, num_workers: as :class:`VideoLoader` takes them
            (``on_error`` defaults to ``"skip"``: an evaluation counts unreadable files and goes on).

    Returns:
        An iterable of :class:`~zsar.data.Batch` es.
    """
    if isinstance(source, VideoList):
        if spec is None:
            raise ValueError("evaluation_loader: a video list needs a clip spec (spec=...)")
        return VideoLoader(source, spec, batch_size, backend=backend, shuffle=False, num_shards=1,
                           num_workers=num_workers, on_error=on_error, audio=audio, missing_audio=missing_audio)
    return DataLoader(source, batch_size=batch_size, collate_fn=getattr(source, "collate_fn", None))
