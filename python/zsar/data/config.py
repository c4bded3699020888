"""Where a run's videos come from and how they are read, as a config dataclass (YAML/JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from .formats import FORMATS, get_format
from .formats.common import outside_root_allowed
from .records import VideoList

__all__ = ["DataConfig", "FORMATS"]


@dataclass
class DataConfig:
    """A dataset split on disk plus how its clips are read.

    ``format`` is a registered dataset format (:data:`FORMATS`: ``list``, ``ucf101``, ``hmdb51``,
    ``kinetics``, ``activitynet``, ``vggsound`` and any registered since). ``annotations`` is the
    format's annotation source: the list file (``list``), the folder with classInd/trainlist/testlist
    (``ucf101``) or the split files (``hmdb51``), the CSV (``kinetics``, ``vggsound``) or the JSON
    (``activitynet``), the class-per-subfolder video folder (``folder``; its ``split`` is a spec such
    as ``"test=0.2,val=0.1,seed=0"``, see :mod:`zsar.data.formats.folder`). ``root`` is the video folder. ``split``: 1-3 for UCF101/HMDB51, the split
    name for Kinetics/VGGSound. ``subset``: train/test (UCF101, HMDB51), training/validation
    (ActivityNet). ``classes``: a class-list file fixing label order (``list``, ``hmdb51``,
    ``kinetics``, ``activitynet``, ``vggsound``).
    """

    format: str = "list"
    annotations: str = ""
    root: str | None = None
    split: int | str | None = None
    subset: str = "train"
    classes: str | None = None
    stride: int = 1  # frames between sampled frames
    short_side: int | None = None  # resize before cropping (default: crop size * 8/7)
    backend: str = "auto"  # decoder: auto or a registered decoder (pyav, dali-cpu, dali-gpu)
    on_error: str = "skip"  # bad video files: skip (counted and logged) or raise
    on_missing: str = "error"  # files named by the annotations but absent: error or skip
    missing_audio: str = "zeros"  # videos without audio, for models that take audio: zeros, skip or error
    allow_outside_root: bool = False  # read annotation entries that resolve outside root (../, absolute paths)

    def __post_init__(self):
        get_format(self.format)  # ValueError listing the registered formats

    def read(self, subset: str | None = None) -> VideoList:
        """The split's :class:`VideoList` (``subset`` overrides :attr:`subset`)."""
        fmt = get_format(self.format)
        if not self.annotations:
            raise ValueError(f"data.annotations is not set ({fmt.annotations} for format {self.format!r})")
        if self.root is None and fmt.needs_root:
            raise ValueError(f"data.root (the video folder) is required for format {self.format!r}")
        fmt.check_options(self.split)  # (subset always has a value: a format without subsets reads all)
        with outside_root_allowed(self.allow_outside_root):
            return fmt.read(self.annotations, self.root, split=self.split, subset=subset or self.subset,
                            classes=self.classes, on_missing=self.on_missing)
