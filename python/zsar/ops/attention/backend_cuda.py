"""Compiled CUDA backend (``zsar._C``): float32/float16/bfloat16, head dim <= 128.

With ``ZSAR_CUDA_MMA=1`` in the environment (read on every call), float16/bfloat16 with a head dim
that is a multiple of 8 run on tensor cores (``mma.sync``, ``csrc/cuda/mma.cuh``): the rest/full
masks with whole (batch, head) slices per CTA up to L = 128. Off by default: those kernels compile
for sm_80/sm_90 (no spills, HMMA in the SASS) but have not yet run on a GPU; ``bench/gpu_check.py``
checks and times both paths, and the default flips once they pass. The bottleneck mask's tiled
kernels (FlashAttention-2 tiles, tensor-core and CUDA-core) are compiled too, but dispatch does not
send that mask here until ``bench/gpu_check.py`` (which runs them regardless) has passed them: it
goes to the Triton backend (see ``mask_kinds``). float32, other head dims and (by default) float16/bfloat16 run
on the CUDA-core kernels, checked on a GPU against the float64 reference.

Kernels run on torch's current stream; outputs and the backward workspace are allocated here
through torch's caching allocator, so the op is safe under CUDA graphs.
"""

from __future__ import annotations

import torch

from ... import _ext
from .._backend import CUDA_DEVICE, CUDA_KERNELS, Backend, Support
from . import compiled
from .inputs import AttentionInputs


def _execution(inp: AttentionInputs) -> dict:
    device = inp.q.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    return dict(device=index, stream=torch.cuda.current_stream(device).cuda_stream)


class CudaBackend(Backend):
    """The compiled CUDA kernels: float32/float16/bfloat16 on a CUDA device, head dim <= 128.

    Serves the rest and full masks only (bottleneck goes to Triton until its tiled kernels pass
    ``bench/gpu_check.py``); tensor cores only with ``ZSAR_CUDA_MMA=1``. See the module docstring.
    """

    name = "cuda"
    supports = (
        # CUDA_KERNELS also says why when the compiled core is missing altogether.
        Support("cuda", (torch.float32, torch.float16, torch.bfloat16), requires=(CUDA_KERNELS, CUDA_DEVICE)),
    )
    max_head_dim = 128
    # The kernels index rows of a (batch, head) slice with 32-bit integers: seq_len * 128 < 2**31.
    max_seq_len = (2**31 - 1) // 128
    # The bottleneck mask's tiled kernels (csrc/cuda/tiled_attention.cu, tensor-core and CUDA-core)
    # compile but have never run on a GPU: until bench/gpu_check.py (which checks them regardless)
    # has passed them against the float64 reference, dispatch leaves that mask to Triton. Add
    # "bottleneck" here once they pass.
    mask_kinds = ("rest", "full")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty_like(inp.q)
        lse = torch.empty(inp.q.shape[:3], dtype=torch.float32, device=inp.q.device)
        _ext.compiled().attention_forward_cuda(compiled.forward_args(inp, out, lse, **_execution(inp)))
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        input_grads = tuple(torch.empty_like(inp.q) for _ in range(3))
        workspace = torch.empty(inp.q.shape[:3], dtype=torch.float32, device=inp.q.device)
        _ext.compiled().attention_backward_cuda(
            compiled.backward_args(inp, outputs, grads, input_grads, workspace, **_execution(inp))
        )
        return input_grads
