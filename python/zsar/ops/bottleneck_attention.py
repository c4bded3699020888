"""MZST's attention-bottleneck fusion attention ``bottleneck_attention``: its arguments and semantics.

A fusion stream of length ``L`` holds a modality's tokens, then padding, then ``n_fusion`` shared
fusion tokens (MBT's attention bottlenecks; the second paper's Eq. 2). The valid positions of
sample ``b`` are ``[0, n_valid[b])`` and ``[L - n_fusion, L)``; every valid query attends every
valid key; padding positions (``n_valid[b] <= i < L - n_fusion``) produce 0, get no gradient and are
attended by no query. With ``n_fusion = 0`` this is plain key padding. This is the mask kind
``bottleneck`` of the fused attention kernels (``n_fixed = n_fusion``, ``lengths = n_valid``; see
:mod:`zsar.ops.attention.masks`): no ``L x L`` tensor is built, and the kernels skip key tiles that
hold only padding.

The op is the ``torch.library`` custom op ``zsar::bottleneck_attention`` (with
``zsar::bottleneck_attention_backward``), built by the same front end as ``masked_attention``
(:class:`~zsar.ops.attention.AttentionOp`): autograd, ``torch.compile``, ``FlopCounterMode`` (only valid query-key pairs
are counted), ``torch.jit.trace`` and ``torch.library.opcheck``; both registered ops validate what
they are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionInputs, AttentionOp

__all__ = ["BottleneckAttentionInputs", "bottleneck_attention", "dispatcher"]


@dataclass
class BottleneckAttentionInputs(AttentionInputs):
    """Arguments of ``zsar::bottleneck_attention``, in its schema order (see :func:`bottleneck_attention`)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    n_valid: torch.Tensor
    n_fusion: int
    scale: float

    op, mask_kind = "bottleneck_attention", "bottleneck"
    lengths_field, n_fixed_field, min_fixed = "n_valid", "n_fusion", 0


def _example(batch: int | None, device, gen: torch.Generator) -> tuple[BottleneckAttentionInputs, str]:
    """MZST's audio-video stream at L=400: 12 heads of 64, 4 fusion tokens, a quarter of the batch
    (rounded down) without audio (half the stream valid), batch 8."""
    B, H, L, D, n_fusion = batch or 8, 12, 400, 64, 4
    n_valid = torch.full((B,), L - n_fusion, dtype=torch.int32)
    n_valid[: B // 4] = (L - n_fusion) // 2
    q, k, v = (torch.randn(B, H, L, D, generator=gen).to(device) for _ in range(3))
    return (BottleneckAttentionInputs(q, k, v, n_valid.to(device), n_fusion, D**-0.5),
            f"B={B} H={H} L={L} Dh={D}, {n_fusion} fusion tokens, {B // 4} of {B} samples half padding")


#: The op: custom ops, autograd, fake implementations, FLOP formulas, eager path and dispatch.
BOTTLENECK_ATTENTION = AttentionOp(BottleneckAttentionInputs, example=_example)
#: Backends in dispatch order (fastest first); ``backend=`` forces one by name.
dispatcher = BOTTLENECK_ATTENTION.dispatcher


def bottleneck_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_valid: torch.Tensor,
    n_fusion: int,
    scale: float | None = None,
    backend: str | None = None,
    *,
    check_n_valid: bool = True,
) -> torch.Tensor:
    """Fused attention over a fusion stream with attention bottlenecks (MZST).

    Args:
        q, k, v: contiguous ``(B, H, L, Dh)`` tensors of one floating dtype on one device.
        n_valid: int32 ``(B,)`` on the device of ``q``: the stream's valid tokens per sample are
            positions ``[0, n_valid[b])``, ``0 <= n_valid[b] <= L - n_fusion``.
        n_fusion: number of fusion tokens, the last ``n_fusion`` positions of every sample;
            ``0 <= n_fusion <= L``.
        scale: softmax scale, default ``1 / sqrt(Dh)``.
        backend: ``None`` picks the fastest backend that supports the inputs; or one of
            ``"cuda"``, ``"cpu"``, ``"triton"``, ``"reference"``.
        check_n_valid: read ``n_valid`` to check its range (a device sync on CUDA). A model that
            validated ``n_valid`` once per forward passes ``False`` for its layers; the kernels
            clamp out-of-range values either way, so memory is never read out of bounds.

    Returns:
        ``(B, H, L, Dh)`` output in the dtype of ``q``; rows of padding positions are 0.

    Raises:
        TypeError / ValueError: for malformed inputs, naming the argument.
        BackendUnavailableError: when ``backend`` (or every backend) cannot serve the inputs; the
            message lists each backend with its reason.
    """
    return BOTTLENECK_ATTENTION(q, k, v, n_valid=n_valid, n_fusion=n_fusion, scale=scale, backend=backend,
                                check_lengths=check_n_valid)
