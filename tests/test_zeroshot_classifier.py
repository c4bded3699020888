"""ZeroShotClassifier: prototypes from a loader, transfer to new labels, predictions, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from torch.utils.data import DataLoader

import zsar
from training_data import SeparableClips
from zsar.text import WordVectorEmbedder
from zsar.zeroshot import ZeroShotClassifier
from zsar.zeroshot.heads import load_prototypes

SEEN = ["red light", "green light", "blue light", "dark room"]  # the casts of SeparableClips, in order


@pytest.fixture
def setup(seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue", "dark", "light", "room"]
    base = rng.standard_normal((len(words), 16)).astype(np.float32)
    base[:, 0] = np.abs(base[:, 0]) + 3  # every word leans along e0, so every two labels are related ...
    # "crimson" and "glow" are noisy copies of "red" and "light": related, not identical.
    near = base[[0, 4]] + 0.3 * rng.standard_normal((2, 16)).astype(np.float32)
    zebra = -np.eye(1, 16, dtype=np.float32)  # ... so "zebra" (-e0) has negative cosine with every label
    kv = KeyedVectors(vector_size=16)
    kv.add_vectors(words + ["crimson", "glow", "zebra"], np.concatenate([base, near, zebra]))
    model = zsar.create_model("rest_tiny", class_names=SEEN, frames=4, dim=32, depth=1, heads=4, mlp_dim=64)
    data = SeparableClips(32, seed=seed)
    clf = ZeroShotClassifier.from_loader(model, DataLoader(data, batch_size=8), SEEN, WordVectorEmbedder(kv),
                                         head_settings={"k": 1, "rho": 1}, progress=False)
    return clf, data


def test_transfer_to_known_compositions_classifies(setup):
    clf, data = setup
    clf.set_labels(["blue light", "red light"])  # each target's nearest seen label is itself (m = 1)
    assert clf.assignment.sum(1).tolist() == [1, 1]
    torch.testing.assert_close(clf.prototypes[0], clf.head.seen_prototypes[2])
    keep = (data.labels == 0) | (data.labels == 2)
    clips, truth = data.clips[keep], (data.labels[keep] == 0).long()  # red -> index 1, blue -> 0
    pred = clf.predict(clips)
    assert (pred == truth).float().mean() >= 0.9
    probs = clf.predict_proba(clips)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(clips)))
    assert clf.predict(clips, top_k=2).shape == (len(clips), 2)


def test_composite_prototype_mixes_related_seen_classes(setup):
    clf, _ = setup
    # theta = 0: only a seen class identical to another target ("dark room") is ruled out by Eq. 3.
    clf.head.rho, clf.head.k, clf.head.theta = 2, 3, 0.0  # K = 3: two candidates besides "dark room"
    clf.set_labels(["crimson glow", "dark room"])
    assert clf.prototypes.shape == (2, clf.head.seen_prototypes.shape[1])
    assert clf.assignment[0, 0] and clf.assignment[0].sum() == 2  # "red light" and one more
    with pytest.raises(ValueError, match="unrelated to every seen class"):
        clf.set_labels(["zebra"])


def test_errors_and_persistence(setup, tmp_path):
    clf, data = setup
    with pytest.raises(RuntimeError, match="call set_labels"):
        clf.predict(data.clips[:2])
    with pytest.raises(ValueError, match="distinct"):
        clf.set_labels(["red light", "red light"])
    clf.set_labels(["red light", "blue light"])
    with pytest.raises(ValueError, match="top_k must be in"):
        clf.predict(data.clips[:2], top_k=3)
    clf.head.save_state(tmp_path)
    protos, labels = load_prototypes(tmp_path)
    torch.testing.assert_close(protos, clf.head.seen_prototypes)
    assert labels == SEEN


def test_save_load_and_video_files(setup, tmp_path):
    """A saved checkpoint reloads into the same classifier, which also reads video files."""
    from zsar.data import ClipSpec, load_clip
    from zsar.models import save_checkpoint
    from videos import make_video

    clf, _ = setup
    kv_path = tmp_path / "vectors.txt"
    clf.embedder.vectors.save_word2vec_format(str(kv_path))
    clf.embedder = WordVectorEmbedder(kv_path)  # recordable: built from a file
    clf.clip_spec = ClipSpec(frames=4, size=32, short_side=36, num_clips=2)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, clf.model)
    clf.save(ckpt)
    paths = [tmp_path / "a.webm", tmp_path / "b.mp4"]
    for i, p in enumerate(paths):
        make_video(p, t=10, h=40, w=48, seed=i)

    loaded = ZeroShotClassifier.load(ckpt, device="cpu")
    assert loaded.seen_labels == SEEN and loaded.clip_spec == clf.clip_spec and (loaded.head.k, loaded.head.rho) == (1, 1)
    for c in (clf, loaded):
        c.set_labels(["blue light", "red light", "dark room"])
    clips = torch.stack([load_clip(p, clf.clip_spec) for p in paths])
    assert clips.shape == (2, 2, 4, 3, 32, 32)
    torch.testing.assert_close(loaded.encode([str(p) for p in paths]), clf.encode(clips))
    torch.testing.assert_close(loaded.predict_proba(paths[0]), clf.predict_proba(clips[:1]))
    with pytest.raises(TypeError, match="video file path"):
        loaded.encode([1, 2])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ZeroShotClassifier.load(tmp_path / "nowhere")
    save_checkpoint(tmp_path / "bare", clf.model)
    with pytest.raises(FileNotFoundError, match="zeroshot.json"):
        ZeroShotClassifier.load(tmp_path / "bare")


def test_fit_chooses_the_head_settings_by_cross_validation_and_records_them(tmp_path):
    # The one place a head's parameters are chosen: fit with a HeadSelection runs the ResT §4.1
    # cross-validation (real HiGHS solves) and records what it found in zeroshot.json.
    from zsar.models import save_checkpoint
    from zsar.zeroshot import EncodedSet, HeadSelection, class_means, select_transfer_params

    rng = np.random.default_rng(3)
    labels = [f"word{i}" for i in range(10)]
    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(labels, (rng.standard_normal((10, 8)) + 2.0).astype(np.float32))
    embedder = WordVectorEmbedder(kv)
    centres = rng.standard_normal((10, 12))
    y = np.repeat(np.arange(10), 4)
    seen = EncodedSet(torch.as_tensor(centres[y] + 0.3 * rng.standard_normal((40, 12)), dtype=torch.float32), None, y)
    model = zsar.create_model("rest_tiny", class_names=labels, frames=4, dim=32, depth=1, heads=4, mlp_dim=64)
    grid = HeadSelection(thetas=(0.0, 0.5), ks=(1, 3), rhos=(1, 2), n_folds=5, seed=1)

    clf = ZeroShotClassifier.fit(model, seen, labels, embedder, head_settings={"k": 5, "theta": 0.9, "rho": 4},
                                 selection=grid)
    expected = select_transfer_params(seen.x, y, embedder.embed(labels), class_means(seen.x, torch.as_tensor(y), 10),
                                      thetas=grid.thetas, ks=grid.ks, rhos=grid.rhos, n_folds=5, seed=1,
                                      progress=False)
    assert clf.head.settings() == {"k": expected.k, "theta": expected.theta, "rho": expected.rho}
    assert clf.selection["cv_top1"] == expected.score and clf.selection["method"].startswith("5-fold")

    save_checkpoint(tmp_path / "ckpt", model)
    clf.save(tmp_path / "ckpt")
    loaded = ZeroShotClassifier.load(tmp_path / "ckpt", embedder=embedder, device="cpu")
    assert loaded.selection == clf.selection and loaded.head.settings() == clf.head.settings()

    # Too few classes for the folds: the given settings stay, and the record says why.
    few = ZeroShotClassifier.fit(model, EncodedSet(seen.x[:12], None, y[:12]), labels[:3], embedder,
                                 head_settings={"k": 2, "theta": 0.0, "rho": 1}, selection=grid)
    assert few.head.settings() == {"k": 2, "theta": 0.0, "rho": 1}
    assert few.selection["method"] == "fixed" and "fold" in few.selection["reason"]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_saving_a_classifier_changes_the_checkpoint_at_once(setup, tmp_path, monkeypatch):
    """A save that fails half-way (here: writing zeroshot.json after the prototypes) leaves the earlier
    classifier whole, never new prototypes beside old settings; a save that completes replaces both
    and keeps the model's files."""
    import zsar.zeroshot.classifier as classifier_module
    from zsar.models import save_checkpoint

    clf, _ = setup
    ckpt = save_checkpoint(tmp_path / "ckpt", clf.model)
    clf.save(ckpt)
    before = _files(ckpt)
    clf.head.seen_prototypes = clf.head.seen_prototypes + 1.0
    clf.head.k = 2

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(classifier_module.json, "dumps", disk_full)
        with pytest.raises(OSError, match="No space left"):
            clf.save(ckpt)
    assert _files(ckpt) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left
    clf.save(ckpt)
    after = _files(ckpt)
    assert after["model.safetensors"] == before["model.safetensors"] and after["config.json"] == before["config.json"]
    loaded = ZeroShotClassifier.load(ckpt, embedder=clf.embedder, device="cpu")
    assert loaded.head.k == 2 and torch.equal(loaded.head.seen_prototypes, clf.head.seen_prototypes)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):  # never replaces a folder that is not one
        clf.save(tmp_path)


def test_a_pipeline_saves_model_and_classifier_together(setup, tmp_path, monkeypatch):
    """Pipeline.save(clf, folder) replaces the model and the classifier in one step: a failure while
    writing the classifier leaves the previous checkpoint (model and classifier) as it was."""
    from zsar.train.config import TrainConfig
    from zsar.train.pipeline import Pipeline

    clf, _ = setup
    pipeline = Pipeline(TrainConfig(), SEEN, clf.embedder, model=clf.model)
    ckpt = pipeline.save(clf, tmp_path / "ckpt")
    before = _files(ckpt)
    assert {"model.safetensors", "config.json", "zeroshot.json"} <= set(before)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with torch.no_grad():
        next(clf.model.parameters()).add_(1.0)
    with monkeypatch.context() as m:
        m.setattr(clf.head, "save_state", disk_full)
        with pytest.raises(OSError, match="No space left"):
            pipeline.save(clf, ckpt)
    assert _files(ckpt) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_head_settings_as_configs_give_them(setup, tmp_path):
    """theta as YAML 1.1 reads `1e-1` (a string) still works; a head of one's own that does not check
    its settings gets them as given (it is checked when built)."""
    from zsar.zeroshot.heads import HEADS, PrototypeTransferHead, SemanticEmbeddingHead, ZeroShotHead

    assert PrototypeTransferHead.check_settings({"theta": "1e-1", "k": np.int64(3)}, "x") == {"theta": "1e-1",
                                                                                            "k": np.int64(3)}
    clf, _ = setup
    assert PrototypeTransferHead(clf.head.seen_prototypes, SEEN, theta="1e-1").theta == 0.1
    with pytest.raises(ValueError, match="x: theta must be a number, got 'abc'"):
        PrototypeTransferHead.check_settings({"theta": "abc"}, "x")
    with pytest.raises(ValueError, match="x: metric must be one of"):
        SemanticEmbeddingHead.check_settings({"metric": "manhattan"}, "x")

    class OwnHead(ZeroShotHead):
        name = "own_head_for_test"

        def __init__(self, alpha=1.0):
            self.alpha = alpha

    assert OwnHead.check_settings({"alpha": 2.0}, "x") == {"alpha": 2.0}
    assert "own_head_for_test" not in HEADS
