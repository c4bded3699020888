"""The argument structs of the compiled core (``csrc/include/zsar/masked_attention.h``), filled from
:class:`~zsar.ops.attention.inputs.AttentionInputs`. Shared by the ``cpu`` and ``cuda`` backends."""

from __future__ import annotations

import functools

import torch

from ... import _ext
from .inputs import AttentionInputs

_SCALAR_TYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                      torch.float64: "float64"}


@functools.cache
def _enums():
    core = _ext.compiled()
    scalar_types = {dtype: getattr(core.ScalarType, name) for dtype, name in _SCALAR_TYPE_NAMES.items()}
    return scalar_types, core.MaskKind


def problem(inp: AttentionInputs):
    """``zsar._C.AttentionProblem`` of one call: sizes, dtype, scale and the mask descriptor."""
    core = _ext.compiled()
    scalar_types, mask_kinds = _enums()
    B, H, L, D = inp.q.shape
    mask = core.AttentionMask(kind=mask_kinds(inp.mask.code), n_fixed=inp.n_fixed, lengths=inp.lengths.data_ptr())
    return core.AttentionProblem(batch=B, heads=H, seq_len=L, head_dim=D, scale=inp.scale,
                                 dtype=scalar_types[inp.q.dtype], mask=mask)
