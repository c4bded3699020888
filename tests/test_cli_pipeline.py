"""The command-line pipeline on real video files: train → predict → eval, and one-line errors."""

import json

import numpy as np
import pytest

from zsar.cli import main
from zsar.data import write_video

# Colour decides the class; the words are shared so that unseen labels relate to seen ones.
SEEN = {"red light": (200, 30, 30), "green light": (30, 200, 30), "blue light": (30, 30, 200)}
UNSEEN = {"crimson light": (180, 20, 40)}


def _video(path, rgb, seed, t=6):
    rng = np.random.default_rng(seed)
    frames = np.clip(np.array(rgb)[None, None, None] + rng.normal(0, 20, (t, 32, 40, 3)), 0, 255).astype(np.uint8)
    write_video(path, frames)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lines = []
    for c, (name, rgb) in enumerate(SEEN.items()):
        for i in range(4):
            rel = f"videos/{name.replace(' ', '_')}_{i}.webm"
            _video(root / rel, rgb, seed=10 * c + i)
            lines.append(f"{rel} {c}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(SEEN) + "\n")
    config = root / "train.yaml"
    config.write_text(
        "model: rest_tiny\n"
        "model_args: {frames: 4, image_size: 32, dim: 32, depth: 1, heads: 4, mlp_dim: 64}\n"
        "stages:\n"
            "  warmup: {epochs: 2, optimizer: sgd, lr: 0.05, weight_decay: 0.0}\n"
            "  joint: {epochs: 2, optimizer: adamw, lr: 0.001, weight_decay: 0.0}\n"
            "batch_size: 4\nprogress: false\ndevice: cpu\n"
            "head_selection: {n_folds: 2, thetas: [0.0], ks: [1, 2], rhos: [1]}\n"
        f"out_dir: {root / 'run'}\n"
        f"data: {{format: list, annotations: {root / 'train.txt'}, root: {root}, classes: {root / 'classes.txt'}, "
        "short_side: 36}\n")
    assert main(["train", str(config)]) == 0
    return root, root / "run" / "checkpoints" / "best"


def test_train_writes_a_zero_shot_checkpoint(trained):
    _, ckpt = trained
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "config.json", "seen_prototypes.safetensors", "zeroshot.json"} <= names
    settings = json.loads((ckpt / "zeroshot.json").read_text())
    assert settings["embedder"]["type"] == "sentence" and settings["clip_spec"]["frames"] == 4
    # zsar train chooses the head's settings where the demos do (ZeroShotClassifier.fit) and records
    # how: 3 seen classes are too few for 2 folds of at least 2 classes, so the defaults stay.
    assert settings["selection"]["method"] == "fixed" and "fold" in settings["selection"]["reason"]
    assert settings["head_settings"] == {"k": 5, "theta": 0.5, "rho": 3}


@pytest.mark.slow  # ~9 s; test_transfer.py::test_solver_prints_nothing_on_stdout checks the solver's fd 1 by default
def test_predict_json_stdout_parses_from_a_subprocess(trained, tmp_path):
    """C-level writes (HiGHS's banner) reach fd 1 unseen by capsys: only a subprocess sees them."""
    import subprocess
    import sys

    _, ckpt = trained
    video = tmp_path / "query.webm"
    _video(video, UNSEEN["crimson light"], seed=98)
    out = subprocess.run([sys.executable, "-m", "zsar.cli", "predict", str(video), "--checkpoint", str(ckpt),
                          "--labels", "crimson light,green light", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert results[0]["video"] == str(video) and len(results[0]["predictions"]) == 2


def test_a_recorded_clip_spec_is_bounded(trained, tmp_path):
    import shutil

    from zsar.zeroshot import ZeroShotClassifier

    _, ckpt = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    settings = json.loads((copy / "zeroshot.json").read_text())
    settings["clip_spec"]["size"] = 100000
    (copy / "zeroshot.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"zeroshot.json: clip_spec.size must be an int of at most 4096"):
        ZeroShotClassifier.load(copy, device="cpu")


def test_predict_json_on_a_new_video(trained, tmp_path, capsys):
    _, ckpt = trained
    video = tmp_path / "query.mp4"  # H.264: a codec the training videos did not use
    _video(video, UNSEEN["crimson light"], seed=99)
    labels = "crimson light,green light,blue light"
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--labels", labels, "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["video"] == str(video) and len(out[0]["predictions"]) == 2
    probs = [p["probability"] for p in out[0]["predictions"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert {p["label"] for p in out[0]["predictions"]} <= set(labels.split(","))


def test_predict_table_with_labels_file(trained, tmp_path, capsys):
    root, ckpt = trained
    (tmp_path / "labels.txt").write_text("red light\nblue light\n")
    video = next((root / "videos").iterdir())
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--labels-file", str(tmp_path / "labels.txt")]) == 0
    out = capsys.readouterr().out
    assert str(video) in out and "1. " in out and "2. " in out


def test_eval_report(trained, tmp_path, capsys):
    root, ckpt = trained
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--annotations", str(root / "train.txt"), "--root", str(root),
                 "--report", str(report)]) == 0
    results = json.loads(report.read_text())
    assert results["videos"] == 12 and results["chance"] == pytest.approx(1 / 3)
    for key in ("transfer", "semantic_baseline"):
        assert 0 <= results[key]["top1"]["mean"] <= 1
    assert "chance top-1" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["predict", "nope.mp4", "--checkpoint", ".", "--labels", "a,b"], "nope.mp4: no such file"),
    (["predict", __file__, "--checkpoint", "/no/ckpt", "--labels", "a,b"], "--checkpoint /no/ckpt"),
    (["predict", __file__, "--checkpoint", ".", "--labels", "a,a"], "repeated: 'a'"),
    (["predict", __file__, "--checkpoint", ".", "--labels", " , "], "no labels"),
    (["train", "/no/config.yaml"], "config file /no/config.yaml"),
    (["eval", "--checkpoint", "/no/ckpt", "--annotations", "x"], "--checkpoint /no/ckpt"),
    (["bench", "decode", "--backend", "opencv"], "--backend must be one of"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_train_config_errors(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: rest_tiny\nbatch_size: 2\n")
    assert main(["train", str(config)]) == 2
    assert "no `data` section" in capsys.readouterr().err
    assert main(["train", str(config), "data.format=avi"]) == 2
    assert "data.format: unknown dataset format" in capsys.readouterr().err
    assert main(["train", str(config), "batch_size=x"]) == 2
    assert "batch_size" in capsys.readouterr().err
    # The released AVCA features are not videos: `zsar train` says what reads them, before any work.
    assert main(["train", str(config), "data.format=avca_features", f"data.annotations={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.format 'avca_features': its records are feature files, not videos, which zsar train decodes" in err
    assert "zsar gzsl" in err and "\n" not in err


@pytest.mark.parametrize("command", ["eval", "encode"])
def test_format_errors_name_the_option(command, trained, tmp_path, capsys):
    root, ckpt = trained
    extra = ["--out", str(tmp_path / "e.parquet")] if command == "encode" else []
    for fmt, message in (("avi", "--format: unknown dataset format 'avi'; expected one of "),
                         ("avca_features", f"--format 'avca_features': its records are feature files, not videos, "
                                           f"which zsar {command} decodes; run the AVCA GZSL protocol on them with "
                                           "`zsar gzsl`")):
        assert main([command, "--checkpoint", str(ckpt), "--format", fmt, "--annotations", str(root), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "data.format" not in err and "\n" not in err, err
    assert main(["eval", "--checkpoint", str(ckpt), "--protocol", "gzsl", "--format", "avca_features", "--test-seen",
                 str(root), "--test-unseen", str(root), "--beta", "0"]) == 2
    assert "--format 'avca_features'" in capsys.readouterr().err


def test_eval_skips_an_unreadable_video_or_stops_with_strict(trained, tmp_path, capsys):
    """One damaged file among the test videos: skipped with a warning and counted in the report (the
    accuracies over the others); --strict stops at it, naming it."""
    import shutil

    root, ckpt = trained
    shutil.copytree(root / "videos", tmp_path / "videos")  # the module's folder stays as it is
    (tmp_path / "videos" / "damaged.webm").write_bytes(b"\x1aE\xdf\xa3 not a webm file" * 50)
    lines = (root / "train.txt").read_text().splitlines()
    annotations = tmp_path / "test.txt"
    annotations.write_text("\n".join([*lines, "videos/damaged.webm 0"]) + "\n")
    report = tmp_path / "report.json"
    base = ["eval", "--checkpoint", str(ckpt), "--annotations", str(annotations), "--root", str(tmp_path),
            "--classes", str(root / "classes.txt")]
    assert main([*base, "--report", str(report)]) == 0
    results = json.loads(report.read_text())
    assert results["skipped_videos"] == 1 and results["videos"] == 12
    assert "warning: skipped 1 of 13 unreadable video(s)" in capsys.readouterr().err
    assert main([*base, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("zsar eval: error: ") and "damaged.webm" in err


def test_every_command_has_help(capsys):
    from zsar.cli import COMMANDS

    for name in ("train", "eval", "predict", "bench", "prepare", "info", "demo", "flops"):
        assert name in COMMANDS
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert "usage: zsar " + name in capsys.readouterr().out


def test_eval_names_an_empty_or_folder_list_file(trained, tmp_path, capsys):
    """An empty --classes file used to blame the annotations ("label 0 out of range: expected 0..-1"), an empty
    --annotations file the loader ("videos is empty: nothing to load"), a folder "not found"."""
    root, ckpt = trained
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "folder").mkdir()
    base = ["eval", "--checkpoint", str(ckpt), "--root", str(root)]
    for argv, message in (
            (["--annotations", str(root / "train.txt"), "--classes", str(tmp_path / "empty.txt")],
             f"{tmp_path / 'empty.txt'}: holds no class names"),
            (["--annotations", str(tmp_path / "empty.txt"), "--classes", str(root / "classes.txt")],
             f"{tmp_path / 'empty.txt'}: lists no videos"),
            (["--annotations", str(tmp_path / "folder")],
             f"{tmp_path / 'folder'}: is a folder, expected a video list file (for a class-per-subfolder tree use "
             f"the 'folder' format: --format folder)"),
            (["--annotations", str(root / "train.txt"), "--classes", str(tmp_path / "folder")],
             f"{tmp_path / 'folder'}: is a folder, expected a class list file")):
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"zsar eval: error: {message}" or (err.startswith(f"zsar eval: error: {message}")
                                                         and "\n" not in err), err


def test_predict_labels_file_that_is_a_folder(tmp_path, capsys):
    assert main(["predict", __file__, "--checkpoint", ".", "--labels-file", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zsar predict: error: --labels-file {tmp_path}: is a folder, expected a labels file (one label per line)"


@pytest.mark.parametrize("command", ["eval", "encode"])
@pytest.mark.parametrize("option,value,what", [("--split", "7", "splits"), ("--subset", "bogus", "subsets")])
def test_a_split_or_subset_the_format_does_not_have_is_refused(tmp_path, capsys, command, option, value, what):
    """A list file has neither: the value used to be ignored in silence (reading other videos than meant)."""
    from zsar.cli import main

    listed = tmp_path / "list.txt"
    listed.write_text("a.webm 0\n")
    args = {"eval": ["--checkpoint", str(tmp_path)], "encode": ["--checkpoint", str(tmp_path), "--out",
                                                              str(tmp_path / "e.parquet")]}[command]
    assert main([command, *args, "--format", "list", "--annotations", str(listed), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{option} '{value}': the 'list' format has no {what}" in err and "\n" not in err


def test_a_config_split_for_a_format_without_splits_is_refused(tmp_path):
    from zsar.data.config import DataConfig

    listed = tmp_path / "list.txt"
    listed.write_text("a.webm 0\n")
    with pytest.raises(ValueError, match=r"data.split 2: the 'list' format has no splits \(formats with splits: "):
        DataConfig(format="list", annotations=str(listed), split=2).read()
