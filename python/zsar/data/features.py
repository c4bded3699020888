"""Precomputed per-video features as model input: the dataset behind feature-input models.

:class:`AVCAFeatureDataset` serves a :class:`~zsar.data.records.VideoList` read by
:func:`zsar.data.formats.read_avca_features` (records naming an ``.h5`` class file and a ``video_urls``
entry) as :class:`~zsar.data.batch.Sample` s: ``clip`` the video features ``(T, F_v)`` (``T = 1`` for the
released per-video averages, one row per segment for ``(N, T, F)`` files) and ``audio`` the audio
features ``(T, F_a)``. A class file's ``data`` is kept in memory after its first read while the cache
stays under ``cache_bytes``, so small corpora (UCF-GZSL) are read once; beyond that, rows are read on
demand (VGGSound-GZSL is never loaded whole): through a memory map of the file when ``data`` is stored
contiguous and uncompressed (how the release's ``create_dataset(data=...)`` writes it), else through h5py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .batch import Sample, collate
from .formats.avca_features import FEATURE_MODALITIES, check_feature_data, check_feature_modalities, decode_video_urls
from .records import VideoList

__all__ = ["AVCAFeatureDataset"]


def _modality_file(path: str, modality: str) -> str:
    """``.../features/<name>/<m>/<stage>/<Class>.h5`` of another modality ``m``."""
    p = Path(path)
    return str(p.parents[2] / modality / p.parent.name / p.name)


class AVCAFeatureDataset(Dataset):
    """Map-style dataset of released AVCA-GZSL features (see the module docstring).

    Args:
        videos: records from :func:`zsar.data.formats.read_avca_features` (``path`` is the class file of
            the first modality read, ``video_id`` its ``video_urls`` entry).
        modalities: ``("video", "audio")`` (MZST on features), ``("video",)`` (ResT on features).
        cache_bytes: keep whole class files in memory while their total stays under this (0: never).

    Raises:
        ValueError: a record whose video is not in its file's ``video_urls``.
    """

    collate_fn = staticmethod(collate)

    def __init__(self, videos: VideoList, modalities: Sequence[str] = FEATURE_MODALITIES, *,
                 cache_bytes: int = 512 << 20):
        import h5py  # noqa: F401  (fail here, not in a worker, when it is not installed)

        self.videos = videos
        self.modalities = check_feature_modalities(modalities)
        self.cache_bytes = int(cache_bytes)
        rows: dict[str, dict[str, int]] = {}
        # Per video, (file, row) of each modality: the files of a class list the same videos (checked when
        # read), but a list read with on_missing="skip" may hold files whose orders differ.
        self._index: list[tuple[tuple[str, int], ...]] = []
        for r in videos.records:
            where = []
            for m in self.modalities:
                path = r.path if m == self.modalities[0] else _modality_file(r.path, m)
                if path not in rows:
                    rows[path] = self._rows(path)
                row = rows[path].get(r.video_id)
                if row is None:
                    raise ValueError(f"{path}: video {r.video_id!r} is not in its video_urls")
                where.append((path, row))
            self._index.append(tuple(where))
        self._files: dict[str, object] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._cached = 0
        self._pid = os.getpid()

    @staticmethod
    def _rows(path: str) -> dict[str, int]:
        # deferred: h5py (~0.1 s) is needed only for HDF5 feature files
        import h5py

        with h5py.File(path, "r") as f:
            return {u: i for i, u in enumerate(decode_video_urls(f["video_urls"][()], path))}

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self):  # DataLoader workers reopen the files themselves
        state = dict(self.__dict__)
        state.update(_files={}, _cache={}, _cached=0)
        return state

    def _data(self, path: str):
        """The ``data`` of a class file: an in-memory array, or the open h5py dataset."""
        # deferred: h5py (~0.1 s) is needed only for HDF5 feature files
        import h5py

        if os.getpid() != self._pid:  # a forked worker: never share the parent's HDF5 handles
            self._files, self._pid = {}, os.getpid()
        if path in self._cache:
            return self._cache[path]
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        data = self._files[path]["data"]
        check_feature_data(data, path)  # before any byte of it is mapped as that dtype
        size = data.size * data.dtype.itemsize
        if self._cached + size <= self.cache_bytes:
            self._cache[path] = data[()]
            self._cached += size
            return self._cache[path]
        offset = data.id.get_offset()
        if offset is not None and data.chunks is None and data.compression is None and data.dtype.isnative:
            # Contiguous and uncompressed (as h5py writes the release's arrays): map the bytes, read pages on demand.
            mapped = np.memmap(path, dtype=data.dtype, mode="r", offset=offset, shape=data.shape)
            self._cache[path] = mapped  # costs address space, not memory
            return mapped
        return data

    def _row(self, path: str, row: int) -> torch.Tensor:
        x = torch.from_numpy(np.array(self._data(path)[row], dtype=np.float32))  # a copy: maps are read-only
        return x[None] if x.dim() == 1 else x  # one token per video for averaged features

    def __getitem__(self, i: int) -> Sample:
        record = self.videos.records[i]
        feats = {m: self._row(path, row) for m, (path, row) in zip(self.modalities, self._index[i])}
        return Sample(clip=feats.get("video", feats[self.modalities[0]]), label=record.label,
                      audio=feats.get("audio"), audio_present=True, video_id=record.video_id, position=i)

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{modality: (T, F)}`` of the first video (what a feature-input model must be built for)."""
        if not self._index:
            raise ValueError("no videos")
        sample = self[0]
        shapes = {"video": tuple(sample.clip.shape)} if "video" in self.modalities else {}
        if sample.audio is not None:
            shapes["audio"] = tuple(sample.audio.shape)
        return shapes

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

