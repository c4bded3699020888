"""Checkpoints: a directory with ``model.safetensors`` + ``config.json`` (+ ``trainer_state.pt``).

Writes are atomic at the directory level: a checkpoint is written to a temporary sibling and
swapped in with renames, so a crash never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS, CONFIG, STATE = "model.safetensors", "config.json", "trainer_state.pt"


def _architectures():
    from ..models import ResT, ResTConfig

    return {"ResT": (ResT, ResTConfig)}


def save_checkpoint(directory: str | Path, model: nn.Module, extra: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Writes ``model`` (its weights and config) and optional trainer state to ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        config = {"architecture": type(model).__name__, "model_config": model.config.to_dict(), **(extra or {})}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def resolve(directory: str | Path) -> Path:
    """The checkpoint directory to read: ``directory``, or its ``.old`` twin after an interrupted swap."""
    directory = Path(directory)
    if (directory / CONFIG).is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / CONFIG).is_file():
        return old
    raise FileNotFoundError(f"no checkpoint at {directory} (expected {CONFIG} and {WEIGHTS} there)")


def read_config(directory: str | Path) -> dict[str, Any]:
    return json.loads((resolve(directory) / CONFIG).read_text())


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Loads the checkpoint's weights into ``model``; a mismatch is a ValueError that says what differs."""
    path = resolve(directory)
    state = load_file(path / WEIGHTS)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise ValueError(f"checkpoint {path} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuilds the model saved in a checkpoint directory, with its weights, in eval mode."""
    config = read_config(directory)
    arch = config.get("architecture")
    if arch not in _architectures():
        raise ValueError(f"checkpoint {directory}: unknown architecture {arch!r}")
    model_cls, config_cls = _architectures()[arch]
    model = model_cls(config_cls.from_dict(config["model_config"]))
    load_weights(model, directory)
    return model.to(device).eval()


def load_trainer_state(directory: str | Path) -> dict[str, Any] | None:
    path = resolve(directory) / STATE
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
