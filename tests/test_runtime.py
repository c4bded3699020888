"""The GPU defaults (zsar.runtime.RuntimeSettings) decided for CUDA and the CPU, applied to the frame
encoders, the trainer's host syncs and the recorded batch sizes; all checked on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from training_data import CLASS_NAMES, FEATURE_MODEL_ARGS, SeparableFeatures
from zsar.data.batch import Batch
from zsar.models.backbones import FrameEncoder
from zsar.runtime import RuntimeSettings, record_batch_size, recorded_batch_size
from zsar.train import NonFiniteLossError, StageConfig, Trainer, TrainConfig

TRAINER_FILE = str(Path(sys.modules[Trainer.__module__].__file__))


def test_cuda_and_cpu_decisions_without_a_gpu():
    cuda = RuntimeSettings.for_device("cuda", compile="auto")
    assert cuda.device == torch.device("cuda")
    assert (cuda.autocast_dtype, cuda.channels_last, cuda.compile, cuda.pin_memory, cuda.non_blocking,
            cuda.sync_every_step) == (torch.bfloat16, True, True, True, True, False)
    cpu = RuntimeSettings.for_device("cpu", compile="auto")
    assert (cpu.autocast_dtype, cpu.channels_last, cpu.compile, cpu.pin_memory, cpu.non_blocking,
            cpu.sync_every_step) == (None, False, False, False, False, True)
    # compile is opt-in outside training; every switch can be forced either way
    assert not RuntimeSettings.for_device("cuda").compile
    forced = RuntimeSettings.for_device("cuda", precision="fp32", channels_last="off", pin_memory=False,
                                        host_sync="every_step")
    assert (forced.autocast_dtype, forced.channels_last, forced.pin_memory, forced.sync_every_step) == \
        (None, False, False, True)
    on_cpu = RuntimeSettings.for_device("cpu", precision="bf16", channels_last="on", host_sync="log_steps")
    assert (on_cpu.autocast_dtype, on_cpu.channels_last, on_cpu.sync_every_step) == (torch.bfloat16, True, False)
    with pytest.raises(ValueError, match=r"channels_last must be one of \('auto', 'on', 'off'\).*'yes'"):
        RuntimeSettings.for_device("cpu", channels_last="yes")
    with pytest.raises(ValueError, match="host_sync must be one of"):
        RuntimeSettings.for_device("cpu", host_sync="never")
    # the trainer's config resolves to the same object (its compile "auto" follows the device)
    config = TrainConfig(device="cpu", out_dir="unused")
    assert config.runtime(torch.device("cuda")) == cuda
    assert config.runtime() == cpu


def test_autocast_dtype_is_applied():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with RuntimeSettings.for_device("cpu", precision="bf16").autocast():
        assert layer(x).dtype == torch.bfloat16
    with RuntimeSettings.for_device("cpu").autocast():
        assert layer(x).dtype == torch.float32


# ResNet-18 is ResT's; building it takes seconds on a loaded CPU, so the default run checks the
# same mechanism on the tiny CNN and -m slow on the ResNet.
@pytest.mark.parametrize("backbone", ["tiny", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_channels_last_reaches_the_frame_encoder_and_keeps_its_output(backbone):
    torch.manual_seed(0)
    encoder = FrameEncoder(backbone).eval()
    first_conv = encoder.trunk.conv1 if backbone == "resnet18" else encoder.trunk.features[0]
    last_conv = encoder.trunk.layer4[1].conv2 if backbone == "resnet18" else encoder.trunk.features[6]
    clips = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        reference = encoder(clips)
    seen = []
    first_conv.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    RuntimeSettings.for_device("cpu", channels_last="on").prepare_model(encoder)
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert last_conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = encoder(clips)
    assert seen == [True]
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    RuntimeSettings.for_device("cpu").prepare_model(encoder)  # switched back off
    assert not first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        encoder(clips)
    assert seen == [True, False]


def test_compiled_trunk_keeps_parameter_names_and_output():
    torch.manual_seed(0)
    encoder = FrameEncoder("tiny").eval()
    keys = list(encoder.state_dict())
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        reference = encoder(clips)
    RuntimeSettings.for_device("cpu", compile="on", compile_backend="eager").prepare_model(encoder)
    assert encoder.__dict__["_compiled_trunk"] is not None
    assert list(encoder.state_dict()) == keys  # checkpoints are the same with and without compile
    with torch.no_grad():
        torch.testing.assert_close(encoder(clips), reference)


def _config(tmp_path, **kw):
    base = dict(model="rest_tiny", model_args=FEATURE_MODEL_ARGS, stages={"joint": StageConfig(1, "adamw", 1e-3, 0.0)},
                batch_size=2, seed=0, out_dir=str(tmp_path / "run"), progress=False, log_every=8, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class _HostReads:
    """Counts reads of tensor values into Python (``item``, ``bool``, ``int``, ``float``, ``tolist``)
    made by the trainer's own code: on a GPU each is a host sync."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == TRAINER_FILE:
                self.count += 1
            return original(tensor, *args, **kwargs)
        return read


def test_trainer_reads_the_device_at_log_steps_only(tmp_path, monkeypatch):
    data = SeparableFeatures(16)  # 8 steps of 2; log rows after steps 4 and 8
    reads = _HostReads(monkeypatch)
    Trainer(_config(tmp_path / "every", host_sync="every_step", log_every=4), data, CLASS_NAMES).fit()
    every_step = reads.count
    reads.count = 0
    Trainer(_config(tmp_path / "log", host_sync="log_steps", log_every=4), data, CLASS_NAMES).fit()
    log_steps = reads.count
    assert every_step >= 8
    # per log step: the non-finite flag, the logged loss and the progress; per epoch: the means
    assert log_steps <= 2 * 3 + 4, (log_steps, every_step)


def test_a_nan_loss_found_at_the_next_log_step_stops_before_any_checkpoint(tmp_path):
    data = SeparableFeatures(16)
    data.x[5] = float("nan")
    message = r"non-finite training loss \(nan\) at epoch 1, step \d+ \(stage joint\)"
    with pytest.raises(NonFiniteLossError, match=message):
        Trainer(_config(tmp_path, host_sync="log_steps"), data, CLASS_NAMES).fit()
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()
    assert not (tmp_path / "run" / "checkpoints" / "best").exists()


def test_batch_pins_its_tensors_when_asked():
    batch = Batch(clips=torch.zeros(2, 3), labels=torch.zeros(2, dtype=torch.int64), video_ids=["a", "b"])
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs a CUDA device")
    pinned = batch.pin_memory()
    assert pinned.clips.is_pinned() and pinned.labels.is_pinned() and pinned.video_ids == ["a", "b"]


def test_recorded_batch_size_round_trip_and_batch_size_auto(tmp_path, monkeypatch):
    path = tmp_path / "sizes.json"
    monkeypatch.setenv("ZSAR_BATCH_SIZES", str(path))
    assert recorded_batch_size("rest_tiny", "cpu", "train", "fp32") is None
    assert TrainConfig(model="rest_tiny", batch_size="auto", device="cpu").batch_size == 16
    record_batch_size("rest_tiny", "cpu", "train", "fp32", 24, {12: 100.0, 24: 130.0})
    assert recorded_batch_size("rest_tiny", "cpu", "train", "fp32") == 24
    assert recorded_batch_size("rest_tiny", "cpu", "inference", "fp32") is None
    assert TrainConfig(model="rest_tiny", batch_size="auto", device="cpu").batch_size == 24
    with pytest.raises(TypeError, match="config key 'batch_size': expected int or 'auto', got 'big'"):
        TrainConfig(batch_size="big")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="sizes.json: expected a JSON object"):
        recorded_batch_size("rest_tiny", "cpu", "train", "fp32")


def test_bench_find_batch_size_records_for_batch_size_auto(tmp_path, monkeypatch, capsys):
    from zsar.cli import main

    path = tmp_path / "sizes.json"
    monkeypatch.setenv("ZSAR_BATCH_SIZES", str(path))
    assert main(["bench", "model", "--model", "rest_tiny", "--frames", "2", "--batch", "1", "--max-batch", "2",
                 "--repeats", "1", "--malloc", "default", "--find-batch-size"]) == 0
    assert "recorded in" in capsys.readouterr().out
    records = json.loads(path.read_text())
    assert set(records) == {"rest_tiny|cpu|inference|fp32", "rest_tiny|cpu|train|fp32"}
    for record in records.values():
        assert record["batch_size"] in (1, 2) and set(record["clips_per_s"]) <= {"1", "2"}
    assert TrainConfig(model="rest_tiny", batch_size="auto", device="cpu").batch_size == \
        records["rest_tiny|cpu|train|fp32"]["batch_size"]


def test_channels_last_and_compiled_models_save_and_load(tmp_path):
    from zsar import create_model
    from zsar.models import checkpoint as ckpt

    torch.manual_seed(0)
    model = create_model("rest_tiny", class_names=CLASS_NAMES)
    assert model.encoder is not None and model.encoder.spec.kind == "2d"
    RuntimeSettings.for_device("cpu", channels_last="on", compile="on", compile_backend="eager").prepare_model(model)
    assert model.encoder.channels_last
    ckpt.save_checkpoint(tmp_path / "ck", model, {})
    loaded = ckpt.load_model(tmp_path / "ck")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
