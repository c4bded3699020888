"""The Ray Data example (zsar.eval.ray_data): ``map_batches`` with the classifier as a callable class on a
local Ray (one CPU), giving what the classifier gives in this process."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_checkpoint import make_checkpoint, make_video_folder

ray = pytest.importorskip("ray")


def test_the_callable_on_a_numpy_batch(tmp_path):
    """What each Ray actor runs, called as map_batches calls it (quick; the Ray run below is slow)."""
    from zsar.eval.ray_data import VideoClassifier
    from zsar.zeroshot import ZeroShotClassifier

    ckpt = make_checkpoint(tmp_path)
    folder = make_video_folder(tmp_path / "videos", classes=("red",), per_class=2)
    paths = np.array([str(p) for p in sorted(folder.glob("*/*.webm"))] + [str(tmp_path / "missing.mp4")])
    out = VideoClassifier(str(ckpt), ["red light", "dark room"], device="cpu")({"path": paths, "n": np.arange(3)})
    clf = ZeroShotClassifier.load(ckpt, device="cpu").set_labels(["red light", "dark room"])
    np.testing.assert_allclose(out["probabilities"][:2], clf.predict_proba(list(paths[:2])).numpy(), rtol=1e-4,
                               atol=1e-5)
    assert list(out["n"]) == [0, 1, 2] and out["label"][2] is None


@pytest.mark.slow
def test_map_batches_with_the_classifier_as_a_callable_class(tmp_path):
    """Ray's start on a loaded 2-core machine takes tens of seconds: slow."""
    from zsar.eval.ray_data import VideoClassifier
    from zsar.zeroshot import ZeroShotClassifier

    ckpt = make_checkpoint(tmp_path)
    folder = make_video_folder(tmp_path / "videos", classes=("red", "blue"), per_class=2)
    paths = [str(p) for p in sorted(folder.glob("*/*.webm"))] + [str(tmp_path / "missing.mp4")]
    labels = ["red light", "blue glow", "dark room"]
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items([{"path": p, "n": i} for i, p in enumerate(paths)])
        rows = ds.map_batches(VideoClassifier, batch_size=2, concurrency=1, batch_format="numpy",
                              fn_constructor_kwargs={"checkpoint": str(ckpt), "labels": labels,
                                                     "device": "cpu"}).take_all()
    finally:
        ray.shutdown()
    rows.sort(key=lambda r: r["n"])
    assert [r["path"] for r in rows] == paths
    assert rows[-1]["label"] is None and np.isnan(rows[-1]["score"])  # an unreadable file, not a failed batch

    clf = ZeroShotClassifier.load(ckpt, device="cpu").set_labels(labels)
    expected = clf.predict_proba(paths[:-1]).numpy()
    got = np.stack([r["probabilities"] for r in rows[:-1]])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert [r["label"] for r in rows[:-1]] == [labels[j] for j in expected.argmax(1)]
    assert np.stack([r["embedding"] for r in rows[:-1]]).shape == (4, 32)
