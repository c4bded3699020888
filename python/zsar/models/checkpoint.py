"""Checkpoints of registered models: a folder with ``model.safetensors`` and ``config.json``.

``config.json`` records the model's registry name and builder arguments
(:meth:`~zsar.models.base.ZeroShotModel.model_args`), the SHA-256 of the weights file (verified on
load, so a corrupted or relabelled file is refused) and whatever the writer adds (class names,
training config, metrics). A training run adds ``trainer_state.pt`` (optimiser, scheduler, RNG
states, history: plain tensors and Python values, read back with ``torch.load(weights_only=True)``,
so a crafted file cannot run code).

Writes are atomic at the folder level: a checkpoint is written to a temporary sibling and swapped in
with renames (:func:`replace_checkpoint`), so a crash never leaves a half-written checkpoint in place
of a good one; after a kill between the two renames, :func:`resolve` finds the previous one under
``NAME.zsar-old``, a name only zsar writes (a user's own ``NAME.old`` is never touched).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .._utils import default_mode, read_json_object
from .registry import create_model, list_models
from .weights import EXTERNAL_WEIGHTS_ARGS

__all__ = ["CheckpointError", "save_checkpoint", "update_checkpoint", "replace_checkpoint", "resolve", "read_config", "load_weights", "load_model",
           "load_trainer_state", "register_legacy_config"]

WEIGHTS, CONFIG, STATE = "model.safetensors", "config.json", "trainer_state.pt"
#: Suffix of the name a checkpoint is moved aside to while its replacement is renamed in.
OLD_SUFFIX = ".zsar-old"
FORMAT_VERSION = 2
_HASH_CHUNK = 1 << 22

# Converters for configs written before checkpoints recorded registry names: "architecture" -> fn
# (the old "model_config" dict) -> (registry name, builder arguments). Models register their own.
_LEGACY: dict[str, Callable[[dict], tuple[str, dict]]] = {}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read: missing, corrupted or inconsistent files."""


def register_legacy_config(architecture: str, convert: Callable[[dict], tuple[str, dict]]) -> None:
    """Lets checkpoints whose ``config.json`` says ``"architecture": architecture`` (the format before
    registry names were recorded) load: ``convert(model_config) -> (registry name, builder args)``."""
    _LEGACY[architecture] = convert


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, model: nn.Module, extra: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None,
                    add_files: Callable[[Path], Any] | None = None) -> Path:
    """Writes a registered model's weights and config (and optional trainer state) to ``directory``.

    Args:
        directory: the checkpoint folder (replaced atomically if it exists).
        model: a model made by :func:`~zsar.models.create_model`.
        extra: JSON-able entries added to ``config.json`` (e.g. ``class_names``).
        trainer_state: tensors and plain Python values only (saved as ``trainer_state.pt``).
        add_files: ``add_files(folder)`` writes more files into the new checkpoint before it is put
            in place (e.g. a zero-shot classifier's), so that they are replaced together.

    Returns:
        The folder written.
    """
    name = getattr(model, "registry_name", "")
    if not name:
        raise ValueError(f"save_checkpoint: the {type(model).__name__} was not made by zsar.create_model "
                         "(it has no registry name to rebuild it from)")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _replacement(directory) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        try:
            save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        except SafetensorError as e:  # a full disk, a file-size limit: an OSError like any other write's
            raise OSError(f"{directory}: cannot write the checkpoint ({str(e).splitlines()[0]})") from None
        config = {"format_version": FORMAT_VERSION, "model": name, "model_args": model.model_args(),
                  "weights_sha256": _sha256(tmp / WEIGHTS), **(extra or {})}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE)
        if add_files is not None:
            add_files(tmp)
    return directory


def update_checkpoint(directory: str | Path, add_files: Callable[[Path], Any]) -> Path:
    """Writes files into the checkpoint folder ``directory`` as one atomic change: ``add_files(folder)``
    writes them into a new folder that holds the model's files (hard links, or copies where the file
    system has none), which then replaces ``directory``. A kill or a failure leaves the checkpoint as
    it was. Files of the folder other than the model's (:data:`WEIGHTS`, :data:`CONFIG`, the trainer
    state) are not carried over: ``add_files`` writes the whole rest.

    Returns:
        The folder written.

    Raises:
        FileNotFoundError: ``directory`` holds no checkpoint (no other folder is ever replaced).
    """
    directory = Path(directory)
    source = resolve(directory)
    with _replacement(directory) as tmp:
        for name in (WEIGHTS, CONFIG, STATE):  # never written through the link: add_files writes new files
            if (source / name).is_file():
                try:
                    os.link(source / name, tmp / name)
                except OSError:
                    shutil.copy2(source / name, tmp / name)
        add_files(tmp)
    return directory


@contextmanager
def _replacement(directory: Path):
    """A new folder beside ``directory`` to fill; it replaces ``directory`` (:func:`replace_checkpoint`)
    when the block completes, and is deleted when the block fails or is interrupted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        # mkdtemp's folder is private, and so are safetensors' files (0600): a checkpoint gets the
        # permissions a plain write gives, so that a group can share it
        os.chmod(tmp, default_mode(folder=True))
        mode = default_mode()
        for file in tmp.iterdir():
            if file.is_file():
                os.chmod(file, mode)
        replace_checkpoint(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_checkpoint(new: str | Path, directory: str | Path) -> Path:
    """Renames the complete folder ``new`` to ``directory``, replacing what is there: the old folder is
    moved aside to ``NAME.zsar-old`` first and deleted only once ``new`` is in place (after a kill in
    between, :func:`resolve` reads the old one). Only that zsar-named twin is ever deleted."""
    directory = Path(directory)
    old = directory.with_name(directory.name + OLD_SUFFIX)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def resolve(directory: str | Path) -> Path:
    """The checkpoint folder to read: ``directory``, or its ``.zsar-old`` twin after an interrupted swap.

    Raises:
        FileNotFoundError: neither holds a ``config.json``.
    """
    directory = Path(directory)
    if (directory / CONFIG).is_file():
        return directory
    old = directory.with_name(directory.name + OLD_SUFFIX)
    if (old / CONFIG).is_file():
        return old
    raise FileNotFoundError(f"no checkpoint at {directory} (expected {CONFIG} and {WEIGHTS} there)")


def read_config(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, in the current format (legacy configs converted).

    Raises:
        CheckpointError: invalid JSON, not an object, or missing/mistyped ``model``/``model_args``.
    """
    path = resolve(directory) / CONFIG
    config = read_json_object(path, CheckpointError)
    if "model" not in config and "architecture" in config:
        arch = config["architecture"]
        if arch not in _LEGACY or not isinstance(config.get("model_config"), dict):
            raise CheckpointError(f"{path}: an old-format checkpoint of architecture {arch!r} that this zsar "
                                  f"cannot convert; re-save it with zsar.models.save_checkpoint")
        config["model"], config["model_args"] = _LEGACY[arch](config.pop("model_config"))
    if not isinstance(config.get("model"), str):
        raise CheckpointError(f"{path}: missing or non-string \"model\" (the registry name of the model)")
    if not isinstance(config.get("model_args", {}), dict):
        raise CheckpointError(f"{path}: \"model_args\" must be an object, got {type(config['model_args']).__name__}")
    return config


def _read_weights(directory: Path, config: dict[str, Any], verify: bool = True) -> dict[str, torch.Tensor]:
    path = directory / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing or not a file (the model's weights)")
    expected = config.get("weights_sha256")
    if expected is None and verify:
        raise CheckpointError(f"{directory / CONFIG} records no weights_sha256, so {WEIGHTS} cannot be checked (a "
                              "checkpoint of the first format, or one whose hash was removed); load it only if you "
                              "trust it, with --no-verify (verify=False)")
    if expected is not None and _sha256(path) != expected:
        raise CheckpointError(f"{path}: SHA-256 differs from the one recorded in {CONFIG}: the file is corrupted "
                              "or was changed")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    for name, tensor in state.items():  # a NaN weight gives NaN answers, never an error
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: weight {name} holds {bad} non-finite values (NaN or Inf) of "
                                  f"{tensor.numel()}")
    return state


def load_weights(model: nn.Module, directory: str | Path, verify: bool = True) -> None:
    """Loads the checkpoint's weights into ``model``.

    ``verify``: refuse weights whose SHA-256 ``config.json`` does not record (False: load them
    unchecked; a recorded hash is always checked).

    Raises:
        CheckpointError: unreadable or corrupted weights, or names/shapes that differ from the model's
            (the message says what differs).
    """
    path = resolve(directory)
    state = _read_weights(path, read_config(path), verify)
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
        raise CheckpointError(f"checkpoint {path} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(directory: str | Path, device: str | torch.device = "cpu", verify: bool = True):
    """Rebuilds the registered model saved in a checkpoint folder, with its weights, in eval mode.

    ``verify``: see :func:`load_weights`.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: the config or weights are unreadable, name an unknown model or arguments the
            model does not take, or do not match.
    """
    path = resolve(directory)
    config = read_config(path)
    name = config["model"]
    if name not in list_models():
        raise CheckpointError(f"{path / CONFIG}: unknown model {name!r}; registered: {', '.join(list_models())}")
    model_args = config.get("model_args", {})
    external = sorted(set(model_args) & set(EXTERNAL_WEIGHTS_ARGS)) if isinstance(model_args, dict) else []
    if external:
        raise CheckpointError(f"{path / CONFIG}: model_args may not name pretrained weights to load ({', '.join(external)}); "
                              f"a checkpoint's weights are its {WEIGHTS}")
    try:
        model = create_model(name, **model_args)
    except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: torch refusing a shape
        raise CheckpointError(f"{path / CONFIG}: cannot rebuild {name!r} from model_args "
                              f"({(str(e).splitlines() or [type(e).__name__])[0]})") from None
    load_weights(model, path, verify)
    return model.to(device).eval()


def load_trainer_state(directory: str | Path) -> dict[str, Any] | None:
    """The trainer state saved with a checkpoint, or None when it has none.

    Loaded with ``weights_only=True``: tensors and plain Python containers only, never code.

    Raises:
        CheckpointError: the file is unreadable, truncated or holds anything else.
    """
    path = resolve(directory) / STATE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types; all mean "unreadable"
        # torch's message for a damaged file is a paragraph about weights_only, which is no help here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: unreadable trainer state ({first}): damaged, or not only tensors and plain "
                              f"values; to train again from the start, do not resume (zsar train: --no-resume)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of trainer state, got {type(state).__name__}")
    return state
