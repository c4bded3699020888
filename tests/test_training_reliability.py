"""Training and checkpoints under attack and accident: nothing executes from a run folder, runs lock
their folder, --no-resume starts over, non-finite losses stop the run, corrupted checkpoints are
refused with one-line errors naming the file."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zsar
from training_data import CLASS_NAMES, FEATURE_MODEL_ARGS, SeparableFeatures
from zsar.models import CheckpointError, load_model, save_checkpoint
from zsar.models import checkpoint as ckpt
from zsar.train import NonFiniteLossError, RunLockedError, StageConfig, Trainer, TrainConfig


def _config(tmp_path, epochs=3, **kw):
    base = dict(model="rest_tiny", model_args=FEATURE_MODEL_ARGS, stages={"joint": StageConfig(epochs, "adamw", 1e-3, 0.0)},
                batch_size=8, seed=0, out_dir=str(tmp_path / "run"), progress=False, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _fit(tmp_path, data=None, resume=True, stop_after=None, **kw):
    trainer = Trainer(_config(tmp_path, **kw), data or SeparableFeatures(16), CLASS_NAMES)
    return trainer, trainer.fit(resume=resume, stop_after=stop_after)


class _Payload:
    """Unpickling this calls Path.touch(marker): the proof that a loader ran code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the crafted file's protocol
def test_a_crafted_trainer_state_never_runs(tmp_path):
    _fit(tmp_path, stop_after=1)
    marker = tmp_path / "pwned"
    state = Path(tmp_path / "run" / "checkpoints" / "last" / "trainer_state.pt")
    state.write_bytes(pickle.dumps({"epoch": 0, "x": _Payload(marker)}))
    with pytest.raises(CheckpointError, match=r"trainer_state.pt: unreadable trainer state .*--no-resume"):
        _fit(tmp_path)
    assert not marker.exists()


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from zsar.train.lock import RunLock\n"
        f"with RunLock({str(tmp_path / 'run')!r}):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another training run \(pid {holder.pid} on "):
            _fit(tmp_path)
        assert not (tmp_path / "run" / "checkpoints").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing anything by hand: its lock is simply taken over.
    _, summary = _fit(tmp_path, epochs=1)
    assert len(summary["history"]) == 1


def test_no_resume_starts_over_after_a_kill(tmp_path):
    _fit(tmp_path, stop_after=2)
    root = tmp_path / "run" / "checkpoints"
    # What a kill -9 between the renames of a checkpoint swap leaves: last.zsar-old and a temporary folder.
    shutil.copytree(root / "last", root / "last.zsar-old")
    shutil.rmtree(root / "last")
    shutil.copytree(root / "best", root / ".last.abc123")
    trainer, summary = _fit(tmp_path, resume=False)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]  # every epoch trained, none reused
    assert not (root / "last.zsar-old").exists() and not (root / ".last.abc123").exists()


def test_metrics_have_no_repeated_steps_after_a_resume(tmp_path):
    _fit(tmp_path, stop_after=1)
    log = tmp_path / "run" / "metrics.csv"
    rows = log.read_text().splitlines()
    # A kill after epoch 2 logged its steps but before its checkpoint: those rows are written again.
    log.write_text("\n".join(rows + [r.replace("0,joint", "1,joint", 1) for r in rows[1:]]) + "\n")
    _fit(tmp_path)
    steps = [line.split(",")[2] for line in log.read_text().splitlines()[1:]]
    assert len(steps) == len(set(steps)) == 3 * 2  # 3 epochs x 2 steps


def test_a_nan_loss_stops_the_run_at_once(tmp_path):
    data = SeparableFeatures(16)
    data.x[5] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at epoch 1, step \d"):
        _fit(tmp_path, data=data)
    assert not (tmp_path / "run" / "checkpoints" / "best").exists()
    _, summary = _fit(tmp_path / "skip", data=data, nonfinite_loss="skip")
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"])


@pytest.mark.parametrize("override, message", [
    ("grad_clip=.nan", "'grad_clip' must be a finite number"),
    ("stages.joint.lr=.nan", "'lr' must be a finite number"),
    ("stages.joint.lr=-1", "'lr' must be > 0"),
    ("log_every=0", "'log_every' must be >= 1"),
    ("device=bogus", "'device': 'bogus' is not a device"),
    ("nonfinite_loss=ignore", "nonfinite_loss must be one of"),
])
def test_numeric_and_device_settings_are_checked_before_any_work(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    _config(tmp_path).save(path)
    with pytest.raises(ValueError, match=message):
        TrainConfig.load(path, [override])


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = zsar.create_model("rest_tiny", class_names=CLASS_NAMES, **FEATURE_MODEL_ARGS)
    return save_checkpoint(tmp_path / "ckpt", model, {"class_names": CLASS_NAMES}), model


def test_checkpoints_record_the_registry_name_and_a_checksum(checkpoint):
    path, model = checkpoint
    config = json.loads((path / "config.json").read_text())
    assert config["model"] == "rest_tiny" and config["model_args"] == model.model_args()
    assert len(config["weights_sha256"]) == 64
    loaded = load_model(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def _flip_a_bit(path: Path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


def _relabel(path: Path):
    data = path.read_bytes()
    header = data[8:8 + int.from_bytes(data[:8], "little")].decode()
    names = [k for k in json.loads(header) if k != "__metadata__"]
    a, b = names[0], names[1]
    path.write_bytes(data[:8] + header.replace(f'"{a}"', '"@@"').replace(f'"{b}"', f'"{a}"')
                     .replace('"@@"', f'"{b}"').encode() + data[8 + len(header):])


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]), "SHA-256 differs"),
    (lambda p: _flip_a_bit(p / "model.safetensors"), "SHA-256 differs"),
    (lambda p: _relabel(p / "model.safetensors"), "SHA-256 differs"),
    (lambda p: ((p / "model.safetensors").unlink(), (p / "model.safetensors").mkdir()), "missing or not a file"),
    (lambda p: (p / "config.json").write_text("[1, 2]"), "expected a JSON object"),
    (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda p: (p / "config.json").write_text('{"model_args": {}}'), 'missing or non-string "model"'),
    (lambda p: _edit_config(p, model="rest9000"), "unknown model 'rest9000'"),
    (lambda p: _edit_config(p, model_args={"dim": "64"}), "cannot rebuild 'rest_tiny'"),
    (lambda p: _edit_config(p, model_args={"heads": 0}), "cannot rebuild 'rest_tiny'"),
    (lambda p: _edit_config(p, model_args={"bogus": 1}), "cannot rebuild 'rest_tiny'"),
])
def test_damaged_checkpoints_are_one_line_errors_naming_the_file(checkpoint, damage, message):
    path, _ = checkpoint
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _edit_config(path: Path, **changes):
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (path / "config.json").write_text(json.dumps(config))


def test_checkpoints_of_the_first_format_still_load(checkpoint):
    """Before registry names: {"architecture": "ResT", "model_config": ResTConfig, ...}, no checksum."""
    path, model = checkpoint
    config = json.loads((path / "config.json").read_text())
    legacy = {"architecture": "ResT", "model_config": config["model_args"], "class_names": CLASS_NAMES}
    (path / "config.json").write_text(json.dumps(legacy))
    with pytest.raises(CheckpointError, match="records no weights_sha256.*--no-verify"):
        load_model(path)  # no checksum: loaded only when the user says so
    loaded = load_model(path, verify=False)
    assert loaded.registry_name == "rest_tiny"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    (path / "config.json").write_text(json.dumps({**legacy, "architecture": "Other"}))
    with pytest.raises(CheckpointError, match="old-format checkpoint of architecture 'Other'"):
        load_model(path, verify=False)


def test_the_cli_reports_a_damaged_checkpoint_in_one_line(checkpoint, tmp_path):
    path, _ = checkpoint
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    (path / "zeroshot.json").write_text("{}")
    video = tmp_path / "v.webm"
    from videos import make_video

    make_video(video, t=6, h=32, w=32)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "zsar.cli", "predict", str(video), "--checkpoint", str(path),
                          "--labels", "a,b"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr and "zeroshot.json" in out.stderr
    assert time.perf_counter() - start < 120
