"""The AVCA-GZSL benchmark's class (and per-video) splits, applied to a list read by one of the formats."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..records import VideoList
from .common import AnnotationError, PathLike, match_class_names, open_csv, read_class_list

logger = logging.getLogger(__name__)


#: The six stages of the AVCA-GZSL protocol, each one class-list file in a split directory.
AVCA_STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_train",
               "stage_2_test_seen", "stage_2_test_unseen")


def _avca_file(split_dir: Path, stage: str, ext: str) -> Path:
    if stage not in AVCA_STAGES:
        raise ValueError(f"stage must be one of {AVCA_STAGES}, got {stage!r}")
    return split_dir / f"{stage}{ext}"


def read_avca_classes(split_dir: PathLike, stage: str) -> list[str]:
    """The class names (AVCA spelling, file order) of one stage: ``split_dir/<stage>.txt``,
    where ``split_dir`` is e.g. ``avgzsl_splits/UCF/main_split`` or ``.../cls_split`` and
    ``stage`` one of :data:`AVCA_STAGES`."""
    split_dir = Path(split_dir)
    path = _avca_file(split_dir, stage, ".txt")
    if not path.is_file():
        hint = ""
        for sub in ("main_split", "cls_split"):
            if (split_dir / sub / path.name).is_file():
                hint = f" (did you mean {split_dir / sub}?)"
                break
        raise FileNotFoundError(f"AVCA stage class list not found: {path}{hint}")
    return read_class_list(path)


def _avca_videos(path: Path) -> set[str]:
    """The ``filename`` column of an AVCA per-stage CSV (its per-video split)."""
    with open_csv(path, "AVCA stage CSV") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "filename" not in header:
            raise AnnotationError(path, 1, f"expected a header with a 'filename' column, "
                                           f"got {header}")
        k = header.index("filename")
        out = set()
        for fields in reader:
            if len(fields) <= k:
                if any(x.strip() for x in fields):
                    raise AnnotationError(path, reader.line_num, f"too few fields: {fields}")
                continue
            out.add(fields[k].strip())
    return out


def read_avca_split(videos: VideoList, split_dir: PathLike, stage: str | Sequence[str], *,
                    video_lists: bool | str = "auto") -> VideoList:
    """The part of ``videos`` (a whole dataset: all its classes) that an AVCA-GZSL stage uses.

    ``split_dir`` is a split directory such as ``avgzsl_splits/UCF/main_split`` (or
    ``cls_split``) holding one class per line in ``<stage>.txt``; ``stage`` is one of
    :data:`AVCA_STAGES` or a list of them (e.g. ``["stage_2_test_seen",
    "stage_2_test_unseen"]`` for the GZSL test search space). The stage's class names are
    matched to ``videos.classes`` in the dataset's own spelling (see
    :func:`match_class_names`; unmatched names are a ``ValueError`` listing them) and the
    result is ``videos.subset`` of those classes: labels are re-indexed 0.. in stage-file
    order, stages concatenated in the order given.

    Seen stages share their classes (``stage_1_train`` and ``stage_1_val_seen`` list the same
    classes), so the class files alone cannot separate their videos. The original AVCA
    release also ships per-video lists ``<stage>.csv`` (a ``filename`` column: UCF
    ``v_..._gXX_cXX``, VGGSound ``<id>_<start:06d>``, ActivityNet ``<id>_<segment>``).
    ``video_lists="auto"`` uses them when they are next to the ``.txt`` files, ``True``
    requires them, ``False`` ignores them. A record is kept when its ``video_id`` or file stem
    is listed (for ActivityNet, a listed segment of it); listed videos absent from ``videos``
    are logged as a count.
    """
    split_dir = Path(split_dir)
    stages = [stage] if isinstance(stage, str) else list(stage)
    if not stages:
        raise ValueError("stage: give at least one AVCA stage")
    if video_lists not in (True, False, "auto"):
        raise ValueError(f"video_lists must be True, False or 'auto', got {video_lists!r}")
    names: list[str] = []
    for s in stages:
        src = _avca_file(split_dir, s, ".txt")
        for c in match_class_names(read_avca_classes(split_dir, s), videos.classes,
                                   source=str(src)):
            if c not in names:
                names.append(c)
    result = videos.subset(names)
    csvs = [_avca_file(split_dir, s, ".csv") for s in stages]
    if video_lists is True:
        absent = [str(p) for p in csvs if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"AVCA per-video stage lists not found: {absent}")
    if video_lists is False or not all(p.is_file() for p in csvs):
        if video_lists == "auto" and any(p.is_file() for p in csvs):
            logger.warning("%s: only some of the stages %s have per-video CSVs; using classes "
                           "only", split_dir, stages)
        return result
    listed: set[str] = set()
    for p in csvs:
        listed |= _avca_videos(p)
    # ActivityNet lists temporal segments "<id>_<k>" of one video record "<id>".
    segment_of = {re.sub(r"_\d+$", "", n) for n in listed}
    matched_names: set[str] = set()
    keep = []
    for r in result.records:
        keys = (r.video_id, os.path.splitext(os.path.basename(r.path))[0])
        hit = next((k for k in keys if k in listed), None)
        if hit is None:
            bare = r.video_id.removeprefix("v_")
            hit = next((k for k in (r.video_id, bare) if k in segment_of), None)
        if hit is not None:
            keep.append(r)
            matched_names.add(hit)
    unused = len(listed) - sum(1 for n in listed
                               if n in matched_names or re.sub(r"_\d+$", "", n) in matched_names)
    if unused:
        logger.warning("%s: %d of %d videos listed for %s are not in the given list (not "
                       "downloaded?)", split_dir, unused, len(listed), "+".join(stages))
    return VideoList(keep, result.classes)


def read_avca_word_names(csv_path: PathLike) -> dict[str, str]:
    """The AVCA ``*_w2v_class_names.csv`` map (``original,manual[,category]``): each class
    name in AVCA spelling → the words used for its word embedding."""
    out: dict[str, str] = {}
    with open_csv(csv_path, "AVCA word-name CSV") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "original" not in header or "manual" not in header:
            raise AnnotationError(csv_path, 1, f"expected a header with 'original' and 'manual' "
                                               f"columns, got {header}")
        io, im = header.index("original"), header.index("manual")
        for fields in reader:
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) <= max(io, im):
                raise AnnotationError(csv_path, reader.line_num, f"too few fields: {fields}")
            out[fields[io].strip()] = fields[im].strip()
    return out
