"""Fused attention kernels shared by zsar's attention ops: mask kinds, inputs and backends.

The backends (``cuda``, ``cpu``, ``triton``, ``reference``) serve every attention op whose inputs
map onto a mask kind they implement (:mod:`.masks`); each op (``zsar.ops.masked_attention``,
``zsar.ops.bottleneck_attention``) defines its arguments and semantics in an
:class:`AttentionInputs` subclass and registers an :class:`AttentionOp` (:mod:`.op`: the shared
front end and the registry :data:`ATTENTION_OPS`).
"""

from .backend_cpu import CpuBackend
from .backend_cuda import CudaBackend
from .backend_reference import ReferenceBackend
from .backend_triton import TritonBackend
from .inputs import AttentionInputs, accum_dtype
from .masks import MASK_KINDS, MaskKind, key_end
from .op import ATTENTION_OPS, AttentionOp, backends

__all__ = [
    "ATTENTION_OPS", "AttentionInputs", "AttentionOp", "CpuBackend", "CudaBackend", "MASK_KINDS", "MaskKind",
    "ReferenceBackend", "TritonBackend", "accum_dtype", "backends", "key_end",
]
