"""check_labels: the one validation of user label lists (set_labels, --labels, label files)."""

from __future__ import annotations

import numpy as np
import pytest

from zsar.text import check_labels


@pytest.mark.parametrize("labels", [["red circle"], ("swimming", "red circle", "PlayingGuitar"),
                                    iter(["a", "b"]), {"x": 1, "y": 2}.keys(), np.array(["a", "b c"])])
def test_valid_labels_come_back_as_a_list(labels):
    expected = [str(x) for x in labels] if isinstance(labels, np.ndarray) else None
    out = check_labels(labels)
    assert isinstance(out, list) and all(isinstance(x, str) for x in out)
    if expected is not None:
        assert out == expected


def test_red_circle_is_one_label_not_a_repeat():
    assert check_labels(["red circle"]) == ["red circle"]
    assert check_labels(["red circle", "circle", "red"]) == ["red circle", "circle", "red"]


@pytest.mark.parametrize("labels, match", [
    ("abc", r"labels: expected a list of label strings, got a single str 'abc'"),
    ("red circle", "got a single str 'red circle'"),
    (b"abc", "got a single bytes"),
    (bytearray(b"ab"), "got a single bytearray"),
    (None, "got NoneType"),
    (3, "got int"),
    (2.5, "got float"),
    ({"a": 1}, "got dict"),
])
def test_a_non_collection_is_a_type_error(labels, match):
    with pytest.raises(TypeError, match=match):
        check_labels(labels)


@pytest.mark.parametrize("labels, match", [
    (["a", None], "label 1 is NoneType None, expected a string"),
    (["a", 3], "label 1 is int 3"),
    ([b"a"], "label 0 is bytes b'a'"),
    ([["a"]], "label 0 is list"),
])
def test_non_string_items_are_type_errors(labels, match):
    with pytest.raises(TypeError, match=match):
        check_labels(labels)


@pytest.mark.parametrize("labels, match", [
    ([], "labels: no labels given"),
    ([""], "label 0 '' is empty or only whitespace"),
    (["ok", "   "], "label 1 '   ' is empty or only whitespace"),
    (["\t\n"], "empty or only whitespace"),
    (["a\nb"], r"label 0 'a\\nb' holds the control character '\\n'"),
    (["a\x00b"], "control character"),
    (["run", "jump", "run", "jump", "swim"], "labels must be distinct; repeated: 'run', 'jump'"),
])
def test_bad_labels_are_value_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^--labels-file l.txt: label 0 '' is empty"):
        check_labels([""], what="--labels-file l.txt")
    with pytest.raises(TypeError, match=r"^set_labels: expected a list"):
        check_labels("abc", what="set_labels")
