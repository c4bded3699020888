"""Clip datasets and loaders: video files in, batches of normalised clips out.

* :class:`VideoClipDataset`: map-style ``(clip, label)`` over a :class:`VideoList`, decoding with
  PyAV or DALI per sample; what :class:`~zsar.train.Trainer` and plain DataLoaders take.
* :class:`VideoLoader`: the iterable loader for training and evaluation. On the DALI path one
  DALI pipeline decodes, resizes, crops and normalises whole batches (GPU transforms when the
  decoder is on the GPU) behind DALI's PyTorch iterator; on the PyAV path a multi-worker
  DataLoader runs the torch transforms. Both shard by (shard id, number of shards), reshuffle
  each epoch from the seed, carry labels and video ids, and skip bad files under
  ``on_error="skip"``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .decoders import choose_backend, dali, read_frames, unavailable_reason
from .records import VideoList
from .sampling import sample_rng
from .transforms import ClipSpec, apply_plan, plan_clip
from .video import VideoError, VideoInfo, probe_video

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
LOADER_BACKENDS = ("auto", "pyav", "dali-cpu", "dali-gpu")


class ClipBatch(NamedTuple):
    """One batch: ``clips`` (B, *spec.output_shape()), ``labels`` (B,) int64, the videos' ids,
    and their ``positions`` in the loader's :class:`VideoList`."""

    clips: torch.Tensor
    labels: torch.Tensor
    video_ids: list[str]
    positions: torch.Tensor


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

    Evaluation specs are deterministic; training specs draw from ``rng`` (default: seed 0).
    Decoding stays on the CPU (``dali-gpu`` aside, which the loaders use for whole batches).
    """
    info = info or probe_video(path)
    if rng is None:
        rng = sample_rng(0, 0, 0)
    plan = plan_clip(spec, info, rng)
    frames = read_frames(info.path, plan.indices.ravel(), backend, device="cpu", info=info)
    return apply_plan(frames.cpu(), plan, spec)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


class VideoClipDataset(Dataset):
    """Map-style dataset of ``(clip, label)`` from the videos of ``videos``.

    ``clip`` has ``spec.output_shape()``. Training clips are random per (``seed``, epoch, index):
    call :meth:`set_epoch` each epoch (the Trainer does). ``backend``: ``"pyav"`` (default; any
    codec), ``"dali-cpu"``, ``"dali-gpu"`` or ``"auto"`` (per file). With ``on_error="skip"`` a
    bad file yields ``None``, which :meth:`collate_fn` drops (pass it to your DataLoader).
    """

    def __init__(self, videos: VideoList, spec: ClipSpec, backend: str = "pyav", seed: int = 0,
                 on_error: str = "raise"):
        if not isinstance(videos, VideoList):
            raise TypeError(f"videos must be a zsar.data.VideoList, got {type(videos).__name__}")
        if backend not in LOADER_BACKENDS:
            raise ValueError(f"backend must be one of {LOADER_BACKENDS}, got {backend!r}")
        _check_on_error(on_error)
        self.videos, self.spec, self.backend, self.seed, self.on_error = videos, spec, backend, seed, on_error
        self.epoch = 0
        self.skipped = SkipLog()
        self._info: dict[int, VideoInfo] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def info(self, i: int) -> VideoInfo:
        if i not in self._info:
            self._info[i] = probe_video(self.videos[i].path)
        return self._info[i]

    def load(self, i: int, epoch: int | None = None) -> torch.Tensor:
        """The clip(s) of video ``i`` in ``epoch`` (default: the current one); raises on bad files."""
        rng = sample_rng(self.seed, self.epoch if epoch is None else epoch, i)
        return load_clip(self.videos[i].path, self.spec, self.backend, rng=rng, info=self.info(i))

    def __getitem__(self, i):
        epoch = None
        if isinstance(i, tuple):  # (index, epoch) from VideoLoader's sampler, robust to worker copies
            i, epoch = i
        try:
            clip = self.load(i, epoch)
        except (VideoError, ValueError) as e:
            if self.on_error == "raise":
                raise
            self.skipped.add(self.videos[i].path, str(e))
            return None
        return clip, self.videos[i].label

    @staticmethod
    def collate_fn(batch):
        """Default collation after dropping samples skipped as bad files (``None``)."""
        kept = [b for b in batch if b is not None]
        if not kept:
            return None
        return torch.utils.data.default_collate(kept)


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
    """Iterable loader of :class:`ClipBatch` es over ``videos``.

    Args:
        videos: the split to read.
        spec: clip sampling and transform (:class:`ClipSpec`); ``spec.train`` picks random clips.
        batch_size: videos per batch.
        backend: ``"auto"`` (DALI on the GPU when there is one and DALI decodes the codec, else
            DALI on the CPU for VP8/VP9/MJPEG, else PyAV; the choice is logged), or one of
            ``"pyav"``, ``"dali-cpu"``, ``"dali-gpu"``.
        shuffle: reshuffle every epoch (default: ``spec.train``); the order depends only on
            ``seed`` and the epoch.
        shard_id, num_shards: this process's shard (default: the torch.distributed rank and
            world size when initialised, else the whole dataset).
        num_workers: PyAV path: DataLoader worker processes (default: up to 8, one per core);
            DALI path: DALI's CPU threads.
        drop_last: drop a final partial batch.
        on_error: ``"raise"`` (default) stops at the first bad file with an error naming it;
            ``"skip"`` skips it, counts it in :attr:`skipped` and logs it.
        device: where DALI on the GPU runs (default: the current CUDA device).

    Iterating runs one epoch; the next ``for`` runs the next epoch (or call :meth:`set_epoch`).
    """

    def __init__(self, videos: VideoList, spec: ClipSpec, batch_size: int, backend: str = "auto",
                 shuffle: bool | None = None, seed: int = 0, shard_id: int | None = None,
                 num_shards: int | None = None, num_workers: int | None = None, drop_last: bool = False,
                 on_error: str = "raise", device: str | torch.device | None = None):
        if not isinstance(videos, VideoList):
            raise TypeError(f"videos must be a zsar.data.VideoList, got {type(videos).__name__}")
        if len(videos) == 0:
            raise ValueError("videos is empty: nothing to load")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in LOADER_BACKENDS:
            raise ValueError(f"backend must be one of {LOADER_BACKENDS}, got {backend!r}")
        _check_on_error(on_error)
        self.videos, self.spec, self.batch_size, self.seed = videos, spec, batch_size, seed
        self.shuffle = spec.train if shuffle is None else shuffle
        self.shard_id, self.num_shards = _shard_defaults(shard_id, num_shards)
        self.drop_last, self.on_error = drop_last, on_error
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.device = torch.device(device) if device is not None else None
        self.backend = self._resolve_backend(backend)
        self.epoch = 0
        self._next_epoch = 0
        self.dataset = VideoClipDataset(videos, spec, "pyav", seed, on_error)
        self._dali = None
        self._pyav = None
        self._batches = _EpochBatches()

    # ---- public -------------------------------------------------------------------------------

    @property
    def skipped(self) -> SkipLog:
        """Bad files skipped so far (this process; on the PyAV path counted from the batches)."""
        return self.dataset.skipped

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch`` (shuffle order and random clips)."""
        self._next_epoch = epoch

    def __len__(self) -> int:
        n = len(shard_positions(len(self.videos), 0, self.seed, False, self.shard_id, self.num_shards))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[ClipBatch]:
        self.epoch = self._next_epoch
        self._next_epoch += 1
        positions = shard_positions(len(self.videos), self.epoch, self.seed, self.shuffle, self.shard_id,
                                    self.num_shards)
        before = self.skipped.count
        if self.backend == "pyav":
            yield from self._iter_pyav(positions)
        else:
            yield from self._iter_dali(positions)
        if self.skipped.count > before:
            log.warning("epoch %d: skipped %d bad file(s) of %d", self.epoch, self.skipped.count - before,
                        len(positions))

    # ---- backend choice -----------------------------------------------------------------------

    def _resolve_backend(self, backend: str) -> str:
        """Pick (or check) the backend from the first video's codec; a later file in a codec the
        chosen DALI device cannot decode is a bad file (error or skip)."""
        try:
            info = probe_video(self.videos[0].path)
        except VideoError:
            if backend == "auto":
                log.info("first video unreadable; loading with pyav")
                return "pyav"
            info = None
        if backend == "auto":
            choice = choose_backend(info, self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            log.info("loading %s videos with %s", info.codec, choice)
            return choice
        why = unavailable_reason(backend, info.codec if info else None)
        if why is not None:
            where = f" {info.codec} videos such as {info.path}" if info else ""
            raise ValueError(f"backend {backend!r} cannot load{where}: {why}")
        return backend

    # ---- PyAV path ----------------------------------------------------------------------------

    def _iter_pyav(self, positions: np.ndarray) -> Iterator[ClipBatch]:
        batches = [[(int(p), self.epoch) for p in positions[i:i + self.batch_size]]
                   for i in range(0, len(positions), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        self._batches.current = batches
        if self._pyav is None:
            # Workers persist across epochs (indices travel from this process per batch). Forking
            # a process in which DALI's threads run can deadlock the child, so then use forkserver.
            context = None
            if self.num_workers:
                context = "forkserver" if dali.threads_started() or os.name != "posix" else "fork"
            self._pyav = DataLoader(_Indexed(self.dataset), batch_sampler=self._batches,
                                    num_workers=self.num_workers, collate_fn=_collate_indexed,
                                    persistent_workers=self.num_workers > 0, multiprocessing_context=context)
        for item in self._pyav:
            bad, batch = item
            for path, reason in bad:  # skips seen in worker processes, counted here
                self.dataset.skipped.add(path, reason)
            if batch is not None:
                clips, labels, pos = batch
                yield ClipBatch(clips, labels, [self.videos[int(p)].video_id for p in pos], pos)

    # ---- DALI path ----------------------------------------------------------------------------

    def _iter_dali(self, positions: np.ndarray) -> Iterator[ClipBatch]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        if self._dali is None:
            source = _DaliSource(self)
            source.start(positions)
            device = self.backend.split("-")[1]
            device_id = None
            if device == "gpu":
                device_id = self.device.index if self.device is not None and self.device.index is not None \
                    else torch.cuda.current_device()
            pipe = dali.build_clip_pipeline(source, self.spec, self.batch_size, device, max(1, self.num_workers),
                                            device_id, self.seed)
            it = DALIGenericIterator(pipe, ["clips", "position"], last_batch_policy=LastBatchPolicy.PARTIAL,
                                     auto_reset=False, prepare_first_batch=False)
            self._dali = (source, it)
        else:
            source, it = self._dali
            source.start(positions)
            it.reset()
        for out in it:
            clips, pos = out[0]["clips"], out[0]["position"].reshape(-1).cpu()
            labels = torch.tensor([self.videos[int(p)].label for p in pos], dtype=torch.long)
            if self.drop_last and clips.shape[0] < self.batch_size:
                continue
            yield ClipBatch(clips, labels, [self.videos[int(p)].video_id for p in pos], pos)


class _EpochBatches:
    """A batch sampler whose batches the loader replaces every epoch (so workers can persist)."""

    def __init__(self):
        self.current: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.current)

    def __len__(self):
        return len(self.current)


class _Indexed(Dataset):
    """VideoClipDataset that also returns the position, and reports skips back to the parent."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        i, epoch = key
        try:
            return self.dataset.load(i, epoch), self.dataset.videos[i].label, i, None
        except (VideoError, ValueError) as e:
            if self.dataset.on_error == "raise":
                raise
            return None, None, i, (self.dataset.videos[i].path, str(e))


def _collate_indexed(items):
    bad = [it[3] for it in items if it[3] is not None]
    kept = [it for it in items if it[3] is None]
    if not kept:
        return bad, None
    clips = torch.stack([it[0] for it in kept])
    labels = torch.tensor([it[1] for it in kept], dtype=torch.long)
    pos = torch.tensor([it[2] for it in kept], dtype=torch.long)
    return bad, (clips, labels, pos)


class _DaliSource:
    """The DALI pipeline's batch callback: plans each sample in Python (so DALI and PyAV read
    the same frames and crops) and hands DALI the encoded bytes and the plan."""

    def __init__(self, loader: VideoLoader):
        self.loader = loader
        self.dataset = loader.dataset
        self.device = loader.backend.split("-")[1]
        self.positions = np.zeros(0, np.int64)
        self.cursor = 0

    def start(self, positions: np.ndarray) -> None:
        self.positions, self.cursor = positions, 0

    def _sample(self, i: int):
        info = self.dataset.info(i)
        if info.codec not in dali.codecs(self.device):
            raise VideoError(f"{info.path}: DALI on {self.device.upper()} cannot decode {info.codec} video")
        plan = plan_clip(self.loader.spec, info, sample_rng(self.loader.seed, self.loader.epoch, i))
        encoded = np.fromfile(info.path, dtype=np.uint8)
        anchors = [dali.crop_anchor(b, plan.resized, self.loader.spec.size) for b in plan.boxes]
        return (encoded, plan.indices.ravel().astype(np.int32), np.array(plan.resized, np.int32),
                *anchors, np.array([i], np.int64))

    def __call__(self):
        samples = []
        while not samples:
            if self.cursor >= len(self.positions):
                raise StopIteration
            chunk = self.positions[self.cursor:self.cursor + self.loader.batch_size]
            self.cursor += len(chunk)
            for i in chunk:
                try:
                    samples.append(self._sample(int(i)))
                except (VideoError, ValueError) as e:
                    if self.loader.on_error == "raise":
                        raise
                    self.dataset.skipped.add(self.loader.videos[int(i)].path, str(e))
        return tuple(list(col) for col in zip(*samples))
