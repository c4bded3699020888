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
