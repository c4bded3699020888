"""The records every dataset parser produces and every loader consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video file: ``label`` indexes the owning :class:`VideoList`'s ``classes``
    (-1 when unknown, e.g. files to predict on); ``video_id`` is unique within the list."""

    path: str
    label: int
    video_id: str


@dataclass
class VideoList:
    """A dataset split: its videos and the class names their labels index."""

    records: list[VideoRecord]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[VideoRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> VideoRecord:
        return self.records[i]

    @property
    def class_to_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def subset(self, class_names: Sequence[str]) -> "VideoList":
        """The videos of ``class_names`` only, relabelled 0..len(class_names)-1 in that order
        (how a zero-shot split keeps its seen or unseen classes)."""
        index = self.class_to_index
        missing = [c for c in class_names if c not in index]
        if missing:
            raise ValueError(f"subset: classes not in this list: {missing[:5]}")
        new = {index[c]: i for i, c in enumerate(class_names)}
        recs = [VideoRecord(r.path, new[r.label], r.video_id) for r in self.records if r.label in new]
        return VideoList(recs, list(class_names))
