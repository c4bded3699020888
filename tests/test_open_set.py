"""Open-set answers (zsar.zeroshot.open_set): Platt scaling against a float64 reference (scipy), fitted on
held-out seen classes and stored in the checkpoint, per-label scores that ignore unrelated labels, and
"none of these"."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tiny_checkpoint import make_checkpoint, make_video_folder
from zsar.zeroshot.open_set import OpenSetCalibration, calibration_pairs, fit_platt


def test_platt_fit_matches_a_float64_reference(seed):
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(0.6, 0.15, 40), rng.normal(0.2, 0.15, 200)])
    y = np.arange(240) < 40
    scale, bias = fit_platt(s, y)

    w = np.where(y, 0.5 / 40, 0.5 / 200)
    sd = np.sqrt(np.sum(w * (s - np.sum(w * s)) ** 2))

    def loss(theta):  # the class-balanced logistic loss plus the fit's ridge 1e-4/2 on the standardised slope
        z = theta[0] * s + theta[1]
        return float(np.sum(w * (np.logaddexp(0, z) - y * z)) + 0.5e-4 * (theta[0] * sd) ** 2)

    ref = minimize(loss, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14,
                                                                    "maxiter": 20000}).x
    assert loss([scale, bias]) <= loss(ref) + 1e-12
    np.testing.assert_allclose([scale, bias], ref, rtol=1e-4)
    assert 0.2 < -bias / scale < 0.6
    with pytest.raises(ValueError, match="positive and negative"):
        fit_platt(s[:40], y[:40])


def test_calibration_holds_classes_out(tmp_path):
    """Each fold's labels are scored by a head rebuilt without them: a seen class's own prototype is never used."""
    from zsar.zeroshot import ZeroShotClassifier

    clf = ZeroShotClassifier.load(make_checkpoint(tmp_path), device="cpu")
    assert clf.open_set is not None and clf.open_set.classes == 4 and clf.open_set.scale > 0
    protos = clf.head.seen_prototypes
    labels = torch.arange(4)
    s, y = calibration_pairs(clf.head, clf.embedder, clf.model, protos, labels, clf.seen_labels, folds=2)
    # 2 folds of 2 classes: per fold 2 videos x 2 labels
    assert s.shape == (8,) and y.sum() == 4
    # with its own prototype in the head a class would score cosine 1 against itself
    assert not np.allclose(s[y], 1.0)


def test_match_scores_ignore_an_unrelated_label_and_none_of_these(tmp_path):
    from zsar.zeroshot import ZeroShotClassifier

    ckpt = make_checkpoint(tmp_path)
    settings = json.loads((ckpt / "zeroshot.json").read_text())
    settings["open_set"] = {"scale": 10.0, "bias": -5.0, "videos": 16, "classes": 4}  # threshold 0.5
    (ckpt / "zeroshot.json").write_text(json.dumps(settings))
    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    assert clf.open_set == OpenSetCalibration(10.0, -5.0, 16, 4) and clf.open_set.threshold == pytest.approx(0.5)

    labels = ["red light", "blue glow"]
    matrix = clf.set_labels(labels).class_matrix.clone()
    x = torch.stack([matrix[0], -matrix[0] - matrix[1]])  # shows label 0; shows neither
    match = clf.open_set.probability(clf.scores(x))  # x: representations (match_proba takes videos)
    soft = torch.softmax(clf.scores(x) / clf.temperature, 1)
    assert clf.open_set.answer(clf.scores(x)).tolist() == [0, -1]
    clf.set_labels(labels + ["zebra tone"])
    np.testing.assert_array_equal(clf.open_set.probability(clf.scores(x))[:, :2].numpy(), match.numpy())  # exactly
    assert not torch.allclose(torch.softmax(clf.scores(x) / clf.temperature, 1)[:, :2], soft)  # the softmax changes


def test_predict_cli_reports_match_and_none_of_these(tmp_path, capsys):
    from zsar.cli import main

    ckpt = make_checkpoint(tmp_path)
    folder = make_video_folder(tmp_path / "videos", classes=("red",), per_class=1)
    video = str(next(folder.glob("*/*.webm")))
    assert main(["predict", video, "--checkpoint", str(ckpt), "--labels", "red light,blue glow", "--json",
                 "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    pred = out[0]["predictions"]
    assert {"probability", "similarity", "match"} <= set(pred[0]) and isinstance(out[0]["none_of_these"], bool)
    assert out[0]["none_of_these"] == (max(p["match"] for p in pred) < 0.5)


@pytest.fixture(scope="module")
def mzst_checkpoint(tmp_path_factory):
    from tiny_checkpoint import make_mzst_checkpoint

    return make_mzst_checkpoint(tmp_path_factory.mktemp("mzst"))


def _reference_platt(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(scale, bias) minimising the fit's loss (class-balanced logistic + its ridge), by scipy."""
    from scipy.optimize import minimize

    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    sd = np.sqrt(np.sum(w * (s - np.sum(w * s)) ** 2))

    def loss(theta):
        z = theta[0] * s + theta[1]
        return float(np.sum(w * (np.logaddexp(0, z) - y * z)) + 0.5e-4 * (theta[0] * sd) ** 2)

    start = [1.0 / sd, -np.sum(w * s) / sd]
    return minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 40000}).x


def test_mzst_checkpoint_is_calibrated_and_answers_none_of_these(mzst_checkpoint):
    """An MZST checkpoint (semantic-embedding head, L2) carries the calibration fitted on its seen-class
    videos, classes held out fold by fold (a float64 reference of the folds and the fit), and the API
    answers "none of these" far from every label."""
    from tiny_checkpoint import SEEN
    from zsar.zeroshot import ZeroShotClassifier

    ckpt, x, labels = mzst_checkpoint
    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    assert clf.model.zero_shot_head == "semantic_embedding" and clf.head.metric == "l2"
    assert clf.open_set is not None and (clf.open_set.videos, clf.open_set.classes) == (16, 4)

    with torch.no_grad():
        targets = clf.model.class_embedding_targets(torch.as_tensor(clf.embedder.embed(SEEN))).double().numpy()
    xs = x.double().numpy()
    order = np.random.default_rng(0).permutation(4)  # the default seed; 4 classes give 2 folds of 2
    s, y = [], []
    for fold in np.array_split(order, 2):
        fold = sorted(fold)
        rows = np.isin(labels, fold)
        dist = np.sqrt(((xs[rows][:, None, :] - targets[fold][None]) ** 2).sum(-1))
        s.append(-dist.ravel())
        y.append((labels[rows][:, None] == np.array(fold)[None]).ravel())
    scale, bias = _reference_platt(np.concatenate(s), np.concatenate(y))
    np.testing.assert_allclose([clf.open_set.scale, clf.open_set.bias], [scale, bias], rtol=1e-4)

    clf.set_labels(["red light", "blue light"])
    at = torch.as_tensor(targets[[0, 2]]).float()  # on each label's target; then far from both
    far = at[:1] + 50 * float(np.linalg.norm(targets, axis=1).mean()) * torch.ones(1, at.shape[1]) / at.shape[1] ** 0.5
    assert clf.open_set.answer(clf.scores(torch.cat([at, far]))).tolist() == [0, 1, -1]


def test_predict_cli_on_an_mzst_checkpoint(mzst_checkpoint, tmp_path, capsys):
    """`zsar predict` on a video with sound: each label's match, "none of these", as the API gives them."""
    from videos import make_video_with_tones
    from zsar.cli import main
    from zsar.zeroshot import ZeroShotClassifier

    ckpt, _, _ = mzst_checkpoint
    video = tmp_path / "tones.webm"
    make_video_with_tones(video, seconds=4, fps=8, h=64, w=64)
    labels = ["red light", "blue glow", "zebra tone"]
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--labels", ",".join(labels), "--json",
                 "--top-k", "3", "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    clf = ZeroShotClassifier.load(ckpt, device="cpu").set_labels(labels)
    match = clf.match_proba([str(video)])[0]
    got = {p["label"]: p["match"] for p in row["predictions"]}
    for j, label in enumerate(labels):
        assert got[label] == pytest.approx(float(match[j]), abs=2e-6), label
    assert row["none_of_these"] == (float(match.max()) < 0.5) == (int(clf.predict_open([str(video)])[0]) == -1)


def test_a_checkpoint_without_calibration_says_why(mzst_checkpoint, tmp_path, capsys):
    """When the seen classes cannot calibrate it (here: one class), the checkpoint records why and
    `zsar predict` says so instead of answering "none of these"."""
    from tiny_checkpoint import SEEN
    from zsar.models import save_checkpoint
    from zsar.zeroshot import EncodedSet, ZeroShotClassifier

    ckpt, x, labels = mzst_checkpoint
    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    one = labels == 0
    refit = ZeroShotClassifier.fit(clf.model, None, SEEN, clf.embedder, calibration=EncodedSet(x[one], None,
                                                                                                labels[one]))
    assert refit.open_set is None and "at least 2 seen classes" in refit.open_set_missing
    out = tmp_path / "uncalibrated"
    save_checkpoint(out, refit.model, {"class_names": SEEN})
    refit.save(out)
    assert ZeroShotClassifier.load(out, device="cpu").open_set_missing == refit.open_set_missing
    from videos import make_video_with_tones
    from zsar.cli import main

    video = tmp_path / "tones.webm"
    make_video_with_tones(video, seconds=4, fps=8, h=64, w=64)
    assert main(["predict", str(video), "--checkpoint", str(out), "--labels", "red light,blue glow",
                 "--device", "cpu"]) == 0
    assert "no open-set calibration (open-set calibration needs videos of at least 2 seen classes" in \
        capsys.readouterr().err
