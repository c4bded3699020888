"""The generic list format: ``relative/path label`` lines (format name ``list``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..records import VideoList
from .common import (AnnotationError, ClassesArg, ClassLookup, PathLike, Pending, as_classes, read_lines, resolve,
                     unique_id)
from .registry import register_format


#: Said when the list file given is a folder: a folder of class subfolders is the ``folder`` format.
FOLDER_HINT = " (for a class-per-subfolder tree use the 'folder' format: --format folder)"


def read_video_list(list_file: PathLike, root: PathLike | None = None, *,
                    classes: ClassesArg = None, sep: str | None = None, index_base: int = 0,
                    labelled: bool = True, check_files: bool = True, on_missing: str = "error",
                    extensions: Iterable[str] | None = None) -> VideoList:
    """Read a generic list of ``relative/path label`` lines.

    ``root`` (default: the list file's folder) is joined to relative paths; absolute paths
    stay. Blank lines and lines starting with ``#`` are skipped. The label is the last field,
    so paths may contain spaces: the line is split at its last tab when it has one (use tabs
    when class *names* contain spaces), else at its last run of whitespace; ``sep`` forces a
    separator. A label is a class name or an integer index (``index_base`` is subtracted, so
    1-based lists work). ``classes`` (names or a class-list file) fixes the class order;
    without it the classes are the sorted distinct names, or, when every label is an integer,
    the integers themselves as strings. ``labelled=False`` reads one path per line (label -1).
    The ``video_id`` is the path as written. The file options: :mod:`zsar.data.formats.common`.
    A file that lists no video (empty, or only blank lines and comments) is an
    :class:`AnnotationError` naming it, as is a folder given for the file.
    """
    class_list = as_classes(classes)
    root = Path(list_file).parent if root is None else Path(root)
    entries: list[tuple[int, str, str | None]] = []
    seen: dict[str, str] = {}
    for lineno, line in read_lines(list_file, "video list", folder_hint=FOLDER_HINT):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not labelled:
            rel, label = text, None
        else:
            if sep is not None:
                parts = text.rsplit(sep, 1)
            elif "\t" in text:
                parts = text.rsplit("\t", 1)
            else:
                parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise AnnotationError(list_file, lineno, f"expected '<path> <label>', got {text!r}")
            rel, label = parts[0].strip(), parts[1].strip()
        unique_id(seen, rel, f"line {lineno}", list_file)
        entries.append((lineno, rel, label))
    if not entries:
        expected = "'<path> <label>' lines" if labelled else "one video path per line"
        raise AnnotationError(list_file, None, f"lists no videos (the file is empty, or holds only blank lines and "
                                               f"comments); expected {expected}")

    def as_int(s):
        try:
            return int(s)
        except ValueError:
            return None

    labelled_entries = [e for e in entries if e[2] is not None]
    if class_list is None and labelled_entries:
        ints = [as_int(e[2]) for e in labelled_entries]
        if all(i is not None for i in ints):
            # Integer labels and no names: the numbers are the only names there are.
            top = max(ints)
            class_list = [str(k) for k in range(index_base, top + 1)]
        elif any(i is not None for i in ints):
            lineno = next(e[0] for e, i in zip(labelled_entries, ints) if i is not None)
            raise AnnotationError(list_file, lineno, "labels mix integer indices and class names; "
                                                     "pass classes= to say which names exist")
        else:
            class_list = sorted({e[2] for e in labelled_entries})
    class_list = class_list or []
    lookup = ClassLookup(class_list)
    pending = []
    for lineno, rel, label in entries:
        if label is None:
            index = -1
        else:
            index = lookup.get(label)
            if index is None:
                number = as_int(label)
                if number is None:
                    raise AnnotationError(list_file, lineno,
                                          f"unknown class {label!r} (not among the "
                                          f"{len(class_list)} classes)")
                index = number - index_base
                if not 0 <= index < len(class_list):
                    raise AnnotationError(
                        list_file, lineno, f"label {number} out of range: expected "
                        f"{index_base}..{index_base + len(class_list) - 1} "
                        f"({len(class_list)} classes, index_base={index_base})")
        pending.append(Pending(index, rel, f"{list_file}:{lineno}", rel=rel))
    return resolve(pending, root, class_list, source=str(list_file), check_files=check_files,
                   on_missing=on_missing, extensions=extensions)


@register_format("list", annotations="the list file of '<path> <label>' lines", needs_root=False)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_video_list(annotations, root, classes=classes, on_missing=on_missing)
