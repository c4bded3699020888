"""Tests of the packaged class lists, the ZSAR protocols and the E2E training-class removal."""

import pytest

from zsar.resources import AVCA_STAGES, avca_name_map_file, avca_split, class_list
from zsar.text import load_name_map


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
    with avca_name_map_file(dataset) as path:
        name_map = load_name_map(path)
    assert set(avca_split(dataset, "all")) <= set(name_map)


def test_avca_errors():
    with pytest.raises(ValueError, match="vggsound"):
        avca_split("kinetics", "all")
    with pytest.raises(ValueError, match="stage_2_test_unseen"):
        avca_split("ucf", "test")
    with pytest.raises(ValueError, match="main_split"):
        avca_split("ucf", "stage_1_train", split="other")


# ---------------------------------------------------------------- 0/50 and 0/100

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zsar.eval import (  # noqa: E402
    embedding_predictor,
    evaluate_protocol,
    format_results_table,
    half_class_splits,
    remove_overlapping_classes,
    transfer_predictor,
    write_results_json,
)
from zsar.zeroshot import composite_prototypes, cosine_similarity_matrix, transfer_assignment  # noqa: E402


def test_half_class_splits_deterministic_and_halves():
    a, b = half_class_splits(101), half_class_splits(101)
    assert len(a) == 10
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for i, split in enumerate(a):
        # Seed = split index.
        assert split.tolist() == sorted(np.random.default_rng(i).permutation(101)[:50].tolist())
        assert split.size == len(set(split.tolist())) == 50
        rest = np.setdiff1d(np.arange(101), split)
        assert rest.size == 51 and not set(rest.tolist()) & set(split.tolist())
    assert len({tuple(s.tolist()) for s in a}) == 10
    assert [s.size for s in half_class_splits(51, 3)] == [25, 25, 25]
    with pytest.raises(ValueError, match="n_classes"):
        half_class_splits(1)


def test_protocol_0_100_hand_computed():
    names = ["a", "b", "c", "d", "e", "f"]
    labels = np.array([0, 0, 1, 2, 3, 3, 4, 5])
    # Row-wise ranking of the true class: 1st, 3rd, 1st, 6th, 1st, 2nd, 5th, 1st.
    scores = np.array([
        [9, 1, 2, 3, 4, 5],
        [1, 9, 8, 7, 0, 0],
        [0, 5, 1, 1, 1, 1],
        [5, 5, 0, 5, 5, 5],   # tie with lower indices ranks "c" last
        [0, 0, 0, 7, 0, 0],
        [0, 0, 0, 3, 0, 4],
        [6, 6, 6, 6, 6, 1],   # ties with 4 lower indices: rank 5
        [0, 0, 0, 0, 0, 1],
    ], dtype=float)
    calls = []

    def predictor(candidates):
        calls.append(list(candidates))
        return torch.as_tensor(scores)

    r = evaluate_protocol(predictor, labels, names, protocol="0/100", dataset="toy")
    assert calls == [names]
    assert r["n_splits"] == 1 and r["n_videos"] == 8 and r["dataset"] == "toy"
    assert r["top1"] == {"mean": 4 / 8, "std": 0.0}
    assert r["top5"]["mean"] == 7 / 8
    # Predictions: a, b, b, a, d, f, a, f -> per-class recall a 1/2, b 1, c 0, d 1/2, e 0, f 1.
    assert r["mean_class_accuracy"]["mean"] == pytest.approx((0.5 + 1 + 0 + 0.5 + 0 + 1) / 6)

    # (N,) predictions: top-1 and mean class accuracy only.
    r2 = evaluate_protocol(lambda c: scores.argmax(axis=1), labels, names, protocol="0/100")
    assert r2["top1"]["mean"] == 0.5 and "top5" not in r2
    assert r2["mean_class_accuracy"] == r["mean_class_accuracy"]


def test_protocol_0_50_splits_and_metrics(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_videos = 12, 90
    names = [f"class {i}" for i in range(n_classes)]
    labels = rng.integers(0, n_classes, size=n_videos)
    full = rng.normal(size=(n_videos, n_classes)) + 2.0 * np.eye(n_classes)[labels]

    def predictor(candidates):
        return full[:, [names.index(c) for c in candidates]]

    r = evaluate_protocol(predictor, labels, names, protocol="0/50", n_splits=4)
    assert r["n_splits"] == 4 and len(r["splits"]) == 4
    top1, top5, mca = [], [], []
    for i, split in enumerate(r["splits"]):
        classes = half_class_splits(n_classes, 4)[i]
        assert split["split"] == i and split["classes"] == [names[c] for c in classes]
        rows = np.isin(labels, classes)
        assert split["n_videos"] == rows.sum()
        sub = full[rows][:, classes]
        target = np.array([list(classes).index(c) for c in labels[rows]])
        order = np.argsort(-sub, axis=1, kind="stable")
        top1.append(np.mean(order[:, 0] == target))
        top5.append(np.mean([t in o[:5] for t, o in zip(target, order)]))
        mca.append(np.mean([np.mean(order[target == c, 0] == c) for c in np.unique(target)]))
        assert split["top1"] == pytest.approx(top1[-1])
        assert split["top5"] == pytest.approx(top5[-1])
        assert split["mean_class_accuracy"] == pytest.approx(mca[-1])
    assert r["top1"]["mean"] == pytest.approx(np.mean(top1))
    assert r["top1"]["std"] == pytest.approx(np.std(top1))
    assert r["top5"]["mean"] == pytest.approx(np.mean(top5))
    assert r["mean_class_accuracy"]["std"] == pytest.approx(np.std(mca))


def test_a_registered_protocol_is_offered_everywhere():
    # A new class-split protocol is one registered function: evaluate_protocol runs it, the runner's
    # chance comes from it and `zsar eval --protocol` lists it.
    from zsar.cli import build_parser
    from zsar.eval import PROTOCOLS, get_protocol, register_protocol

    @register_protocol("first-third", "the first third of the classes")
    def first_third(n_classes, n_splits):
        return [np.arange(n_classes // 3)]

    try:
        names = [f"c{i}" for i in range(6)]
        labels = np.array([0, 1, 2, 3, 4, 5])
        seen = []
        r = evaluate_protocol(lambda c: seen.append(c) or np.eye(6)[:, :len(c)], labels, names, protocol="first-third")
        assert seen == [["c0", "c1"]] and r["splits"][0]["n_videos"] == 2 and r["top1"]["mean"] == 1.0
        assert "first-third" in PROTOCOLS and get_protocol("first-third").candidates(6) == 2
        args = build_parser().parse_args(["eval", "--checkpoint", "x", "--protocol", "first-third"])
        assert args.protocol == "first-third"
    finally:
        PROTOCOLS.unregister("first-third")
    with pytest.raises(ValueError, match=r"protocol: unknown protocol 'first-third'; expected one of 0/50, 0/100$"):
        get_protocol("first-third")


def test_protocol_errors():
    names = ["a", "b", "c"]
    with pytest.raises(ValueError, match="protocol"):
        evaluate_protocol(lambda c: None, [0], names, protocol="50/50")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        evaluate_protocol(lambda c: None, [3], names)
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        evaluate_protocol(lambda c: np.zeros((2, 2)), [0, 1], names, protocol="0/100")
    with pytest.raises(ValueError, match="distinct"):
        evaluate_protocol(lambda c: None, [0], ["a", "a"])


def test_predictors_match_direct_pipeline(seed):
    rng = np.random.default_rng(seed)
    n_seen, n_target, dim, edim = 15, 8, 10, 6
    seen_emb = rng.normal(size=(n_seen, edim)) + 1.0
    target_emb = rng.normal(size=(n_target, edim)) + 1.0
    protos = rng.normal(size=(n_seen, dim))
    x = rng.normal(size=(30, dim))
    names = [f"t{i}" for i in range(n_target)]
    pred = transfer_predictor(x, protos, seen_emb, target_emb, names, k=4, theta=0.5, rho=2)
    cand = ["t5", "t1", "t3"]
    m = cosine_similarity_matrix(target_emb[[5, 1, 3]], seen_emb)
    expected = cosine_similarity_matrix(x, composite_prototypes(protos, m, transfer_assignment(m, 4, 0.5, 2)))
    np.testing.assert_allclose(pred(cand), expected)
    # Perfect projections: the nearest class embedding is the true class.
    labels = rng.integers(0, n_target, size=40)
    r = evaluate_protocol(embedding_predictor(target_emb[labels], target_emb, names), labels, names, n_splits=3)
    assert r["top1"] == {"mean": 1.0, "std": 0.0}
    with pytest.raises(KeyError, match="zzz"):
        pred(["zzz"])


def test_results_json_and_table(tmp_path):
    results = {"protocol": "0/50", "dataset": "ucf101", "n_splits": 10,
               "top1": {"mean": np.float64(0.547), "std": 0.021}, "mean_class_accuracy": {"mean": 0.5, "std": 0.0},
               "splits": [{"split": 0, "classes": np.array([1, 2])}]}
    path = write_results_json(tmp_path / "out" / "r.json", results)
    back = json.loads(path.read_text())
    assert back["top1"]["mean"] == 0.547 and back["splits"][0]["classes"] == [1, 2]
    other = dict(results, dataset="hmdb51", protocol="0/100", n_splits=1, top5={"mean": 0.9, "std": 0.0})
    table = format_results_table([results, other])
    lines = table.splitlines()
    assert "top1" in lines[0] and "top5" in lines[0] and "mean_class_accuracy" in lines[0]
    assert "54.7 ± 2.1" in lines[2] and lines[2].split()[0] == "ucf101"
    assert "90.0 ± 0.0" in lines[3]
    assert format_results_table(results).splitlines()[2].startswith("ucf101")


# ---------------------------------------------------------------- E2E training-class removal

def test_removal_threshold_boundary():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[3.0, 4.0], [-1.0, 0.0]])
    d = 1.0 - cosine_similarity_matrix(a, b)
    d0 = d[0, 0]  # train 0 <-> target 0, the closest pair of train 0
    at = remove_overlapping_classes(["x", "y", "z"], ["p", "q"], train_embeddings=a, target_embeddings=b,
                                    threshold=d0)
    assert "x" in at.kept  # exactly at the threshold: kept (strictly less removes)
    above = remove_overlapping_classes(["x", "y", "z"], ["p", "q"], train_embeddings=a, target_embeddings=b,
                                       threshold=np.nextafter(d0, 1.0))
    assert [r["name"] for r in above.removed][0] == "x"
    assert above.removed[0]["nearest"] == "p" and above.removed[0]["distance"] == pytest.approx(d0)


def test_removal_default_threshold_any_target(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    def at_distance(v, dist):
        # A unit vector at cosine distance `dist` from unit vector v.
        w = rng.normal(size=v.shape)
        w -= (w @ v) * v
        w /= np.linalg.norm(w)
        return (1 - dist) * v + np.sqrt(1 - (1 - dist) ** 2) * w

    train = np.stack([at_distance(base[2], 0.04), at_distance(base[0], 0.06), base[1] * 7.0])
    target = base
    r = remove_overlapping_classes(["near", "far", "same"], ["t0", "t1", "t2"],
                                   train_embeddings=train, target_embeddings=target)
    assert r.kept == ["far"] and r.threshold == 0.05
    assert [(x["name"], x["nearest"]) for x in r.removed] == [("near", "t2"), ("same", "t1")]
    assert r.removed[0]["distance"] == pytest.approx(0.04) and r.removed[1]["distance"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="embedder"):
        remove_overlapping_classes(["a"], ["b"])
    with pytest.raises(ValueError, match=r"train_embeddings must have shape \(2, E\)"):
        remove_overlapping_classes(["a", "b"], ["c"], train_embeddings=np.ones((1, 2)), target_embeddings=np.ones((1, 2)))


def test_e2e_removal_kinetics700_vs_ucf_hmdb(tmp_path, seed):
    """Kinetics-700 against UCF101 ∪ HMDB51 with word vectors written by gensim (random, 50-d)."""
    from gensim.models import KeyedVectors

    from zsar.text import WordVectorEmbedder, split_label

    train = class_list("kinetics700")
    target = class_list("ucf101") + class_list("hmdb51")
    words = sorted({w for label in train + target for w in split_label(label)})
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=50)
    kv.add_vectors(words, rng.standard_normal((len(words), 50)).astype(np.float32))
    path = tmp_path / "w2v.bin"
    kv.save_word2vec_format(str(path), binary=True)
    embedder = WordVectorEmbedder(path)
    r = remove_overlapping_classes(train, target, embedder)
    assert len(r.kept) + len(r.removed) == 700 and len(set(r.kept)) == len(r.kept)
    removed = {x["name"]: x for x in r.removed}
    # Same words after preprocessing -> identical embeddings -> distance 0.
    assert removed["archery"]["nearest"] == "Archery" and removed["archery"]["distance"] < 1e-6
    assert all(x["distance"] < 0.05 for x in r.removed)
    train_emb, target_emb = embedder.embed(r.kept), embedder.embed(target)
    assert (1 - cosine_similarity_matrix(train_emb, target_emb)).min() >= 0.05
    # Random word vectors make only identical word bags collide (24 of the 700 classes; E2E's
    # word2vec removes 36).
    bags = {tuple(sorted(embedder.words(t))) for t in target}
    assert set(removed) == {c for c in train if tuple(sorted(embedder.words(c))) in bags}
