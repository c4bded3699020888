"""The argument structs of the compiled core (``csrc/include/zsar/masked_attention.h``), filled from
:class:`~zsar.ops.attention.inputs.AttentionInputs`. Shared by the ``cpu`` and ``cuda`` backends."""

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
    mask = core.AttentionMask(core.MaskKind(mask_code), n_fixed)
    return core.AttentionProblem(batch, heads, seq_len, head_dim, scale, getattr(core.ScalarType, _SCALAR_TYPES[dtype]),
                                 mask)


def problem(inp: AttentionInputs):
    """``zsar._C.AttentionProblem`` of a call: sizes, dtype, scale, mask kind and ``n_fixed``.

    Built once per distinct problem (a layer calls with the same one every step) and never
    mutated: each call struct copies it and adds the tensor addresses, the lengths' among them.
    """
    B, H, L, D = inp.q.shape
    return _problem(B, H, L, D, inp.scale, inp.q.dtype, inp.mask.code, inp.n_fixed)
