"""C++/OpenMP backend (``zsar._C``): float32 and float64 on the CPU, one task per (batch, head)."""

from __future__ import annotations

import torch

from ... import _ext
from .._backend import COMPILED_CORE, Backend, Support
from . import compiled
from .inputs import AttentionInputs, accum_dtype


class CpuBackend(Backend):
    name = "cpu"
    supports = (Support("cpu", (torch.float32, torch.float64), requires=(COMPILED_CORE,)),)
    mask_kinds = ("rest", "full")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.q.shape[:3], dtype=accum_dtype(inp.q.dtype))
        core = _ext.compiled()
        core.masked_attention_fwd_cpu(core.MaskedAttentionForward(
            compiled.problem(inp), lengths=inp.lengths.data_ptr(),
            q=inp.q.data_ptr(), k=inp.k.data_ptr(), v=inp.v.data_ptr(),
            out=out.data_ptr(), lse=lse.data_ptr(), num_threads=torch.get_num_threads(),
        ))
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        (out, lse), (dout,) = outputs, grads
        dq, dk, dv = (torch.empty_like(inp.q) for _ in range(3))
        core = _ext.compiled()
        core.masked_attention_bwd_cpu(core.MaskedAttentionBackward(
            compiled.problem(inp), lengths=inp.lengths.data_ptr(),
            q=inp.q.data_ptr(), k=inp.k.data_ptr(), v=inp.v.data_ptr(),
            out=out.data_ptr(), lse=lse.data_ptr(), dout=dout.data_ptr(),
            dq=dq.data_ptr(), dk=dk.data_ptr(), dv=dv.data_ptr(),
            num_threads=torch.get_num_threads(),
        ))
        return dq, dk, dv
