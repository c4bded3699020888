"""Helpers every dataset format shares: class lists and name matching, annotation reading, the
file finder that locates videos under a root, and the tail that turns parsed entries into a
:class:`~zsar.data.records.VideoList` with the missing-file policy.

Files are checked by default (``check_files=True``): a missing video is a ``FileNotFoundError``
naming how many are missing and the first few, or, with ``on_missing="skip"``, a logged count and
the records dropped. Formats that name files by YouTube id (Kinetics, ActivityNet, VGGSound) find
them by file-name stem anywhere under the root, with any video extension, so the flat, per-split and
per-class layouts all work; the same search lets UCF101/HMDB51/generic lists find videos that
``zsar prepare`` re-encoded under another extension. Malformed annotations raise
:class:`AnnotationError` (a ``ValueError``) naming the file and line.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..._utils import file_problem
from ..records import VideoList, VideoRecord
from ..video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
#: ``classes`` arguments: a list of names, or a class-list file (one name per line).
ClassesArg = Sequence[str] | PathLike | None

# Files that share a video's stem but are never the video: audio extracted next to it,
# thumbnails, partial downloads, annotation sidecars.
NOT_VIDEO = frozenset({
    ".txt", ".csv", ".json", ".xml", ".md", ".part", ".tmp", ".ytdl", ".partial", ".lock",
    ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac", ".jpg", ".jpeg", ".png", ".gif",
    ".npy", ".npz", ".pkl", ".pt", ".h5", ".hdf5", ".zip", ".tar", ".gz",
})
ON_MISSING = ("error", "skip")
MAX_SHOWN = 5  # how many offending items an error message lists


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


def check_is_file(path: Path, what: str, folder_hint: str = "") -> None:
    """Refuses a ``path`` that is not a regular file, saying which kind of file was expected.

    Args:
        path: the annotation file.
        what: what the file is (e.g. ``"video list"``, ``"HMDB51 split file"``).
        folder_hint: appended to the message when ``path`` is a folder (e.g. which format reads one).

    Raises:
        FileNotFoundError: nothing is at ``path``.
        AnnotationError: ``path`` is a folder or another non-file (a ``ValueError``).
    """
    problem = file_problem(path)
    if problem is None:
        return
    if problem == "no such file":
        raise FileNotFoundError(f"{what} not found: {path}")
    kind = what if what.endswith("file") else f"{what} file"
    article = "an" if kind[:1].lower() in "aeio" else "a"
    hint = folder_hint if problem == "is a folder" else ""
    raise AnnotationError(path, None, f"{problem}, expected {article} {kind}{hint}")


def read_lines(path: PathLike, what: str, *, folder_hint: str = "") -> list[tuple[int, str]]:
    """(1-based line number, line without its newline) of a text file; a missing file is a
    ``FileNotFoundError`` that says which annotation was expected there, a folder an
    :class:`AnnotationError` saying the same (with ``folder_hint`` appended)."""
    path = Path(path)
    check_is_file(path, what, folder_hint)
    try:
        # utf-8-sig drops a BOM; universal newlines cope with the CRLF files UCF101 ships.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, None, f"not UTF-8 text ({e})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1)]


def open_csv(path: PathLike, what: str):
    """Opens an annotation CSV for ``csv.reader`` / ``csv.DictReader``.

    ``newline=""`` as the csv module requires (quoted fields may hold line breaks), ``utf-8-sig``
    so a BOM does not become part of the first header name.

    Args:
        path: the CSV file.
        what: what the file is, for the error (e.g. ``"Kinetics CSV"``).

    Returns:
        The open text file; use it as a context manager.

    Raises:
        FileNotFoundError: nothing is at ``path``; the message names ``what``.
        AnnotationError: ``path`` is a folder (or another non-file).
    """
    path = Path(path)
    check_is_file(path, what)
    return open(path, newline="", encoding="utf-8-sig")


def read_class_list(path: PathLike) -> list[str]:
    """Read a class-list file: one class name per line, in label order; surrounding
    whitespace and blank lines are ignored. Duplicates, and a file without any name (empty, or
    only blank lines), are an :class:`AnnotationError`."""
    classes: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path, "class list"):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise AnnotationError(path, lineno, f"class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        classes.append(name)
    if not classes:
        raise AnnotationError(path, None, "holds no class names (expected one class name per line)")
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


def as_classes(classes: ClassesArg, argname: str = "classes") -> list[str] | None:
    """A reader's ``classes`` argument as a list of names in label order.

    Args:
        classes: class names, a class-list file (read by :func:`read_class_list`), or None.
        argname: the argument's name, for the errors.

    Returns:
        The names; None when ``classes`` is None, so that a reader can fall back to the classes
        its annotations name (``as_classes(classes) or sorted(labels)``).

    Raises:
        TypeError: an item is not a string.
        ValueError: a name repeats (:class:`AnnotationError` for a file, naming the line); the
            class-list file holds no name or is a folder (:class:`AnnotationError`).
        FileNotFoundError: the class-list file does not exist.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    out = list(classes)
    if not all(isinstance(c, str) for c in out):
        raise TypeError(f"{argname}: expected class names (str) or a class-list file path")
    if len(set(out)) != len(out):
        dup = [c for c, n in Counter(out).items() if n > 1]
        raise ValueError(f"{argname}: repeated class names {dup[:MAX_SHOWN]}")
    return out


class ClassLookup:
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


def check_on_missing(on_missing: str) -> None:
    """Refuses an ``on_missing`` policy other than :data:`ON_MISSING` (``"error"``, ``"skip"``)
    before any file is read. :func:`resolve` calls it; a reader that locates files without it
    calls it first.

    Raises:
        ValueError: ``on_missing`` is not one of them.
    """
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


def norm_exts(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    """A reader's ``extensions`` argument as lower-case suffixes with their dot, in preference order.

    Args:
        extensions: ``"mp4"``, ``".MP4"`` or several of them (first preferred when a video exists
            under several); None accepts any video extension (:class:`FileFinder`).

    Returns:
        E.g. ``(".mp4", ".webm")``, or None.

    Raises:
        ValueError: an empty collection (it would match no file; None means any).
    """
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    out = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not out:
        raise ValueError("extensions: give at least one extension, or None for any")
    return out


def whole_seconds(text: str | None, path, lineno: int, column: str) -> int:
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
WITH_END = re.compile(r"^(.*_\d{6})_\d{6}$")


class FileFinder:
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
        if not ext or ext in NOT_VIDEO:
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
                m = WITH_END.match(stem)
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
class Pending:
    """A parsed annotation entry whose file is not located yet."""

    label: int
    video_id: str
    where: str  # "file:line" (or "file: key"), for messages
    rel: str | None = None  # explicit path from the annotation (relative to root, or absolute)
    stems: tuple[str, ...] = ()  # file-name stems to search for (YouTube-id formats)
    prefer: tuple[str, ...] = ()  # folder names that win when several files match
    guess: str | None = None  # file name used with check_files=False (YouTube-id formats)


#: Whether annotation entries may name files outside the video root (see :func:`outside_root_allowed`).
_OUTSIDE_ROOT: contextvars.ContextVar[bool] = contextvars.ContextVar("zsar_outside_root", default=False)


@contextlib.contextmanager
def outside_root_allowed(allowed: bool = True):
    """Within this block, annotation entries that resolve outside the video root (``../``,
    absolute paths) are read instead of refused (``--allow-outside-root``, ``data.allow_outside_root``)."""
    token = _OUTSIDE_ROOT.set(allowed)
    try:
        yield
    finally:
        _OUTSIDE_ROOT.reset(token)


def _inside(root: Path, path: str) -> bool:
    """Whether ``path`` lies under ``root`` by its name (``..`` collapsed; links inside the root,
    as datasets stored elsewhere are often linked in, are not followed)."""
    base = os.path.normpath(root)
    return os.path.normpath(path).startswith(base.rstrip(os.sep) + os.sep)


def resolve(pending: list[Pending], root: PathLike, classes: list[str], *, source: str,
            check_files: bool, on_missing: str, extensions) -> VideoList:
    """Turn parsed entries into records: locate (or, without checking, just name) each file
    and apply the missing-file policy."""
    check_on_missing(on_missing)
    exts = norm_exts(extensions)
    root = Path(os.path.abspath(os.fspath(root)))
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"video root for {source} is not a directory: {root}")
    finder = FileFinder(root, exts)
    records: list[VideoRecord] = []
    missing: list[Pending] = []
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
            if not _inside(root, path) and not _OUTSIDE_ROOT.get():
                raise ValueError(f"{p.where}: the entry names {os.path.normpath(path)}, outside the video root "
                                 f"{root}; refused (allow it with --allow-outside-root or data.allow_outside_root: "
                                 "true)")
            records.append(VideoRecord(path, p.label, p.video_id))
    if missing:
        shown = "; ".join(
            f"{root / m.rel if m.rel is not None else os.path.join(root, '**', m.stems[0] + '.*')}"
            f" ({m.where})" for m in missing[:MAX_SHOWN])
        more = f" and {len(missing) - MAX_SHOWN} more" if len(missing) > MAX_SHOWN else ""
        msg = (f"{len(missing)} of {len(pending)} videos listed in {source} were not found "
               f"under {root}: {shown}{more}")
        if on_missing == "error":
            raise FileNotFoundError(msg + ". Drop them with on_missing='skip' (in a config: data.on_missing: skip), "
                                          "or do not look for the files with check_files=False")
        logger.warning("%s; skipped them (on_missing='skip')", msg)
    return VideoList(records, list(classes))


def unique_id(seen: dict[str, str], video_id: str, where: str, path) -> None:
    """Records ``video_id`` in ``seen``, refusing one already there: records are keyed by video id.

    Args:
        seen: video id -> where it was first listed; shared across a reader's files.
        video_id: the entry's id (usually the file stem).
        where: where this entry is (e.g. ``"trainlist01.txt:12"``), stored and quoted in the error.
        path: the annotation file, for the error.

    Raises:
        AnnotationError: the id was listed before; both places are named.
    """
    if video_id in seen:
        raise AnnotationError(path, None, f"video {video_id!r} is listed twice ({seen[video_id]} "
                                          f"and {where}); video ids must be unique")
    seen[video_id] = where

def check_split(split: int) -> int:
    """``split`` when it is one of UCF101's and HMDB51's three official splits (1, 2, 3).

    Raises:
        ValueError: any other value.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")
    return split


SPLIT_ALIASES = {"validate": "val", "validation": "val", "valid": "val", "training": "train",
                  "testing": "test"}


def norm_split(s: str | None) -> str | None:
    """A split name as the CSV readers compare it: stripped, lower-case, the :data:`SPLIT_ALIASES`
    spelled ``"train"``, ``"val"`` or ``"test"`` (so ``"validate"`` in a CSV matches ``split="val"``);
    None stays None. Apply it to both the wanted split and each row's.
    """
    if s is None:
        return None
    s = s.strip().lower()
    return SPLIT_ALIASES.get(s, s)


def keyed_label(lookup: ClassLookup | None, label: str | None, path, lineno: int) -> int:
    """The class index of an annotation row's label (exact spelling first, then normalised:
    :class:`ClassLookup`).

    Args:
        lookup: the dataset's classes, or None when labels are not wanted.
        label: the row's label, or None for an unlabelled row.
        path: the annotation file, for the error.
        lineno: the row's line, for the error.

    Returns:
        The index, or -1 (unlabelled) when ``label`` or ``lookup`` is None.

    Raises:
        AnnotationError: the label is not among the classes.
    """
    if label is None or lookup is None:
        return -1
    index = lookup.get(label)
    if index is None:
        raise AnnotationError(path, lineno, f"unknown class {label!r} (not among the "
                                            f"{len(lookup.classes)} classes)")
    return index


@dataclass(frozen=True)
class ClipRow:
    """One parsed row of a YouTube-clip CSV (Kinetics, VGGSound)."""

    lineno: int
    video_id: str
    label: str | None
    split: str | None
    stems: tuple[str, ...]  # file-name stems to search for
    prefer: tuple[str, ...]  # folder names that win when several files match


def clip_rows_to_list(rows: list[ClipRow], csv_path, root: PathLike, class_list: list[str],
                      want: str | None, *, check_files: bool, on_missing: str,
                      extensions: Iterable[str] | None) -> VideoList:
    """The shared tail of the YouTube-clip readers: labels to indices (an unknown class is an
    error in any split), the ``want`` split, the first of rows repeating a clip kept (a repeat
    with another label is an error), then the files located."""
    lookup = ClassLookup(class_list)
    exts = norm_exts(extensions)
    guess_ext = exts[0] if exts else ".mp4"
    pending: list[Pending] = []
    kept: dict[str, tuple[str | None, str]] = {}  # video_id -> (label, where)
    dropped: list[str] = []
    for row in rows:
        index = keyed_label(lookup, row.label, csv_path, row.lineno)
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
        pending.append(Pending(index, row.video_id, where, stems=row.stems, prefer=row.prefer,
                               guess=row.video_id + guess_ext))
    if dropped:
        logger.info("%s: dropped %d rows repeating an earlier clip (first at %s)", csv_path,
                    len(dropped), dropped[0])
    return resolve(pending, root, class_list, source=str(csv_path), check_files=check_files,
                   on_missing=on_missing, extensions=exts)


def match_class_names(names: Sequence[str], classes: Sequence[str], *,
                      source: str = "class names") -> list[str]:
    """Map ``names`` (another spelling of some of ``classes``) to the entries of ``classes``,
    in order: an exact match first, else equal :func:`normalize_class_name` keys (so AVCA's
    ``Applyingsunscreen`` finds ActivityNet's ``Applying sunscreen``). Names without a
    match, or matching ambiguously, are one ``ValueError`` listing them (with the closest
    dataset classes) and naming ``source``."""
    lookup = ClassLookup(classes)
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
        for n in unmatched[:MAX_SHOWN]:
            close = difflib.get_close_matches(normalize_class_name(n), keys, n=1, cutoff=0.75)
            hints.append(f"{n!r}" + (f" (closest: {lookup.classes[lookup.norm[close[0]]]!r})"
                                     if close else ""))
        parts = []
        if unmatched:
            parts.append(f"{len(unmatched)} of {len(names)} names have no match among the "
                         f"dataset's {len(lookup.classes)} classes: {', '.join(hints)}"
                         + (" ..." if len(unmatched) > MAX_SHOWN else ""))
        if ambiguous:
            parts.append(f"{ambiguous[:MAX_SHOWN]} match several dataset classes once case "
                         f"and punctuation are ignored")
        raise ValueError(f"{source}: " + "; ".join(parts))
    dup = [c for c, k in Counter(out).items() if k > 1]
    if dup:
        raise ValueError(f"{source}: several names map to the same dataset class: {dup}")
    return out
