"""C++ backend (``zsar._C``; threads shared by an OpenMP team or its own pool): float32 and float64 on the CPU, one task per (batch, head).

bfloat16 and float16 inputs (e.g. under ``torch.autocast("cpu", torch.bfloat16)``) run the float32
kernels on float32 copies: products and softmax in float32, each output rounded once to the input
dtype (the log-sum-exp stays float32), so such calls get the fused kernels instead of the dense
reference backend. The copies cost a pass over q, k, v (and out, dout in the backward); the kernels
are the float32 ones, so the speed is float32's.

Kinds rest and full run the prefix kernels of ``csrc/cpu/prefix_attention.cpp`` (tuned for ResT's
short sequences: a whole (b, h) slice's L x L probabilities in per-thread scratch, four such
buffers in the backward), so those kinds are refused above the ``attention_scratch_bytes`` limit
(``zsar._limits``) rather than allocating what a long sequence would need; bottleneck runs the
tiled kernels of ``csrc/cpu/tiled_attention.cpp`` (online softmax over key tiles, O(L) memory).
"""

from __future__ import annotations

import dataclasses

import torch

from ... import _ext
from ..._limits import limit
from .._backend import COMPILED_CORE, Backend, Support
from . import compiled
from .inputs import AttentionInputs, accum_dtype


class CpuBackend(Backend):
    name = "cpu"
    supports = (Support("cpu", (torch.float32, torch.float64, torch.bfloat16, torch.float16), requires=(COMPILED_CORE,)),)
    mask_kinds = ("rest", "full", "bottleneck")

    def _reasons(self, inputs):
        yield from super()._reasons(inputs)
        if not hasattr(inputs, "shape") or inputs.mask_kind == "bottleneck":  # tiled kernels: O(L) memory
            return
        b, h, length, _ = inputs.shape
        ld = -(-length // 8) * 8  # the kernels' padded row (csrc/cpu/prefix_attention.cpp, kPad)
        buffers = 4 if any(t.requires_grad for t in (inputs.q, inputs.k, inputs.v)) else 1
        threads = max(1, min(torch.get_num_threads(), b * h))
        need = threads * buffers * length * ld * torch.finfo(_kernel_dtype(inputs.dtype)).bits // 8
        if need > limit("attention_scratch_bytes"):
            yield (f"its {inputs.mask_kind}-mask kernels keep L x L scratch per thread: {need / 2**30:.1f} GiB at "
                   f"L={length} ({threads} threads{', with gradients' if buffers > 1 else ''}), above "
                   f"ZSAR_LIMIT_ATTENTION_SCRATCH_BYTES={limit('attention_scratch_bytes')}")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = inp.q.dtype
        inp = _in_kernel_dtype(inp)
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.q.shape[:3], dtype=accum_dtype(inp.q.dtype))
        _ext.compiled().attention_forward_cpu(
            compiled.forward_args(inp, out, lse, num_threads=torch.get_num_threads())
        )
        return out.to(dtype), lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        dtype = inp.q.dtype
        inp = _in_kernel_dtype(inp)
        work = _kernel_dtype(dtype)
        # Named, so they live until the kernel has run (the call struct holds bare pointers).
        (out, lse), (dout,) = outputs, grads
        out, dout = out.to(work), dout.to(work)
        input_grads = tuple(torch.empty_like(inp.q) for _ in range(3))
        _ext.compiled().attention_backward_cpu(
            compiled.backward_args(inp, (out, lse), (dout,), input_grads, num_threads=torch.get_num_threads())
        )
        return tuple(g.to(dtype) for g in input_grads)


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 and float32 as given, 16-bit floats in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _in_kernel_dtype(inp: AttentionInputs) -> AttentionInputs:
    """``inp`` itself, or a copy whose q, k, v are float32 copies of 16-bit inputs."""
    work = _kernel_dtype(inp.q.dtype)
    if work == inp.q.dtype:
        return inp
    return dataclasses.replace(inp, q=inp.q.to(work), k=inp.k.to(work), v=inp.v.to(work))
