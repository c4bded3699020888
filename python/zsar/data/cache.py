"""Decoded media kept in memory: every frame of each video, and the audio features of each clip window.

For many short epochs over a few hundred small videos (the demos' benchmarks), decoding costs more
than training: a 24-frame VP9 video takes longer to decode than its clip takes to train on, and its
audio window longer still. :class:`MediaCache` decodes every file once, and
:class:`CachedClipDataset` plans and transforms clips exactly as :class:`~zsar.data.VideoClipDataset`
does, reading from the cache, so a cached sample equals an uncached one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .decoders import read_frames
from .loader import VideoClipDataset, clip_audio, clip_centre_seconds
from .transforms import ClipSpec, apply_plan

__all__ = ["MediaCache", "CachedClipDataset"]


class MediaCache:
    """Every frame of each video file, decoded once, and the audio features of each clip window.

    Decoding dominates a CPU epoch of a small model: a 24-frame VP9 video takes longer to decode
    than its clip takes to train on, and its audio window longer still. Frames are decoded through
    :func:`zsar.data.read_frames`; audio features through :func:`zsar.data.loader.clip_audio`, keyed
    by the clip's centre (the window is centred there), so a cached sample equals an uncached one.
    """

    def __init__(self, backend: str):
        self.backend = backend
        self.frames: dict[str, torch.Tensor] = {}
        self.audio: dict[tuple, tuple[torch.Tensor, bool]] = {}

    def get(self, path: str, info) -> torch.Tensor:
        """All frames of ``path`` ``(T, H, W, 3)`` uint8."""
        frames = self.frames.get(path)
        if frames is None:
            frames = read_frames(path, np.arange(info.num_frames), self.backend, device="cpu", info=info)
            self.frames[path] = frames
        return frames

    def get_audio(self, path: str, info, plan, spec, missing: str) -> tuple[torch.Tensor, bool]:
        """``(features, present)`` of the audio window of clip ``plan`` (see :func:`clip_audio`)."""
        key = (path, clip_centre_seconds(plan, info), spec, missing)
        found = self.audio.get(key)
        if found is None:
            found = self.audio[key] = clip_audio(path, info, plan, spec, missing)
        return found

    def fill(self, datasets: Sequence["CachedClipDataset"], workers: int, progress: bool,
             epochs: Iterable[int] = (0,)) -> None:
        """Decodes every video of ``datasets`` and, for those that load audio, the audio window of
        each of their clips in ``epochs`` (threads: FFmpeg decodes without holding the GIL)."""
        epochs = list(epochs)
        frames, windows = {}, {}
        for ds in datasets:
            for i, record in enumerate(ds.videos):
                frames.setdefault(record.path, (ds, i))
                if ds.audio is not None:
                    info = ds.info(i)
                    for epoch in epochs:
                        plan = ds.plan(i, epoch)
                        windows.setdefault((record.path, clip_centre_seconds(plan, info)), (ds, i, plan))
        bar = tqdm(total=len(frames) + len(windows), desc="decoding videos", unit="file", disable=not progress,
                   dynamic_ncols=True)

        def video(item):
            ds, i = item
            self.get(ds.videos[i].path, ds.info(i))

        def audio(item):
            ds, i, plan = item
            self.get_audio(ds.videos[i].path, ds.info(i), plan, ds.audio, ds.policy.missing_audio)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for work, items in ((video, frames.values()), (audio, windows.values())):
                for _ in pool.map(work, items):
                    bar.update(1)
        bar.close()


class CachedClipDataset(VideoClipDataset):
    """:class:`~zsar.data.VideoClipDataset` whose videos (and audio windows) are decoded once into a
    shared :class:`MediaCache`; clips are then planned and transformed exactly as the uncached
    dataset does (same :func:`~zsar.data.plan_clip` draws for a given seed, epoch and index)."""

    def __init__(self, videos, spec: ClipSpec, cache: MediaCache, seed: int = 0, audio=None):
        super().__init__(videos, spec, backend=cache.backend, seed=seed, audio=audio)
        self.cache = cache

    def load(self, i: int, epoch: int | None = None) -> torch.Tensor:
        plan = self.plan(i, epoch)
        frames = self.cache.get(self.videos[i].path, self.info(i))
        return apply_plan(frames[torch.from_numpy(plan.indices.ravel())], plan, self.spec)

    def load_audio(self, i: int, epoch: int | None = None) -> tuple[torch.Tensor, bool]:
        if self.audio is None:
            return super().load_audio(i, epoch)  # raises: this dataset loads no audio
        return self.cache.get_audio(self.videos[i].path, self.info(i), self.plan(i, epoch), self.audio,
                                    self.policy.missing_audio)
