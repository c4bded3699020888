"""phi(s_v) for MZST's semantic loss (the MZST paper, Eq. 4): the class a pretrained video classifier
gives each video, s_v, embedded by the same label embedder as the classes.

The labels live in a CSV with the columns ``video_id`` and ``video_label`` (an annotation file that
already has the column, or the cache that :func:`zsar.models.video_labels.label_videos` writes once
per dataset). :class:`WithVideoLabels` attaches their embeddings to a dataset's samples, so that
every batch carries ``video_label_embedding`` (:class:`~zsar.data.Batch`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .batch import Sample, collate

__all__ = ["read_video_labels", "write_video_labels", "embed_video_labels", "WithVideoLabels"]

COLUMNS = ("video_id", "video_label")


def read_video_labels(path: str | Path) -> dict[str, str]:
    """``{video_id: video_label}`` from a CSV with (at least) the columns ``video_id`` and
    ``video_label``; rows with an empty label are left out (no phi(s_v) for that video)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video labels: {path} is not a file")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"video labels: {path} needs the columns {','.join(COLUMNS)}, got {reader.fieldnames}")
        return {row["video_id"]: row["video_label"] for row in reader if row["video_label"]}


def write_video_labels(path: str | Path, labels: Mapping[str, str]) -> None:
    """Writes ``{video_id: video_label}`` as a ``video_id,video_label`` CSV (a new file, then renamed
    into place: a crash leaves the old file or none)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(sorted(labels.items()))
    os.replace(tmp, path)


def embed_video_labels(labels: Mapping[str, str], embedder) -> dict[str, torch.Tensor]:
    """``{video_id: phi(video_label)}`` float32 ``(E,)``: each distinct label embedded once by
    ``embedder`` (the one that embeds the classes, so phi(s_v) and phi(s_t) share a space)."""
    names = sorted(set(labels.values()))
    vectors = np.asarray(embedder.embed(names), dtype=np.float32) if names else np.zeros((0, 0), np.float32)
    by_name = {name: torch.from_numpy(vectors[i].copy()) for i, name in enumerate(names)}
    return {video_id: by_name[label] for video_id, label in labels.items()}


class WithVideoLabels(torch.utils.data.Dataset):
    """A map-style dataset of :class:`~zsar.data.Sample` s whose samples also carry phi(s_v)
    (``video_label_embedding``) where ``embeddings`` has their ``video_id``.

    Args:
        dataset: e.g. a :class:`zsar.data.VideoClipDataset`.
        embeddings: ``{video_id: (E,) tensor}`` (:func:`embed_video_labels`).
    """

    def __init__(self, dataset, embeddings: Mapping[str, torch.Tensor]):
        self.dataset, self.embeddings = dataset, dict(embeddings)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i) -> Sample | None:
        sample = self.dataset[i]
        if sample is not None and sample.video_id in self.embeddings:
            sample.video_label_embedding = self.embeddings[sample.video_id]
        return sample

    def collate_fn(self, samples):
        return getattr(self.dataset, "collate_fn", collate)(samples)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:  # skipped-file logs and the like of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
