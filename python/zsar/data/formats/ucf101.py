"""UCF101: ``classInd.txt`` plus ``trainlist0N.txt`` / ``testlist0N.txt`` (format name ``ucf101``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..records import VideoList
from .common import MAX_SHOWN, AnnotationError, PathLike, Pending, check_split, read_lines, resolve, unique_id
from .registry import register_format


def read_ucf101(splits_dir: PathLike, root: PathLike, split: int = 1, subset: str = "train", *,
                check_files: bool = True, on_missing: str = "error",
                extensions: Iterable[str] | None = None) -> VideoList:
    """Read a UCF101 split: ``splits_dir`` holds ``classInd.txt`` (``1 ApplyEyeMakeup``,
    1-based) and ``trainlist0{1,2,3}.txt`` (``Class/v_Class_g08_c01.avi 1``) /
    ``testlist0{1,2,3}.txt`` (``Class/v_Class_g01_c01.avi``; the label comes from the class
    folder). ``root`` is the folder holding the class folders (``UCF-101/``).

    Classes are in ``classInd`` order; labels are 0-based. A train-list label must agree with
    its folder (compared case-insensitively: the official lists write
    ``HandstandPushups/v_HandStandPushups_...``). ``video_id`` is the file stem
    (``v_ApplyEyeMakeup_g08_c01``), as in the AVCA per-video split files.
    """
    split = check_split(split)
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    splits_dir = Path(splits_dir)
    ind_file = splits_dir / "classInd.txt"
    numbered: dict[int, tuple[str, int]] = {}
    for lineno, line in read_lines(ind_file, "UCF101 class index (classInd.txt)"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(ind_file, lineno, f"expected '<index> <ClassName>', got {line!r}")
        k = int(parts[0])
        if k in numbered:
            raise AnnotationError(ind_file, lineno, f"index {k} repeats line {numbered[k][1]}")
        numbered[k] = (parts[1], lineno)
    if not numbered:
        raise AnnotationError(ind_file, None, "holds no classes (expected '<index> <ClassName>' lines)")
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise AnnotationError(ind_file, None, f"indices must be 1..{len(numbered)} without gaps, "
                                              f"got {sorted(numbered)[:MAX_SHOWN]}...")
    classes = [numbered[k][0] for k in range(1, len(numbered) + 1)]
    by_folder = {c.casefold(): i for i, c in enumerate(classes)}

    list_file = splits_dir / f"{subset}list0{split}.txt"
    pending: list[Pending] = []
    seen: dict[str, str] = {}
    for lineno, line in read_lines(list_file, f"UCF101 {subset} list"):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0].replace("\\", "/")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
            raise AnnotationError(list_file, lineno, f"expected '<Class/file.avi> [<index>]', "
                                                     f"got {line.strip()!r}")
        folder = rel.split("/")[0] if "/" in rel else None
        from_folder = by_folder.get(folder.casefold()) if folder is not None else None
        if folder is not None and from_folder is None:
            raise AnnotationError(list_file, lineno, f"class folder {folder!r} is not in "
                                                     f"{ind_file.name}")
        if len(parts) == 2:
            k = int(parts[1])
            if not 1 <= k <= len(classes):
                raise AnnotationError(list_file, lineno, f"label {k} out of range 1..{len(classes)}")
            label = k - 1
            if from_folder is not None and from_folder != label:
                raise AnnotationError(list_file, lineno, f"label {k} ({classes[label]}) disagrees "
                                                         f"with the folder {folder!r}")
        elif from_folder is not None:
            label = from_folder
        else:
            raise AnnotationError(list_file, lineno, f"no label and no class folder in {rel!r}")
        video_id = os.path.splitext(os.path.basename(rel))[0]
        unique_id(seen, video_id, f"line {lineno}", list_file)
        pending.append(Pending(label, video_id, f"{list_file}:{lineno}", rel=rel))
    if not pending:
        raise AnnotationError(list_file, None, "lists no videos (the file is empty or holds only blank lines)")
    return resolve(pending, root, classes, source=str(list_file), check_files=check_files,
                   on_missing=on_missing, extensions=extensions)


@register_format("ucf101", splits=True, subsets=True, annotations="the folder with classInd.txt and trainlist0N.txt / testlist0N.txt",
                 needs_root=True)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_ucf101(annotations, root, int(split or 1), subset, on_missing=on_missing)
