"""Loading pretrained weights into the backbones of :mod:`zsar.models.backbones`, by name or path.

* torchvision weights by their enum name (``"MViT_V2_S_Weights.KINETICS400_V1"``,
  ``"ResNet18_Weights.IMAGENET1K_V1"``): :func:`torchvision_weights` reads the file from torch's hub
  cache, downloads it when online, and otherwise says in one line which file to place where;
* Hugging Face AST weights by repo id or local folder (``from_pretrained``);
* ImageNet ViT/DeiT weights (a ``timm`` model name ``"timm/<name>"`` or a timm state-dict file)
  adapted to AST as AST's authors did (Gong et al., "AST: Audio Spectrogram Transformer", §2.2):
  the RGB patch-embedding filters summed into one input channel, the position embeddings cut or
  bilinearly interpolated to the spectrogram's patch grid, the distillation token kept (DeiT) or
  started from the class token (ViT without one).

Weights files are data: PyTorch files are read with ``weights_only=True``, safetensors as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .._utils import quiet_model_loading
from .backbones import ASTTokens, FrameEncoder, MViTTokens


#: The model builders' arguments that load pretrained weights from outside (a file, a folder, a hub
#: name): ``backbone_weights`` (ResT), ``video_weights`` and ``audio_weights`` (MZST). A checkpoint's
#: ``config.json`` may not set them: its weights are its own ``model.safetensors``, and loading it must
#: neither read other files nor go online (:func:`zsar.models.load_model`).
EXTERNAL_WEIGHTS_ARGS = ("backbone_weights", "video_weights", "audio_weights")


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a PyTorch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} is not a file")
    if path.suffix == ".safetensors":
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


def is_torchvision_weights_name(source: Any) -> bool:
    """Whether ``source`` reads as a torchvision weights enum name (``"<Model>_Weights.<TAG>"``)."""
    return isinstance(source, str) and "_Weights." in source and not Path(source).exists()


def offline() -> bool:
    """Whether zsar must not download (``ZSAR_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1)."""
    return any(os.environ.get(v, "") in ("1", "true", "TRUE", "yes")
               for v in ("ZSAR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def torchvision_weights(name: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of the torchvision weights enum ``name`` (e.g.
    ``"MViT_V2_S_Weights.KINETICS400_V1"``; ``meta`` is the enum's, with ``"categories"``, and
    ``"mean"``/``"std"`` from its transforms where it has them).

    The file is read from torch's hub cache (``$TORCH_HOME/hub/checkpoints``); when it is not there
    it is downloaded, unless offline (:func:`offline`) or the download fails: then a one-line error
    names the file to place and where.
    """
    # deferred: torchvision.models takes ~5 s to import
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{what}: {name!r} is not a torchvision weights name "
                         f"(e.g. 'MViT_V2_S_Weights.KINETICS400_V1'): {e}") from None
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not target.is_file():
        place = f"download {weights.url} and place it at {target}"
        if offline():
            raise FileNotFoundError(f"{what}: {name} is not in the hub cache and zsar is offline: {place}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(target), progress=True)
        except Exception as e:  # noqa: BLE001 - any network failure: say what to do instead
            raise FileNotFoundError(f"{what}: cannot download {name} ({type(e).__name__}): {place}") from None
    meta = dict(weights.meta)
    transforms = weights.transforms()
    for key in ("mean", "std"):
        if hasattr(transforms, key):
            meta[key] = tuple(float(x) for x in getattr(transforms, key))
    return read_state_dict(target, what), meta


def _load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source, what: str, built: str) -> None:
    """``module.load_state_dict(state)`` after checking names and shapes (one-line error otherwise)."""
    own = module.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise ValueError(f"{what}: {source} does not match the {built}: shape mismatches {bad[:3]}, "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    module.load_state_dict(state)


def load_video_weights(encoder: MViTTokens, source: str | Path) -> dict[str, Any]:
    """Loads torchvision MViT weights into ``encoder``: a weights enum name (e.g.
    ``"MViT_V2_S_Weights.KINETICS400_V1"``, see :func:`torchvision_weights`) or a local state-dict
    file (safetensors or PyTorch), a torchvision MViT's or an MZST checkpoint's (its
    ``video_encoder.net.*``); the classifier (``head.*``) is ignored. Returns the weights' meta
    (``categories``, ``mean``, ``std`` for an enum; empty for a file).

    Raises:
        ValueError: names or shapes differ from the encoder's (the message lists the first few).
        FileNotFoundError: the file does not exist, or an enum's file is missing and cannot be downloaded.
    """
    meta: dict[str, Any] = {}
    if is_torchvision_weights_name(source):
        state, meta = torchvision_weights(str(source), "video_weights")
    else:
        state = read_state_dict(source, "video_weights")
    prefix = "video_encoder.net."  # an MZST checkpoint's weights (e.g. the K595 video pretraining)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _load_checked(encoder.net, state, source, "video_weights", "MViT built for these frames and image size")
    return meta


def _is_timm_state(state: dict[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in state and "pos_embed" in state


def load_audio_weights(encoder: ASTTokens, source) -> str:
    """Loads weights into the AST ``encoder``, from:

    * a Hugging Face AST: a local folder or a repo id (``"MIT/ast-finetuned-audioset-10-10-0.4593"``,
      downloaded when online), read with ``from_pretrained``; older transformers names and an
      ``ASTForAudioClassification`` prefix are converted by transformers, the classifier ignored;
    * ImageNet ViT/DeiT weights, adapted as AST's authors did (:func:`adapt_vit_to_ast`): a timm
      model ``"timm/<name>"`` (e.g. ``"timm/deit_base_distilled_patch16_384.fb_in1k"``, downloaded by
      timm when online) or a timm state-dict file;
    * an AST state dict, as a file or a dict.

    Returns what was loaded (``"ast"`` or ``"imagenet"``).

    Raises:
        ValueError: the weights do not fit the encoder's configuration, or cannot be read.
        FileNotFoundError: a named file does not exist.
    """
    if isinstance(source, (str, Path)) and str(source).startswith("timm/") and not Path(source).exists():
        adapt_vit_to_ast(encoder, _timm_state(str(source)[len("timm/"):]), str(source))
        return "imagenet"
    if isinstance(source, dict):
        bad = [k for k, v in source.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        if bad:
            raise ValueError(f"audio_weights: a state dict maps parameter names to tensors; {bad[0]!r} does not")
        state, name = source, "the given state dict"
    elif not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"audio_weights: expected a folder, a weights file or a state dict, got {type(source).__name__}")
    elif Path(source).is_dir() or (isinstance(source, str) and source.count("/") == 1 and not Path(source).exists()
                                   and not Path(source).suffix):
        state, name = None, str(source)  # a Hugging Face folder or repo id
    else:
        state, name = read_state_dict(source, "audio_weights"), str(source)
    if state is not None and _is_timm_state(state):
        adapt_vit_to_ast(encoder, state, name)
        return "imagenet"
    _load_hf_ast(encoder, source if state is None else None, state, name)
    return "ast"


def _timm_state(model_name: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of the timm model ``model_name``, through timm (which downloads them when online)."""
    # deferred: timm takes ~6 s to import
    import timm

    if offline():
        raise FileNotFoundError(f"audio_weights: timm/{model_name} needs a download and zsar is offline: save the "
                                f"model's state dict once (torch.save(timm.create_model({model_name!r}, "
                                f"pretrained=True).state_dict(), 'vit.pth')) and pass that file")
    try:
        return timm.create_model(model_name, pretrained=True).state_dict()
    except Exception as e:  # noqa: BLE001 - unknown name or no network: one line either way
        raise ValueError(f"audio_weights: cannot get timm/{model_name} ({type(e).__name__}: {e}); pass a saved "
                         f"timm state-dict file instead") from None


def _load_hf_ast(encoder: ASTTokens, folder_or_repo, state, name: str) -> None:
    # deferred: transformers takes ~2 s to import
    from transformers import ASTModel

    own_cfg = encoder.net.config
    with quiet_model_loading():
        try:
            if state is None:
                local = Path(folder_or_repo).is_dir() or offline()
                loaded, info = ASTModel.from_pretrained(str(folder_or_repo), local_files_only=local,
                                                        output_loading_info=True)
            else:
                loaded, info = ASTModel.from_pretrained(None, config=own_cfg, state_dict=state,
                                                        output_loading_info=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"audio_weights: cannot load AST weights from {name}: {str(e).splitlines()[0]}") from e
    keys = ("hidden_size", "num_hidden_layers", "patch_size", "frequency_stride", "time_stride", "max_length",
            "num_mel_bins")
    differ = {k: (getattr(loaded.config, k), getattr(own_cfg, k)) for k in keys
              if getattr(loaded.config, k) != getattr(own_cfg, k)}
    if differ or info.get("missing_keys") or info.get("mismatched_keys"):
        raise ValueError(f"audio_weights: {name} does not fit this AST: config (theirs, ours) {differ}, "
                         f"missing {sorted(info.get('missing_keys', []))[:3]}, "
                         f"mismatched {list(info.get('mismatched_keys', []))[:3]}")
    encoder.net.load_state_dict(loaded.state_dict())


def _fit_grid(grid: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """AST's position-embedding fit along ``dim`` (2: frequency rows, 3: time columns): the centre
    ``size`` entries when the ImageNet grid is larger, bilinear interpolation when it is smaller."""
    have = grid.shape[dim]
    if size <= have:
        start = have // 2 - size // 2
        return grid.narrow(dim, start, size)
    out = list(grid.shape[2:])
    out[dim - 2] = size
    return F.interpolate(grid, size=tuple(out), mode="bilinear")


def adapt_vit_to_ast(encoder: ASTTokens, state: dict[str, torch.Tensor], name: str = "the ImageNet weights") -> None:
    """Initialises the AST ``encoder`` from a timm ImageNet ViT/DeiT state dict as AST's authors did
    (their ``ASTModel(imagenet_pretrain=True)``): the patch-embedding filters summed over RGB into
    one channel (same patch size and stride); the patch position embeddings as a square grid, cut to
    the centre or bilinearly interpolated (time first, then frequency) to AST's ``(f, t)`` grid; the
    class and distillation tokens and their position embeddings kept (a ViT without a distillation
    token starts AST's from its class token); the blocks' fused ``qkv`` split into Hugging Face's
    q/k/v; the final norm kept and ImageNet classifiers dropped.

    Raises:
        ValueError: widths, depth or patch size differ from the encoder's.
    """
    cfg = encoder.net.config
    D, layers = cfg.hidden_size, cfg.num_hidden_layers
    proj = state["patch_embed.proj.weight"]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    if proj.shape[0] != D or depth != layers or tuple(proj.shape[2:]) != (cfg.patch_size, cfg.patch_size):
        raise ValueError(f"audio_weights: {name} is a ViT of width {proj.shape[0]}, depth {depth}, patches "
                         f"{tuple(proj.shape[2:])}; this AST needs width {D}, depth {layers}, patches "
                         f"{(cfg.patch_size, cfg.patch_size)}")
    has_dist = "dist_token" in state
    n_prefix = 2 if has_dist else 1
    pos = state["pos_embed"]
    n_patches = pos.shape[1] - n_prefix
    side = int(round(n_patches ** 0.5))
    if side * side != n_patches:
        raise ValueError(f"audio_weights: {name} has {n_patches} patch positions, not a square grid")
    f, t = encoder.grid
    grid = pos[:, n_prefix:].reshape(1, side, side, D).permute(0, 3, 1, 2)
    grid = _fit_grid(_fit_grid(grid, t, 3), f, 2)
    cls_pos = pos[:, :1]
    dist_pos = pos[:, 1:2] if has_dist else cls_pos
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.distillation_token": state["dist_token"] if has_dist else state["cls_token"],
        "embeddings.position_embeddings": torch.cat([cls_pos, dist_pos, grid.flatten(2).transpose(1, 2)], 1),
        "embeddings.patch_embeddings.projection.weight": proj.sum(1, keepdim=True),
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"],
    }
    for i in range(layers):
        b, o = f"blocks.{i}.", f"layers.{i}."
        for part, (w, bias) in zip("qkv", zip(state[b + "attn.qkv.weight"].chunk(3), state[b + "attn.qkv.bias"].chunk(3))):
            out[o + f"attention.{part}_proj.weight"], out[o + f"attention.{part}_proj.bias"] = w, bias
        for theirs, ours in (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[o + ours + ".weight"], out[o + ours + ".bias"] = state[b + theirs + ".weight"], state[b + theirs + ".bias"]
    _load_checked(encoder.net, {k: v.contiguous() for k, v in out.items()}, name, "audio_weights",
                  "AST built for this spectrogram")


def load_backbone_weights(encoder: FrameEncoder, source, strict: bool = False) -> list[str]:
    """Loads torchvision weights into ResT's frame encoder; returns the missing keys.

    ``source``: a state dict, a state-dict file, or a torchvision weights enum name (e.g.
    ``"ResNet18_Weights.IMAGENET1K_V1"``, read as :func:`torchvision_weights` does). Classifier
    weights (``fc.*``, ``classifier.*``) are ignored where the trunk has none. A tensor whose shape
    differs from the trunk's is always an error; with ``strict=True`` missing or unexpected keys are
    errors too.
    """
    if is_torchvision_weights_name(source):
        state_dict = torchvision_weights(str(source), "backbone_weights")[0]
    elif isinstance(source, dict):
        state_dict = source
    else:
        state_dict = read_state_dict(source, "backbone_weights")
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
