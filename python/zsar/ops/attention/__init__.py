"""Fused attention kernels shared by zsar's attention ops: mask kinds, inputs and backends.

The backends (``cuda``, ``cpu``, ``triton``, ``reference``) serve every attention op whose inputs
map onto a mask kind they implement (:mod:`.masks`); each op (``zsar.ops.rest_attention`` for
``masked_attention``) defines its arguments and semantics in an :class:`AttentionInputs` subclass.
"""

from .backend_cpu import CpuBackend
from .backend_cuda import CudaBackend
from .backend_reference import ReferenceBackend
from .backend_triton import TritonBackend
from .inputs import AttentionInputs, accum_dtype
from .masks import MASK_KINDS, MaskKind, key_end

__all__ = [
    "AttentionInputs", "CpuBackend", "CudaBackend", "MASK_KINDS", "MaskKind", "ReferenceBackend",
    "TritonBackend", "accum_dtype", "backends", "key_end",
]


def backends() -> list:
    """New instances of every attention backend, fastest first (the dispatch order)."""
    return [CudaBackend(), CpuBackend(), TritonBackend(), ReferenceBackend()]
