"""Where a run's videos come from and how they are read, as a config dataclass (YAML/JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from .records import VideoList

FORMATS = ("list", "ucf101", "hmdb51", "kinetics", "activitynet", "vggsound")


@dataclass
class DataConfig:
    """A dataset split on disk plus how its clips are read.

    ``annotations`` is the format's annotation source: the list file (``list``), the folder with
    classInd/trainlist/testlist (``ucf101``) or the split files (``hmdb51``), the CSV (``kinetics``,
    ``vggsound``) or the JSON (``activitynet``). ``root`` is the video folder. ``split``: 1-3 for
    UCF101/HMDB51, the split name for Kinetics/VGGSound. ``subset``: train/test (UCF101, HMDB51),
    training/validation (ActivityNet). ``classes``: a class-list file fixing label order (``list``,
    ``hmdb51``, ``kinetics``, ``activitynet``, ``vggsound``).
    """

    format: str = "list"
    annotations: str = ""
    root: str | None = None
    split: int | str | None = None
    subset: str = "train"
    classes: str | None = None
    stride: int = 1  # frames between sampled frames
    short_side: int | None = None  # resize before cropping (default: crop size * 8/7)
    backend: str = "auto"  # decoder: auto, pyav, dali-cpu, dali-gpu
    on_error: str = "skip"  # bad video files: skip (counted and logged) or raise
    on_missing: str = "error"  # files named by the annotations but absent: error or skip

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")

    def read(self, subset: str | None = None) -> VideoList:
        """The split's :class:`VideoList` (``subset`` overrides :attr:`subset`)."""
        from . import datasets as ds

        if not self.annotations:
            raise ValueError("data.annotations is not set (the list file, splits folder, CSV or JSON)")
        subset = subset or self.subset
        common = {"on_missing": self.on_missing}
        if self.format == "list":
            return ds.read_video_list(self.annotations, self.root, classes=self.classes, **common)
        if self.root is None:
            raise ValueError(f"data.root (the video folder) is required for format {self.format!r}")
        if self.format == "ucf101":
            return ds.read_ucf101(self.annotations, self.root, int(self.split or 1), subset, **common)
        if self.format == "hmdb51":
            return ds.read_hmdb51(self.annotations, self.root, int(self.split or 1), subset, classes=self.classes,
                                  **common)
        if self.format == "kinetics":
            split = None if self.split is None else str(self.split)
            return ds.read_kinetics(self.annotations, self.root, split=split, classes=self.classes, **common)
        if self.format == "activitynet":
            return ds.read_activitynet(self.annotations, self.root, subset, classes=self.classes, **common)
        split = None if self.split is None else str(self.split)
        return ds.read_vggsound(self.annotations, self.root, split, classes=self.classes, **common)
