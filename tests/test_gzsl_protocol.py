"""The AVCA two-stage protocol driver: the packaged splits, a hand-computed run, and a run checked
against the independent loop implementation of test_gzsl.py."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from test_gzsl import ref_calibrate, ref_scores
from zsar.data.records import VideoList, VideoRecord
from zsar.eval import (
    DEFAULT_BETA_GRID,
    avca_label_names,
    avca_stages,
    class_distances,
    format_gzsl_table,
    run_avca_protocol,
    write_results_json,
)
from zsar.resources import AVCA_STAGES, avca_split, class_list

DATASET_CLASSES = {
    "ucf": lambda: class_list("ucf101"),
    "activitynet": lambda: class_list("activitynet200"),  # "Applying sunscreen" vs AVCA "Applyingsunscreen"
    "vggsound": lambda: avca_split("vggsound", "all"),
}


def make_videos(classes, per_class, part):
    records = [VideoRecord(f"/data/{part}/{c}/{i}.mp4", label, f"{part}-{label}-{i}")
               for label, c in enumerate(classes) for i in range(per_class)]
    return VideoList(records, list(classes))


def names_of(videos):
    return [videos.classes[r.label] for r in videos.records]


# ------------------------------------------------------------ the six stages from the packaged splits

@pytest.mark.parametrize("dataset", ["ucf", "activitynet", "vggsound"])
@pytest.mark.parametrize("split", ["main_split", "cls_split"])
def test_avca_stages_from_packaged_splits(dataset, split):
    from zsar.data.formats import match_class_names

    classes = DATASET_CLASSES[dataset]()
    train, test = make_videos(classes, 5, "train"), make_videos(classes, 3, "test")
    stages = avca_stages(train, dataset, split, test_videos=test)
    assert list(stages) == list(AVCA_STAGES)
    for stage, videos in stages.items():
        # Each stage's classes: the stage file, in its order, in the dataset's spelling.
        assert videos.classes == match_class_names(avca_split(dataset, stage, split), classes)
        assert {names_of(videos)[i] for i in range(len(videos))} <= set(videos.classes)
    paths = {s: {r.path for r in v.records} for s, v in stages.items()}
    # Stage 1 only sees training videos: one held out of every seen class (round(0.2 * 5)).
    assert all(p.startswith("/data/train/") for s in AVCA_STAGES[:4] for p in paths[s])
    assert not paths["stage_1_train"] & paths["stage_1_val_seen"]
    n_seen = len(stages["stage_1_train"].classes)
    assert len(stages["stage_1_val_seen"]) == n_seen and len(stages["stage_1_train"]) == 4 * n_seen
    assert len(stages["stage_1_val_unseen"]) == 5 * len(stages["stage_1_val_unseen"].classes)
    assert len(stages["stage_2_train"]) == 5 * len(stages["stage_2_train"].classes)
    assert all(p.startswith("/data/test/") for s in AVCA_STAGES[4:] for p in paths[s])
    # Deterministic for a seed, different for another.
    again = avca_stages(train, dataset, split, test_videos=test)
    assert {r.path for r in again["stage_1_val_seen"].records} == paths["stage_1_val_seen"]
    other = avca_stages(train, dataset, split, test_videos=test, seed=1)
    assert {r.path for r in other["stage_1_val_seen"].records} != paths["stage_1_val_seen"]


def test_avca_stages_with_per_video_lists(tmp_path):
    # A split directory like the AVCA release: class files plus per-video CSVs (filename column).
    classes = ["Alpha", "Beta", "Gamma", "Delta"]
    stage_classes = {"stage_1_train": ["Alpha", "Beta"], "stage_1_val_seen": ["Beta", "Alpha"],
                     "stage_1_val_unseen": ["Gamma"], "stage_2_train": ["Alpha", "Beta", "Gamma"],
                     "stage_2_test_seen": ["Alpha", "Beta", "Gamma"], "stage_2_test_unseen": ["Delta"]}
    videos = make_videos(classes, 6, "all")
    ids = {c: [r.video_id for r in videos.records if videos.classes[r.label] == c] for c in classes}
    listed = {"stage_1_train": ids["Alpha"][:3] + ids["Beta"][:3], "stage_1_val_seen": ids["Alpha"][3:4] + ids["Beta"][3:4],
              "stage_1_val_unseen": ids["Gamma"][:4], "stage_2_train": [i for c in classes[:3] for i in ids[c][:4]],
              "stage_2_test_seen": [i for c in classes[:3] for i in ids[c][4:]], "stage_2_test_unseen": ids["Delta"]}
    for stage in AVCA_STAGES:
        (tmp_path / f"{stage}.txt").write_text("\n".join(stage_classes[stage]) + "\n")
        (tmp_path / f"{stage}.csv").write_text("filename,class\n" + "".join(f"{i},x\n" for i in listed[stage]))
    stages = avca_stages(videos, "ucf", split_dir=tmp_path)
    for stage in AVCA_STAGES:
        assert sorted(r.video_id for r in stages[stage].records) == sorted(listed[stage])
        assert stages[stage].classes == stage_classes[stage]
    with pytest.raises(ValueError, match="without test_videos"):
        avca_stages(videos, "ucf", split_dir=tmp_path, test_videos=videos)
    # A training video listed again for evaluation is refused.
    (tmp_path / "stage_1_val_seen.csv").write_text(f"filename\n{ids['Alpha'][0]}\n")
    with pytest.raises(ValueError, match="stage 1 evaluates 1 of its training videos"):
        avca_stages(videos, "ucf", split_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split_dir .*nope is not a folder"):
        avca_stages(videos, "ucf", split_dir=tmp_path / "nope")


def test_avca_stages_errors():
    classes = class_list("ucf101")
    videos = make_videos(classes, 2, "train")
    with pytest.raises(ValueError, match="pass test_videos"):
        avca_stages(videos, "ucf")
    with pytest.raises(ValueError, match="unknown AVCA dataset"):
        avca_stages(videos, "hmdb", test_videos=videos)
    with pytest.raises(ValueError, match="unknown AVCA split"):
        avca_stages(videos, "ucf", "other_split", test_videos=videos)
    with pytest.raises(ValueError, match="no match among"):
        avca_stages(make_videos(classes[:50], 2, "train"), "ucf", test_videos=videos)
    # The same list as training and test part: stage 2 would test on its training videos.
    with pytest.raises(ValueError, match="stage 2 evaluates"):
        avca_stages(videos, "ucf", test_videos=videos)


def test_avca_label_names():
    names = avca_label_names("activitynet", ["Applying sunscreen", "Archery"])
    assert names == {"Applying sunscreen": "Applying sunscreen", "Archery": "Archery"}
    assert avca_label_names("ucf", ["ApplyEyeMakeup"]) == {"ApplyEyeMakeup": "Apply Eye Makeup"}
    all_vgg = avca_split("vggsound", "all")
    assert len(avca_label_names("vggsound", all_vgg)) == 309
    with pytest.raises(ValueError, match="no match"):
        avca_label_names("ucf", ["NotAClass"])


# ------------------------------------------------------------ a model stand-in

class ToyModel:
    """Encodes each video as its class embedding plus noise whose size depends on the epoch
    trained so far; records the calls the driver makes."""

    def __init__(self, embeddings, sigma, dim=8):
        self.embeddings, self.sigma, self.dim = embeddings, sigma, dim
        self.epoch, self.calls, self.encoded = 0, [], []

    def train(self, videos, epochs, after_epoch):
        self.calls.append((videos, epochs, after_epoch is not None))
        self.epoch = 0  # a fresh model every call
        for _ in range(epochs):
            self.epoch += 1
            if after_epoch is not None:
                assert set(after_epoch()) == {"epoch", "beta", "S", "U", "HM", "ZSL"}

    def vector(self, record, name):
        rng = np.random.default_rng(zlib.crc32(f"{record.video_id}/{self.epoch}".encode()))
        return self.embeddings[name] + self.sigma[self.epoch] * rng.standard_normal(self.dim)

    def encode(self, videos):
        self.encoded.append(videos)
        return np.stack([self.vector(r, videos.classes[r.label]) for r in videos.records])

    def embed(self, names):
        return np.stack([self.embeddings[n] for n in names])


def reference_epoch_scores(model, val_videos, epoch, beta=None):
    """Independent recomputation for one evaluation: loops of test_gzsl on the same distances."""
    model.epoch = epoch
    x = np.stack([model.vector(r, val_videos.classes[r.label]) for r in val_videos.records])
    dist = class_distances(x, model.embed(val_videos.classes))
    labels = [r.label for r in val_videos.records]
    n_seen = val_videos.n_seen
    seen, unseen = list(range(n_seen)), list(range(n_seen, len(val_videos.classes)))
    if beta is None:
        beta = ref_calibrate(dist, labels, seen, unseen, DEFAULT_BETA_GRID.tolist())
    return beta, ref_scores(dist, labels, seen, unseen, beta)


def eval_list(train, seen, unseen):
    classes = list(train.classes) + list(unseen.classes)
    index = {c: i for i, c in enumerate(classes)}
    recs = [VideoRecord(r.path, index[p.classes[r.label]], r.video_id) for p in (seen, unseen) for r in p.records]
    out = VideoList(recs, classes)
    out.n_seen = len(train.classes)
    return out


@pytest.mark.parametrize("split", ["main_split", "cls_split"])
def test_protocol_on_ucf_matches_the_reference(split, seed):
    classes = class_list("ucf101")
    stages = avca_stages(make_videos(classes, 5, "train"), "ucf", split, test_videos=make_videos(classes, 3, "test"))
    rng = np.random.default_rng(seed)
    embeddings = {c: rng.normal(size=8) for c in classes}
    sigma = {e: s for e, s in enumerate(rng.uniform(0.3, 2.5, 6), start=1)}
    model = ToyModel(embeddings, sigma)
    report = run_avca_protocol(stages, model.train, model.encode, model, epochs=5, dataset="ucf", split=split,
                               model="toy")

    val = eval_list(stages["stage_1_train"], stages["stage_1_val_seen"], stages["stage_1_val_unseen"])
    history = [reference_epoch_scores(model, val, e) for e in range(1, 6)]
    for got, (beta, want) in zip(report["stage_1"]["history"], history):
        assert abs(got["beta"] - beta) <= 1e-9
        assert all(abs(got[k] - want[k]) <= 1e-9 for k in ("S", "U", "HM", "ZSL"))
    hms = [want["HM"] for _, want in history]
    best = hms.index(max(hms)) + 1
    beta = history[best - 1][0]
    assert report["stage_1"]["best_epoch"] == best and report["stage_2"]["epochs"] == best
    assert report["stage_1"]["beta"] == report["stage_2"]["beta"] == pytest.approx(beta, abs=1e-12)

    test = eval_list(stages["stage_2_train"], stages["stage_2_test_seen"], stages["stage_2_test_unseen"])
    _, want = reference_epoch_scores(model, test, best, beta)
    assert all(abs(report["test"][k] - want[k]) <= 1e-9 for k in ("S", "U", "HM", "ZSL"))

    # The calls: stage 1 for 5 epochs with evaluation, stage 2 for the chosen epochs without.
    assert [(v is stages[s], e, cb) for (v, e, cb), s in zip(model.calls, ("stage_1_train", "stage_2_train"))] == [
        (True, 5, True), (True, best, False)]
    assert [len(v) for v in model.encoded] == [len(val.records)] * 5 + [len(test.records)]
    assert model.encoded[0].classes == val.classes and model.encoded[-1].classes == test.classes
    n_unseen = len(avca_split("ucf", "stage_2_test_unseen", split))
    assert report["stage_2"]["classes"] == {"seen": 42, "unseen": n_unseen}
    assert report["stage_1"]["classes"] == {"seen": 30, "unseen": 12}
    curve = report["stage_2"]["curve"]
    assert curve["beta"] == DEFAULT_BETA_GRID.tolist() and len(curve["HM"]) == 16
    per_class = report["stage_2"]["per_class_accuracy"]
    assert len(per_class["gzsl"]) == 42 + n_unseen and len(per_class["zsl"]) == n_unseen
    unseen_mean = np.mean([per_class["gzsl"][c] for c in test.classes[42:]])
    assert unseen_mean == pytest.approx(report["test"]["U"], abs=1e-12)
    assert np.mean(list(per_class["zsl"].values())) == pytest.approx(report["test"]["ZSL"], abs=1e-12)


# ------------------------------------------------------------ a hand-computed run

def hand_stages():
    """Stage 1: seen A, B; unseen C. Stage 2: seen A, B, C; unseen D. Two videos per class and part."""
    def part(classes, tag):
        return make_videos(classes, 2, tag)

    return {"stage_1_train": part(["A", "B"], "t1"), "stage_1_val_seen": part(["A", "B"], "v1"),
            "stage_1_val_unseen": part(["C"], "u1"), "stage_2_train": part(["A", "B", "C"], "t2"),
            "stage_2_test_seen": part(["A", "B", "C"], "s2"), "stage_2_test_unseen": part(["D"], "u2")}


class HandModel:
    """Classes on a square of side 10. Epoch 1: every video encodes as A. Epochs 2 and 3: seen videos
    exactly on their class, unseen videos 0.5 closer to a seen class than to their own (so calibration
    needs beta > 0.5: the grid's 0.6)."""

    EMB = {"A": (0.0, 0.0), "B": (10.0, 0.0), "C": (0.0, 10.0), "D": (10.0, 10.0)}
    UNSEEN_AT = {"C": (0.0, 4.75), "D": (10.0, 4.75)}  # |p - A| = 4.75, |p - C| = 5.25 (and B, D)

    def __init__(self):
        self.epoch, self.trained = 0, []

    def train(self, videos, epochs, after_epoch):
        self.trained.append((tuple(videos.classes), epochs))
        for self.epoch in range(1, epochs + 1):
            if after_epoch:
                after_epoch()

    def encode(self, videos):
        exact = {"A", "B"} if len(videos.classes) == 3 else {"A", "B", "C"}  # the seen classes
        out = []
        for r in videos.records:
            name = videos.classes[r.label]
            if self.epoch == 1:
                out.append(self.EMB["A"])
            else:
                out.append(self.EMB[name] if name in exact else self.UNSEEN_AT[name])
        return np.array(out)

    def embed(self, names):
        return np.array([self.EMB[n] for n in names])


def test_protocol_hand_computed(tmp_path):
    model = HandModel()
    report = run_avca_protocol(hand_stages(), model.train, model.encode, model.embed, epochs=3,
                               dataset="ucf", split="main_split", model="hand")
    h = report["stage_1"]["history"]
    # Epoch 1: everything is A; beta <= 3 cannot move it past distance 10 -> S = 1/2, U = 0.
    assert (h[0]["S"], h[0]["U"], h[0]["HM"], h[0]["beta"], h[0]["ZSL"]) == (0.5, 0.0, 0.0, 0.0, 1.0)
    # Epochs 2 and 3: all right from beta 0.6 on (0.4 leaves C at A: 4.75 + 0.4 < 5.25).
    for e in h[1:]:
        assert (e["S"], e["U"], e["HM"], e["ZSL"]) == (1.0, 1.0, 1.0, 1.0) and e["beta"] == pytest.approx(0.6)
    # Ties between epochs go to the earliest; stage 2 retrains A, B, C for 2 epochs.
    assert report["stage_1"]["best_epoch"] == 2 and report["stage_1"]["beta"] == pytest.approx(0.6)
    assert model.trained == [(("A", "B"), 3), (("A", "B", "C"), 2)]
    assert report["test"] == {"S": 1.0, "U": 1.0, "HM": 1.0, "ZSL": 1.0}
    curve = report["stage_2"]["curve"]
    assert curve["U"][:3] == [0.0, 0.0, 0.0] and curve["U"][3:] == [1.0] * 13  # D needs beta > 0.5
    assert report["stage_1"]["videos"] == {"train": 4, "val_seen": 4, "val_unseen": 2}
    assert report["stage_2"]["videos"] == {"train": 6, "test_seen": 6, "test_unseen": 2}
    # JSON report and the paper's table.
    path = write_results_json(tmp_path / "gzsl.json", report)
    assert json.loads(path.read_text())["test"]["HM"] == 1.0
    table = format_gzsl_table(report).splitlines()
    assert "UCF-GZSL" in table[0] and table[1].split() == ["model", "S", "U", "HM", "ZSL"]
    assert table[3].split() == ["hand", "100.00", "100.00", "100.00", "100.00"]


def test_protocol_errors():
    model = HandModel()
    with pytest.raises(ValueError, match="after_epoch 0 times for 2 epochs"):
        run_avca_protocol(hand_stages(), lambda v, e, cb: None, model.encode, model.embed, epochs=2)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        run_avca_protocol(hand_stages(), model.train, model.encode, model.embed, epochs=0)
    with pytest.raises(ValueError, match=r"encode returned shape \(3, 2\) for 6 videos"):
        run_avca_protocol(hand_stages(), model.train, lambda v: np.zeros((3, 2)), model.embed, epochs=1)
    stages = hand_stages()
    del stages["stage_2_test_unseen"]
    with pytest.raises(ValueError, match="missing"):
        run_avca_protocol(stages, model.train, model.encode, model.embed, epochs=1)
    stages = hand_stages()
    stages["stage_1_val_unseen"] = make_videos(["B"], 1, "x")
    with pytest.raises(ValueError, match="trains on its unseen classes"):
        run_avca_protocol(stages, model.train, model.encode, model.embed, epochs=1)


def test_gzsl_table_layout():
    def run(model, dataset, split, s, u, zsl):
        hm = 2 * s * u / (s + u)
        return {"model": model, "dataset": dataset, "split": split, "test": {"S": s, "U": u, "HM": hm, "ZSL": zsl}}

    reports = [run("AVCA", "vggsound", "main_split", 0.149, 0.04, 0.06),
               run("AVCA", "ucf", "main_split", 0.5153, 0.1843, 0.2001),
               run("MZST", "ucf", "main_split", 0.90357, 0.39387, 0.4504),
               run("MZST", "ucf", "cls_split", 0.5, 0.25, 0.3)]
    lines = format_gzsl_table(reports).splitlines()
    assert [c.strip() for c in lines[0].split("   ") if c.strip()] == ["VGGSound-GZSL", "UCF-GZSL", "UCF-GZSL (cls)"]
    assert lines[1].split() == ["model"] + ["S", "U", "HM", "ZSL"] * 3
    assert lines[3].split() == ["AVCA", "14.90", "4.00", "6.31", "6.00", "51.53", "18.43", "27.15", "20.01",
                                "-", "-", "-", "-"]
    assert lines[4].split() == ["MZST", "-", "-", "-", "-", "90.36", "39.39", "54.86", "45.04",
                                "50.00", "25.00", "33.33", "30.00"]
    assert len({len(line) for line in lines[1:]}) == 1  # columns aligned
