"""The one batch type that every loader path yields and every model consumes.

A :class:`Sample` is one video as a dataset item; :func:`collate` stacks samples into a
:class:`Batch`, dropping the ``None`` that a skipped bad file leaves. Fields a model does not ask for
(see :class:`zsar.models.ModelInputs`) stay ``None``; the trainer fills the label words.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["Batch", "Sample", "collate", "as_batch"]


@dataclass
class Sample:
    """One video: ``clip`` ``(T, 3, H, W)`` (or ``(N, T, 3, H, W)`` for N clips, or ``(T, p)``
    features), its class index ``label`` (-1 when unknown), optional AST log-mel ``audio``
    ``(frames, mel_bins)`` with ``audio_present`` False when the file had no audio track (the
    features are then zeros), its ``video_id`` and ``position`` in the source list, and
    ``video_label_embedding`` ``(E,)``: the label embedding phi(s_v) of the class a pretrained video
    classifier gave the video (the MZST paper's Eq. 4), None when it has none."""

    clip: torch.Tensor
    label: int
    audio: torch.Tensor | None = None
    audio_present: bool = True
    video_id: str = ""
    position: int = -1
    video_label_embedding: torch.Tensor | None = None


@dataclass
class Batch:
    """A batch of videos.

    Attributes:
        clips: ``(B, *clip shape)`` model input (see :class:`Sample`).
        labels: ``(B,)`` int64 class indices into the dataset's classes (-1: unknown).
        audio: ``(B, frames, mel_bins)`` float AST input, or None when not requested.
        audio_present: ``(B,)`` bool, False where the video had no audio track (its ``audio`` is zeros).
        word_ids: ``(B, W)`` int64 label word ids, or None (filled by the trainer for models whose
            inputs ask for label words).
        n_words: ``(B,)`` int32 number of valid words in each row of ``word_ids``.
        video_ids: the videos' ids (empty when the source has none).
        positions: ``(B,)`` int64 positions in the source list, or None.
        video_label_embedding: ``(B, E)`` float phi(s_v), the label embedding of each video's class
            as a pretrained video classifier predicts it (zeros where a video has none), or None.
        video_label_present: ``(B,)`` bool, False where ``video_label_embedding`` is only a placeholder.
    """

    clips: torch.Tensor
    labels: torch.Tensor
    audio: torch.Tensor | None = None
    audio_present: torch.Tensor | None = None
    word_ids: torch.Tensor | None = None
    n_words: torch.Tensor | None = None
    video_ids: list[str] = field(default_factory=list)
    positions: torch.Tensor | None = None
    video_label_embedding: torch.Tensor | None = None
    video_label_present: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device``."""
        moved = {f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                 for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}
        return Batch(**moved)

    def pin_memory(self) -> "Batch":
        """A copy with every CPU tensor in pinned (page-locked) memory: what a ``DataLoader`` with
        ``pin_memory=True`` calls, so that the copy to the GPU can run without blocking."""
        pinned = {f.name: (v.pin_memory() if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v)
                  for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}
        return Batch(**pinned)

    def replace(self, **changes: Any) -> "Batch":
        """A copy with ``changes`` applied (e.g. ``word_ids=...``)."""
        return dataclasses.replace(self, **changes)


def collate(samples: Sequence[Sample | None]) -> Batch | None:
    """Stacks samples into a :class:`Batch`; ``None`` entries (skipped bad files) are dropped, and a
    batch of nothing but skipped files collates to ``None``."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    with_audio = [s.audio is not None for s in kept]
    if any(with_audio) and not all(with_audio):
        raise ValueError("collate: some samples carry audio and others do not")
    audio = torch.stack([s.audio for s in kept]) if with_audio[0] else None
    video_label, video_label_present = _stack_video_labels(kept)
    return Batch(
        clips=torch.stack([s.clip for s in kept]),
        labels=torch.tensor([int(s.label) for s in kept], dtype=torch.int64),
        audio=audio,
        audio_present=torch.tensor([bool(s.audio_present) for s in kept]) if audio is not None else None,
        video_ids=[s.video_id for s in kept],
        positions=torch.tensor([int(s.position) for s in kept], dtype=torch.int64),
        video_label_embedding=video_label,
        video_label_present=video_label_present,
    )


def _stack_video_labels(samples: Sequence[Sample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(B, E)`` phi(s_v) with zeros where a sample has none, and the ``(B,)`` presence mask; both
    None when no sample has one."""
    given = [s.video_label_embedding for s in samples if s.video_label_embedding is not None]
    if not given:
        return None, None
    shapes = {tuple(e.shape) for e in given}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"collate: video_label_embedding must be one (E,) vector per sample, got shapes {sorted(shapes)}")
    zero = torch.zeros_like(given[0])
    stacked = torch.stack([zero if s.video_label_embedding is None else s.video_label_embedding for s in samples])
    return stacked, torch.tensor([s.video_label_embedding is not None for s in samples])


def as_batch(item: Any) -> Batch | None:
    """A :class:`Batch` from what a loader yielded: a Batch, ``None`` (every file skipped), or the
    ``(clips, labels)`` pair that a plain ``DataLoader`` over ``(clip, label)`` items gives."""
    if item is None or isinstance(item, Batch):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 2:
        clips, labels = item
        return Batch(clips=torch.as_tensor(clips), labels=torch.as_tensor(labels, dtype=torch.int64))
    raise TypeError(f"expected a zsar.data.Batch or a (clips, labels) pair from the loader, got {type(item).__name__}")
