"""Torch reference backend: dense-mask attention in plain torch ops, on any device and dtype.

Half-precision inputs are computed in float32. This is the fallback of the dispatch and the
readable statement of the math the fused kernels implement (forward and the explicit backward).
"""

from __future__ import annotations

import torch

from .common import AttentionInputs, MaskedAttentionBackend, key_end, accum_dtype


def _allowed(inp: AttentionInputs) -> torch.Tensor:
    """(B, 1, L, L) boolean: query i may attend key j."""
    L = inp.q.shape[2]
    end = key_end(L, inp.n_visual, inp.n_text, inp.full)
    j = torch.arange(L, device=end.device)
    return (j[None, None, :] < end[:, :, None])[:, None]


def _probabilities(inp: AttentionInputs, lse: torch.Tensor | None = None):
    """Masked softmax probabilities (and the log-sum-exp), zero on disallowed/padding entries."""
    ct = accum_dtype(inp.dtype)
    q, k = inp.q.to(ct), inp.k.to(ct)
    allowed = _allowed(inp)
    scores = torch.matmul(q, k.transpose(-1, -2)) * inp.scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    if lse is None:
        lse = torch.logsumexp(scores, dim=-1)
        lse = torch.where(allowed.any(-1), lse, torch.zeros_like(lse))  # padding rows: 0
    p = torch.exp(scores - lse[..., None].to(ct))
    return p.masked_fill(~allowed, 0.0), lse


class ReferenceBackend(MaskedAttentionBackend):
    name = "reference"

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        return []

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        p, lse = _probabilities(inp)
        out = torch.matmul(p, inp.v.to(p.dtype))
        return out.to(inp.dtype), lse.to(accum_dtype(inp.dtype))

    def backward(self, inp, out, lse, dout):
        ct = accum_dtype(inp.dtype)
        p, _ = _probabilities(inp, lse)
        q, k, v = inp.q.to(ct), inp.k.to(ct), inp.v.to(ct)
        dout, out = dout.to(ct), out.to(ct)
        delta = (dout * out).sum(-1, keepdim=True)
        dv = torch.matmul(p.transpose(-1, -2), dout)
        ds = p * (torch.matmul(dout, v.transpose(-1, -2)) - delta)
        dq = torch.matmul(ds, k) * inp.scale
        dk = torch.matmul(ds.transpose(-1, -2), q) * inp.scale
        return dq.to(inp.dtype), dk.to(inp.dtype), dv.to(inp.dtype)
