"""Training (ResT through the model contract): learning, exact resume, distributed equivalence, configs
and checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_data import CLASS_NAMES, FEATURE_MODEL_ARGS, SeparableClips, SeparableFeatures
from zsar.models import checkpoint as ckpt
from zsar.train import StageConfig, Trainer, TrainConfig, load_model

TINY = dict(frames=4, dim=32, depth=2, heads=4, mlp_dim=64, dropout=0.1)


def _config(tmp_path, **kw):
    stages = {"warmup": kw.pop("warmup", StageConfig(2, "sgd", 0.1, 1e-4)),
              "joint": kw.pop("joint", StageConfig(3, "adamw", 1e-2, 0.01))}
    if kw.get("model_args", {}).get("feature_input"):  # feature input: no frame encoder to warm up
        del stages["warmup"]
    base = dict(model="rest_tiny", model_args=TINY, stages=stages, batch_size=8, seed=0, out_dir=str(tmp_path / "run"),
                progress=False, log_every=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_learns_a_separable_task_and_writes_logs(tmp_path):
    config = _config(tmp_path, model_args={**TINY, "dropout": 0.0}, joint=StageConfig(6, "adamw", 3e-3, 0.01))
    trainer = Trainer(config, SeparableClips(64, seed=1), CLASS_NAMES, val_data=SeparableClips(32, seed=2))
    summary = trainer.fit()
    assert summary["history"][-1]["val_top1"] >= 0.9, summary["history"]
    run = Path(config.out_dir)
    assert (run / "metrics.csv").read_text().startswith("epoch,stage,step,loss")
    assert any((run / "tensorboard").iterdir())
    for name in ("last", "best"):
        assert (run / "checkpoints" / name / "model.safetensors").is_file()
    model = load_model(run / "checkpoints" / "best")
    assert model.encode_video(SeparableClips(2).clips).shape == (2, 32)
    assert TrainConfig.load(run / "train_config.yaml") == config


def test_resume_matches_uninterrupted_run(tmp_path):
    data = SeparableClips(24, seed=4)
    full = Trainer(_config(tmp_path / "a", grad_accum=2), data, CLASS_NAMES)
    full.fit()
    interrupted = Trainer(_config(tmp_path / "b", grad_accum=2), data, CLASS_NAMES)
    interrupted.fit(stop_after=3)  # both warm-up epochs + one joint epoch, then "killed"
    resumed = Trainer(_config(tmp_path / "b", grad_accum=2), data, CLASS_NAMES)
    resumed.fit(resume=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_two_process_gloo_matches_single_process(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(worker.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    two = tmp_path / "ddp"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(worker), str(two), "4"], check=True, env=env, timeout=600, capture_output=True)
    one = tmp_path / "single"
    subprocess.run([sys.executable, str(worker), str(one), "8"], check=True, env=env, timeout=600, capture_output=True)
    rank0, rank1 = load_file(two / "params_rank0.safetensors"), load_file(two / "params_rank1.safetensors")
    single = load_file(one / "params_rank0.safetensors")
    for name in single:
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_config_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    _config(tmp_path).save(path)
    loaded = TrainConfig.load(path, ["stages.joint.lr=1e-4", "model_args.depth=3", "batch_size=4"])
    assert loaded.stages["joint"].lr == 1e-4 and loaded.model_args["depth"] == 3 and loaded.batch_size == 4
    json_path = tmp_path / "c.json"
    loaded.save(json_path)
    assert TrainConfig.load(json_path) == loaded
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['stages.joint.lrr'\]"):
        TrainConfig.load(path, ["stages.joint.lrr=1"])
    with pytest.raises(TypeError, match="config key 'batch_size': expected int"):
        TrainConfig.load(path, ["batch_size=abc"])
    with pytest.raises(ValueError, match="must look like key=value"):
        TrainConfig.load(path, ["batch_size"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig.load(path, ["stages.joint.optimizer=adam"])
    # only the stages the model has (ResT: warmup, joint)
    with pytest.raises(ValueError, match=r"names \['pretrain'\], but model 'rest_tiny' trains the stages \['warmup', 'joint'\]"):
        Trainer(TrainConfig.load(path, ["stages.pretrain.epochs=1"]), SeparableClips(8), CLASS_NAMES)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(_config(tmp_path, warmup=StageConfig(0, "sgd", 0.01, 0.0), joint=StageConfig(1, "adamw", 1e-3, 0.0)),
                      SeparableClips(16), CLASS_NAMES)
    trainer.fit()
    import zsar

    other = zsar.create_model("rest_tiny", class_names=CLASS_NAMES, **{**TINY, "dim": 48})
    with pytest.raises(ValueError, match="does not match the model: shape mismatch"):
        ckpt.load_weights(other, Path(trainer.config.out_dir) / "checkpoints" / "last")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "nowhere")


def test_feature_input_training_skips_warmup(tmp_path):
    config = _config(tmp_path, model_args=FEATURE_MODEL_ARGS, joint=StageConfig(6, "adamw", 3e-3, 0.01))
    trainer = Trainer(config, SeparableFeatures(64), CLASS_NAMES, val_data=SeparableFeatures(64, seed=5))
    summary = trainer.fit()
    assert [h["stage"] for h in summary["history"]] == ["joint"] * 6
    assert summary["history"][-1]["val_top1"] >= 0.75  # chance: 0.25
