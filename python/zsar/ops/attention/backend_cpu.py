"""C++ backend (``zsar._C``; threads shared by an OpenMP team or its own pool): float32 and float64 on the CPU.

The prefix kernels (rest, full) run one task per (batch, head); the tiled kernels (bottleneck) run
the forward per (batch, head, block of queries) and the backward per (batch, head, chunk of key
tiles), a chunk being the whole slice when there are enough slices for every thread, so one or two
samples still keep every core busy.

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
    """The compiled CPU kernels: float32/float64 (16-bit inputs through float32 copies), every mask kind.

    Refuses rest/full calls whose L x L scratch (per thread, summed) exceeds ``attention_scratch_bytes``;
    bottleneck has no such limit (O(L) memory). See the module docstring.
    """

    name = "cpu"
    supports = (Support("cpu", (torch.float32, torch.float64, torch.bfloat16, torch.float16), requires=(COMPILED_CORE,)),)
    mask_kinds = ("rest", "full", "bottleneck")

    def _reasons(self, inputs):
        yield from super()._reasons(inputs)
        if inputs.mask_kind == "bottleneck" or not hasattr(inputs, "shape"):  # tiled kernels: O(L) memory
            return
        b, h, length, _ = inputs.shape
        ld = -(-length // 8) * 8  # the kernels' padded row (csrc/cpu/prefix_attention.cpp, kPad)
        buffers = 4 if any(t.requires_grad for t in (inputs.q, inputs.k, inputs.v)) else 1
        threads = max(1, min(torch.get_num_threads(), b * h))
        need = threads * buffers * length * ld * (8 if inputs.dtype == torch.float64 else 4)  # 16-bit: float32 copies
        if need > limit("attention_scratch_bytes"):
            yield (f"its {inputs.mask_kind}-mask kernels keep L x L scratch per thread: {need / 2**30:.1f} GiB at "
                   f"L={length} ({threads} threads{', with gradients' if buffers > 1 else ''}), above "
                   f"ZSAR_LIMIT_ATTENTION_SCRATCH_BYTES={limit('attention_scratch_bytes')}")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        if inp.q.dtype in _KERNEL_DTYPES:
            return self._forward(inp)
        out, lse = self._forward(_in_float32(inp))
        return out.to(inp.q.dtype), lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        if inp.q.dtype in _KERNEL_DTYPES:
            return self._backward(inp, outputs, grads)
        (out, lse), (dout,) = outputs, grads
        input_grads = self._backward(_in_float32(inp), (out.float(), lse), (dout.float(),))
        return tuple(g.to(inp.q.dtype) for g in input_grads)

    # The kernels' calls. Every tensor they read is referenced by an argument until the call returns
    # (the call structs hold bare pointers).
    def _forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        q = inp.q
        B, H, L, _ = q.shape
        out = torch.empty_like(q)
        lse = torch.empty(B, H, L, dtype=accum_dtype(q.dtype))  # (sizes as ints: ~1 us less than a torch.Size)
        _ext.compiled().attention_forward_cpu(compiled.forward_args(inp, out, lse, torch.get_num_threads()))
        return out, lse

    def _backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        input_grads = tuple(torch.empty_like(inp.q) for _ in range(3))
        _ext.compiled().attention_backward_cpu(
            compiled.backward_args(inp, outputs, grads, input_grads, None, torch.get_num_threads())
        )
        return input_grads


#: The dtypes the kernels compute in; other floats (bfloat16, float16) run in float32.
_KERNEL_DTYPES = (torch.float32, torch.float64)


def _in_float32(inp: AttentionInputs) -> AttentionInputs:
    """A copy of ``inp`` whose q, k, v are float32 copies (of 16-bit inputs)."""
    return dataclasses.replace(inp, q=inp.q.float(), k=inp.k.float(), v=inp.v.float())
