"""The class-per-subfolder format (format name ``folder``): ``<folder>/<class>/<video>``, the layout
most collections already have, with no annotation file.

Two ways to split it:

* sub-folders ``<folder>/train/<class>/...``, ``<folder>/val/...``, ``<folder>/test/...``: ``subset``
  picks one (used whenever ``<folder>/<subset>/`` exists);
* a seeded fraction of one ``<folder>/<class>/...`` tree: ``split="test=0.2,val=0.1,seed=0"`` keeps
  the remaining share for ``train``; ``by=video`` (default) splits each class's videos (the same
  classes in every subset), ``by=class`` splits the classes themselves (disjoint seen and unseen
  classes, for zero-shot evaluation). The same spec and seed give the same split on any machine
  (the draw is a pure function of the sorted file names).

Without either, every subset is the whole folder (e.g. a folder of unseen classes to evaluate on).
Videos are the files whose extension is a video container's (:data:`~zsar.data.video.VIDEO_EXTENSIONS`,
or ``ext=mp4|webm`` in the spec), found at any depth under their class folder; hidden files and
folders are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..records import VideoList, VideoRecord
from ..video import VIDEO_EXTENSIONS
from .common import ClassesArg, PathLike, as_classes, check_on_missing, norm_exts
from .registry import register_format

__all__ = ["SUBSETS", "FolderSplit", "parse_folder_split", "read_video_folder"]

log = logging.getLogger(__name__)

#: The subsets a folder is split into (``all``: the whole folder).
SUBSETS = ("train", "val", "test", "all")


class FolderSplit:
    """A parsed ``split`` spec of the folder format (see the module docstring).

    Attributes:
        fractions: share of ``val`` and ``test`` (``train`` gets the rest).
        seed: the split's seed.
        by: ``video`` (stratified per class) or ``class``.
        extensions: video file extensions (None: :data:`VIDEO_EXTENSIONS`).
    """

    def __init__(self, val: float = 0.0, test: float = 0.0, seed: int = 0, by: str = "video",
                 extensions: Iterable[str] | None = None):
        for name, value in (("val", val), ("test", test)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"folder split: {name} must be a fraction in [0, 1), got {value}")
        if val + test >= 1.0:
            raise ValueError(f"folder split: val + test must leave some videos for train, got {val} + {test}")
        if by not in ("video", "class"):
            raise ValueError(f"folder split: by must be 'video' or 'class', got {by!r}")
        self.fractions = {"val": float(val), "test": float(test)}
        self.seed = int(seed)
        self.by = by
        self.extensions = norm_exts(extensions)

    @property
    def splits(self) -> bool:
        """Whether the spec splits at all (some val or test share)."""
        return any(self.fractions.values())


def parse_folder_split(spec: str | int | float | None) -> FolderSplit:
    """Parse ``"test=0.2,val=0.1,seed=0,by=video,ext=mp4|webm"`` (any subset of the keys; a bare
    number is the test share). ``ValueError`` naming the spec and what was expected otherwise."""
    if spec is None or spec == "":
        return FolderSplit()
    if isinstance(spec, (int, float)):
        return FolderSplit(test=float(spec))
    expected = "expected comma-separated key=value with keys val, test, seed, by, ext (e.g. 'test=0.2,seed=0')"
    try:
        return FolderSplit(test=float(spec))
    except ValueError:
        pass
    kwargs: dict = {}
    for part in str(spec).split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("val", "test", "seed", "by", "ext"):
            raise ValueError(f"folder split {spec!r}: {expected}")
        try:
            if key in ("val", "test"):
                kwargs[key] = float(value)
            elif key == "seed":
                kwargs[key] = int(value)
            elif key == "by":
                kwargs[key] = value
            else:
                kwargs["extensions"] = [e for e in value.split("|") if e]
        except ValueError:
            raise ValueError(f"folder split {spec!r}: {key}={value!r} is not a number; {expected}") from None
    return FolderSplit(**kwargs)


def _draw(seed: int, name: str) -> float:
    """A uniform number in [0, 1) from (seed, name) alone: the same on every machine and Python."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _assign(names: list[str], split: FolderSplit) -> dict[str, str]:
    """Subset of each name: ranked by the seeded draw, the first ``test`` share goes to test, the next
    ``val`` share to val (rounded, at least one each when the share is > 0 and two or more names exist)."""
    ranked = sorted(names, key=lambda n: (_draw(split.seed, n), n))
    counts = {}
    for subset in ("test", "val"):
        share = split.fractions[subset]
        k = round(share * len(ranked))
        counts[subset] = max(k, 1) if share > 0 and len(ranked) > 1 else k
    out, start = {}, 0
    for subset in ("test", "val"):
        for n in ranked[start:start + counts[subset]]:
            out[n] = subset
        start += counts[subset]
    for n in ranked[start:]:
        out[n] = "train"
    return out


def _class_videos(folder: Path, exts: tuple[str, ...]) -> dict[str, list[str]]:
    """Class folder name → its video files (paths relative to ``folder``, sorted)."""
    out = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.relpath(os.path.join(dirpath, f), folder) for f in filenames
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
        out[entry.name] = sorted(files)
    return out


def read_video_folder(folder: PathLike, subset: str = "all", *, split: str | FolderSplit | None = None,
                      classes: ClassesArg = None, extensions: Iterable[str] | None = None,
                      on_missing: str = "error") -> VideoList:
    """Read a class-per-subfolder video folder (see the module docstring).

    Args:
        folder: the folder whose sub-folders are the classes (or hold ``train/``, ``val/``, ``test/``).
        subset: ``train``, ``val``, ``test`` or ``all``.
        split: a split spec (:func:`parse_folder_split`) or :class:`FolderSplit`.
        classes: class names or a class-list file fixing the label order (default: the sorted class
            folder names of the subset); a folder absent from it is an error, a listed class without a
            folder is kept (no videos).
        extensions: video file extensions (default: the spec's, else every video container's).
        on_missing: ``error``: a class folder without videos is an error; ``skip``: it is dropped with a
            warning.

    Returns:
        A :class:`VideoList` with absolute paths; ``video_id`` is the path relative to ``folder``.
    """
    check_on_missing(on_missing)
    spec = split if isinstance(split, FolderSplit) else parse_folder_split(split)
    if subset not in SUBSETS:
        raise ValueError(f"folder format: subset must be one of {SUBSETS}, got {subset!r}")
    root = Path(os.path.abspath(os.fspath(folder)))
    if not root.is_dir():
        raise FileNotFoundError(f"folder format: {root} is not a directory (expected <folder>/<class>/<video>)")
    exts = norm_exts(extensions) or spec.extensions or VIDEO_EXTENSIONS
    has_subfolders = subset != "all" and (root / subset).is_dir()
    if has_subfolders:
        if spec.splits:
            raise ValueError(f"folder format: {root} has a {subset}/ sub-folder; a split spec ({split!r}) "
                             f"would split it again: give one or the other")
        by_class = _class_videos(root / subset, exts)
        by_class = {name: [os.path.join(subset, f) for f in files] for name, files in by_class.items()}
    else:
        by_class = _class_videos(root, exts)
        if subset != "all" and not spec.splits:
            log.info("folder format: %s has no %s/ sub-folder and no split spec: %s is the whole folder",
                     root, subset, subset)
    empty = [name for name, files in by_class.items() if not files]
    if empty:
        msg = (f"folder format: {len(empty)} class folder(s) under {root} hold no video file "
               f"({', '.join(exts)}): {', '.join(empty[:5])}")
        if on_missing == "error":
            raise FileNotFoundError(msg + "; pass on_missing='skip' to drop them, or ext= in the split spec")
        log.warning("%s; dropped them", msg)
        by_class = {name: files for name, files in by_class.items() if files}
    if not by_class:
        raise FileNotFoundError(f"folder format: no class sub-folders with videos under {root}")

    if spec.splits and subset != "all" and not has_subfolders:
        if spec.by == "class":
            keep = _assign(list(by_class), spec)
            by_class = {name: files for name, files in by_class.items() if keep[name] == subset}
        else:
            by_class = {name: [f for f, s in _assign(files, spec).items() if s == subset]
                        for name, files in by_class.items()}
    class_list = as_classes(classes)
    if class_list is None:
        class_list = sorted(name for name, files in by_class.items() if files)
    index = {name: i for i, name in enumerate(class_list)}
    unknown = [name for name in by_class if by_class[name] and name not in index]
    if unknown:
        raise ValueError(f"folder format: class folder(s) {unknown[:5]} under {root} are not in the class list "
                         f"({len(class_list)} classes)")
    records = [VideoRecord(str(root / f), index[name], f) for name in sorted(by_class) for f in sorted(by_class[name])]
    return VideoList(records, list(class_list))


@register_format("folder", splits=True, subsets=True, annotations="the folder of <class>/<video> sub-folders (or train/ val/ test/ of them); "
                                       "split: 'test=0.2,val=0.1,seed=0,by=video|class,ext=mp4|webm'",
                 needs_root=False)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    folder = annotations if not root else os.path.join(root, annotations)
    return read_video_folder(folder, subset, split=split, classes=classes, on_missing=on_missing)
