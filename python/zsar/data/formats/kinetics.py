"""Kinetics 400/600/700 CSVs: ``label,youtube_id,time_start,time_end,split`` (format name ``kinetics``)."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from ..records import VideoList
from .common import (AnnotationError, ClassesArg, ClipRow, PathLike, as_classes, clip_rows_to_list, norm_split,
                     open_csv, whole_seconds)
from .registry import register_format


def read_kinetics(csv_path: PathLike, root: PathLike, *, split: str | None = None,
                  classes: ClassesArg = None, check_files: bool = True, on_missing: str = "error",
                  extensions: Iterable[str] | None = None) -> VideoList:
    """Read a Kinetics (400/600/700) CSV: header ``label,youtube_id,time_start,time_end,split``
    (test CSVs may lack ``label``; extra columns such as ``is_cc`` are ignored).

    Files are ``{youtube_id}_{time_start:06d}_{time_end:06d}.<ext>`` (or just
    ``{youtube_id}.<ext>``), found anywhere under ``root`` — flat, ``root/<split>/``,
    ``root/<label>/`` or ``root/<split>/<label>/``, with any video extension (``extensions``
    restricts and orders them; with ``check_files=False`` the path is
    ``root/<id>{extensions[0] or .mp4}``). ``split`` keeps rows of that ``split`` column value
    (``"val"`` also matches ``"validate"``). Classes: ``classes`` (names or a class-list file;
    CSV labels are matched exactly, then ignoring case/spaces/punctuation), else the sorted
    labels of the whole CSV so every split of one CSV shares indices. Unlabelled rows get -1.
    ``video_id`` is the file stem ``{youtube_id}_{start:06d}_{end:06d}``; rows repeating a clip
    with the same label are dropped (logged), with another label an error.
    """
    class_list = as_classes(classes)
    want = norm_split(split)
    with open_csv(csv_path, "Kinetics CSV") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise AnnotationError(csv_path, 1, "empty file; expected a header "
                                               "'label,youtube_id,time_start,time_end,split'")
        columns = [h.strip().lower() for h in header]
        need = ("youtube_id", "time_start", "time_end")
        if not all(c in columns for c in need):
            raise AnnotationError(csv_path, 1, f"expected a header with columns {list(need)} "
                                               f"(and usually label, split), got {header}")
        col = {c: columns.index(c) for c in columns}
        rows: list[ClipRow] = []
        for fields in reader:
            lineno = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < len(columns):
                raise AnnotationError(csv_path, lineno, f"expected {len(columns)} fields "
                                                        f"({','.join(columns)}), got {fields}")
            ytid = fields[col["youtube_id"]].strip()
            if not ytid:
                raise AnnotationError(csv_path, lineno, "empty youtube_id")
            start = whole_seconds(fields[col["time_start"]], csv_path, lineno, "time_start")
            end = whole_seconds(fields[col["time_end"]], csv_path, lineno, "time_end")
            label = fields[col["label"]].strip() if "label" in col else None
            row_split = norm_split(fields[col["split"]]) if "split" in col else None
            video_id = f"{ytid}_{start:06d}_{end:06d}"
            rows.append(ClipRow(lineno, video_id, label or None, row_split, stems=(video_id, ytid),
                                prefer=tuple(x for x in (row_split, label) if x)))
    if want is not None and "split" not in col:
        raise AnnotationError(csv_path, 1, f"split={split!r} asked for but the CSV has no "
                                           f"'split' column")
    if class_list is None:
        class_list = sorted({r.label for r in rows if r.label is not None})
    return clip_rows_to_list(rows, csv_path, root, class_list, want, check_files=check_files,
                             on_missing=on_missing, extensions=extensions)


@register_format("kinetics", splits=True, annotations="the Kinetics CSV", needs_root=True)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_kinetics(annotations, root, split=None if split is None else str(split), classes=classes,
                         on_missing=on_missing)
