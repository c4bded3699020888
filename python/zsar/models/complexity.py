"""Computational complexity of registered models: per-clip multiply-adds and parameter counts.

The ResT paper reports "GFLOPs" that are 10^9 *multiply-adds* per clip (Table 4: "GFLOPs x clips"),
not 2 x multiply-adds. :func:`count_flops` reproduces that table. It runs the model's inference path,
:meth:`~zsar.models.ZeroShotModel.encode` on one clip at batch 1 (for ResT: tokens
``[CLS, r_1..r_T, [MASK]]``), under
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts convolutions, matrix products and
the custom op ``zsar::masked_attention`` (its FLOP formula is registered with the op), and halves
the count (FlopCounterMode counts 2 FLOPs per multiply-add).

Counting conventions (``convention=``)
--------------------------------------
``"thop"`` (default; reproduces the paper)
    The convention of the widely used counter thop (``pytorch-OpCounter``), applied to the
    operators the model runs rather than to module types:

    * convolutions, linear layers, matrix products, ``masked_attention``: one op per multiply-add;
    * normalisation (batch, layer, group norm): 2 ops per element, x2 when it has an affine
      weight (subtract mean, divide by std, scale, shift: 4 ops per element for every norm here);
    * average pooling and mean reductions: one add per input element and one divide per output
      element (thop's ``(kernel + 1) x outputs``);
    * activations, max pooling, dropout, residual and embedding additions, softmax: 0.

``"macs"``
    Multiply-adds of convolutions, linear layers, matrix products and ``masked_attention`` only,
    i.e. :class:`~torch.utils.flop_counter.FlopCounterMode` / 2 (the convention of fvcore).

How the paper's numbers arise (investigation behind the default)
----------------------------------------------------------------
With pure multiply-adds six of the seven Table 4 rows are within 1.5%, but ResT-MobileNetV2 counts
6.34 against the paper's 6.9 (-8.1%): a depthwise-separable network does little convolution work
per activation, so whatever element-wise work a counter adds weighs most there. ptflops' convention
(batch norm 2 ops per element, activations and pooling 1 op per element) gives about 6.65 (-3.6%), still
out. thop's convention gives 6.77 (-1.9%) and brings ResT-34 and ResT-101 to within 0.1% of the
paper (30.28 vs 30.3, 31.97 vs 32.0); the same convention gives thop's published per-frame counts
of the torchvision backbones (resnet18 1.82, resnet34 3.68, resnet101 7.87, mobilenet_v2 0.33
GMACs with their classifiers) and the 40.8 the paper quotes for E2E's R(2+1)D (our R(2+1)D-18
trunk: 40.77). So the paper most likely counted with thop, and every Table 4 row is within 2% of
it under that one convention (MobileNetV2 being the farthest, at -1.9%). thop itself does not see
``masked_attention``'s matrix products (they are not in a module it knows); we count them, which
adds 0.006 GMACs to ResT-18.

Parameters
----------
``params`` counts the parts that run at inference: the frame encoder (backbone), the projection
p -> D, the token embeddings (CLS token, position, modality and word embeddings, whole tables) and
the transformer. The training-only heads (classification MLP, masked-token head and the warm-up
classifier) are reported separately: zero-shot inference uses the CLS output x directly.

How it runs (fast, little memory): the model is built on the ``meta`` device, so no weights are
allocated or initialised; the frame encoder, where nearly all the compute is, runs on meta tensors
(shapes only); the small rest (projection, embeddings, transformer: ~1.5 GMACs at batch 1) runs on
CPU with all weights of one dtype sharing one zero buffer, so ``masked_attention`` sees the real
word count (1) and the model's own checks run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from ..data.batch import Batch
from .base import ZeroShotModel
from .registry import create_model

__all__ = ["CONVENTIONS", "count_flops", "count_params"]

#: convention name -> one-line description (see the module docstring).
CONVENTIONS: dict[str, str] = {
    "thop": "multiply-adds + 4 ops per normalised element + average pooling (thop's convention; "
            "reproduces the ResT paper's Table 4)",
    "macs": "multiply-adds of convolutions, matrix products and attention only (FlopCounterMode / 2)",
}

_aten = torch.ops.aten


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# Extra formulas for FlopCounterMode. They receive shapes (FlopCounterMode's shape_wrapper) and
# return 2 x the thop op count, so that halving FlopCounterMode's total gives thop's units
# (multiply-adds + element-wise ops).
def _norm(input_shape, weight) -> int:
    return 2 * 2 * _numel(input_shape) * (2 if weight is not None else 1)


def _batch_or_group_norm_flops(input_shape, weight=None, *args, out_shape=None, **kwargs) -> int:
    return _norm(input_shape, weight)


def _layer_norm_flops(input_shape, normalized_shape, weight=None, *args, out_shape=None, **kwargs) -> int:
    return _norm(input_shape, weight)


def _avg_pool_flops(input_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    kernel = list(kernel_size) if isinstance(kernel_size, (list, tuple)) else [kernel_size]
    if len(kernel) == 1:  # one int stands for every spatial dim
        kernel = kernel * (len(input_shape) - 2)
    return 2 * (_numel(kernel) + 1) * _numel(out_shape)


def _reduce_mean_flops(input_shape, *args, out_shape=None, **kwargs) -> int:
    # adaptive average pooling and mean: one add per input element, one divide per output
    return 2 * (_numel(input_shape) + _numel(out_shape))


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # PyTorch's flop counter knows the CUDA flash/efficient kernels but not the CPU one.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas(convention: str) -> dict[Any, Callable]:
    attention = {_aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops} \
        if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu") else {}
    if convention == "macs":
        return attention
    table = {
        "native_batch_norm": _batch_or_group_norm_flops,
        "_native_batch_norm_legit": _batch_or_group_norm_flops,
        "_native_batch_norm_legit_no_training": _batch_or_group_norm_flops,
        "cudnn_batch_norm": _batch_or_group_norm_flops,
        "miopen_batch_norm": _batch_or_group_norm_flops,
        "native_group_norm": _batch_or_group_norm_flops,
        "native_layer_norm": _layer_norm_flops,
        "avg_pool2d": _avg_pool_flops,
        "avg_pool3d": _avg_pool_flops,
        "_adaptive_avg_pool2d": _reduce_mean_flops,
        "_adaptive_avg_pool3d": _reduce_mean_flops,
        "mean": _reduce_mean_flops,
    }
    return {**attention, **{getattr(_aten, name): fn for name, fn in table.items() if hasattr(_aten, name)}}


class _OnMeta(nn.Module):
    """Runs a (meta-device) frame encoder on meta tensors and hands back CPU zeros of its output shape."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        out = self.inner(clips.to("meta"))
        return torch.zeros(out.shape, dtype=out.dtype)


def _materialize_on_cpu(root: nn.Module, skip: list[nn.Module]) -> None:
    """Gives every meta parameter/buffer of ``root`` outside ``skip`` CPU storage: views of one zero
    buffer per dtype (no initialisation, and the memory of the largest tensor only)."""
    skipped = {id(m) for part in skip for m in part.modules()}
    tensors = []
    for sub in root.modules():
        if id(sub) in skipped:
            continue
        for store in (sub._parameters, sub._buffers):
            tensors += [(store, name, t) for name, t in store.items() if t is not None and t.is_meta]
    sizes: dict[torch.dtype, int] = {}
    for _, _, t in tensors:
        sizes[t.dtype] = max(sizes.get(t.dtype, 0), t.numel())
    zeros = {dtype: torch.zeros(n, dtype=dtype) for dtype, n in sizes.items()}
    for store, name, t in tensors:
        value = zeros[t.dtype][: t.numel()].view(t.shape)
        store[name] = nn.Parameter(value, requires_grad=False) if isinstance(t, nn.Parameter) else value


def _build_on_meta(model, frames: int | None):
    """(name, the model rebuilt on the meta device with ``frames`` frames) for a registered name or a
    registered model (only its architecture is used)."""
    overrides = {} if frames is None else {"frames": frames}
    if isinstance(model, str):
        name, args = model, overrides
    elif isinstance(model, ZeroShotModel) and model.registry_name:
        name, args = model.registry_name, {**model.model_args(), **overrides}
    else:
        raise TypeError(f"count_flops: model must be a registered model name or a model made by create_model, "
                        f"got {type(model).__name__}")
    with torch.device("meta"):
        return name, create_model(name, **args)


def _params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_params(model) -> dict[str, int]:
    """Parameter counts of a registered model by its inference parts (:meth:`ZeroShotModel.parts`;
    ``other``: parameters outside every part, e.g. token embeddings) plus ``training_heads`` (the
    parts used only in training)."""
    parts = {name: _params(m) for name, m in model.parts().items()}
    heads = sum(_params(m) for m in model.training_parts().values())
    parts["other"] = _params(model) - sum(parts.values()) - heads
    return {**parts, "training_heads": heads}


def _replace_module(root: nn.Module, target: nn.Module, replacement: nn.Module) -> None:
    for name, module in root.named_modules():
        if module is target:
            parent, _, attr = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, attr, replacement)
            return
    raise ValueError("part not found in the model")


def _example_batch(inputs):
    if inputs.feature_dim is not None:
        clip = torch.zeros(1, inputs.frames, inputs.feature_dim)
    else:
        clip = torch.zeros(1, inputs.frames, 3, inputs.image_size, inputs.image_size)
    batch = Batch(clips=clip, labels=torch.full((1,), -1, dtype=torch.int64))
    if inputs.audio is not None:
        batch = batch.replace(audio=torch.zeros(1, inputs.audio.target_length, inputs.audio.mel_bins),
                              audio_present=torch.ones(1, dtype=torch.bool))
    return batch


def count_flops(model, frames: int | None = None, clips: int = 1, convention: str | None = None) -> dict[str, Any]:
    """Per-clip multiply-adds ("GFLOPs" as in the ResT paper) and parameter counts of a registered model.

    Args:
        model: a registered model name (``"rest18"``, see :func:`zsar.list_models`) or a model made by
            :func:`zsar.create_model`; only its architecture is used (the count is rebuilt on the
            meta device, the model itself is not run or changed).
        frames: frames per clip; default: the model's.
        clips: clips per video (``N_e``); the total is ``clips x`` the per-clip count.
        convention: ``"thop"`` (reproduces the ResT paper) or ``"macs"``; see the module docstring
            for exactly what each counts. Default: the model's ``flop_convention`` (ResT: thop,
            MZST: macs).

    Returns:
        A dict with ``model``, ``frames``, ``clips``, ``convention``, ``image_size``, ``audio``
        (the audio input's ``(frames, mel bins)`` or None), the model's own facts
        (:meth:`ZeroShotModel.describe`, e.g. ResT's ``backbone`` and ``tokens``),
        ``gflops_per_clip`` and ``gflops_total`` (10^9 multiply-adds, plus element-wise ops under
        ``thop``), ``macs_per_clip`` (the exact integer count), ``parts_gflops`` (per part of
        :meth:`ZeroShotModel.parts`, e.g. ``backbone``, ``projection``, ``transformer``, and
        ``other``: the work outside them), ``ops_gflops`` (per operator, e.g.
        ``"zsar.masked_attention"``), ``params`` (parts used at inference), ``params_parts``,
        ``params_training_heads`` and ``params_all``.

    Raises:
        ValueError: unknown model or convention, ``frames < 1`` or ``clips < 1``.
    """
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown counting convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    for label, value in (("frames", frames), ("clips", clips)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{label} must be an int, got {type(value).__name__}")
        if value is not None and value < 1:
            raise ValueError(f"{label} must be at least 1, got {value}")

    name, net = _build_on_meta(model, frames)
    convention = convention or net.flop_convention
    inputs = net.inputs
    params = count_params(net)
    inference_parts = {k: v for k, v in params.items() if k != "training_heads"}

    # Backbones do value-independent work: they run on meta tensors (shapes only); the rest runs on
    # CPU with real values, so custom ops see real lengths and the model's own checks run unchanged.
    parts = {k: m for k, m in net.parts().items() if m is not None}
    on_meta = [m for k, m in parts.items() if k.startswith("backbone")]
    for module in on_meta:
        wrapped = _OnMeta(module)
        _replace_module(net, module, wrapped)
        parts = {k: (wrapped if m is module else m) for k, m in parts.items()}
    _materialize_on_cpu(net, skip=on_meta)
    net.eval()
    batch = _example_batch(inputs)

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas(convention))
    part_flops = {k: 0 for k in parts}
    hooks = []
    for part, module in parts.items():
        start: list[int] = []
        hooks.append(module.register_forward_pre_hook(lambda m, a, s=start: s.append(counter.get_total_flops())))
        hooks.append(module.register_forward_hook(
            lambda m, a, o, s=start, p=part: part_flops.__setitem__(p, part_flops[p] + counter.get_total_flops() - s.pop())))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 work: one thread is as fast and immune to busy machines
    try:
        with counter, torch.no_grad():
            net.encode(batch)
    finally:
        torch.set_num_threads(threads)
        for h in hooks:
            h.remove()

    total = counter.get_total_flops()
    part_flops["other"] = total - sum(part_flops.values())
    ops = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    macs = total // 2
    return {
        "model": name,
        **net.describe(),
        "frames": inputs.frames,
        "clips": clips,
        "image_size": inputs.image_size if inputs.feature_dim is None else None,
        "audio": [inputs.audio.target_length, inputs.audio.mel_bins] if inputs.audio is not None else None,
        "convention": convention,
        "gflops_per_clip": macs / 1e9,
        "gflops_total": macs * clips / 1e9,
        "macs_per_clip": macs,
        "parts_gflops": {k: v / 2e9 for k, v in part_flops.items()},
        "ops_gflops": {k: v / 2e9 for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
        "params": sum(inference_parts.values()),
        "params_parts": inference_parts,
        "params_training_heads": params["training_heads"],
        "params_all": sum(params.values()),
    }
