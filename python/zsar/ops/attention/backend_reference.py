"""Torch reference backend: dense-mask attention in plain torch ops, for every dtype on cpu and cuda.

Half-precision inputs are computed in float32. This is the fallback of the dispatch and the
readable statement of the math the fused kernels implement (forward and the explicit backward).
Like the kernels, it never reads padding positions (they are replaced by 0 first, so even a
non-finite value there changes nothing) and writes exact zeros in padding rows.
"""

from __future__ import annotations

import torch

from ..._limits import limit
from .._backend import CUDA_DEVICE, Backend, Support
from .inputs import AttentionInputs, accum_dtype
from .masks import MASK_KINDS

_ALL_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _valid_tokens(inp: AttentionInputs) -> torch.Tensor:
    """(B, 1, L, 1) bool: the sample's valid (non-padding) positions."""
    return inp.mask.valid(inp.seq_len, inp.n_fixed, inp.lengths)[:, None, :, None]


def _only_valid(t: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype`` with padding positions replaced by 0 (so they are never read)."""
    return torch.where(valid, t.to(dtype), torch.zeros((), dtype=dtype, device=t.device))


def _probabilities(inp: AttentionInputs, q, k, lse: torch.Tensor | None = None):
    """Masked softmax probabilities (and the log-sum-exp), zero on disallowed/padding entries."""
    allowed = inp.mask.allowed(inp.seq_len, inp.n_fixed, inp.lengths)[:, None]
    scores = torch.matmul(q, k.transpose(-1, -2)) * inp.scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    if lse is None:
        lse = torch.logsumexp(scores, dim=-1)
        lse = torch.where(allowed.any(-1), lse, torch.zeros_like(lse))  # padding rows: 0
    p = torch.exp(scores - lse[..., None].to(scores.dtype))
    return p.masked_fill(~allowed, 0.0), lse


class ReferenceBackend(Backend):
    """Dense-mask attention in plain torch ops: every float dtype and mask kind, on cpu and cuda.

    The dispatch's fallback and the kernels' statement of the math; it materialises (B, H, L, L)
    scores, so it refuses calls above ``attention_dense_bytes``. See the module docstring.
    """

    name = "reference"
    supports = (Support("cpu", _ALL_FLOATS), Support("cuda", _ALL_FLOATS, requires=(CUDA_DEVICE,)))
    mask_kinds = tuple(MASK_KINDS)

    def _reasons(self, inputs):
        yield from super()._reasons(inputs)
        if not hasattr(inputs, "shape"):  # asked about a device and dtype only
            return
        b, h, length, _ = inputs.shape  # its dense (B, H, L, L) scores, probabilities and mask, at once
        need = 3 * b * h * length * length * torch.finfo(accum_dtype(inputs.dtype)).bits // 8
        if need > limit("attention_dense_bytes"):
            yield (f"its dense L x L scores at L={length} (B={b}, H={h}) need {need / 2**30:.1f} GiB, above "
                   f"ZSAR_LIMIT_ATTENTION_DENSE_BYTES={limit('attention_dense_bytes')}")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        ct = accum_dtype(inp.dtype)
        valid = _valid_tokens(inp)
        q, k, v = (_only_valid(t, valid, ct) for t in (inp.q, inp.k, inp.v))
        p, lse = _probabilities(inp, q, k)
        out = torch.where(valid, torch.matmul(p, v), 0.0)
        return out.to(inp.dtype), lse.to(ct)

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        (out, lse), (dout,) = outputs, grads
        ct = accum_dtype(inp.dtype)
        valid = _valid_tokens(inp)
        q, k, v, out, dout = (_only_valid(t, valid, ct) for t in (inp.q, inp.k, inp.v, out, dout))
        p, _ = _probabilities(inp, q, k, lse.to(ct))
        delta = (dout * out).sum(-1, keepdim=True)
        dv = torch.matmul(p.transpose(-1, -2), dout)
        ds = p * (torch.matmul(dout, v.transpose(-1, -2)) - delta)
        dq = torch.matmul(ds, k) * inp.scale
        dk = torch.matmul(ds.transpose(-1, -2), q) * inp.scale
        # Padding rows get exactly 0 (0 * inf from a valid row would otherwise leave NaN there).
        return tuple(torch.where(valid, g, 0.0).to(inp.dtype) for g in (dq, dk, dv))
