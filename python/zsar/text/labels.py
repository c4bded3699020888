"""Validation of class-label lists given by users (``set_labels``, ``--labels``, label files)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

from .._limits import check_limit


def check_labels(labels, what: str = "labels") -> list[str]:
    """The labels as a list, after checking that they can name classes.

    A label is one string, spaces included (``"red circle"`` is one label). The check catches the
    mistakes that otherwise surface deep inside the embedders or as silently wrong classes: a single
    string where a collection was meant (a string would be iterated character by character), items
    that are not strings, labels that are empty or only whitespace (they would get a prototype of
    nothing), control characters (a line break would split the label when the label list is saved),
    and repeats.

    Args:
        labels: a list, tuple or other iterable of strings (not a string itself, nor a mapping).
        what: how to name the argument in error messages (e.g. ``"--labels-file labels.txt"``).

    Returns:
        The labels, in order and unchanged.

    Raises:
        TypeError: ``labels`` is a string, bytes, a mapping, None or not iterable, or an item is
            not a string.
        ValueError: there are no labels, a label is empty, only whitespace or holds a control
            character, or a label appears more than once (the repeats are named).
    """
    if isinstance(labels, (str, bytes, bytearray)):
        raise TypeError(f"{what}: expected a list of label strings, got a single {type(labels).__name__} "
                        f"{_preview(labels)} (wrap one label in a list: [{_preview(labels)}])")
    if isinstance(labels, Mapping) or not isinstance(labels, Iterable):
        raise TypeError(f"{what}: expected a list of label strings, got {type(labels).__name__}")
    labels = list(labels)
    if not labels:
        raise ValueError(f"{what}: no labels given")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"{what}: label {i} is {type(label).__name__} {_preview(label)}, expected a string")
        if not label.strip():
            raise ValueError(f"{what}: label {i} {label!r} is empty or only whitespace")
        control = [c for c in label if unicodedata.category(c) == "Cc"]
        if control:
            raise ValueError(f"{what}: label {i} {_preview(label)} holds the control character {control[0]!r}")
    repeated = [label for label, count in Counter(labels).items() if count > 1]
    if repeated:
        raise ValueError(f"{what} must be distinct; repeated: {', '.join(map(repr, repeated))}")
    return labels


def check_label_texts(labels: list[str], text_of, what: str = "labels") -> list[str]:
    """``labels`` when each reaches the embedder as its own text: ``text_of(label)`` is what an
    embedder embeds (lower-cased words, separators and punctuation dropped). Distinct labels with the
    same text would get identical scores, and a label with no words at all (only emoji or
    punctuation) nothing to embed: both are refused, naming the labels."""
    check_limit("labels", len(labels), "number of labels", what)
    by_text: dict[str, list[str]] = {}
    for label in labels:
        by_text.setdefault(text_of(label), []).append(label)
    empty = by_text.get("")
    if empty:
        raise ValueError(f"{what}: label {_preview(empty[0])} has no words to embed (only symbols, emoji or "
                         "punctuation); name the class in words")
    same = [group for group in by_text.values() if len(group) > 1]
    if same:
        first = same[0]
        raise ValueError(f"{what}: labels {', '.join(_preview(x) for x in first)} all read as "
                         f"{_preview(text_of(first[0]))} to the embedder and would score the same; make them differ "
                         f"in words" + (f" ({len(same) - 1} more such groups)" if len(same) > 1 else ""))
    return labels


def _preview(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
