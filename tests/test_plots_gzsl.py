"""Plots of the multimodal protocols write real images: MZSL-50 bucket bars, the GZSL trade-off."""

import numpy as np
import pytest

from zsar.eval import gzsl_curve, mzsl50_score
from zsar.eval.plots import plot_bucket_accuracy, plot_gzsl_tradeoff

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def _score(rng, sr):
    return mzsl50_score(rng.uniform(0, 1, len(sr)), sr)


def test_bucket_bars_png(tmp_path, seed):
    rng = np.random.default_rng(seed)
    sr = rng.uniform(0.05, 0.9, 50)
    one = plot_bucket_accuracy(_score(rng, sr), tmp_path / "a" / "buckets.png", title="one model")
    assert one == tmp_path / "a" / "buckets.png" and _is_png(one)
    # Several models side by side (the paper's Table 3), one with an empty bucket (no bar).
    runs = {"AVCA": _score(rng, sr), "MZST": _score(rng, sr), "no hard": _score(rng, [0.2, 0.5, 0.9])}
    assert np.isnan(runs["no hard"]["hard"])
    assert _is_png(plot_bucket_accuracy(runs, tmp_path / "models.png"))
    assert plot_bucket_accuracy(runs, tmp_path / "models.svg").read_text().lstrip().startswith("<?xml")


def test_bucket_bars_errors(tmp_path):
    with pytest.raises(ValueError, match="no results"):
        plot_bucket_accuracy({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="mzsl50_score result"):
        plot_bucket_accuracy({"m": {"easy": 0.5}}, tmp_path / "x.png")


def test_tradeoff_png(tmp_path, seed):
    rng = np.random.default_rng(seed)
    dist = rng.uniform(0, 2, (60, 6))
    labels = rng.integers(0, 6, 60)
    labels[:2] = [0, 5]
    curve = gzsl_curve(dist, labels, [0, 1, 2], [3, 4, 5])
    out = plot_gzsl_tradeoff(curve, tmp_path / "curve.png")  # marks curve["best"]
    assert _is_png(out)
    chosen = curve["beta"][3]
    assert _is_png(plot_gzsl_tradeoff({k: curve[k] for k in ("beta", "S", "U")}, tmp_path / "b.png",
                                      chosen_beta=chosen, title="val"))


def test_tradeoff_errors(tmp_path):
    curve = {"beta": [0.0, 1.0], "S": [0.5, 0.4], "U": [0.1, 0.3]}
    with pytest.raises(ValueError, match="not one of the curve's betas"):
        plot_gzsl_tradeoff(curve, tmp_path / "x.png", chosen_beta=0.5)
    with pytest.raises(ValueError, match="one length"):
        plot_gzsl_tradeoff({**curve, "U": [0.1]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN or inf"):
        plot_gzsl_tradeoff({**curve, "S": [np.nan, 0.4]}, tmp_path / "x.png")
