"""VGGSound CSV: ``youtube_id,start_seconds,label,split`` (format name ``vggsound``)."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from ..records import VideoList
from .common import (AnnotationError, ClassesArg, ClipRow, PathLike, as_classes, clip_rows_to_list, norm_split,
                     open_csv, whole_seconds)
from .registry import register_format


_VGG_HEADER = ("youtube_id", "start_seconds", "label", "split")


def read_vggsound(csv_path: PathLike, root: PathLike, split: str | None = None, *,
                  classes: ClassesArg = None, check_files: bool = True, on_missing: str = "error",
                  extensions: Iterable[str] | None = None) -> VideoList:
    """Read the VGGSound CSV: no header, rows ``youtube_id,start_seconds,label,split`` with
    split ``train`` / ``test`` (labels with commas are quoted). A header row naming those
    columns is accepted too (the AVCA per-stage CSVs have one, plus extra columns).

    Files are ``{youtube_id}_{start:06d}.<ext>`` (or ``..._{start:06d}_{end:06d}.<ext>``)
    anywhere under ``root``. ``split`` keeps that split (None: all rows). Classes:
    ``classes`` (names or a class-list file), else the sorted labels of the whole CSV.
    ``video_id`` is ``{youtube_id}_{start:06d}``; a repeated clip with the same label is
    dropped (logged), with another label an error.
    """
    class_list = as_classes(classes)
    want = norm_split(split)
    rows: list[ClipRow] = []
    with open_csv(csv_path, "VGGSound CSV") as f:
        reader = csv.reader(f)
        col = {name: i for i, name in enumerate(_VGG_HEADER)}
        first = True
        for fields in reader:
            lineno = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if first:
                first = False
                names = [x.strip().lower().lstrip("# ").replace(" ", "_") for x in fields]
                if names[0] in ("youtube_id", "ytid"):
                    names[0] = "youtube_id"
                    if not all(c in names for c in _VGG_HEADER):
                        raise AnnotationError(csv_path, lineno, f"header must name the columns "
                                                                f"{list(_VGG_HEADER)}, got {fields}")
                    col = {c: names.index(c) for c in _VGG_HEADER}
                    continue
            if len(fields) <= max(col.values()):
                raise AnnotationError(csv_path, lineno, f"expected youtube_id,start_seconds,"
                                                        f"label,split; got {fields}")
            ytid = fields[col["youtube_id"]].strip()
            label = fields[col["label"]].strip()
            if not ytid or not label:
                raise AnnotationError(csv_path, lineno, f"empty youtube_id or label in {fields}")
            start = whole_seconds(fields[col["start_seconds"]], csv_path, lineno, "start_seconds")
            row_split = norm_split(fields[col["split"]])
            video_id = f"{ytid}_{start:06d}"
            rows.append(ClipRow(lineno, video_id, label, row_split, stems=(video_id,),
                                prefer=(row_split or "", label)))
    if class_list is None:
        class_list = sorted({r.label for r in rows})
    return clip_rows_to_list(rows, csv_path, root, class_list, want, check_files=check_files,
                             on_missing=on_missing, extensions=extensions)


@register_format("vggsound", splits=True, annotations="the VGGSound CSV", needs_root=True)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_vggsound(annotations, root, None if split is None else str(split), classes=classes,
                         on_missing=on_missing)
