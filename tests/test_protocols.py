"""Tests of the packaged class lists, the ZSAR protocols and the E2E training-class removal."""

import pytest

from zsar.resources import AVCA_STAGES, avca_name_map, avca_split, class_list


# ---------------------------------------------------------------- packaged class lists

@pytest.mark.parametrize(
    "name, count",
    [("ucf101", 101), ("hmdb51", 51), ("kinetics400", 400), ("kinetics600", 600), ("kinetics700", 700),
     ("activitynet200", 200), ("Kinetics-700", 700)],
)
def test_class_list_counts(name, count):
    names = class_list(name)
    assert len(names) == count == len(set(names))
    assert all(n == n.strip() and n for n in names)


def test_class_list_contents_and_errors():
    assert class_list("ucf101")[0] == "ApplyEyeMakeup"
    assert "brush_hair" in class_list("hmdb51")
    with pytest.raises(ValueError, match="ucf101"):
        class_list("ucf50")


@pytest.mark.parametrize("dataset, total", [("ucf", 101), ("activitynet", 200), ("VGGSound", 309)])
def test_avca_splits(dataset, total):
    all_classes = set(avca_split(dataset, "all"))
    assert len(all_classes) == total
    for split in ("main_split", "cls_split"):
        stages = {s: avca_split(dataset, s, split) for s in AVCA_STAGES}
        assert all(stages.values())
        # Stage 2: train and test-seen are the same classes, disjoint from test-unseen.
        assert set(stages["stage_2_train"]) == set(stages["stage_2_test_seen"])
        assert not set(stages["stage_2_train"]) & set(stages["stage_2_test_unseen"])
    name_map = avca_name_map(dataset)
    assert set(avca_split(dataset, "all")) <= set(name_map)


def test_avca_errors():
    with pytest.raises(ValueError, match="vggsound"):
        avca_split("kinetics", "all")
    with pytest.raises(ValueError, match="stage_2_test_unseen"):
        avca_split("ucf", "test")
    with pytest.raises(ValueError, match="main_split"):
        avca_split("ucf", "stage_1_train", split="other")
