"""Compiled CUDA backend (``zsar._C``): float32/float16/bfloat16, head dim <= 128.

Kernels run on torch's current stream; outputs and the backward workspace are allocated here
through torch's caching allocator, so the op is safe under CUDA graphs.
"""

from __future__ import annotations

import torch

from ... import _ext
from .._backend import COMPILED_CORE, CUDA_DEVICE, CUDA_KERNELS, Backend, Support
from . import compiled
from .inputs import AttentionInputs


def _execution(inp: AttentionInputs) -> dict:
    device = inp.q.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    return dict(device=index, stream=torch.cuda.current_stream(device).cuda_stream)


class CudaBackend(Backend):
    name = "cuda"
    supports = (
        Support("cuda", (torch.float32, torch.float16, torch.bfloat16),
                requires=(COMPILED_CORE, CUDA_KERNELS, CUDA_DEVICE)),
    )
    max_head_dim = 128
    # The kernels index rows of a (batch, head) slice with 32-bit integers: seq_len * 128 < 2**31.
    max_seq_len = (2**31 - 1) // 128
    mask_kinds = ("rest", "full")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.q.shape[:3], dtype=torch.float32, device=inp.q.device)
        core = _ext.compiled()
        core.masked_attention_fwd_cuda(core.MaskedAttentionForward(
            compiled.problem(inp), lengths=inp.lengths.data_ptr(),
            q=inp.q.data_ptr(), k=inp.k.data_ptr(), v=inp.v.data_ptr(),
            out=out.data_ptr(), lse=lse.data_ptr(), **_execution(inp),
        ))
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        (out, lse), (dout,) = outputs, grads
        dq, dk, dv = (torch.empty_like(inp.q) for _ in range(3))
        workspace = torch.empty(inp.q.shape[:3], dtype=torch.float32, device=inp.q.device)
        core = _ext.compiled()
        core.masked_attention_bwd_cuda(core.MaskedAttentionBackward(
            compiled.problem(inp), lengths=inp.lengths.data_ptr(),
            q=inp.q.data_ptr(), k=inp.k.data_ptr(), v=inp.v.data_ptr(),
            out=out.data_ptr(), lse=lse.data_ptr(), dout=dout.data_ptr(),
            dq=dq.data_ptr(), dk=dk.data_ptr(), dv=dv.data_ptr(),
            workspace=workspace.data_ptr(), **_execution(inp),
        ))
        return dq, dk, dv
