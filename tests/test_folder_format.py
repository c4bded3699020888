"""The ``folder`` dataset format (``<folder>/<class>/<video>``): splits by sub-folders or a seeded
fraction, configurable extensions, and a tiny `zsar train` + `zsar eval` on it (with metrics.csv)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from zsar.data import FORMATS, read_video_folder, write_video
from zsar.data.config import DataConfig
from zsar.data.formats.folder import parse_folder_split


def _touch_tree(root, layout):
    for rel in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_registered_and_reads_classes_from_folder_names(tmp_path):
    _touch_tree(tmp_path, ["jump/a.mp4", "jump/b.webm", "run/x/c.mkv", "run/notes.txt", ".hidden/d.mp4",
                           "jump/.e.mp4"])
    assert "folder" in FORMATS
    videos = read_video_folder(tmp_path)
    assert videos.classes == ["jump", "run"]
    assert [(r.video_id, r.label) for r in videos.records] == [("jump/a.mp4", 0), ("jump/b.webm", 0),
                                                               ("run/x/c.mkv", 1)]
    assert all(r.path.startswith(str(tmp_path)) for r in videos.records)
    only_mp4 = read_video_folder(tmp_path, extensions=["mp4", ".mkv"])
    assert [r.video_id for r in only_mp4.records] == ["jump/a.mp4", "run/x/c.mkv"]
    via_spec = DataConfig(format="folder", annotations=str(tmp_path), split="ext=webm", subset="all",
                          on_missing="skip").read()
    assert [r.video_id for r in via_spec.records] == ["jump/b.webm"]


def test_train_val_test_subfolders(tmp_path):
    _touch_tree(tmp_path, ["train/a/1.mp4", "train/b/2.mp4", "val/a/3.mp4", "test/c/4.mp4"])
    test = DataConfig(format="folder", annotations=str(tmp_path), subset="test").read()
    assert test.classes == ["c"] and [r.video_id for r in test.records] == ["test/c/4.mp4"]
    assert DataConfig(format="folder", annotations=str(tmp_path)).read().classes == ["a", "b"]  # subset train
    with pytest.raises(ValueError, match="split"):
        read_video_folder(tmp_path, "train", split="test=0.5")


def test_seeded_fraction_split_is_a_partition_and_fixed_by_the_seed(tmp_path):
    _touch_tree(tmp_path, [f"{c}/{i:02d}.mp4" for c in "abcd" for i in range(10)])
    spec = "test=0.2,val=0.1,seed=3"
    parts = {s: read_video_folder(tmp_path, s, split=spec) for s in ("train", "val", "test")}
    ids = {s: [r.video_id for r in v.records] for s, v in parts.items()}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [28, 4, 8]  # per class: 7 / 1 / 2
    assert sorted(sum(ids.values(), [])) == sorted(r.video_id for r in read_video_folder(tmp_path).records)
    assert all(v.classes == ["a", "b", "c", "d"] for v in parts.values())
    assert ids["test"] == [r.video_id for r in read_video_folder(tmp_path, "test", split=spec).records]
    other = [r.video_id for r in read_video_folder(tmp_path, "test", split="test=0.2,val=0.1,seed=4").records]
    assert other != ids["test"]
    # The draw is sha256 of (seed, name): pinned, so that any machine gives this split.
    assert ids["test"][:2] == [r.video_id for r in read_video_folder(tmp_path, "test", split=spec).records][:2]
    by_class = {s: read_video_folder(tmp_path, s, split="test=0.5,by=class,seed=0").classes for s in ("train", "test")}
    assert len(by_class["train"]) == len(by_class["test"]) == 2 and not set(by_class["train"]) & set(by_class["test"])


@pytest.mark.parametrize("spec", ["test=1.5", "val=0.6,test=0.6", "foo=1", "by=clip", "seed=x"])
def test_bad_split_specs_are_one_line_errors(spec):
    with pytest.raises(ValueError, match="folder split"):
        parse_folder_split(spec)


def test_empty_class_folder(tmp_path):
    _touch_tree(tmp_path, ["a/1.mp4", "b/readme.txt"])
    with pytest.raises(FileNotFoundError, match="b"):
        read_video_folder(tmp_path)
    assert read_video_folder(tmp_path, on_missing="skip").classes == ["a"]


COLOURS = {"red_light": (200, 30, 30), "green_light": (30, 200, 30), "blue_light": (30, 30, 200)}


def _video(path, rgb, seed, t=6):
    rng = np.random.default_rng(seed)
    frames = np.clip(np.array(rgb)[None, None, None] + rng.normal(0, 20, (t, 32, 40, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames)


@pytest.fixture(scope="module")
def trained_on_folder(tmp_path_factory):
    from zsar.cli import main

    root = tmp_path_factory.mktemp("folder")
    for c, (name, rgb) in enumerate(COLOURS.items()):
        for i in range(3):
            _video(root / "videos" / name / f"{i}.webm", rgb, seed=10 * c + i)
    config = root / "train.yaml"
    config.write_text(
        "model: rest_tiny\n"
        "model_args: {frames: 4, image_size: 32, dim: 32, depth: 1, heads: 4, mlp_dim: 64}\n"
        "stages:\n"
        "  warmup: {epochs: 1, optimizer: sgd, lr: 0.05, weight_decay: 0.0}\n"
        "  joint: {epochs: 1, optimizer: adamw, lr: 0.001, weight_decay: 0.0}\n"
        "batch_size: 4\nprogress: false\ndevice: cpu\n"  # 3 steps per epoch, fewer than log_every (10)
        f"out_dir: {root / 'run'}\n"
        f"data: {{format: folder, annotations: {root / 'videos'}, short_side: 36}}\n")
    assert main(["train", str(config)]) == 0
    return root


def test_tiny_training_on_a_folder_writes_metrics_csv(trained_on_folder):
    """A run shorter than log_every steps used to write no metrics.csv."""
    with open(trained_on_folder / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["stage"] for r in rows} == {"warmup", "joint"} and all(np.isfinite(float(r["loss"])) for r in rows)


def test_eval_reads_a_folder(trained_on_folder, capsys):
    from zsar.cli import main

    root = trained_on_folder
    assert main(["eval", "--checkpoint", str(root / "run" / "checkpoints" / "best"), "--format", "folder",
                 "--annotations", str(root / "videos"), "--subset", "all", "--device", "cpu",
                 "--report", str(root / "eval.json")]) == 0
    import json

    report = json.loads((root / "eval.json").read_text())
    assert report["videos"] == 9 and report["classes"] == sorted(COLOURS) if isinstance(report["classes"], list) \
        else report["videos"] == 9
    assert "chance top-1" in capsys.readouterr().out


def test_eval_refuses_number_labels_it_cannot_name(trained_on_folder, tmp_path, capsys):
    """Without names the classes were '0', '1' and eval printed 0% top-1: now refused in one line
    (the checkpoint has 3 seen classes, the list 2 numbers)."""
    from zsar.cli import main

    for i in range(2):
        (tmp_path / f"v{i}.webm").write_bytes(b"")
    (tmp_path / "test.txt").write_text("v0.webm 0\nv1.webm 1\n")
    code = main(["eval", "--checkpoint", str(trained_on_folder / "run" / "checkpoints" / "best"), "--device", "cpu",
                 "--annotations", str(tmp_path / "test.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "--classes" in err and err.count("\n") == 1


def test_gzsl_config_reads_train_and_test_subfolders(tmp_path):
    """`zsar gzsl`'s config: data and test_data on one folder with train/ and test/ sub-folders."""
    from zsar.eval.recipes import GZSLConfig

    _touch_tree(tmp_path / "v", ["train/a/1.mp4", "train/b/2.mp4", "test/a/3.mp4", "test/c/4.mp4"])
    config = GZSLConfig.from_dict({"model": "rest_tiny", "data": {"format": "folder", "annotations": str(tmp_path / "v")},
                                   "test_data": {"subset": "test"}})
    assert config.data.read().classes == ["a", "b"] and config.test_data_config().read().classes == ["a", "c"]
