"""Loading pretrained weights into the backbones of :mod:`zsar.models.backbones`.

Weights files are data: PyTorch files are read with ``weights_only=True``, safetensors as they are.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._utils import quiet_model_loading
from .backbones import ASTTokens, FrameEncoder, MViTTokens


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a PyTorch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise ValueError(f"{what}: cannot read {path} as PyTorch weights ({e})") from e
    for key in ("state_dict", "model"):  # training checkpoints often wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: {path} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_video_weights(encoder: MViTTokens, path: str | Path) -> None:
    """Loads a torchvision MViT state dict (e.g. ``MViT_V2_S_Weights.KINETICS400_V1``, saved locally)
    into ``encoder``; the classifier (``head.*``) is ignored.

    Raises:
        ValueError: names or shapes differ from the encoder's (the message lists the first few).
    """
    state = {k: v for k, v in read_state_dict(path, "video_weights").items() if not k.startswith("head.")}
    own = encoder.net.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise ValueError(f"video_weights: {path} does not match the MViT built for these frames and image size: "
                         f"shape mismatches {bad[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]}")
    encoder.net.load_state_dict(state)


def load_audio_weights(encoder: ASTTokens, source) -> None:
    """Loads AST weights into ``encoder``: a local Hugging Face folder (``config.json`` +
    ``model.safetensors``, e.g. a saved ``MIT/ast-finetuned-audioset-10-10-0.4593``), a weights file,
    or a state dict. Names of older transformers versions and an ``ASTForAudioClassification``
    prefix are converted by transformers; the classifier is ignored. Nothing is downloaded.

    Raises:
        ValueError: the weights do not fit the encoder's configuration.
    """
    from transformers import ASTModel

    own_cfg = encoder.net.config
    with quiet_model_loading():
        if isinstance(source, dict):
            state, name = source, "the given state dict"
        elif Path(source).is_dir():
            state, name = None, str(source)
        else:
            state, name = read_state_dict(source, "audio_weights"), str(source)
        try:
            if state is None:
                loaded, info = ASTModel.from_pretrained(str(source), local_files_only=True, use_safetensors=True,
                                                        output_loading_info=True)
            else:
                loaded, info = ASTModel.from_pretrained(None, config=own_cfg, state_dict=state,
                                                        output_loading_info=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"audio_weights: cannot load AST weights from {name}: {e}") from e
    keys = ("hidden_size", "num_hidden_layers", "patch_size", "frequency_stride", "time_stride", "max_length",
            "num_mel_bins")
    differ = {k: (getattr(loaded.config, k), getattr(own_cfg, k)) for k in keys
              if getattr(loaded.config, k) != getattr(own_cfg, k)}
    if differ or info.get("missing_keys") or info.get("mismatched_keys"):
        raise ValueError(f"audio_weights: {name} does not fit this AST: config (theirs, ours) {differ}, "
                         f"missing {sorted(info.get('missing_keys', []))[:3]}, "
                         f"mismatched {list(info.get('mismatched_keys', []))[:3]}")
    encoder.net.load_state_dict(loaded.state_dict())


def load_backbone_weights(encoder: FrameEncoder, state_dict: dict, strict: bool = False) -> list[str]:
    """Loads user weights (e.g. a torchvision checkpoint) into the trunk; returns the missing keys.

    Classifier weights in ``state_dict`` (``fc.*``, ``classifier.*``) are ignored where the trunk
    has none. A tensor whose shape differs from the trunk's is always an error; with
    ``strict=True`` missing or unexpected keys are errors too.
    """
    own = encoder.trunk.state_dict()
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(k for k in set(state_dict) - set(own) if k.split(".")[0] not in ("fc", "classifier"))
    if shapes or (strict and (missing or unexpected)):
        raise ValueError(f"backbone weights do not match the {encoder.spec.name} trunk: shape mismatches "
                         f"{shapes[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]}")
    encoder.trunk.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return missing
