"""C++/OpenMP backend (``zsar._C``): float32 and float64 on the CPU, one task per (batch, head).

Kinds rest and full run the prefix kernels of ``csrc/cpu/prefix_attention.cpp`` (tuned for ResT's
short sequences); bottleneck runs the tiled kernels of ``csrc/cpu/tiled_attention.cpp`` (online
softmax over key tiles, O(L) memory).
"""

from __future__ import annotations

import torch

from ... import _ext
from .._backend import COMPILED_CORE, Backend, Support
from . import compiled
from .inputs import AttentionInputs, accum_dtype


class CpuBackend(Backend):
    name = "cpu"
    supports = (Support("cpu", (torch.float32, torch.float64), requires=(COMPILED_CORE,)),)
    mask_kinds = ("rest", "full", "bottleneck")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.q.shape[:3], dtype=accum_dtype(inp.q.dtype))
        _ext.compiled().attention_forward_cpu(
            compiled.forward_args(inp, out, lse, num_threads=torch.get_num_threads())
        )
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        input_grads = tuple(torch.empty_like(inp.q) for _ in range(3))
        _ext.compiled().attention_backward_cpu(
            compiled.backward_args(inp, outputs, grads, input_grads, num_threads=torch.get_num_threads())
        )
        return input_grads
