"""The dataset-format registry: each format registers one reader with one signature.

A registered reader turns a :class:`~zsar.data.config.DataConfig`'s fields into a
:class:`~zsar.data.records.VideoList`::

    @register_format("myformat", annotations="the CSV of clips", needs_root=True)
    def _read(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
        return read_myformat(annotations, root, ...)

``annotations`` is the format's annotation source (file or folder), ``root`` the video folder
(None when the format allows it), ``split``/``subset``/``classes``/``on_missing`` as in
:class:`~zsar.data.config.DataConfig`. Registering makes the name valid in ``data.format`` of a
training config and in ``zsar eval --format``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..._registry import Registry
from ..records import VideoList

__all__ = ["DatasetFormat", "FORMATS", "FormatReader", "get_format", "register_format", "video_format"]


class FormatReader(Protocol):
    """The one signature of a registered reader (see the module docstring)."""

    def __call__(self, annotations: str, root: str | None, *, split: int | str | None, subset: str,
                 classes: str | None, on_missing: str) -> VideoList: ...


@dataclass(frozen=True)
class DatasetFormat:
    """A registered dataset format.

    Attributes:
        name: the format's name in configs.
        read: its reader (:class:`FormatReader`).
        annotations: what ``annotations`` names for this format, for messages and docs.
        needs_root: whether a video folder must be given (otherwise the reader has a default).
        features: what to run instead when the records name feature files, not videos (None: videos).
        splits: whether the reader uses ``split`` (others would ignore it).
        subsets: whether the reader uses ``subset``.
    """

    name: str
    read: FormatReader
    annotations: str
    needs_root: bool = True
    features: str | None = None
    splits: bool = False
    subsets: bool = False

    def check_options(self, split=None, subset=None, *, split_name: str = "data.split",
                      subset_name: str = "data.subset") -> None:
        """Raises ``ValueError`` for a ``split`` or ``subset`` given (not None) to a format that has
        none, naming the option: silently ignoring it would read other videos than the user meant."""
        for value, used, option, what in ((split, self.splits, split_name, "splits"),
                                          (subset, self.subsets, subset_name, "subsets")):
            if value is not None and not used:
                having = [f.name for f in FORMATS.values() if getattr(f, what)]
                raise ValueError(f"{option} {value!r}: the {self.name!r} format has no {what} "
                                 f"(formats with {what}: {', '.join(having)})")


#: Name → :class:`DatasetFormat` of every registered format (add one with :func:`register_format`).
FORMATS: Registry[DatasetFormat] = Registry("dataset format", "data.format")


def register_format(name: str, *, annotations: str, needs_root: bool = True, features: str | None = None,
                    splits: bool = False, subsets: bool = False) -> Callable[[FormatReader], FormatReader]:
    """Decorator registering a reader with the one signature under ``name``; ``features``: its records
    name feature files, not videos, and this says what reads them; ``splits`` / ``subsets``: the
    reader uses ``split`` / ``subset`` (a value given to a format without them is refused).

    Raises:
        ValueError: ``name`` is empty or already registered (``FORMATS.unregister(name)`` first to
            replace it).
    """

    def register(read: FormatReader) -> FormatReader:
        FORMATS.register(name, DatasetFormat(name, read, annotations, needs_root, features, splits, subsets))
        return read

    return register


def get_format(name: str, where: str = "data.format") -> DatasetFormat:
    """The registered format ``name``; ``ValueError`` naming ``where`` (the config key or option that
    gave it) and listing the names otherwise."""
    if name not in FORMATS:
        raise ValueError(FORMATS.unknown(name, argument=where))
    return FORMATS[name]


def video_format(name: str, where: str, reader: str) -> DatasetFormat:
    """:func:`get_format` for ``reader`` (e.g. "zsar train"), which decodes videos: a format whose
    records name feature files is refused in one line saying what reads them instead."""
    fmt = get_format(name, where)
    if fmt.features is not None:
        raise ValueError(f"{where} {name!r}: its records are feature files, not videos, which {reader} decodes; "
                         f"{fmt.features}")
    return fmt
