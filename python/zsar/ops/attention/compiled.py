"""The argument structs of the compiled core (``csrc/include/zsar/attention.h``), filled from
:class:`~zsar.ops.attention.inputs.AttentionInputs` and the buffers a backend allocated. Shared by
the ``cpu`` and ``cuda`` backends; ``execution`` is ``num_threads=`` (CPU) or ``device=, stream=``
(CUDA), both passed on positionally."""

from __future__ import annotations

import functools

import torch

from ... import _ext
from .inputs import AttentionInputs

_SCALAR_TYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                 torch.float64: "float64"}


@functools.lru_cache(maxsize=256)
def _problem(batch: int, heads: int, seq_len: int, head_dim: int, scale: float, dtype: torch.dtype,
             mask_code: int, n_fixed: int):
    core = _ext.compiled()
    return core.AttentionProblem(
        batch=batch, heads=heads, seq_len=seq_len, head_dim=head_dim, scale=scale,
        dtype=getattr(core.ScalarType, _SCALAR_TYPES[dtype]),
        mask=core.AttentionMask(kind=core.MaskKind(mask_code), n_fixed=n_fixed),
    )


def problem(inp: AttentionInputs):
    """``zsar._C.AttentionProblem`` of a call: sizes, dtype, scale, mask kind and ``n_fixed``.

    Built once per distinct problem (a layer calls with the same one every step) and never
    mutated: each call struct copies it and adds the tensor addresses, the lengths' among them.
    """
    B, H, L, D = inp.q.shape
    return _problem(B, H, L, D, inp.scale, inp.q.dtype, inp.mask.code, inp.n_fixed)


def forward_args(inp: AttentionInputs, out: torch.Tensor, lse: torch.Tensor, num_threads: int = 0, device: int = 0,
                 stream: int = 0):
    """``zsar._C.AttentionForward`` of one call; ``num_threads`` for the CPU, ``device, stream`` for CUDA."""
    # Positional: pybind11 matches keyword arguments by name on every call (~1 us of a short
    # sequence's ~50 us forward).
    return _ext.compiled().AttentionForward(
        problem(inp), inp.lengths.data_ptr(), inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), out.data_ptr(),
        lse.data_ptr(), num_threads, device, stream,
    )


def backward_args(inp: AttentionInputs, outputs, grads, input_grads, workspace: torch.Tensor | None = None,
                  num_threads: int = 0, device: int = 0, stream: int = 0):
    """``zsar._C.AttentionBackward`` of one call: ``outputs = (out, lse)``, ``grads = (dout,)``,
    ``input_grads = (dq, dk, dv)`` (written by the kernels); execution as :func:`forward_args`."""
    (out, lse), (dout,), (dq, dk, dv) = outputs, grads, input_grads
    return _ext.compiled().AttentionBackward(
        problem(inp), inp.lengths.data_ptr(), inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), out.data_ptr(),
        lse.data_ptr(), dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
        0 if workspace is None else workspace.data_ptr(), num_threads, device, stream,
    )
