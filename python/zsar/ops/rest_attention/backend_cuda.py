"""Compiled CUDA backend (``zsar._C``): float32/float16/bfloat16, head dim <= 128.

Kernels run on torch's current stream; outputs and the backward workspace are allocated here
through torch's caching allocator, so the op is safe under CUDA graphs.
"""

from __future__ import annotations

import torch

from ... import _ext
from .backend_cpu import shape_args
from .common import MAX_HEAD_DIM, AttentionInputs, MaskedAttentionBackend


class CudaBackend(MaskedAttentionBackend):
    name = "cuda"
    dtypes = (torch.float32, torch.float16, torch.bfloat16)

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        reasons = []
        info = _ext.build_info()
        if not info["available"]:
            reasons.append(info["error"])
        elif not info["cuda"]:
            reasons.append("zsar was built without CUDA kernels (no nvcc at build time or ZSAR_CUDA=OFF)")
        if inp.device.type != "cuda":
            reasons.append(f"tensors are on {inp.device.type}, this backend needs a CUDA device")
        if inp.dtype not in self.dtypes:
            reasons.append(f"dtype {inp.dtype} unsupported (float32, float16, bfloat16)")
        if inp.shape[3] > MAX_HEAD_DIM:
            reasons.append(f"head dim {inp.shape[3]} > {MAX_HEAD_DIM}")
        return reasons

    @staticmethod
    def _launch_args(inp: AttentionInputs) -> tuple:
        device = inp.device.index if inp.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(inp.device).cuda_stream
        return (*shape_args(inp), device, stream)

    def forward(self, inp):
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.shape[:3], dtype=torch.float32, device=inp.device)
        _ext.compiled().masked_attention_fwd_cuda(
            inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), inp.n_text.data_ptr(),
            out.data_ptr(), lse.data_ptr(), *self._launch_args(inp),
        )
        return out, lse

    def backward(self, inp, out, lse, dout):
        dq, dk, dv = (torch.empty_like(inp.q) for _ in range(3))
        delta = torch.empty(inp.shape[:3], dtype=torch.float32, device=inp.device)
        _ext.compiled().masked_attention_bwd_cuda(
            inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), inp.n_text.data_ptr(),
            out.data_ptr(), lse.data_ptr(), dout.data_ptr(),
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), delta.data_ptr(), *self._launch_args(inp),
        )
        return dq, dk, dv
