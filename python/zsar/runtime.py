"""How models run on a device: one :class:`RuntimeSettings` that the trainer, the evaluation loop
(:func:`zsar.zeroshot.encode_loader`, which ``zsar eval`` and ``zsar predict`` go through) and the
loaders share, so every GPU default is decided in one place and switched in one place.

The defaults on a CUDA device (each off on the CPU, and each switchable with ``"on"``/``"off"``):

* bf16 autocast (``precision``);
* channels_last for the 2D frame encoders (ResT's per-frame ResNets: cuDNN's NHWC convolutions);
* ``torch.compile`` of those frame encoders' trunks (the convolutions the ResT step spends most of
  its time in), for training, where a run is long enough to repay the compile time; evaluation and
  prediction ask for it explicitly;
* pinned host memory in the loaders and non-blocking host-to-device copies;
* the trainer reads device values (the non-finite-loss check, the logged losses) at log steps
  only, instead of after every step (``host_sync``).

A batch size measured by ``zsar bench model --find-batch-size`` is recorded per model, device,
mode and precision (:func:`record_batch_size`) and read back by ``batch_size: auto``
(:func:`recorded_batch_size`).
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["HOST_SYNC", "PRECISIONS", "SWITCHES", "RuntimeSettings", "batch_size_file", "device_name",
           "record_batch_size", "recorded_batch_size", "resolve_device"]

SWITCHES = ("auto", "on", "off")
PRECISIONS = ("auto", "bf16", "fp32")
#: When the trainer reads device values: after every step, or only at log steps (and epoch ends).
HOST_SYNC = ("auto", "every_step", "log_steps")


def _switch(key: str, value, auto: bool) -> bool:
    if isinstance(value, bool):
        return value
    if value not in SWITCHES:
        raise ValueError(f"{key} must be one of {SWITCHES} (or a bool), got {value!r}")
    return auto if value == "auto" else value == "on"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`; None and ``"auto"`` mean the current CUDA device when
    there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how a model runs (see the module docstring for the defaults).

    Attributes:
        device: where the model and its batches live.
        autocast_dtype: the autocast dtype (bf16), or None for float32.
        channels_last: 2D frame encoders take and keep NHWC (channels_last) tensors.
        compile: 2D frame encoders run their trunk through ``torch.compile``.
        pin_memory: loaders hand batches over in pinned (page-locked) host memory.
        non_blocking: host-to-device copies do not wait (pinned sources overlap with compute).
        sync_every_step: the trainer reads the loss after every step (immediate non-finite-loss
            errors; the CPU's default) rather than at log steps.
        compile_backend: ``torch.compile``'s backend (``"inductor"``; tests use ``"eager"``).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    pin_memory: bool = False
    non_blocking: bool = False
    sync_every_step: bool = True
    compile_backend: str = "inductor"

    @classmethod
    def for_device(cls, device: str | torch.device | None = None, *, precision: str = "auto",
                   channels_last: str | bool = "auto", compile: str | bool = "off", pin_memory: str | bool = "auto",
                   host_sync: str = "auto", compile_backend: str = "inductor") -> "RuntimeSettings":
        """The settings for ``device`` (None/``"auto"``: CUDA when there is one): each ``"auto"``
        is on for a CUDA device and off for the CPU; ``"on"``/``"off"`` (or a bool) force it.
        ``compile``'s ``"auto"`` follows the device too, but it defaults to ``"off"`` because only
        long runs repay its compile time (the trainer passes ``"auto"``). Decided from the device's
        type alone: no CUDA call is made, so the CUDA decisions can be checked on any machine.

        Raises:
            ValueError: a setting outside its choices, naming it.
        """
        device = resolve_device(device)
        cuda = device.type == "cuda"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if host_sync not in HOST_SYNC:
            raise ValueError(f"host_sync must be one of {HOST_SYNC}, got {host_sync!r}")
        bf16 = precision == "bf16" or (precision == "auto" and cuda)
        pin = _switch("pin_memory", pin_memory, cuda)
        return cls(device=device, autocast_dtype=torch.bfloat16 if bf16 else None,
                   channels_last=_switch("channels_last", channels_last, cuda),
                   compile=_switch("compile", compile, cuda), pin_memory=pin, non_blocking=cuda,
                   sync_every_step=(host_sync == "every_step") or (host_sync == "auto" and not cuda),
                   compile_backend=compile_backend)

    def autocast(self):
        """The autocast context of these settings (a no-op context for float32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch):
        """``batch`` (anything with ``.to(device, non_blocking=...)``, e.g. a ``zsar.data.Batch``) on
        :attr:`device`, copied without waiting when :attr:`non_blocking`."""
        return batch.to(self.device, non_blocking=self.non_blocking)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` moved to :attr:`device` with every submodule that has a
        ``configure_runtime(settings)`` hook (the 2D frame encoders) configured; idempotent."""
        model = model.to(self.device)
        for module in model.modules():
            hook = getattr(module, "configure_runtime", None)
            if callable(hook):
                hook(self)
        return model

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for reports and benchmark tables."""
        return {"device": str(self.device), "autocast": str(self.autocast_dtype).replace("torch.", "")
                if self.autocast_dtype else "fp32", "channels_last": self.channels_last, "compile": self.compile,
                "pin_memory": self.pin_memory, "non_blocking": self.non_blocking,
                "host_sync": "every_step" if self.sync_every_step else "log_steps"}


# ---- batch sizes chosen by `zsar bench model --find-batch-size` ---------------------------------


def batch_size_file() -> Path:
    """Where chosen batch sizes are recorded: ``$ZSAR_BATCH_SIZES``, else
    ``$XDG_CACHE_HOME/zsar/batch_sizes.json`` (``~/.cache/zsar/batch_sizes.json``)."""
    if os.environ.get("ZSAR_BATCH_SIZES"):
        return Path(os.environ["ZSAR_BATCH_SIZES"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "zsar" / "batch_sizes.json"


def device_name(device: torch.device) -> str:
    """The name batch sizes are recorded under: the GPU's model name, or ``"cpu"``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _key(model: str, device: str, mode: str, precision: str) -> str:
    return f"{model}|{device}|{mode}|{precision}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable batch-size record ({e}); remove it and run "
                         "`zsar bench model --find-batch-size` again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of batch-size records, got {type(data).__name__}")
    return data


def record_batch_size(model: str, device: str, mode: str, precision: str, batch_size: int,
                      measurements: dict[int, float] | None = None, path: str | Path | None = None) -> Path:
    """Records ``batch_size`` for (``model``, ``device`` name, ``mode`` "train"/"inference",
    ``precision``) beside the clips/s ``measurements`` it was chosen from; written to a new file
    and renamed over the old one, so a crash leaves the previous record whole. Returns the file."""
    path = Path(path) if path is not None else batch_size_file()
    data = _read(path)
    data[_key(model, device, mode, precision)] = {
        "batch_size": int(batch_size),
        "clips_per_s": {str(b): round(float(v), 2) for b, v in (measurements or {}).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def recorded_batch_size(model: str, device: str, mode: str, precision: str,
                        path: str | Path | None = None) -> int | None:
    """The batch size :func:`record_batch_size` recorded for these, or None."""
    entry = _read(Path(path) if path is not None else batch_size_file()).get(_key(model, device, mode, precision))
    return int(entry["batch_size"]) if isinstance(entry, dict) and "batch_size" in entry else None
