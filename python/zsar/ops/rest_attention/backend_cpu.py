"""C++/OpenMP backend (``zsar._C``): float32 and float64 on the CPU, one task per (batch, head)."""

from __future__ import annotations

import torch

from ... import _ext
from .common import AttentionInputs, MaskedAttentionBackend, accum_dtype

# zsar::ScalarType in csrc/include/zsar/masked_attention.h
SCALAR_TYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def shape_args(inp: AttentionInputs) -> tuple:
    """(B, H, L, Dh, n_visual, full, scale, dtype code) in the order of the ``_C`` entry points."""
    B, H, L, D = inp.shape
    return (B, H, L, D, inp.n_visual, inp.full, inp.scale, SCALAR_TYPE[inp.dtype])


class CpuBackend(MaskedAttentionBackend):
    name = "cpu"
    dtypes = (torch.float32, torch.float64)

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        reasons = []
        if _ext.compiled() is None:
            reasons.append(_ext.LOAD_ERROR or "zsar._C is not available")
        if inp.device.type != "cpu":
            reasons.append(f"tensors are on {inp.device.type}, this backend runs on cpu")
        if inp.dtype not in self.dtypes:
            reasons.append(f"dtype {inp.dtype} unsupported (float32, float64)")
        return reasons

    def forward(self, inp):
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.shape[:3], dtype=accum_dtype(inp.dtype))
        _ext.compiled().masked_attention_fwd_cpu(
            inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), inp.n_text.data_ptr(),
            out.data_ptr(), lse.data_ptr(), *shape_args(inp), torch.get_num_threads(),
        )
        return out, lse

    def backward(self, inp, out, lse, dout):
        dq, dk, dv = (torch.empty_like(inp.q) for _ in range(3))
        _ext.compiled().masked_attention_bwd_cpu(
            inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), inp.n_text.data_ptr(),
            out.data_ptr(), lse.data_ptr(), dout.data_ptr(),
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), *shape_args(inp), torch.get_num_threads(),
        )
        return dq, dk, dv
