"""The ResT attention op ``masked_attention`` (DESIGN.md §2.1) and its backends.

The public entry point is :func:`zsar.ops.masked_attention` (this package is named differently so
that the function does not shadow it).

Tokens of each sample are ordered ``[CLS, frames..., words..., padding]``. With ``n_visual`` visual
tokens (CLS + frames) and ``n_text[b]`` valid words, query ``i`` may attend key ``j`` iff

* ``mode="rest"``: a visual query sees only visual keys; a word query sees every visual key and the
  words up to and including itself;
* ``mode="full"``: every valid query sees every valid key;

and padding queries (``i >= n_visual + n_text[b]``) produce 0 and get no gradient. The mask is
computed from the integers inside each kernel: no ``L x L`` tensor is built.

The op is the ``torch.library`` custom op ``zsar::masked_attention`` (with a backward op, fake
implementations and FLOP formulas), so it works under autograd, ``torch.compile``,
``FlopCounterMode`` and ``torch.library.opcheck``.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from .._dispatch import Dispatcher
from .backend_cpu import CpuBackend
from .backend_cuda import CudaBackend
from .backend_reference import ReferenceBackend
from .backend_triton import TritonBackend
from .common import AttentionInputs, MaskedAttentionBackend, key_end, accum_dtype

__all__ = ["masked_attention", "check_n_text_range", "dispatcher", "AttentionInputs", "MaskedAttentionBackend", "key_end"]

MODES = ("rest", "full")

#: Backends in dispatch order (fastest first); ``backend=`` forces one by name.
dispatcher: Dispatcher[MaskedAttentionBackend] = Dispatcher(
    "masked_attention", [CudaBackend(), CpuBackend(), TritonBackend(), ReferenceBackend()]
)


def _check_structure(q, k, v, n_visual, n_text) -> None:
    """Checks everything that needs no look at tensor values (so it is free under torch.compile)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"masked_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"masked_attention: {name} must have shape (B, H, L, Dh), got {t.dim()} dims {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"masked_attention: {name} must be a floating-point tensor, got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(
                f"masked_attention: {name} has shape {tuple(t.shape)}, expected the shape of q {tuple(q.shape)}"
            )
        if t.dtype != q.dtype:
            raise TypeError(f"masked_attention: {name} has dtype {t.dtype}, expected the dtype of q ({q.dtype})")
        if t.device != q.device:
            raise ValueError(f"masked_attention: {name} is on {t.device}, expected the device of q ({q.device})")
    if q.numel() == 0:
        raise ValueError(f"masked_attention: q, k, v must not be empty, got shape {tuple(q.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not t.is_contiguous():
            raise ValueError(f"masked_attention: {name} must be contiguous; call .contiguous() first")
    B, _, L, _ = q.shape
    if isinstance(n_visual, bool) or not isinstance(n_visual, int):
        raise TypeError(f"masked_attention: n_visual must be an int, got {type(n_visual).__name__}")
    if not 1 <= n_visual <= L:
        raise ValueError(f"masked_attention: n_visual must be in [1, L={L}], got {n_visual}")
    if not isinstance(n_text, torch.Tensor):
        raise TypeError(f"masked_attention: n_text must be an int32 tensor of shape ({B},), got {type(n_text).__name__}")
    if n_text.dtype != torch.int32:
        raise TypeError(f"masked_attention: n_text must have dtype torch.int32, got {n_text.dtype}")
    if n_text.shape != (B,):
        raise ValueError(f"masked_attention: n_text must have shape ({B},) (one count per sample), got {tuple(n_text.shape)}")
    if n_text.device != q.device:
        raise ValueError(f"masked_attention: n_text is on {n_text.device}, expected the device of q ({q.device})")
    if not n_text.is_contiguous():
        raise ValueError("masked_attention: n_text must be contiguous; call .contiguous() first")


def check_n_text_range(n_text: torch.Tensor, n_visual: int, seq_len: int) -> None:
    """Raises ValueError unless ``0 <= n_text <= seq_len - n_visual``; reads the values (a sync on CUDA)."""
    lo, hi = (int(x) for x in torch.aminmax(n_text))
    if lo < 0 or hi > seq_len - n_visual:
        raise ValueError(
            f"masked_attention: n_text values must be in [0, L - n_visual = {seq_len - n_visual}], "
            f"got values in [{lo}, {hi}]"
        )


@torch.library.custom_op("zsar::masked_attention", mutates_args=(), device_types=None)
def _masked_attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_text: torch.Tensor,
    n_visual: int, full: bool, scale: float, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_structure(q, k, v, n_visual, n_text)  # the op may be called directly via torch.ops
    inp = AttentionInputs(q, k, v, n_text, n_visual, full, scale)
    return dispatcher.select(inp, backend or None).forward(inp)


@_masked_attention_fwd.register_fake
def _(q, k, v, n_text, n_visual, full, scale, backend):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=accum_dtype(q.dtype))


@torch.library.custom_op("zsar::masked_attention_backward", mutates_args=())
def _masked_attention_bwd(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_text: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, n_visual: int, full: bool, scale: float, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inp = AttentionInputs(q, k, v, n_text, n_visual, full, scale)
    return dispatcher.select(inp, backend or None).backward(inp, out, lse, dout.contiguous())


@_masked_attention_bwd.register_fake
def _(dout, q, k, v, n_text, out, lse, n_visual, full, scale, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, n_text, n_visual, full, scale, backend = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, n_text, out, lse)
    ctx.params = (n_visual, full, scale, backend)


def _backward(ctx, dout, _dlse):
    q, k, v, n_text, out, lse = ctx.saved_tensors
    dq, dk, dv = _masked_attention_bwd(dout, q, k, v, n_text, out, lse, *ctx.params)
    return dq, dk, dv, None, None, None, None, None


_masked_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerMaskedAttention(torch.autograd.Function):
    """The same backend calls as the custom op, for plain eager tensors.

    The ``torch.library`` custom-op layers cost ~0.25 ms per forward+backward in Python (argument
    normalisation, alias checks, redispatch), about 8% of the whole step at ResT's shapes on the
    CPU. :func:`masked_attention` takes this path only when nothing needs to see the op itself: not
    under ``torch.compile`` or ``torch.jit.trace``, no dispatch/function mode (``FlopCounterMode``,
    fake tensors), no ``torch.func`` transform, plain tensors. Everything else goes through the
    custom op.
    """

    @staticmethod
    def forward(ctx, q, k, v, n_text, n_visual, full, scale, backend):
        # ctx-style forward: a separate setup_context makes apply() bind arguments with inspect
        output = dispatcher.get(backend).forward(AttentionInputs(q, k, v, n_text, n_visual, full, scale))
        _setup_context(ctx, (q, k, v, n_text, n_visual, full, scale, backend), output)
        return output

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, n_text, out, lse = ctx.saved_tensors
        n_visual, full, scale, backend = ctx.params
        inp = AttentionInputs(q, k, v, n_text, n_visual, full, scale)
        dq, dk, dv = dispatcher.get(backend).backward(inp, out, lse, dout.contiguous())
        return dq, dk, dv, None, None, None, None, None


def _plain_eager(*tensors: torch.Tensor) -> bool:
    """True when no tracer, mode or transform would need to see the custom op (the caller has
    already ruled out ``torch.compile``)."""
    return (
        not torch.jit.is_tracing()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
        and torch._C._functorch.peek_interpreter_stack() is None
        and all(type(t) is torch.Tensor for t in tensors)
    )


# ---- FLOP formulas (torch.utils.flop_counter convention: 2 FLOPs per multiply-add) -------------


def attended_pairs(n_text, n_visual: int, seq_len: int, full: bool) -> int:
    """Number of (query, key) pairs the mask allows, summed over the batch, for one head.

    Exact when ``n_text`` holds real values; for fake/meta tensors (under torch.compile or a
    meta-device FLOP count) every sample is assumed to have the maximum ``L - n_visual`` words.
    """
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(n_text, FakeTensor) or n_text.device.type == "meta":
        counts = [seq_len - n_visual] * n_text.shape[0]
    else:
        counts = [min(max(int(n), 0), seq_len - n_visual) for n in n_text.tolist()]
    if full:
        return sum((n_visual + n) ** 2 for n in counts)
    # visual rows see n_visual keys; word row r (1-based) sees n_visual + r keys
    return sum(n_visual * n_visual + n * n_visual + n * (n + 1) // 2 for n in counts)


@register_flop_formula(torch.ops.zsar.masked_attention, get_raw=True)
def _fwd_flops(q, k, v, n_text, n_visual, full, scale, backend, *args, out_val=None, **kwargs) -> int:
    _, H, L, D = q.shape
    return 2 * 2 * H * D * attended_pairs(n_text, n_visual, L, full)  # QK^T and PV


@register_flop_formula(torch.ops.zsar.masked_attention_backward, get_raw=True)
def _bwd_flops(dout, q, k, v, n_text, out, lse, n_visual, full, scale, backend, *args, out_val=None, **kwargs) -> int:
    _, H, L, D = q.shape
    return 5 * 2 * H * D * attended_pairs(n_text, n_visual, L, full)  # recompute QK^T, dV, dP, dQ, dK


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_visual: int,
    n_text: torch.Tensor,
    mode: str = "rest",
    scale: float | None = None,
    backend: str | None = None,
    *,
    check_n_text: bool = True,
) -> torch.Tensor:
    """Fused masked cross-modal attention of ResT.

    Args:
        q, k, v: contiguous ``(B, H, L, Dh)`` tensors of one floating dtype on one device.
        n_visual: number of visual tokens (CLS + frames), the same for the batch; ``1 <= n_visual <= L``.
        n_text: int32 ``(B,)`` on the device of ``q``: valid word tokens per sample,
            ``0 <= n_text[b] <= L - n_visual``; the remaining positions are padding.
        mode: ``"rest"`` (the paper's pattern) or ``"full"`` (every valid token sees every valid token).
        scale: softmax scale, default ``1 / sqrt(Dh)``.
        backend: ``None`` picks the fastest backend that supports the inputs; or one of
            ``"cuda"``, ``"cpu"``, ``"triton"``, ``"reference"``.
        check_n_text: read ``n_text`` to check its range (a device sync on CUDA). A model that
            validated ``n_text`` once per forward passes ``False`` for its layers; the kernels clamp
            out-of-range values either way, so memory is never read out of bounds.

    Returns:
        ``(B, H, L, Dh)`` output in the dtype of ``q``; rows of padding tokens are 0.

    Raises:
        TypeError / ValueError: for malformed inputs, naming the argument.
        BackendUnavailableError: when ``backend`` (or every backend) cannot serve the inputs; the
            message lists each backend with its reason.
    """
    _check_structure(q, k, v, n_visual, n_text)
    if mode not in MODES:
        raise ValueError(f"masked_attention: mode must be one of {MODES}, got {mode!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"masked_attention: scale must be a finite number or None, got {scale!r}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"masked_attention: backend must be a str or None, got {type(backend).__name__}")
    full, scale = mode == "full", float(scale)
    if not torch.compiler.is_compiling():
        if check_n_text:
            check_n_text_range(n_text, n_visual, q.shape[2])
        # Resolve the backend here, so a bad `backend=` fails with the full explanation before the
        # op runs, and the backward uses the same backend as the forward.
        backend = dispatcher.select(AttentionInputs(q, k, v, n_text, n_visual, full, scale), backend).name
        if _plain_eager(q, k, v, n_text):
            out, _ = _EagerMaskedAttention.apply(q, k, v, n_text, n_visual, full, scale, backend)
            return out
    out, _ = _masked_attention_fwd(q, k, v, n_text, n_visual, full, scale, backend or "")
    return out
