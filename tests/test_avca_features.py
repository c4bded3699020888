"""The released AVCA-GZSL features: the HDF5 layout, the pickled word2vec table read without running
pickle code, the feature-input models, and `zsar gzsl` on a synthetic corpus written in the released layout."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from zsar.cli import main
from zsar.data import AVCAFeatureDataset, Batch
from zsar.data.config import DataConfig
from zsar.data.formats import avca_class_vectors, avca_feature_stages, read_avca_features
from zsar.data.synthetic_features import write_synthetic_avca_features
from zsar.eval import format_gzsl_table
from zsar.eval.published import PUBLISHED_GZSL, published_reports
from zsar.models import create_model
from zsar.models.feature_input import MZST_FEATURE_VARIANTS, REST_FEATURE_VARIANTS
from zsar.text import ClassVectorEmbedder, UnsafePickleError, embedder_from_spec, read_class_vectors

STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_train", "stage_2_test_seen",
          "stage_2_test_unseen")
CORPUS = dict(n_seen=8, n_val_unseen=4, n_test_unseen=4, videos_per_class=6, noise=0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_avca_features(tmp_path_factory.mktemp("avgzsl") / "UCF", seed=1, **CORPUS)


# ---- the layout ------------------------------------------------------------------------------------


def test_synthetic_corpus_has_the_released_files_and_types(corpus):
    split, feats = corpus / "class-split" / "main_split", corpus / "features" / "main_features"
    assert (corpus / "class-split" / "all_class.txt").is_file()
    with open(corpus / "class-split" / "ucf_w2v_class_names.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["original", "manual"] and len(rows) == 17
    for stage in STAGES:
        classes = (split / f"{stage}.txt").read_text().split()
        with open(split / f"{stage}.csv", newline="") as f:
            listed = list(csv.reader(f))
        assert listed[0] == ["filename", "label", "label_code"]
        for c in classes:
            for modality in ("audio", "video"):
                with h5py.File(feats / modality / stage / f"{c}.h5", "r") as hf:
                    assert set(hf) == {"data", "video_urls"}
                    assert hf["video_urls"].dtype == np.dtype("S80") and hf["data"].dtype == np.float32
                    assert hf["data"].shape == (len(hf["video_urls"]), 512)
                    names = [u.decode() for u in hf["video_urls"][()]]
            assert names == [v for v, label, _ in listed[1:] if label == c]
    # The word2vec file is what np.save of a dict writes: numpy itself reads it back only with allow_pickle.
    npy = feats / "text" / "word_embeddings_ucf_normed.npy"
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(npy)
    table = np.load(npy, allow_pickle=True).item()
    assert isinstance(table, dict) and len(table) == 16 and all(v.shape == (300,) for v in table.values())


def test_stages_are_read_with_their_classes_and_videos(corpus):
    stages = avca_feature_stages(corpus, "main")
    counts = {s: (len(v.classes), len(v)) for s, v in stages.items()}
    assert counts == {"stage_1_train": (8, 48), "stage_1_val_seen": (8, 48), "stage_1_val_unseen": (4, 24),
                      "stage_2_train": (12, 120), "stage_2_test_seen": (12, 72), "stage_2_test_unseen": (4, 24)}
    r = stages["stage_2_test_unseen"].records[0]
    assert r.path.endswith(f"video/stage_2_test_unseen/{stages['stage_2_test_unseen'].classes[0]}.h5")
    assert r.video_id.startswith("v_") and r.label == 0
    # The registered format: `subset: test` is both stage-2 test stages, their classes in order.
    test = DataConfig(format="avca_features", annotations=str(corpus), split="main", subset="test").read()
    assert test.classes == stages["stage_2_test_seen"].classes + stages["stage_2_test_unseen"].classes
    assert len(test) == 96


def test_video_urls_that_disagree_are_all_named(corpus, tmp_path):
    import shutil

    root = tmp_path / "UCF"
    shutil.copytree(corpus, root)
    stage = "stage_1_val_unseen"
    c = (root / "class-split" / "main_split" / f"{stage}.txt").read_text().split()[0]
    audio = root / "features" / "main_features" / "audio" / stage / f"{c}.h5"
    with h5py.File(audio, "r") as hf:
        data, urls = hf["data"][()], hf["video_urls"][()]
    with h5py.File(audio, "w") as hf:  # the audio file loses its first video and gains a stranger
        hf.create_dataset("data", data=np.concatenate([data[1:], data[:1]]))
        hf.create_dataset("video_urls", dtype="S80", data=np.concatenate([urls[1:], np.array([b"v_stranger"], "S80")]))
    with open(root / "class-split" / "main_split" / f"{stage}.csv", "a", newline="") as f:
        csv.writer(f).writerow(["v_listed_only", c, 0])
    # A file name with folder and extension in the CSV still names the same video.
    csv_path = root / "class-split" / "main_split" / f"{stage}.csv"
    text = csv_path.read_text().replace(urls[1].decode() + ",", f"UCF-101/{c}/{urls[1].decode()}.avi,", 1)
    csv_path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_avca_features(root, "main", stage)
    message = str(err.value)
    first = urls[0].decode()
    for name in (first, "v_stranger", "v_listed_only"):
        assert name in message
    assert str(audio) in message and f"{stage}.csv" in message and "\n" not in message
    # skip: only the videos in both files and in the CSV stay, each read from its own row.
    videos = read_avca_features(root, "main", stage, on_missing="skip")
    assert len(videos) == 24 - 1 and first not in {r.video_id for r in videos}
    ds = AVCAFeatureDataset(videos)
    i = next(i for i, r in enumerate(videos.records) if r.label == 0)
    sample = ds[i]
    row = [u.decode() for u in urls].index(sample.video_id)
    np.testing.assert_array_equal(sample.audio[0].numpy(), data[row])
    with pytest.raises(FileNotFoundError, match="class-split"):
        read_avca_features(tmp_path, "main", stage)
    # A class file missing in another stage is named in the same error as the disagreements above.
    gone = root / "features" / "main_features" / "video" / "stage_2_test_unseen"
    victim = sorted(gone.glob("*.h5"))[0]
    victim.unlink()
    with pytest.raises(ValueError) as err:
        avca_feature_stages(root, "main")
    assert f"{victim}: missing" in str(err.value) and "v_stranger" in str(err.value)


# ---- the word2vec table ------------------------------------------------------------------------------


def test_class_vectors_read_without_pickle_match_numpy(corpus, tmp_path):
    npy = corpus / "features" / "main_features" / "text" / "word_embeddings_ucf_normed.npy"
    table = read_class_vectors(npy)
    expected = np.load(npy, allow_pickle=True).item()
    assert list(table) == list(expected)
    for k in expected:
        np.testing.assert_array_equal(table[k], expected[k])
    # The documented one-line conversion to .npz reads the same.
    npz = tmp_path / "vectors.npz"
    np.savez(npz, **np.load(npy, allow_pickle=True).item())
    assert {k: v.tolist() for k, v in read_class_vectors(npz).items()} == {k: v.tolist() for k, v in table.items()}
    # The embedder maps the dataset's class names through the w2v CSV; unknown names are listed.
    emb = avca_class_vectors(corpus)
    cls = (corpus / "class-split" / "main_split" / "stage_1_train.txt").read_text().split()[:2]
    manual = {row[0]: row[1] for row in csv.reader(open(corpus / "class-split" / "ucf_w2v_class_names.csv"))}
    np.testing.assert_array_equal(emb.embed(cls), np.stack([expected[manual[c]] for c in cls]))
    with pytest.raises(ValueError, match="'Nope'"):
        emb.embed(["Nope"])
    rebuilt = embedder_from_spec(emb.spec())
    assert isinstance(rebuilt, ClassVectorEmbedder) and rebuilt.embed(cls).tolist() == emb.embed(cls).tolist()


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("where", ["value", "top"])
def test_a_crafted_npy_that_would_run_code_is_refused(where, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "word_embeddings_evil.npy"
    obj = {"run": _Payload(marker), "ok": np.ones(3, np.float32)} if where == "value" else _Payload(marker)
    with open(evil, "wb") as f:
        np.save(f, np.array(obj, dtype=object) if where == "top" else obj, allow_pickle=True)
    with pytest.raises(UnsafePickleError) as err:
        read_class_vectors(evil)
    assert "builtins.exec" in str(err.value) and str(evil) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnsafePickleError):
        embedder_from_spec({"type": "class_vectors", "path": str(evil)})
    assert not marker.exists()
    # The payload is live: numpy's own loader with allow_pickle runs it.
    np.load(evil, allow_pickle=True)
    assert marker.read_text() == "pwned"


def test_other_unpickled_globals_and_malformed_tables_are_refused(tmp_path):
    path = tmp_path / "t.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    raw = pickle.dumps(np.array({"a": torch.ones(3)}, dtype=object), protocol=3)  # a torch tensor: not plain numpy
    path.write_bytes(header.getvalue() + raw)  # the header includes the magic string
    with pytest.raises(UnsafePickleError, match="torch"):
        read_class_vectors(path)
    np.save(path, {"a": np.ones(3), "b": np.ones(4)}, allow_pickle=True)
    with pytest.raises(ValueError, match="'b' has 4 values"):
        read_class_vectors(path)
    np.save(path, np.ones((2, 3)))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        read_class_vectors(path)
    path.write_bytes(header.getvalue()[:20])
    with pytest.raises(ValueError, match=str(path)):
        read_class_vectors(path)


# ---- the dataset and the models -----------------------------------------------------------------------


def test_feature_dataset_reads_rows_on_demand(corpus, tmp_path):
    videos = read_avca_features(corpus, "main", "stage_1_val_unseen")
    lazy = AVCAFeatureDataset(videos, cache_bytes=0)
    sample = lazy[5]
    r = videos.records[5]
    with h5py.File(r.path, "r") as hf:
        row = [u.decode() for u in hf["video_urls"][()]].index(r.video_id)
        np.testing.assert_array_equal(sample.clip[0].numpy(), hf["data"][row])
    assert sample.clip.shape == (1, 512) and sample.audio.shape == (1, 512) and sample.label == r.label
    assert all(isinstance(v, np.memmap) for v in lazy._cache.values()) and lazy._cached == 0  # nothing loaded whole
    with h5py.File(tmp_path / "chunked.h5", "w") as hf:  # chunked and compressed: read through h5py
        hf.create_dataset("data", data=np.arange(12, dtype=np.float32).reshape(3, 4), chunks=(1, 4), compression="gzip")
        hf.create_dataset("video_urls", dtype="S80", data=np.array([b"a", b"b", b"c"], "S80"))
    assert lazy._row(str(tmp_path / "chunked.h5"), 2).tolist() == [[8, 9, 10, 11]]
    cached = AVCAFeatureDataset(videos)
    assert torch.equal(cached[5].clip, sample.clip) and cached._cache
    video_only = AVCAFeatureDataset(videos, ("video",))
    assert video_only[5].audio is None
    batch = AVCAFeatureDataset.collate_fn([lazy[0], lazy[1]])
    assert batch.clips.shape == (2, 1, 512) and batch.audio.shape == (2, 1, 512)


_READ_CRAFTED = """
import sys, h5py, numpy as np
from zsar.data import AVCAFeatureDataset
from zsar.data.formats.common import AnnotationError
from zsar.data.records import VideoList, VideoRecord
path = sys.argv[1]
with h5py.File(path, "w") as hf:  # contiguous (no chunks): the dataset would map these bytes as objects
    data = hf.create_dataset("data", shape=(4,), dtype=h5py.vlen_dtype(np.float32))
    for i in range(4):
        data[i] = np.arange(3, dtype=np.float32) + i
    hf.create_dataset("video_urls", data=np.array([b"v%d" % i for i in range(4)], dtype="S80"))
dataset = AVCAFeatureDataset(VideoList([VideoRecord(path, 0, "v1")], ["Run"]), ("video",), cache_bytes=0)
try:
    dataset[0]
except AnnotationError as e:
    print("refused:", e)
"""


def test_feature_data_that_is_not_plain_numbers_is_refused(tmp_path):
    # Read in a child process: before the check, this file's bytes became object pointers and the
    # read crashed the interpreter (SIGSEGV).
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _READ_CRAFTED, str(tmp_path / "Run.h5")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "'data' has dtype object" in result.stdout
    with h5py.File(tmp_path / "compound.h5", "w") as hf:
        hf.create_dataset("data", data=np.zeros(2, dtype=[("a", "f4"), ("b", "f4")]))
        hf.create_dataset("video_urls", data=np.array([b"a", b"b"], dtype="S80"))
    from zsar.data.formats.avca_features import _read_urls
    from zsar.data.formats.common import AnnotationError

    with pytest.raises(AnnotationError, match="plain numeric"):
        _read_urls(tmp_path / "compound.h5")


def test_a_class_name_cannot_name_a_file_outside_the_features(tmp_path):
    root = tmp_path / "UCF"
    (root / "class-split" / "main_split").mkdir(parents=True)
    (root / "features" / "main_features" / "video" / "stage_1_train").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    with h5py.File(tmp_path / "secret" / "private.h5", "w") as hf:
        hf["data"] = np.ones((1, 4), np.float32)
        hf["video_urls"] = np.array([b"x"], "S80")
    (root / "class-split" / "main_split" / "stage_1_train.txt").write_text("../../../../secret/private\n")
    from zsar.data.formats.common import AnnotationError

    with pytest.raises(AnnotationError, match=r"stage_1_train.txt: class name '../../../../secret/private' cannot name"):
        read_avca_features(root, "main", "stage_1_train", modalities=("video",))


def test_per_segment_features_become_tokens(tmp_path):
    root = write_synthetic_avca_features(tmp_path / "VGGSound", dataset="vggsound", n_seen=3, n_val_unseen=2,
                                         n_test_unseen=2, videos_per_class=2, video_dim=4096, audio_dim=128,
                                         segments=3, features="cls_features", split="cls_split")
    videos = read_avca_features(root, "cls", "stage_1_train")  # cls pairs with cls_features by default
    sample = AVCAFeatureDataset(videos)[0]
    assert sample.clip.shape == (3, 4096) and sample.audio.shape == (3, 128)
    model = create_model("mzst_features_cls", class_names=videos.classes, class_embeddings=torch.randn(3, 300),
                         video_segments=3, audio_segments=3, dim=32, mlp_dim=64, heads=2)
    batch = AVCAFeatureDataset.collate_fn([AVCAFeatureDataset(videos)[i] for i in range(4)])
    assert model.encode(batch).shape == (4, 300)
    assert model.describe()["video_features"] == [3, 4096]


def test_feature_models_take_features_and_keep_mzst_s_fusion_and_heads():
    names = ["jump rope", "play cello", "ride bike"]
    small = dict(dim=32, mlp_dim=64, heads=2)  # the registered feature sizes, a narrower fusion (test time)
    model = create_model("mzst_features", class_names=names, class_embeddings=torch.randn(3, 300), **small)
    c = model.config
    assert (c.video_feature_dim, c.audio_feature_dim) == (512, 512)
    assert (c.fusion, c.losses) == ("bottleneck", ("task", "se", "mlm"))
    assert model.inputs.feature_dim == 512 and model.inputs.audio.mel_bins == 512
    assert model.zero_shot_head == "semantic_embedding" and model.num_video_tokens == model.num_audio_tokens == 1
    words, n = model.tokenize_labels([names[0], names[1]])
    batch = Batch(clips=torch.randn(2, 1, 512), labels=torch.tensor([0, 1]), audio=torch.randn(2, 1, 512),
                  audio_present=torch.tensor([True, False]), word_ids=words, n_words=n)
    out = model.forward_train(batch)
    assert set(out) >= {"loss", "loss_task", "loss_se", "loss_mlm"} and torch.isfinite(out["loss"])
    # Missing audio is padding: the result equals a batch without the audio stream's features.
    model.eval()
    one = Batch(clips=batch.clips[1:], labels=batch.labels[1:], audio=torch.zeros(1, 1, 512),
                audio_present=torch.tensor([False]))
    torch.testing.assert_close(model.encode(one), model.encode(batch)[1:], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"video features must have shape \(B, 1, 512\)"):
        model.encode(Batch(clips=torch.randn(2, 1, 256), labels=torch.tensor([0, 1])))
    assert MZST_FEATURE_VARIANTS["mzst_features"].defaults["dim"] == 256
    cls_model = create_model("mzst_features_cls", class_names=names, class_embeddings=torch.randn(3, 300), **small)
    assert (cls_model.config.video_feature_dim, cls_model.config.audio_feature_dim) == (4096, 128)
    with pytest.raises(ValueError, match="feature-input models"):
        create_model("mzst_tiny", class_names=names, video_backbone="features")
    # ResT's own feature-input mode, on video features only.
    rest = create_model("rest_features", class_names=names, depth=1, **small)
    assert rest.config.feature_input and rest.inputs.feature_dim == 512 and rest.inputs.audio is None
    assert [s.name for s in rest.training_stages()] == ["joint"]
    assert rest.encode(Batch(clips=torch.randn(2, 1, 512), labels=torch.tensor([0, 1]))).shape == (2, 32)
    assert REST_FEATURE_VARIANTS["rest_features_cls"].defaults["feature_dim"] == 4096


def test_feature_models_round_trip_through_checkpoints(tmp_path):
    from zsar.models import load_model, save_checkpoint

    model = create_model("mzst_features_tiny", class_names=["a b", "c d"], class_embeddings=torch.randn(2, 300))
    save_checkpoint(tmp_path / "ckpt", model)
    again = load_model(tmp_path / "ckpt")
    assert type(again).__name__ == "MZSTFeatures" and again.config == model.config
    batch = Batch(clips=torch.randn(3, 1, 512), labels=torch.tensor([0, 1, 0]), audio=torch.randn(3, 1, 512))
    model.eval(), again.eval()
    torch.testing.assert_close(again.encode(batch), model.encode(batch))


# ---- published numbers and `zsar gzsl` ------------------------------------------------------------------


def test_published_rows_are_the_papers_figures():
    rows = {r["model"]: r for r in published_reports("ucf", "main_split")}
    assert rows["AVCA (published)"]["test"]["HM"] == pytest.approx(0.2715)
    assert rows["MZST (VGG features) (published)"]["test"]["ZSL"] == pytest.approx(0.3135)
    cls = {r["model"]: r for r in published_reports("vggsound", "cls_split")}
    assert cls["TCaF (published)"]["test"] == {"S": None, "U": None, "HM": pytest.approx(0.0877),
                                             "ZSL": pytest.approx(0.0741)}
    table = format_gzsl_table(published_reports("vggsound", "cls_split")).splitlines()
    assert "VGGSound-GZSL (cls)" in table[0] and table[3].split() == ["AVCA", "(published)", "-", "-", "8.31", "6.91"]
    assert {(d, s) for _, d, s in PUBLISHED_GZSL} == {(d, s) for d in ("ucf", "activitynet", "vggsound")
                                                      for s in ("main_split", "cls_split")}


def _gzsl(root, out_dir, model, *overrides):
    config = root.parent / f"{model}.yaml"
    config.write_text(f"dataset: ucf\nsplit: main\nmodel: {model}\nbatch_size: 8\nprogress: false\ndevice: cpu\n"
                      f"plot: false\nout_dir: {out_dir}\ndata: {{format: avca_features, annotations: {root}}}\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["gzsl", str(config), *overrides])
    assert code == 0, out.getvalue()
    return json.loads((out_dir / "gzsl_report.json").read_text()), out.getvalue()


def test_zsar_gzsl_on_released_features_learns_unseen_classes(corpus, tmp_path):
    report, printed = _gzsl(corpus, tmp_path / "run", "mzst_features_tiny", "stages.joint.epochs=5",
                            "stages.joint.lr=0.01", "seed=1")
    test, s2 = report["test"], report["stage_2"]
    assert set(report) == {"protocol", "dataset", "split", "model", "metric", "beta_grid", "test", "stage_1", "stage_2",
                           "checkpoint", "embedder", "report", "plot", "config", "published", "uncalibrated"}
    assert (report["protocol"], report["dataset"], report["split"], report["metric"]) == ("avca-gzsl", "ucf",
                                                                                        "main_split", "l2")
    assert set(s2) >= {"epochs", "beta", "curve", "per_class_accuracy"} and len(report["stage_1"]["history"]) == 5
    assert s2["classes"] == {"seen": 12, "unseen": 4}
    assert s2["videos"] == {"train": 120, "test_seen": 72, "test_unseen": 24}
    assert report["stage_1"]["videos"] == {"train": 48, "val_seen": 48, "val_unseen": 24}
    chance = 1 / 16  # mean class accuracy of a uniform guess over the 12 + 4 classes of the search space
    assert test["U"] > 4 * chance and test["HM"] > 4 * chance and test["ZSL"] > 2 * (1 / 4)
    assert set(test) == {"S", "U", "HM", "ZSL"} and all(0 <= v <= 1 for v in test.values())
    assert report["embedder"]["type"] == "class_vectors" and report["embedder"]["path"].endswith("_normed.npy")
    assert {r["model"] for r in report["published"]} == {"AVCA (published)", "TCaF (published)",
                                                         "MZST (VGG features) (published)"}
    lines = printed.splitlines()
    assert "UCF-GZSL" in lines[0] and lines[3].split()[0] == "mzst_features_tiny"
    assert lines[3].split()[1:] == [f"{100 * test[k]:.2f}" for k in ("S", "U", "HM", "ZSL")]
    assert any(line.split()[:2] == ["AVCA", "(published)"] and "27.15" in line for line in lines)
    assert "Tables 5-6" in printed
    # The stage-2 checkpoint is a zero-shot classifier that reads the same features.
    from zsar.zeroshot import ZeroShotClassifier

    clf = ZeroShotClassifier.load(report["checkpoint"])
    unseen = read_avca_features(corpus, "main", "stage_2_test_unseen")
    batch = AVCAFeatureDataset.collate_fn([AVCAFeatureDataset(unseen)[i] for i in range(0, 24, 6)])
    clf.set_labels(unseen.classes)
    assert clf.predict(batch).shape[0] == 4
    # ... and answers "none of these": calibrated on stage 2's training videos (10 per class, seen classes
    # held out fold by fold), which this trained MZST separates.
    assert clf.model.zero_shot_head == "semantic_embedding" and clf.open_set is not None
    counts = np.bincount([r.label for r in read_avca_features(corpus, "main", "stage_2_train")])
    assert (clf.open_set.videos, clf.open_set.classes) == (int(np.minimum(counts, 10).sum()), 12)
    assert clf.open_set.scale > 0
    answer, match = clf.predict_open(batch), clf.match_proba(batch)
    assert torch.equal(answer, torch.where(match.max(1).values >= 0.5, match.argmax(1), torch.tensor(-1)))


def test_zsar_gzsl_runs_rest_on_the_video_features(corpus, tmp_path):
    report, _ = _gzsl(corpus, tmp_path / "rest", "rest_features", "stages.joint.epochs=2", "model_args.depth=1",
                      "model_args.dim=32", "model_args.heads=2", "model_args.mlp_dim=64")
    assert report["model"] == "rest_features" and set(report["test"]) == {"S", "U", "HM", "ZSL"}
    assert report["stage_2"]["videos"]["test_unseen"] == 24


@pytest.mark.slow
def test_zsar_gzsl_on_the_cls_split_of_another_dataset(tmp_path):
    """VGGSound's cls split: C3D/VGGish-sized features in features/cls_features, the cls model variant."""
    root = write_synthetic_avca_features(tmp_path / "VGGSound", dataset="vggsound", n_seen=3, n_val_unseen=2,
                                         n_test_unseen=2, videos_per_class=3, video_dim=4096, audio_dim=128,
                                         features="cls_features", split="cls_split")
    config = tmp_path / "vgg.yaml"
    config.write_text(f"dataset: vggsound\nsplit: cls\nmodel: mzst_features_cls\nbatch_size: 4\nprogress: false\n"
                      f"plot: false\nout_dir: {tmp_path / 'run'}\nstages: {{joint: {{epochs: 1}}}}\n"
                      f"model_args: {{dim: 32, mlp_dim: 64, heads: 2, fusion_blocks: 1}}\n"
                      f"data: {{format: avca_features, annotations: {root}}}\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gzsl", str(config)]) == 0
    report = json.loads((tmp_path / "run" / "gzsl_report.json").read_text())
    assert (report["dataset"], report["split"]) == ("vggsound", "cls_split")
    assert report["stage_2"]["classes"] == {"seen": 5, "unseen": 2}
    assert "VGGSound-GZSL (cls)" in out.getvalue().splitlines()[0]
    assert {r["model"] for r in report["published"]} == {"AVCA (published)", "TCaF (published)"}


def test_feature_runs_name_what_is_wrong(corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ucf\nmodel: rest_tiny\nout_dir: {tmp_path}\n"
                      f"data: {{format: avca_features, annotations: {corpus}}}\n")
    assert main(["gzsl", str(config)]) != 0
    assert "takes pixels" in capsys.readouterr().err
    assert main(["gzsl", str(config), "model=mzst_features_tiny", "data.split=cls"]) != 0
    assert "'data.split' ('cls') disagrees with 'split' ('main')" in capsys.readouterr().err
