"""Runs, checkpoints and the command line on real files: nothing the user had is lost, no NaN
answer, every error one line. One small training run (rest_tiny on webm files) is shared."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from zsar.cli import main
from zsar.data import write_video

SEEN = {"red light": (200, 30, 30), "green light": (30, 200, 30), "blue light": (30, 30, 200)}


def _video(path, rgb, seed, t=4):
    rng = np.random.default_rng(seed)
    frames = np.clip(np.array(rgb)[None, None, None] + rng.normal(0, 20, (t, 32, 40, 3)), 0, 255).astype(np.uint8)
    write_video(path, frames)


def _config(root: Path, out: str, classes=SEEN, epochs: int = 1, annotations: str = "train.txt") -> Path:
    config = root / f"{out}.yaml"
    config.write_text(
        "model: rest_tiny\n"
        "model_args: {frames: 4, image_size: 32, dim: 32, depth: 1, heads: 4, mlp_dim: 64}\n"
        f"stages: {{warmup: {{epochs: {epochs}, optimizer: sgd, lr: 0.05}}, joint: {{epochs: {epochs}, lr: 0.001}}}}\n"
        "batch_size: 4\nprogress: false\ndevice: cpu\n"
        f"out_dir: {root / out}\n"
        f"data: {{format: list, annotations: {root / annotations}, root: {root}, short_side: 36}}\n")
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished zsar train run: (root, config, best checkpoint)."""
    root = tmp_path_factory.mktemp("rel")
    lines = []
    for c, (name, rgb) in enumerate(SEEN.items()):
        for i in range(2):
            rel = f"videos/{name.replace(' ', '_')}_{i}.webm"
            _video(root / rel, rgb, seed=10 * c + i)
            lines.append(f"{rel} {c}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    config = _config(root, "run")
    assert main(["train", str(config)]) == 0
    return root, config, root / "run" / "checkpoints" / "best"


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "ckpt"))


def _one_line_error(capsys, code_expected=True):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# ---- nothing lost ----------------------------------------------------------------------------------

def test_a_users_own_best_old_is_never_deleted(run, tmp_path):
    from zsar.models import load_model, save_checkpoint

    _, _, best = run
    ckpt = _copy(best, tmp_path)
    mine = tmp_path / "ckpt.old"
    mine.mkdir()
    (mine / "notes.txt").write_text("my backup")
    save_checkpoint(ckpt, load_model(ckpt))
    assert (mine / "notes.txt").read_text() == "my backup"
    assert not (tmp_path / "ckpt.zsar-old").exists()


@pytest.mark.parametrize("how", [[], ["--no-resume"]], ids=["resumed", "started-over"])
def test_a_finished_run_stays_whole_until_the_new_one_is_complete(run, tmp_path, monkeypatch, how):
    """Killed before its zero-shot files exist (here: the zero-shot step raises), a longer run into a
    finished run's folder leaves that run's best checkpoint and its zeroshot.json as they were
    (started over, its first epoch is its best so far, and used to replace them at once)."""
    import zsar.train.pipeline as pipeline
    from zsar.zeroshot import ZeroShotClassifier

    root, _, _ = run
    shutil.copytree(root / "run", tmp_path / "run")
    (tmp_path / "train.txt").write_text((root / "train.txt").read_text())
    shutil.copytree(root / "videos", tmp_path / "videos")
    best = tmp_path / "run" / "checkpoints" / "best"
    before = {p.name: p.read_bytes() for p in best.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Pipeline, "save", killed)
    assert main(["train", str(_config(tmp_path, "run", epochs=2)), *how]) == 130  # "interrupted"
    assert {p.name: p.read_bytes() for p in best.iterdir()} == before
    ZeroShotClassifier.load(best, device="cpu")
    monkeypatch.undo()
    assert main(["train", str(_config(tmp_path, "run", epochs=2)), *how]) == 0
    assert (best / "zeroshot.json").is_file() and not (best.parent / "best.next").exists()
    ZeroShotClassifier.load(best, device="cpu")
    last = json.loads((best.parent / "last" / "config.json").read_text())
    assert last["train_config"]["stages"]["joint"]["epochs"] == 2 and last["metrics"]["epoch"] == 3


def test_resuming_into_a_run_over_other_classes_is_refused(run, tmp_path, capsys):
    root, _, _ = run
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "videos", tmp_path / "videos")
    lines = (root / "train.txt").read_text().splitlines()
    # The same videos in two other classes: resuming would carry the finished run's weights over.
    (tmp_path / "other.txt").write_text("".join(f"{l.split()[0]} {int(l.split()[1]) % 2}\n" for l in lines))
    (tmp_path / "two.txt").write_text("sitting\nstanding\n")
    config = _config(tmp_path, "run", annotations="other.txt")
    config.write_text(config.read_text().replace("short_side: 36}", f"short_side: 36, classes: {tmp_path / 'two.txt'}}}"))
    assert main(["train", str(config)]) == 2
    assert "holds a run over other classes" in _one_line_error(capsys)


@pytest.mark.parametrize("override,message", [
    ("head_settings.bogus=3", r"config key 'head_settings': unknown head settings \['bogus'\]"),
    ("head_settings.k=-3", r"config key 'head_settings': k must be >= 0, got -3"),
    ("head_settings.theta=abc", r"config key 'head_settings': theta must be a number, got 'abc'"),
])
def test_head_settings_are_checked_before_training(run, tmp_path, capsys, override, message):
    """A misspelt or invalid zero-shot head setting fails at once, not after the training (where it
    ended in a traceback, or in a checkpoint that `zsar predict` could not use)."""
    root, _, _ = run
    config = _config(root, f"head-{override.split('=')[0].split('.')[1]}")
    assert main(["train", str(config), override]) == 2
    assert re.search(message, _one_line_error(capsys))
    assert not (root / f"head-{override.split('=')[0].split('.')[1]}" / "checkpoints").exists()  # nothing trained


def _limited(limit_bytes):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return set_limit


def _zsar(args, limit=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "zsar.cli", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limited(limit) if limit else None, env={**os.environ})


def _last_line(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if "Warning" not in l and not l.startswith(" ")]
    return lines[-1] if lines else ""


def test_a_report_write_on_a_full_disk_keeps_the_earlier_report(tmp_path):
    from zsar.eval import write_results_json

    report = write_results_json(tmp_path / "report.json", {"top1": 0.5})
    earlier = report.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # the disk is full past 64 bytes
    try:
        with pytest.raises(OSError):
            write_results_json(report, {"top1": 0.25, "per_class": {f"class {i}": i for i in range(100)}})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert report.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.slow  # two eval processes; the write itself is covered above
def test_eval_report_on_a_full_disk_keeps_the_earlier_report(run, tmp_path):
    root, _, best = run
    report = tmp_path / "report.json"
    args = ["eval", "--checkpoint", str(best), "--annotations", str(root / "train.txt"), "--root", str(root),
            "--report", str(report)]
    assert _zsar(args).returncode == 0
    earlier = report.read_bytes()
    out = _zsar(args, limit=64)  # the disk is full: no file may grow past 64 bytes
    assert out.returncode == 1 and "File too large" in _last_line(out.stderr) and "Traceback" not in out.stderr
    assert report.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.slow  # a training process; the CLI's OSError line is also covered by the --report tests
def test_training_on_a_full_disk_is_one_line(run, tmp_path):
    root, _, _ = run
    out = _zsar(["train", str(_config(root, f"full_{tmp_path.name}"))], limit=4096)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "File too large" in _last_line(out.stderr)


# ---- no NaN answer ---------------------------------------------------------------------------------

def test_non_finite_weights_are_refused_naming_the_tensor(run, tmp_path):
    from zsar.models import CheckpointError, load_model

    _, _, best = run
    ckpt = _copy(best, tmp_path)
    state = load_file(ckpt / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((ckpt / "config.json").read_text())
    from zsar.models.checkpoint import _sha256

    config["weights_sha256"] = _sha256(ckpt / "model.safetensors")  # the hash matches: only the values are bad
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"weight {name} holds 1 non-finite"):
        load_model(ckpt)


def test_a_checkpoint_without_its_hash_needs_no_verify(run, tmp_path, capsys):
    _, _, best = run
    ckpt = _copy(best, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    del config["weights_sha256"]
    (ckpt / "config.json").write_text(json.dumps(config))
    video = next((best.parents[2] / "videos").iterdir())
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--labels", "red light,green light", "--json"]
    assert main(argv) == 2
    assert "records no weights_sha256" in _one_line_error(capsys)
    assert main([*argv, "--no-verify"]) == 0


def test_predict_never_prints_nan_probabilities(run, tmp_path, capsys):
    """NaN in the head's saved state (the seen-class prototypes) would give NaN scores: refused."""
    _, _, best = run
    ckpt = _copy(best, tmp_path)
    from safetensors import safe_open

    with safe_open(str(ckpt / "seen_prototypes.safetensors"), "pt") as f:
        metadata, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, ckpt / "seen_prototypes.safetensors", metadata=metadata)
    video = next((best.parents[2] / "videos").iterdir())
    code = main(["predict", str(video), "--checkpoint", str(ckpt), "--labels", "red light,green light", "--json"])
    out = capsys.readouterr()
    assert code != 0 and "nan" not in out.out.lower()
    assert "NaN" in out.err and "\n" not in out.err.strip()


def test_labels_that_read_the_same_are_refused(run, capsys):
    root, _, best = run
    video = next((root / "videos").iterdir())
    for labels in ("Red Light,red_light", "red light!,red-light", "🙂,red light"):
        assert main(["predict", str(video), "--checkpoint", str(best), "--labels", labels]) == 2
        err = _one_line_error(capsys)
        assert "read as" in err or "no words" in err


# ---- paths -----------------------------------------------------------------------------------------

def test_list_entries_outside_the_root_are_refused(run, tmp_path, capsys):
    root, _, best = run
    inner = tmp_path / "root"
    inner.mkdir()
    outside = root / "videos" / "red_light_0.webm"
    lst = tmp_path / "list.txt"
    lst.write_text(f"{os.path.relpath(outside, inner)} 0\n")
    argv = ["eval", "--checkpoint", str(best), "--annotations", str(lst), "--root", str(inner)]
    assert main(argv) == 2
    assert "outside the video root" in _one_line_error(capsys)
    lst.write_text(f"{outside} 0\n")  # an absolute path
    assert main(argv) == 2
    assert "outside the video root" in _one_line_error(capsys)


def test_prepare_never_writes_through_a_link_out_of_its_destination(run, tmp_path):
    from zsar.data.prepare import prepare_dataset

    root, _, _ = run
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    shutil.copy(root / "videos" / "red_light_0.webm", src / "a" / "x.webm")
    elsewhere, dst = tmp_path / "elsewhere", tmp_path / "dst"
    elsewhere.mkdir()
    dst.mkdir()
    (dst / "a").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="outside the destination folder"):
        prepare_dataset(src, dst, workers=1, progress=False)
    assert list(elsewhere.iterdir()) == []


def test_an_unreadable_embedder_file_is_not_quoted(tmp_path):
    from zsar.text import WordVectorEmbedder

    private = tmp_path / "private.txt"
    private.write_text("1 3\nsecretword 0.1 0.2 hunter2\n")
    with pytest.raises(ValueError) as info:
        WordVectorEmbedder(private)
    assert "hunter2" not in str(info.value) and "secretword" not in str(info.value)


# ---- one-line CLI errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("device,message", [("garbage", "not a device"), ("meta", "cpu or cuda, not meta"),
                                            ("cuda:7", "CUDA")])
def test_device_strings(run, device, message, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    root, _, best = run
    video = next((root / "videos").iterdir())
    assert main(["predict", str(video), "--checkpoint", str(best), "--labels", "a b,c d", "--device", device]) == 2
    assert message in _one_line_error(capsys)


def test_report_naming_a_folder_and_out_dir_naming_a_file(run, tmp_path, capsys):
    root, _, best = run
    assert main(["eval", "--checkpoint", str(best), "--annotations", str(root / "train.txt"), "--root", str(root),
                 "--report", str(tmp_path)]) == 2
    assert "is a folder" in _one_line_error(capsys)
    config = _config(root, "x")
    (tmp_path / "file").write_text("")
    assert main(["train", str(config), f"out_dir={tmp_path / 'file'}"]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)


@pytest.mark.parametrize("argv,message", [
    (["flops", "mzst_tiny", "--frames", "1"], "mvit_tiny takes an even number of frames"),
    (["flops", "mzst_tiny", "--frames", "3"], "mvit_tiny takes an even number of frames"),
    (["flops", "mzst_tiny", "--frames", "100000"], "frames=100000 is above the limit"),
    (["flops", "rest_tiny", "--frames", "100000"], "frames=100000 is above the limit"),
])
def test_model_arguments_out_of_range(argv, message, capsys):
    assert main(argv) == 2
    assert message in _one_line_error(capsys)


def test_print_config_before_overrides(run, capsys):
    _, config, _ = run
    assert main(["train", str(config), "--print-config", "batch_size=3"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_size"] == 3


def test_bench_model_mzst_tiny(capsys):
    assert main(["bench", "model", "--model", "mzst_tiny", "--batch", "1", "--repeats", "1", "--device", "cpu"]) == 0
    assert "training step" in capsys.readouterr().out


def test_skipping_every_step_of_an_epoch_is_an_error_not_a_missing_checkpoint(tmp_path):
    from training_data import CLASS_NAMES, FEATURE_MODEL_ARGS, SeparableFeatures
    from zsar.train import NonFiniteLossError, StageConfig, Trainer, TrainConfig

    data = SeparableFeatures(16)
    data.x[:] = float("nan")
    config = TrainConfig(model="rest_tiny", model_args=FEATURE_MODEL_ARGS,
                         stages={"joint": StageConfig(1, "adamw", 1e-3, 0.0)}, batch_size=8, seed=0,
                         out_dir=str(tmp_path / "run"), progress=False, device="cpu", nonfinite_loss="skip")
    with pytest.raises(NonFiniteLossError, match=r"every step of epoch 1 .* nothing was trained"):
        Trainer(config, data, CLASS_NAMES).fit()


@pytest.mark.parametrize("argv,message", [
    (["demo", "--noise", "nan"], "argument --noise: expected a finite number, got 'nan'"),
    (["bench", "model", "--frames", "0"], "argument --frames: must be at least 1, got 0"),
])
def test_argument_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in _one_line_error(capsys)


def test_audio_weights_of_the_wrong_kind(tmp_path):
    import zsar

    with pytest.raises(ValueError, match="a state dict maps parameter names to tensors"):
        zsar.create_model("mzst_tiny", audio_weights={"a": 1})


def test_sizes_recorded_in_a_checkpoint_are_bounded(run, tmp_path):
    """A config.json or zeroshot.json stating huge sizes is refused before anything is allocated."""
    from zsar.models import CheckpointError, load_model
    from zsar.zeroshot import ZeroShotClassifier

    _, _, best = run
    ckpt = _copy(best, tmp_path)
    settings = json.loads((ckpt / "zeroshot.json").read_text())
    settings["clip_spec"].update(short_side=8192, size=4096)
    (ckpt / "zeroshot.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"zeroshot.json: .*short_side=8192 is above the limit"):
        ZeroShotClassifier.load(ckpt, device="cpu")
    config = json.loads((ckpt / "config.json").read_text())
    config["model_args"]["num_classes"] = 3_000_000
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"num_classes=3000000 is above the limit"):
        load_model(ckpt)


@pytest.mark.parametrize("arg,source", [("backbone_weights", "{tmp}/elsewhere.safetensors"),
                                        ("audio_weights", "timm/vit_tiny_patch16_224")])
def test_a_checkpoint_config_cannot_load_other_weights(run, tmp_path, arg, source):
    """Loading a checkpoint reads its own weights only: a config.json naming pretrained weights (a
    file elsewhere, a hub name) is refused before the model is built, so nothing is read or fetched."""
    from zsar.models import CheckpointError, load_model

    _, _, best = run
    ckpt = _copy(best, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["model_args"][arg] = source.format(tmp=tmp_path)
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"model_args may not name pretrained weights to load \({arg}\)"):
        load_model(ckpt)


def test_predict_clips_beyond_the_limit(run, capsys):
    root, _, best = run
    video = next((root / "videos").iterdir())
    assert main(["predict", str(video), "--checkpoint", str(best), "--labels", "a b,c d", "--clips", "100000"]) == 2
    assert "num_clips=100000 is above the limit" in _one_line_error(capsys)


@pytest.mark.parametrize("args,message", [
    (dict(fusion_blocks=100_000), "fusion_blocks=100000 is above the limit"),
    (dict(vocab=["[PAD]", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(100_000)], dim=4096, heads=64,
          mlp_dim=4096, embed_dim=4096, fusion_blocks=8), "estimated parameters"),
])
def test_model_sizes_from_a_config_are_bounded(args, message):
    import zsar

    with pytest.raises(ValueError, match=message):
        zsar.create_model("mzst_tiny", **args)
