"""GZSL end to end on real video files: ``zsar gzsl CONFIG`` (the AVCA two-stage recipe) and
``zsar eval --protocol gzsl`` on the checkpoint it leaves, with a small model registered here
(semantic-embedding head) and, marked slow, ResT (prototype-transfer head)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors
from torch import nn

from test_gzsl import ref_calibrate, ref_scores
from zsar.cli import main
from zsar.data import write_video
from zsar.data.records import VideoList, VideoRecord
from zsar.eval import DEFAULT_BETA_GRID, GZSLEvalSet, evaluate_gzsl
from zsar.eval.recipes import GZSLConfig
from zsar.models import ModelInputs, TrainingStage, ZeroShotModel, register_model

# Colour decides the class. Stage 1: seen red/green, unseen blue; stage 2: seen red/green/blue,
# unseen crimson (the split files below, in the AVCA layout).
COLOURS = {"red light": (200, 30, 30), "green light": (30, 200, 30), "blue light": (30, 30, 200),
           "crimson light": (170, 20, 60)}
CLASSES = list(COLOURS)
SPLIT = {"stage_1_train": CLASSES[:2], "stage_1_val_seen": CLASSES[:2], "stage_1_val_unseen": CLASSES[2:3],
         "stage_2_train": CLASSES[:3], "stage_2_test_seen": CLASSES[:3], "stage_2_test_unseen": CLASSES[3:]}
EMBED = 8


class MeanColour(ZeroShotModel):
    """The clip's mean colour, linearly mapped into the label embedding space; trained towards the
    class's label embedding (set by the recipe through ``set_class_embeddings``, as for MZST)."""

    zero_shot_head = "semantic_embedding"

    def __init__(self, num_classes: int = 2, embed_dim: int = EMBED, frames: int = 2, image_size: int = 16):
        super().__init__()
        self.args = {"num_classes": num_classes, "embed_dim": embed_dim, "frames": frames, "image_size": image_size}
        self.project = nn.Linear(3, embed_dim)
        self.register_buffer("class_embeddings", torch.zeros(num_classes, embed_dim))

    @property
    def inputs(self) -> ModelInputs:
        return ModelInputs(frames=self.args["frames"], image_size=self.args["image_size"])

    def model_args(self):
        return dict(self.args)

    def set_class_embeddings(self, embeddings) -> None:
        self.class_embeddings.copy_(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32))

    def encode(self, batch):
        colour = batch.clips.float().movedim(-3, 1).flatten(2).mean(2)  # (B, 3) over clips, frames, pixels
        return self.project(colour)

    def seen_logits(self, batch, stage=None):
        return -torch.cdist(self.encode(batch), self.class_embeddings)

    def training_stages(self):
        return [TrainingStage("fit", lambda name: True, epochs=2, optimizer="adamw", lr=0.2, weight_decay=0.0)]

    def forward_train(self, batch, stage, generator=None):
        loss = F.mse_loss(self.encode(batch), self.class_embeddings[batch.labels])
        return {"loss": loss, "loss_mse": loss}


@register_model("test_gzsl_mean_colour")
def _build(class_names=None, **args) -> MeanColour:
    if class_names is not None:
        args.setdefault("num_classes", len(class_names))
    return MeanColour(**args)


class MeanColourPrototypes(MeanColour):
    """The same model with ResT's head: seen-class prototypes composed by semantic transfer."""

    zero_shot_head = "prototype_transfer"


@register_model("test_gzsl_mean_colour_prototypes")
def _build_prototypes(class_names=None, **args) -> MeanColourPrototypes:
    if class_names is not None:
        args.setdefault("num_classes", len(class_names))
    return MeanColourPrototypes(**args)


def _video(path, rgb, seed, t=4):
    rng = np.random.default_rng(seed)
    frames = np.clip(np.array(rgb)[None, None, None] + rng.normal(0, 15, (t, 20, 24, 3)), 0, 255).astype(np.uint8)
    write_video(path, frames)


def _write_list(path, entries):
    path.write_text("".join(f"{rel} {CLASSES.index(c)}\n" for rel, c in entries))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Real webm files: a training part (3 videos of red/green/blue) and a test part (2 of each class),
    their lists, the split files, per-part seen/unseen lists and a gensim word-vector file."""
    root = tmp_path_factory.mktemp("gzsl")
    parts = {"train": {c: 3 for c in CLASSES[:3]}, "test": {c: 2 for c in CLASSES}}
    entries = {}
    for part, counts in parts.items():
        entries[part] = []
        for c, n in counts.items():
            for i in range(n):
                rel = f"videos/{part}/{c.replace(' ', '_')}_{i}.webm"
                _video(root / rel, COLOURS[c], seed=hash((part, c, i)) % 1000)
                entries[part].append((rel, c))
        _write_list(root / f"{part}.txt", entries[part])
    _write_list(root / "test_seen.txt", [e for e in entries["test"] if e[1] in SPLIT["stage_2_test_seen"]])
    _write_list(root / "test_unseen.txt", [e for e in entries["test"] if e[1] in SPLIT["stage_2_test_unseen"]])
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "split").mkdir()
    for stage, names in SPLIT.items():
        (root / "split" / f"{stage}.txt").write_text("\n".join(names) + "\n")
    # Colour words embed their colour linearly, so that a colour-to-label map learnt on the seen
    # colours carries over to crimson.
    rng = np.random.default_rng(0)
    to_space = rng.standard_normal((3, EMBED))
    vectors = [np.array(COLOURS[f"{w} light"]) / 255 @ to_space for w in ("red", "green", "blue", "crimson")]
    kv = KeyedVectors(vector_size=EMBED)
    kv.add_vectors(["red", "green", "blue", "crimson", "light"],
                   np.stack(vectors + [rng.standard_normal(EMBED)]).astype(np.float32))
    kv.save_word2vec_format(str(root / "vectors.txt"))
    return root


def _config(root, name, model_lines):
    path = root / f"{name}.yaml"
    path.write_text(
        "dataset: ucf\nsplit: main\n"
        f"split_dir: {root / 'split'}\n"
        f"{model_lines}"
        "batch_size: 2\nprogress: false\ndevice: cpu\n"
        f"out_dir: {root / name}\n"
        f"data: {{format: list, annotations: {root / 'train.txt'}, root: {root}, classes: {root / 'classes.txt'}}}\n"
        f"test_data: {{annotations: {root / 'test.txt'}}}\n"
        f"embedder: {{type: word_vectors, path: {root / 'vectors.txt'}}}\n")
    return path


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def recipe(dataset):
    config = _config(dataset, "colour", "model: test_gzsl_mean_colour\nstages: {fit: {epochs: 3}}\n")
    code, out = _run(["gzsl", str(config)])
    assert code == 0, out
    return dataset, json.loads((dataset / "colour" / "gzsl_report.json").read_text()), out


def test_recipe_runs_both_stages_and_reports(recipe):
    root, report, out = recipe
    assert report["protocol"] == "avca-gzsl" and report["model"] == "test_gzsl_mean_colour"
    assert (report["dataset"], report["split"], report["metric"]) == ("ucf", "main_split", "l2")  # the head's metric
    s1, s2 = report["stage_1"], report["stage_2"]
    # Stage 1: 2 training videos of red and green (one of each held out), blue for validation; 3 epochs.
    assert s1["videos"] == {"train": 4, "val_seen": 2, "val_unseen": 3}
    assert [h["epoch"] for h in s1["history"]] == [1, 2, 3] and s1["epochs"] == 3
    best = max(s1["history"], key=lambda h: (h["HM"], -h["epoch"]))
    assert (s1["best_epoch"], s1["beta"]) == (best["epoch"], best["beta"]) and s2["epochs"] == best["epoch"]
    assert s2["videos"] == {"train": 9, "test_seen": 6, "test_unseen": 2} and s2["skipped_videos"] == 0
    assert all(0 <= report["test"][k] <= 1 for k in ("S", "U", "HM", "ZSL"))
    assert report["test"]["HM"] > 0  # the colour map learnt on the seen colours reaches crimson
    # The trainer ran each protocol stage in its own folder; stage 2 stopped after the chosen epochs.
    for stage, epoch, classes in ((1, 3, SPLIT["stage_1_train"]), (2, s2["epochs"], SPLIT["stage_2_train"])):
        recorded = json.loads((root / "colour" / f"stage_{stage}" / "checkpoints" / "last" / "config.json").read_text())
        assert recorded["metrics"]["epoch"] == epoch - 1 and recorded["class_names"] == classes
    # Table, plot, checkpoint.
    lines = out.splitlines()
    assert "UCF-GZSL" in lines[0] and lines[1].split() == ["model", "S", "U", "HM", "ZSL"]
    assert lines[3].split()[0] == "test_gzsl_mean_colour"
    assert lines[3].split()[1:] == [f"{100 * report['test'][k]:.2f}" for k in ("S", "U", "HM", "ZSL")]
    assert (root / "colour" / "gzsl_tradeoff.png").stat().st_size > 1000 and report["plot"].endswith(".png")
    ckpt = root / "colour" / "stage_2" / "checkpoints" / "last"
    assert report["checkpoint"] == str(ckpt) and (ckpt / "zeroshot.json").is_file()
    assert report["embedder"]["type"] == "word_vectors" and report["config"]["stages"]["fit"]["epochs"] == 3


def _eval(root, ckpt, *extra):
    return _run(["eval", "--protocol", "gzsl", "--checkpoint", str(ckpt), "--root", str(root),
                 "--classes", str(root / "classes.txt"), "--test-seen", str(root / "test_seen.txt"),
                 "--test-unseen", str(root / "test_unseen.txt"), *extra])


def test_eval_gzsl_on_the_recipe_checkpoint_repeats_its_numbers(recipe, tmp_path):
    root, report, _ = recipe
    ckpt = report["checkpoint"]
    path = tmp_path / "fixed.json"
    code, out = _eval(root, ckpt, "--beta", str(report["stage_2"]["beta"]), "--dataset", "ucf",
                      "--report", str(path), "--plot", str(tmp_path / "tradeoff.png"))
    assert code == 0, out
    fixed = json.loads(path.read_text())
    assert fixed["calibration"] == "fixed" and fixed["beta"] == report["stage_2"]["beta"]
    for k in ("S", "U", "HM", "ZSL"):
        assert fixed["test"][k] == pytest.approx(report["test"][k], abs=1e-12)
    assert fixed["curve"] == report["stage_2"]["curve"]
    assert fixed["per_class_accuracy"] == report["stage_2"]["per_class_accuracy"]
    assert "UCF-GZSL" in out and (tmp_path / "tradeoff.png").is_file()

    # Calibrated on validation lists (here the test lists themselves): the test curve's best beta.
    path = tmp_path / "calibrated.json"
    code, out = _eval(root, ckpt, "--val-seen", str(root / "test_seen.txt"), "--val-unseen",
                      str(root / "test_unseen.txt"), "--report", str(path))
    assert code == 0, out
    calibrated = json.loads(path.read_text())
    curve = report["stage_2"]["curve"]
    assert calibrated["beta"] == curve["beta"][int(np.argmax(curve["HM"]))]  # argmax: first (smallest) beta
    assert calibrated["test"]["HM"] == pytest.approx(max(curve["HM"]), abs=1e-12)
    assert calibrated["validation"]["HM"] == calibrated["test"]["HM"] and "calibrated" in out


def test_eval_gzsl_skips_unreadable_videos_and_checks_the_classes(recipe, tmp_path):
    root, report, _ = recipe
    ckpt = report["checkpoint"]
    (tmp_path / "broken.webm").write_bytes(b"not a video" * 50)
    unseen = tmp_path / "unseen.txt"
    unseen.write_text((root / "test_unseen.txt").read_text() + f"{tmp_path / 'broken.webm'} 3\n")
    path = tmp_path / "r.json"
    argv = ["eval", "--protocol", "gzsl", "--checkpoint", ckpt, "--root", str(root), "--classes",
            str(root / "classes.txt"), "--test-seen", str(root / "test_seen.txt"), "--test-unseen", str(unseen),
            "--beta", str(report["stage_2"]["beta"]), "--allow-outside-root"]  # the broken file lies outside --root
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, out = _run([*argv, "--report", str(path)])
    assert code == 0, out
    result = json.loads(path.read_text())
    assert result["skipped_videos"] == 1 and result["videos"] == {"seen": 6, "unseen": 3}
    assert result["test"] == pytest.approx(report["test"], abs=1e-12)
    total = len((root / "test_seen.txt").read_text().splitlines()) + len(unseen.read_text().splitlines())
    assert f"warning: skipped 1 of {total} unreadable video(s)" in err.getvalue()
    # --strict: the run stops at the broken file, naming it.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = _run([*argv, "--strict"])
    assert code == 2 and "broken.webm" in err.getvalue().strip().splitlines()[-1]

    # Unseen test classes must be new to the checkpoint, seen ones known to it.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = _run(["eval", "--protocol", "gzsl", "--checkpoint", ckpt, "--root", str(root),
                        "--classes", str(root / "classes.txt"), "--test-seen", str(root / "test_seen.txt"),
                        "--test-unseen", str(root / "test_seen.txt"), "--beta", "0"])
    assert code == 2 and "classes the checkpoint was trained on" in err.getvalue()


@pytest.mark.parametrize("argv,message", [
    (["--annotations", "x"], "reads --test-seen and --test-unseen, not --annotations"),
    (["--test-seen", "a"], "needs --test-unseen"),
    (["--test-seen", "a", "--test-unseen", "b"], "or a fixed --beta"),
    (["--test-seen", "a", "--test-unseen", "b", "--beta", "1", "--val-seen", "c", "--val-unseen", "d"], "not both"),
    (["--test-seen", "a", "--test-unseen", "b", "--val-seen", "c"], "give both --val-seen and --val-unseen"),
    (["--test-seen", "/no/list", "--test-unseen", "b", "--beta", "0"], "--test-seen /no/list: no such file"),
])
def test_eval_gzsl_option_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main(["eval", "--protocol", "gzsl", "--checkpoint", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_eval_zero_shot_options_stay_apart(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "--annotations is required" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--annotations", "x", "--beta", "1"]) == 2
    assert "are for --protocol gzsl, not 0/100" in capsys.readouterr().err


# ------------------------------------------------------------ the config

def test_config_keys_overrides_and_errors(dataset, tmp_path, capsys):
    config = _config(dataset, "cfg", "model: test_gzsl_mean_colour\n")
    assert main(["gzsl", str(config), "split=cls", "stages.fit.epochs=4", "test_data.subset=test", "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["split"] == "cls" and resolved["stages"]["fit"]["epochs"] == 4
    assert resolved["test_data"] == {"annotations": str(dataset / "test.txt"), "subset": "test"}
    loaded = GZSLConfig.load(config, ["split=cls"])
    assert loaded.avca_split == "cls_split" and loaded.test_data_config().annotations == str(dataset / "test.txt")
    train = loaded.train_config(tmp_path / "s1")
    assert type(train).__name__ == "TrainConfig" and train.out_dir == str(tmp_path / "s1")
    assert train.model == "test_gzsl_mean_colour" and train.data == loaded.data
    for override, message in [("split=other", "'split' must be main or cls"),
                              ("dataset=hmdb", "unknown AVCA dataset"),
                              ("test_data.annotation=x", "test_data.annotation"),
                              ("metric=manhattan", "'metric' must be one of"),
                              ("val_fraction=1.5", "'val_fraction' must be in (0, 1)"),
                              ("beta_grid=[]", "'beta_grid' must be a non-empty list")]:
        assert main(["gzsl", str(config), override]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (override, err)
    assert main(["gzsl", str(config), "stages.fit.epochs=0"]) == 2
    assert "add up to 0 epochs" in capsys.readouterr().err
    assert main(["gzsl", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_gzsl_command_is_registered_with_help(capsys):
    with pytest.raises(SystemExit):
        main(["gzsl", "--help"])
    text = capsys.readouterr().out
    assert "stage_1_val_seen" in text and "test_data" in text and "example config" in text


# ------------------------------------------------------------ pieces

def test_evaluate_gzsl_leaves_out_unread_videos_and_marks_a_fixed_beta():
    seen = VideoList([VideoRecord(f"s{i}", i % 2, f"s{i}") for i in range(4)], ["A", "B"])
    unseen = VideoList([VideoRecord(f"u{i}", 0, f"u{i}") for i in range(2)], ["C"])
    test = GZSLEvalSet(["A", "B"], seen, unseen)
    emb = {"A": [0.0, 0.0], "B": [4.0, 0.0], "C": [0.0, 4.0]}
    points = {"s0": [0, 0], "s1": [4, 0], "s2": [3, 0.5], "s3": [1, 1], "u0": [0, 1.9], "u1": [0.2, 2.5]}
    read = ["s0", "s1", "s3", "u0", "u1"]  # s2 could not be read

    def encode(videos):
        return np.array([points[i] for i in read], dtype=np.float64), read

    result = evaluate_gzsl(encode, lambda names: np.array([emb[n] for n in names]), test, beta=0.35)
    assert result["skipped_videos"] == 1 and test.skipped == 1
    dist = np.array([[np.hypot(*np.subtract(points[i], emb[c])) for c in "ABC"] for i in read])
    labels = [0, 1, 1, 2, 2]
    want = ref_scores(dist, labels, [0, 1], [2], 0.35)
    assert all(abs(result["test"][k] - want[k]) <= 1e-12 for k in ("S", "U", "HM", "ZSL"))
    assert 0.35 in result["curve"]["beta"] and len(result["curve"]["beta"]) == 17
    assert result["per_class_accuracy"]["gzsl"]["B"] == 0.5
    # Calibrated on a validation set: the reference's beta.
    val = GZSLEvalSet(["A", "B"], seen, unseen)
    calibrated = evaluate_gzsl(encode, lambda names: np.array([emb[n] for n in names]), test, val=val)
    assert calibrated["beta"] == pytest.approx(ref_calibrate(dist, labels, [0, 1], [2], DEFAULT_BETA_GRID.tolist()))
    with pytest.raises(ValueError, match="not both or neither"):
        evaluate_gzsl(encode, None, test)
    with pytest.raises(ValueError, match="both seen and unseen"):
        GZSLEvalSet(["A", "C"], seen, unseen)
    with pytest.raises(ValueError, match="not trained on"):
        GZSLEvalSet(["A"], seen, unseen)


# ------------------------------------------------------------ prototype transfer (ResT's head)

def test_recipe_builds_prototypes_from_each_stage_s_training_videos(dataset, tmp_path):
    config = _config(dataset, "prototypes", "model: test_gzsl_mean_colour_prototypes\nstages: {fit: {epochs: 2}}\n"
                     "head_settings: {k: 2, theta: 0.5, rho: 1}\n")
    code, out = _run(["gzsl", str(config)])
    assert code == 0, out
    report = json.loads((dataset / "prototypes" / "gzsl_report.json").read_text())
    assert report["metric"] == "cosine" and len(report["stage_1"]["history"]) == 2  # the head's metric
    ckpt = dataset / "prototypes" / "stage_2" / "checkpoints" / "last"
    settings = json.loads((ckpt / "zeroshot.json").read_text())
    assert settings["head"] == "prototype_transfer" and settings["head_settings"] == {"k": 2, "theta": 0.5, "rho": 1}
    assert settings["seen_labels"] == SPLIT["stage_2_train"]  # stage 2's prototypes, not stage 1's
    path = tmp_path / "r.json"
    code, out = _eval(dataset, ckpt, "--beta", str(report["stage_2"]["beta"]), "--report", str(path))
    assert code == 0, out
    assert json.loads(path.read_text())["test"] == pytest.approx(report["test"], abs=1e-12)


# ------------------------------------------------------------ ResT

@pytest.mark.slow
def test_recipe_with_rest_tiny_and_its_prototype_head(dataset):
    config = _config(dataset, "rest", "model: rest_tiny\n"
                     "model_args: {frames: 2, image_size: 16, dim: 16, depth: 1, heads: 2, mlp_dim: 32}\n"
                     "stages: {warmup: {epochs: 1, optimizer: sgd, lr: 0.05}, joint: {epochs: 1, lr: 0.001}}\n"
                     "head_settings: {k: 2, theta: 0.5, rho: 1}\n")
    code, out = _run(["gzsl", str(config)])
    assert code == 0, out
    report = json.loads((dataset / "rest" / "gzsl_report.json").read_text())
    assert report["metric"] == "cosine" and len(report["stage_1"]["history"]) == 2
    ckpt = dataset / "rest" / "stage_2" / "checkpoints" / "last"
    settings = json.loads((ckpt / "zeroshot.json").read_text())
    assert settings["head"] == "prototype_transfer" and settings["head_settings"] == {"k": 2, "theta": 0.5, "rho": 1}
    assert settings["seen_labels"] == SPLIT["stage_2_train"]
    code, out = _eval(dataset, ckpt, "--beta", str(report["stage_2"]["beta"]))
    assert code == 0, out
    assert out.splitlines()[3].split()[1:] == [f"{100 * report['test'][k]:.2f}" for k in ("S", "U", "HM", "ZSL")]


@pytest.mark.parametrize("option,name,message", [
    ("--plot", "tradeoff.xyz", "matplotlib cannot write .xyz files; use one of"),
    ("--plot", "a_folder", "is a folder"),
    ("--report", "a_folder", "is a folder"),
    ("--report", "a_file/r.json", "is a file, not a folder"),
])
def test_eval_gzsl_outputs_are_checked_before_the_run(option, name, message, tmp_path, capsys):
    """--plot and --report are checked before the checkpoint is loaded (here it is no checkpoint at all), as
    one line naming the option: not after the evaluation, naming a temporary file."""
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("")
    (tmp_path / "list.txt").write_text("")
    path = tmp_path / name
    assert main(["eval", "--protocol", "gzsl", "--checkpoint", str(tmp_path), "--test-seen", str(tmp_path / "list.txt"),
                 "--test-unseen", str(tmp_path / "list.txt"), "--beta", "1", option, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zsar eval: error: {option} {path}: ") and message in err and "\n" not in err, err


def test_a_gensim_pickle_embedder_needs_trust_pickle(dataset, capsys):
    """`zsar gzsl` offers --trust-pickle as `zsar train` does: without it a .kv (pickle) embedder is
    refused at once, naming the option; with it the run reads the vectors."""
    from gensim.models import KeyedVectors

    kv = dataset / "vectors.kv"
    KeyedVectors.load_word2vec_format(str(dataset / "vectors.txt")).save(str(kv))
    config = _config(dataset, "pickled", "model: test_gzsl_mean_colour\nstages: {fit: {epochs: 1}}\n")
    config.write_text(config.read_text().replace(str(dataset / "vectors.txt"), str(kv)))
    assert _run(["gzsl", str(config)])[0] == 2
    err = capsys.readouterr().err.strip()
    assert "--trust-pickle" in err and "vectors.kv" in err and "\n" not in err
    assert not (dataset / "pickled" / "stage_1").exists()
    assert _run(["gzsl", str(config), "--trust-pickle"])[0] == 0
