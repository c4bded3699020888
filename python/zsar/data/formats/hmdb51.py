"""HMDB51: ``<class>_test_splitN.txt`` files, 1 = train, 2 = test, 0 = unused (format name ``hmdb51``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..records import VideoList
from .common import (AnnotationError, ClassesArg, ClassLookup, PathLike, Pending, as_classes, check_split,
                     read_lines, resolve, unique_id)
from .registry import register_format


_HMDB_SUBSETS = {"train": "1", "test": "2", "unused": "0"}


def read_hmdb51(splits_dir: PathLike, root: PathLike, split: int = 1, subset: str = "train", *,
                classes: ClassesArg = None, check_files: bool = True, on_missing: str = "error",
                extensions: Iterable[str] | None = None) -> VideoList:
    """Read an HMDB51 split: ``splits_dir`` holds ``<class>_test_split{1,2,3}.txt`` files
    with lines ``video.avi 0|1|2`` (1 = train, 2 = test, 0 = unused); videos live under
    ``root/<class>/``. ``subset`` is ``"train"``, ``"test"`` or ``"unused"``.

    Classes are the sorted class names of the split files (HMDB's usual order), or
    ``classes`` (names or a class-list file) when given. ``video_id`` is the file stem.
    Lines are not comment-stripped: HMDB file names may start with ``#``.
    """
    split = check_split(split)
    if subset not in _HMDB_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_HMDB_SUBSETS)}, got {subset!r}")
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise FileNotFoundError(f"HMDB51 split directory not found: {splits_dir}")
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in splits_dir.iterdir() if p.name.endswith(suffix) and p.is_file())
    if not files:
        raise FileNotFoundError(f"no HMDB51 split files '<class>{suffix}' in {splits_dir}")
    file_classes = [p.name[: -len(suffix)] for p in files]
    class_list = as_classes(classes) or sorted(file_classes)
    lookup = ClassLookup(class_list)
    want = _HMDB_SUBSETS[subset]
    pending: list[Pending] = []
    seen: dict[str, str] = {}
    for path, cls in zip(files, file_classes):
        label = lookup.get(cls)
        if label is None:
            raise AnnotationError(path, None, f"class {cls!r} (from the file name) is not among "
                                              f"the {len(class_list)} given classes")
        for lineno, line in read_lines(path, "HMDB51 split file"):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(path, lineno, f"expected '<video.avi> 0|1|2', got {text!r}")
            name, flag = parts
            video_id = os.path.splitext(name)[0]
            unique_id(seen, video_id, f"{path.name}:{lineno}", path)
            if flag == want:
                pending.append(Pending(label, video_id, f"{path}:{lineno}", rel=f"{cls}/{name}"))
    return resolve(pending, root, class_list, source=f"{splits_dir}/*{suffix}",
                   check_files=check_files, on_missing=on_missing, extensions=extensions)


@register_format("hmdb51", splits=True, subsets=True, annotations="the folder with the <class>_test_splitN.txt files", needs_root=True)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_hmdb51(annotations, root, int(split or 1), subset, classes=classes, on_missing=on_missing)
