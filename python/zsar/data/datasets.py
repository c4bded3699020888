"""Dataset formats: the annotation files users already have, plus a video root, to a
:class:`~zsar.data.records.VideoList`.

Every reader returns a ``VideoList`` whose records carry a root-joined absolute ``path``, an
integer ``label`` indexing ``classes`` (-1 when the annotation has no label, e.g. test sets) and
a ``video_id`` unique within the list. Formats:

* :func:`read_video_list` — generic ``relative/path label`` lists.
* :func:`read_ucf101` — ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``.
* :func:`read_hmdb51` — ``<class>_test_splitN.txt`` (1 = train, 2 = test, 0 = unused).
* :func:`read_kinetics` — Kinetics CSVs (``label,youtube_id,time_start,time_end,split``).
* :func:`read_activitynet` — ActivityNet v1.3 JSON (one record per video).
* :func:`read_vggsound` — VGGSound CSV (``youtube_id,start_seconds,label,split``).
* :func:`read_avca_split` — the AVCA-GZSL benchmark's class (and, where present, video) splits
  applied to one of the lists above.

Files are checked by default (``check_files=True``): a missing video is a
``FileNotFoundError`` naming how many are missing and the first few, or, with
``on_missing="skip"``, a logged count and the records dropped. Formats that name files by
YouTube id (Kinetics, ActivityNet, VGGSound) find them by file-name stem anywhere under the
root, with any video extension, so the flat, per-split and per-class layouts all work; the
same search lets UCF101/HMDB51/generic lists find videos that ``zsar prepare`` re-encoded
under another extension. Malformed annotations raise :class:`AnnotationError` (a
``ValueError``) naming the file and line.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .records import VideoList, VideoRecord
from .video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
#: ``classes`` arguments: a list of names, or a class-list file (one name per line).
ClassesArg = Sequence[str] | PathLike | None

# Files that share a video's stem but are never the video: audio extracted next to it,
# thumbnails, partial downloads, annotation sidecars.
_NOT_VIDEO = frozenset({
    ".txt", ".csv", ".json", ".xml", ".md", ".part", ".tmp", ".ytdl", ".partial", ".lock",
    ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac", ".jpg", ".jpeg", ".png", ".gif",
    ".npy", ".npz", ".pkl", ".pt", ".h5", ".hdf5", ".zip", ".tar", ".gz",
})
#: The six stages of the AVCA-GZSL protocol, each one class-list file in a split directory.
AVCA_STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_train",
               "stage_2_test_seen", "stage_2_test_unseen")
_ON_MISSING = ("error", "skip")
_MAX_SHOWN = 5  # how many offending items an error message lists


class AnnotationError(ValueError):
    """An annotation file is malformed or inconsistent. The message starts with
    ``file:line`` (or just ``file`` when no line applies); both are kept as attributes."""

    def __init__(self, file: PathLike, line: int | None, message: str):
        self.file = str(file)
        self.line = line
        where = f"{file}:{line}" if line else f"{file}"
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------- helpers


def normalize_class_name(name: str) -> str:
    """The key class names are matched on across spellings: case-folded, letters and digits
    only, so ``"Apply Eye Makeup"``, ``"ApplyEyeMakeup"`` and ``"apply_eye_makeup"`` agree."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def _read_lines(path: PathLike, what: str) -> list[tuple[int, str]]:
    """(1-based line number, line without its newline) of a text file; a missing file is a
    ``FileNotFoundError`` that says which annotation was expected there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        # utf-8-sig drops a BOM; universal newlines cope with the CRLF files UCF101 ships.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, None, f"not UTF-8 text ({e})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1)]


def _open_csv(path: PathLike, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return open(path, newline="", encoding="utf-8-sig")


def read_class_list(path: PathLike) -> list[str]:
    """Read a class-list file: one class name per line, in label order; surrounding
    whitespace and blank lines are ignored. Duplicates are an :class:`AnnotationError`."""
    classes: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in _read_lines(path, "class list"):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise AnnotationError(path, lineno, f"class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        classes.append(name)
    return classes


def write_class_list(path: PathLike, classes: Sequence[str]) -> Path:
    """Write ``classes`` one per line (label order) so :func:`read_class_list` reads the same
    list back. Names must be non-empty, unique, single-line and without surrounding spaces."""
    seen = set()
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c or c != c.strip() or "\n" in c or "\r" in c:
            raise ValueError(f"write_class_list: class {i} ({c!r}) must be a non-empty "
                             f"single-line string without surrounding whitespace")
        if c in seen:
            raise ValueError(f"write_class_list: class {c!r} appears twice")
        seen.add(c)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written list under the final name
    return path


def _as_classes(classes: ClassesArg, argname: str = "classes") -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    out = list(classes)
    if not all(isinstance(c, str) for c in out):
        raise TypeError(f"{argname}: expected class names (str) or a class-list file path")
    if len(set(out)) != len(out):
        dup = [c for c, n in Counter(out).items() if n > 1]
        raise ValueError(f"{argname}: repeated class names {dup[:_MAX_SHOWN]}")
    return out


class _ClassLookup:
    """Name → index: exact spelling first, then the normalised key when it is unambiguous
    (so a CSV's ``"air drumming"`` finds a class list's ``"air_drumming"``)."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        self.exact = {c: i for i, c in enumerate(self.classes)}
        by_key: dict[str, list[int]] = {}
        for i, c in enumerate(self.classes):
            by_key.setdefault(normalize_class_name(c), []).append(i)
        self.norm = {k: v[0] for k, v in by_key.items() if len(v) == 1}

    def get(self, name: str) -> int | None:
        i = self.exact.get(name)
        return self.norm.get(normalize_class_name(name)) if i is None else i


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in _ON_MISSING:
        raise ValueError(f"on_missing must be one of {_ON_MISSING}, got {on_missing!r}")


def _norm_exts(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    out = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not out:
        raise ValueError("extensions: give at least one extension, or None for any")
    return out


def _seconds(text: str | None, path, lineno: int, column: str) -> int:
    """Integer seconds from a CSV field ("14", "14.0"); file names zero-pad integers."""
    try:
        value = float((text or "").strip())
    except ValueError:
        value = float("nan")
    if not value.is_integer() or value < 0:
        raise AnnotationError(path, lineno, f"{column} must be a non-negative whole number of "
                                            f"seconds, got {text!r}")
    return int(value)


# ------------------------------------------------------------------- finding the files


# "<id>_<start:06d>_<end:06d>" also answers to "<id>_<start:06d>" (VGGSound's with-end naming).
_WITH_END = re.compile(r"^(.*_\d{6})_\d{6}$")


class _FileFinder:
    """Index of the files under ``root`` by name stem, built on first use (one walk)."""

    def __init__(self, root: Path, extensions: tuple[str, ...] | None):
        self.root = root
        self.extensions = extensions
        self._index: dict[str, list[tuple[int, int, str]]] | None = None

    def ext_rank(self, ext: str) -> int | None:
        """Preference of an extension; None when such a file can never be the video."""
        ext = ext.lower()
        if self.extensions is not None:
            return self.extensions.index(ext) if ext in self.extensions else None
        if not ext or ext in _NOT_VIDEO:
            return None
        return VIDEO_EXTENSIONS.index(ext) if ext in VIDEO_EXTENSIONS else len(VIDEO_EXTENSIONS)

    def _build(self) -> dict:
        index: dict[str, list[tuple[int, int, str]]] = {}
        visited = set()
        count = 0
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in visited:  # a symlink loop: do not walk it twice
                dirnames[:] = []
                continue
            visited.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):  # hidden and half-written files (write_video's temp)
                    continue
                stem, ext = os.path.splitext(name)
                rank = self.ext_rank(ext)
                if rank is None:
                    continue
                path = os.path.join(dirpath, name)
                index.setdefault(stem, []).append((0, rank, path))
                m = _WITH_END.match(stem)
                if m:
                    index.setdefault(m.group(1), []).append((1, rank, path))
                count += 1
        logger.debug("indexed %d candidate video files under %s", count, self.root)
        return index

    def candidates(self, stem: str) -> list[tuple[int, int, str]]:
        if self._index is None:
            self._index = self._build()
        return self._index.get(stem, [])

    def find(self, stems: Sequence[str], prefer: Sequence[str] = ()) -> str | None:
        """The best file for the first stem that has any: exact stem before a with-end
        variant, preferred extension, then a parent folder named like one of ``prefer``."""
        keys = {normalize_class_name(p) for p in prefer if p}
        for stem in stems:
            cands = self.candidates(stem)
            if not cands:
                continue

            def rank(c, keys=keys):
                rel_parts = os.path.relpath(os.path.dirname(c[2]), self.root).split(os.sep)
                in_preferred = any(normalize_class_name(p) in keys for p in rel_parts)
                return (c[0], c[1], not in_preferred, c[2])

            best = min(cands, key=rank)
            if len(cands) > 1:
                logger.debug("%s: %d files match, using %s", stem, len(cands), best[2])
            return best[2]
        return None

    def find_like(self, rel: str) -> str | None:
        """A file for the annotation path ``rel`` under another extension or folder: the
        same folder first, then anywhere under the root."""
        rel = rel.replace("\\", "/")
        folder, name = os.path.split(rel)
        stem = os.path.splitext(name)[0]
        cands = [c for c in self.candidates(stem) if c[0] == 0]
        if not cands:
            return None
        want = os.path.normpath(os.path.join(self.root, folder))
        return min(cands, key=lambda c: (os.path.dirname(c[2]) != want, c[1], c[2]))[2]


@dataclass
class _Pending:
    """A parsed annotation entry whose file is not located yet."""

    label: int
    video_id: str
    where: str  # "file:line" (or "file: key"), for messages
    rel: str | None = None  # explicit path from the annotation (relative to root, or absolute)
    stems: tuple[str, ...] = ()  # file-name stems to search for (YouTube-id formats)
    prefer: tuple[str, ...] = ()  # folder names that win when several files match
    guess: str | None = None  # file name used with check_files=False (YouTube-id formats)


def _resolve(pending: list[_Pending], root: PathLike, classes: list[str], *, source: str,
             check_files: bool, on_missing: str, extensions) -> VideoList:
    """Turn parsed entries into records: locate (or, without checking, just name) each file
    and apply the missing-file policy."""
    _check_on_missing(on_missing)
    exts = _norm_exts(extensions)
    root = Path(os.path.abspath(os.fspath(root)))
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"video root for {source} is not a directory: {root}")
    finder = _FileFinder(root, exts)
    records: list[VideoRecord] = []
    missing: list[_Pending] = []
    for p in pending:
        if not check_files:
            path = str(root / (p.rel if p.rel is not None else p.guess))
        elif p.rel is not None:
            direct = root / p.rel
            if direct.is_file() and (exts is None or direct.suffix.lower() in exts):
                path = str(direct)
            else:  # re-encoded under another extension, or a flattened tree
                path = finder.find_like(p.rel)
        else:
            path = finder.find(p.stems, p.prefer)
        if path is None:
            missing.append(p)
        else:
            records.append(VideoRecord(path, p.label, p.video_id))
    if missing:
        shown = "; ".join(
            f"{root / m.rel if m.rel is not None else os.path.join(root, '**', m.stems[0] + '.*')}"
            f" ({m.where})" for m in missing[:_MAX_SHOWN])
        more = f" and {len(missing) - _MAX_SHOWN} more" if len(missing) > _MAX_SHOWN else ""
        msg = (f"{len(missing)} of {len(pending)} videos listed in {source} were not found "
               f"under {root}: {shown}{more}")
        if on_missing == "error":
            raise FileNotFoundError(msg + ". Pass on_missing='skip' to drop them, or "
                                          "check_files=False to not look for the files.")
        logger.warning("%s; skipped them (on_missing='skip')", msg)
    return VideoList(records, list(classes))


def _unique_id(seen: dict[str, str], video_id: str, where: str, path) -> None:
    if video_id in seen:
        raise AnnotationError(path, None, f"video {video_id!r} is listed twice ({seen[video_id]} "
                                          f"and {where}); video ids must be unique")
    seen[video_id] = where


# ------------------------------------------------------------------------ generic list


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
    The ``video_id`` is the path as written. See the module doc for the file options.
    """
    class_list = _as_classes(classes)
    root = Path(list_file).parent if root is None else Path(root)
    entries: list[tuple[int, str, str | None]] = []
    seen: dict[str, str] = {}
    for lineno, line in _read_lines(list_file, "video list"):
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
        _unique_id(seen, rel, f"line {lineno}", list_file)
        entries.append((lineno, rel, label))

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
    lookup = _ClassLookup(class_list)
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
        pending.append(_Pending(index, rel, f"{list_file}:{lineno}", rel=rel))
    return _resolve(pending, root, class_list, source=str(list_file), check_files=check_files,
                    on_missing=on_missing, extensions=extensions)


# ----------------------------------------------------------------------------- UCF101


def _check_split(split: int) -> int:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")
    return split


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
    split = _check_split(split)
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    splits_dir = Path(splits_dir)
    ind_file = splits_dir / "classInd.txt"
    numbered: dict[int, tuple[str, int]] = {}
    for lineno, line in _read_lines(ind_file, "UCF101 class index (classInd.txt)"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(ind_file, lineno, f"expected '<index> <ClassName>', got {line!r}")
        k = int(parts[0])
        if k in numbered:
            raise AnnotationError(ind_file, lineno, f"index {k} repeats line {numbered[k][1]}")
        numbered[k] = (parts[1], lineno)
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise AnnotationError(ind_file, None, f"indices must be 1..{len(numbered)} without gaps, "
                                              f"got {sorted(numbered)[:_MAX_SHOWN]}...")
    classes = [numbered[k][0] for k in range(1, len(numbered) + 1)]
    by_folder = {c.casefold(): i for i, c in enumerate(classes)}

    list_file = splits_dir / f"{subset}list0{split}.txt"
    pending: list[_Pending] = []
    seen: dict[str, str] = {}
    for lineno, line in _read_lines(list_file, f"UCF101 {subset} list"):
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
        _unique_id(seen, video_id, f"line {lineno}", list_file)
        pending.append(_Pending(label, video_id, f"{list_file}:{lineno}", rel=rel))
    return _resolve(pending, root, classes, source=str(list_file), check_files=check_files,
                    on_missing=on_missing, extensions=extensions)


# ----------------------------------------------------------------------------- HMDB51

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
    split = _check_split(split)
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
    class_list = _as_classes(classes) or sorted(file_classes)
    lookup = _ClassLookup(class_list)
    want = _HMDB_SUBSETS[subset]
    pending: list[_Pending] = []
    seen: dict[str, str] = {}
    for path, cls in zip(files, file_classes):
        label = lookup.get(cls)
        if label is None:
            raise AnnotationError(path, None, f"class {cls!r} (from the file name) is not among "
                                              f"the {len(class_list)} given classes")
        for lineno, line in _read_lines(path, "HMDB51 split file"):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(path, lineno, f"expected '<video.avi> 0|1|2', got {text!r}")
            name, flag = parts
            video_id = os.path.splitext(name)[0]
            _unique_id(seen, video_id, f"{path.name}:{lineno}", path)
            if flag == want:
                pending.append(_Pending(label, video_id, f"{path}:{lineno}", rel=f"{cls}/{name}"))
    return _resolve(pending, root, class_list, source=f"{splits_dir}/*{suffix}",
                    check_files=check_files, on_missing=on_missing, extensions=extensions)


# ---------------------------------------------------------------------------- Kinetics

_SPLIT_ALIASES = {"validate": "val", "validation": "val", "valid": "val", "training": "train",
                  "testing": "test"}


def _norm_split(s: str | None) -> str | None:
    if s is None:
        return None
    s = s.strip().lower()
    return _SPLIT_ALIASES.get(s, s)


def _keyed_label(lookup: _ClassLookup | None, label: str | None, path, lineno: int) -> int:
    if label is None or lookup is None:
        return -1
    index = lookup.get(label)
    if index is None:
        raise AnnotationError(path, lineno, f"unknown class {label!r} (not among the "
                                            f"{len(lookup.classes)} classes)")
    return index


@dataclass(frozen=True)
class _ClipRow:
    """One parsed row of a YouTube-clip CSV (Kinetics, VGGSound)."""

    lineno: int
    video_id: str
    label: str | None
    split: str | None
    stems: tuple[str, ...]  # file-name stems to search for
    prefer: tuple[str, ...]  # folder names that win when several files match


def _clip_rows_to_list(rows: list[_ClipRow], csv_path, root: PathLike, class_list: list[str],
                       want: str | None, *, check_files: bool, on_missing: str,
                       extensions: Iterable[str] | None) -> VideoList:
    """The shared tail of the YouTube-clip readers: labels to indices (an unknown class is an
    error in any split), the ``want`` split, the first of rows repeating a clip kept (a repeat
    with another label is an error), then the files located."""
    lookup = _ClassLookup(class_list)
    exts = _norm_exts(extensions)
    guess_ext = exts[0] if exts else ".mp4"
    pending: list[_Pending] = []
    kept: dict[str, tuple[str | None, str]] = {}  # video_id -> (label, where)
    dropped: list[str] = []
    for row in rows:
        index = _keyed_label(lookup, row.label, csv_path, row.lineno)
        if want is not None and row.split != want:
            continue
        where = f"{csv_path}:{row.lineno}"
        if row.video_id in kept:
            first_label, first_where = kept[row.video_id]
            if first_label != row.label:
                raise AnnotationError(csv_path, None, f"clip {row.video_id!r} has label {first_label!r} "
                                                      f"at {first_where} and {row.label!r} at {where}")
            dropped.append(where)
            continue
        kept[row.video_id] = (row.label, where)
        pending.append(_Pending(index, row.video_id, where, stems=row.stems, prefer=row.prefer,
                                guess=row.video_id + guess_ext))
    if dropped:
        logger.info("%s: dropped %d rows repeating an earlier clip (first at %s)", csv_path,
                    len(dropped), dropped[0])
    return _resolve(pending, root, class_list, source=str(csv_path), check_files=check_files,
                    on_missing=on_missing, extensions=exts)


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
    class_list = _as_classes(classes)
    want = _norm_split(split)
    with _open_csv(csv_path, "Kinetics CSV") as f:
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
        rows: list[_ClipRow] = []
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
            start = _seconds(fields[col["time_start"]], csv_path, lineno, "time_start")
            end = _seconds(fields[col["time_end"]], csv_path, lineno, "time_end")
            label = fields[col["label"]].strip() if "label" in col else None
            row_split = _norm_split(fields[col["split"]]) if "split" in col else None
            video_id = f"{ytid}_{start:06d}_{end:06d}"
            rows.append(_ClipRow(lineno, video_id, label or None, row_split, stems=(video_id, ytid),
                                 prefer=tuple(x for x in (row_split, label) if x)))
    if want is not None and "split" not in col:
        raise AnnotationError(csv_path, 1, f"split={split!r} asked for but the CSV has no "
                                           f"'split' column")
    if class_list is None:
        class_list = sorted({r.label for r in rows if r.label is not None})
    return _clip_rows_to_list(rows, csv_path, root, class_list, want, check_files=check_files,
                              on_missing=on_missing, extensions=extensions)


# -------------------------------------------------------------------------- ActivityNet

_ANET_SUBSETS = {"training": "training", "train": "training", "validation": "validation",
                 "val": "validation", "testing": "testing", "test": "testing"}


def _majority_label(annotations: list[str]) -> str:
    """The most frequent label; ties go to the one annotated first."""
    counts = Counter(annotations)
    first = {}
    for i, a in enumerate(annotations):
        first.setdefault(a, i)
    return max(counts, key=lambda a: (counts[a], -first[a]))


def read_activitynet(json_path: PathLike, root: PathLike, subset: str | None = "training", *,
                     classes: ClassesArg = None, check_files: bool = True,
                     on_missing: str = "error",
                     extensions: Iterable[str] | None = None) -> VideoList:
    """Read ActivityNet (v1.3 layout): ``{"database": {id: {"subset": "training" |
    "validation" | "testing", "annotations": [{"label": ..., "segment": [s, e]}, ...]}}}``.

    One record per (untrimmed) video. Its label is the **most frequent** annotation label,
    ties going to the label annotated first (ActivityNet videos nearly always carry one class
    only). ``subset``: ``"training"``, ``"validation"``, ``"testing"`` (also ``train`` /
    ``val`` / ``test``), or None for all; testing videos have no annotations and get label
    -1, while a training/validation video without annotations is an error. Classes:
    ``classes`` (names or a class-list file), else the sorted labels over the whole database
    (so all subsets share indices). Files are ``v_<id>.<ext>`` or ``<id>.<ext>`` anywhere
    under ``root``; ``video_id`` is the database key.
    """
    class_list = _as_classes(classes)
    if subset is not None and subset not in _ANET_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(set(_ANET_SUBSETS.values()))} "
                         f"(or train/val/test, or None), got {subset!r}")
    want = _ANET_SUBSETS.get(subset) if subset is not None else None
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"ActivityNet JSON not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError(path, None, "expected an object with a 'database' mapping of "
                                          "video id → {subset, annotations}")
    videos: list[tuple[str, str, str | None]] = []
    for vid, entry in database.items():
        where = f"database[{vid!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("subset"), str):
            raise AnnotationError(path, None, f"{where}: expected an object with a 'subset'")
        vsubset = entry["subset"]
        if vsubset not in ("training", "validation", "testing"):
            raise AnnotationError(path, None, f"{where}: unknown subset {vsubset!r}")
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list):
            raise AnnotationError(path, None, f"{where}: 'annotations' must be a list")
        labels = []
        for k, a in enumerate(annotations):
            if not isinstance(a, dict) or not isinstance(a.get("label"), str) or not a["label"]:
                raise AnnotationError(path, None, f"{where}.annotations[{k}]: expected "
                                                  f"{{'label': str, 'segment': [s, e]}}")
            labels.append(a["label"])
        if not labels and vsubset != "testing":
            raise AnnotationError(path, None, f"{where}: a {vsubset} video without annotations")
        videos.append((vid, vsubset, _majority_label(labels) if labels else None))
    if class_list is None:
        class_list = sorted({v[2] for v in videos if v[2] is not None})
    lookup = _ClassLookup(class_list)
    exts = _norm_exts(extensions)
    guess_ext = exts[0] if exts else ".mp4"
    pending: list[_Pending] = []
    for vid, vsubset, label in videos:
        if want is not None and vsubset != want:
            continue
        index = -1
        if label is not None:
            index = lookup.get(label)
            if index is None:
                raise AnnotationError(path, None, f"database[{vid!r}]: unknown class {label!r} "
                                                  f"(not among the {len(class_list)} classes)")
        bare = vid.removeprefix("v_")
        pending.append(_Pending(index, vid, f"{path}: database[{vid!r}]",
                                stems=("v_" + bare, bare), prefer=(vsubset,),
                                guess=f"v_{bare}{guess_ext}"))
    return _resolve(pending, root, class_list, source=str(path), check_files=check_files,
                    on_missing=on_missing, extensions=exts)


# ---------------------------------------------------------------------------- VGGSound

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
    class_list = _as_classes(classes)
    want = _norm_split(split)
    rows: list[_ClipRow] = []
    with _open_csv(csv_path, "VGGSound CSV") as f:
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
            start = _seconds(fields[col["start_seconds"]], csv_path, lineno, "start_seconds")
            row_split = _norm_split(fields[col["split"]])
            video_id = f"{ytid}_{start:06d}"
            rows.append(_ClipRow(lineno, video_id, label, row_split, stems=(video_id,),
                                 prefer=(row_split or "", label)))
    if class_list is None:
        class_list = sorted({r.label for r in rows})
    return _clip_rows_to_list(rows, csv_path, root, class_list, want, check_files=check_files,
                              on_missing=on_missing, extensions=extensions)


# -------------------------------------------------------------------------------- AVCA


def match_class_names(names: Sequence[str], classes: Sequence[str], *,
                      source: str = "class names") -> list[str]:
    """Map ``names`` (another spelling of some of ``classes``) to the entries of ``classes``,
    in order: an exact match first, else equal :func:`normalize_class_name` keys (so AVCA's
    ``Applyingsunscreen`` finds ActivityNet's ``Applying sunscreen``). Names without a
    match, or matching ambiguously, are one ``ValueError`` listing them (with the closest
    dataset classes) and naming ``source``."""
    lookup = _ClassLookup(classes)
    ambiguous_keys = {normalize_class_name(c) for c in classes} - set(lookup.norm)
    out, unmatched, ambiguous = [], [], []
    for n in names:
        i = lookup.get(n)
        if i is not None:
            out.append(lookup.classes[i])
        elif normalize_class_name(n) in ambiguous_keys:
            ambiguous.append(n)
        else:
            unmatched.append(n)
    if unmatched or ambiguous:
        keys = list(lookup.norm)
        hints = []
        for n in unmatched[:_MAX_SHOWN]:
            close = difflib.get_close_matches(normalize_class_name(n), keys, n=1, cutoff=0.75)
            hints.append(f"{n!r}" + (f" (closest: {lookup.classes[lookup.norm[close[0]]]!r})"
                                     if close else ""))
        parts = []
        if unmatched:
            parts.append(f"{len(unmatched)} of {len(names)} names have no match among the "
                         f"dataset's {len(lookup.classes)} classes: {', '.join(hints)}"
                         + (" ..." if len(unmatched) > _MAX_SHOWN else ""))
        if ambiguous:
            parts.append(f"{ambiguous[:_MAX_SHOWN]} match several dataset classes once case "
                         f"and punctuation are ignored")
        raise ValueError(f"{source}: " + "; ".join(parts))
    dup = [c for c, k in Counter(out).items() if k > 1]
    if dup:
        raise ValueError(f"{source}: several names map to the same dataset class: {dup}")
    return out


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
    with _open_csv(path, "AVCA stage CSV") as f:
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
    with _open_csv(csv_path, "AVCA word-name CSV") as f:
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


__all__ = [
    "AVCA_STAGES",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "match_class_names",
    "normalize_class_name",
    "read_activitynet",
    "read_avca_classes",
    "read_avca_split",
    "read_avca_word_names",
    "read_class_list",
    "read_hmdb51",
    "read_kinetics",
    "read_ucf101",
    "read_vggsound",
    "read_video_list",
    "write_class_list",
]
