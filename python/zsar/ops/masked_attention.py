"""ResT's fused masked cross-modal attention ``masked_attention``: its arguments and semantics.

Tokens of each sample are ordered ``[CLS, frames..., words..., padding]``. With ``n_visual`` visual
tokens (CLS + frames) and ``n_text[b]`` valid words, query ``i`` may attend key ``j`` iff

* ``mode="rest"``: a visual query sees only visual keys; a word query sees every visual key and the
  words up to and including itself;
* ``mode="full"``: every valid query sees every valid key;

and padding queries (``i >= n_visual + n_text[b]``) produce 0 and get no gradient. These are the
mask kinds ``rest`` and ``full`` of the fused attention kernels (``n_fixed = n_visual``,
``lengths = n_text``; see :mod:`zsar.ops.attention.masks`), computed from the integers inside each
kernel: no ``L x L`` tensor is built.

The op is the ``torch.library`` custom op ``zsar::masked_attention`` (with
``zsar::masked_attention_backward``), built by the attention ops' shared front end
(:class:`~zsar.ops.attention.AttentionOp` over :class:`~zsar.ops._custom_op.FusedOp`): it works under
autograd, ``torch.compile``, ``FlopCounterMode``, ``torch.jit.trace`` and
``torch.library.opcheck``, and both registered ops validate what they are given.

Non-finite inputs (every backend): padding positions are never read and padding rows are exactly
0; a NaN or infinite score of an attended pair is never hidden (the row, and the gradients that
depend on it, are non-finite as in the float64 reference); a masked pair's score is discarded.
Where a non-finite ``v`` (or upstream gradient, or ``k`` / ``q`` in the backward) meets a pair the
mask excludes, a backend may compute ``0 * inf = NaN`` for it, as a dense computation over the
sample's valid tokens does; none turns a value the exact masked math makes non-finite into a
finite one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionInputs, AttentionOp, key_end

__all__ = ["MaskedAttentionInputs", "check_n_text_range", "dispatcher", "key_end", "masked_attention"]

MODES = ("rest", "full")


@dataclass
class MaskedAttentionInputs(AttentionInputs):
    """Arguments of ``zsar::masked_attention``, in its schema order (see :func:`masked_attention`)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    n_text: torch.Tensor
    n_visual: int
    full: bool
    scale: float

    op = "masked_attention"
    lengths_field, n_fixed_field, min_fixed = "n_text", "n_visual", 1

    @property
    def mask_kind(self) -> str:
        return "full" if self.full else "rest"

    def check_params(self) -> None:
        if not isinstance(self.full, bool):
            raise TypeError(f"{self.op}: full must be a bool, got {type(self.full).__name__}")


def _example(batch: int | None, device, gen: torch.Generator) -> tuple[MaskedAttentionInputs, str]:
    """ResT's shape: 12 heads of 64, CLS + 16 frames + up to 8 words (1..8 per sample), batch 64."""
    B, H, L, D, n_visual = batch or 64, 12, 25, 64, 17
    n_text = torch.randint(1, L - n_visual + 1, (B,), generator=gen, dtype=torch.int32).to(device)
    q, k, v = (torch.randn(B, H, L, D, generator=gen).to(device) for _ in range(3))
    return (MaskedAttentionInputs(q, k, v, n_text, n_visual, False, D**-0.5),
            f"B={B} H={H} L={L} (CLS + 16 frames + 1..8 words) Dh={D}, mode rest")


#: The op: custom ops, autograd, fake implementations, FLOP formulas, eager path and dispatch.
MASKED_ATTENTION = AttentionOp(MaskedAttentionInputs, example=_example, probe_args={"full": False})
#: Backends in dispatch order (fastest first); ``backend=`` forces one by name.
dispatcher = MASKED_ATTENTION.dispatcher
#: ``check_n_text_range(n_text, n_visual, seq_len)``: ValueError unless ``0 <= n_text <= seq_len -
#: n_visual``; reads the values (a sync on CUDA).
check_n_text_range = MASKED_ATTENTION.check_range


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
    if mode not in MODES:
        raise ValueError(f"masked_attention: mode must be one of {MODES}, got {mode!r}")
    return MASKED_ATTENTION(q, k, v, n_text=n_text, n_visual=n_visual, full=mode == "full", scale=scale,
                            backend=backend, check_lengths=check_n_text)
