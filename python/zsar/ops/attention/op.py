"""The front end every attention op shares, written once: its :class:`~zsar.ops._custom_op.FusedOp`
declaration (outputs ``out`` and ``lse``, gradients for ``q, k, v``, every attention backend), the
argument checks and the call, plus the registry of attention ops that ``zsar info`` and
``zsar bench`` list.

An op is its :class:`~.inputs.AttentionInputs` dataclass (its arguments mapped onto a mask kind,
``n_fixed`` and ``lengths``: the mask as data, as in flash-attention's varlen interface) and an
:class:`AttentionOp`; its public function only turns keyword arguments into those inputs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._custom_op import FusedOp
from .backend_cpu import CpuBackend
from .backend_cuda import CudaBackend
from .backend_reference import ReferenceBackend
from .backend_triton import TritonBackend
from .inputs import AttentionInputs

__all__ = ["ATTENTION_OPS", "AttentionOp", "backends"]


def backends() -> list:
    """New instances of every attention backend, fastest first (the dispatch order)."""
    return [CudaBackend(), CpuBackend(), TritonBackend(), ReferenceBackend()]


#: name -> :class:`AttentionOp`, in registration order.
ATTENTION_OPS: dict[str, "AttentionOp"] = {}


class AttentionOp:
    """One registered attention op.

    Args:
        name: the op's name (``torch.ops.zsar.<name>``).
        inputs_type: its :class:`AttentionInputs` dataclass.
        lengths_name, n_fixed_name: what the op calls ``lengths`` and ``n_fixed`` (error messages).
        probe: ``probe(q, lengths)`` -> inputs of a small call on ``q``'s device and dtype, used to
            ask every backend whether it could serve them (``zsar info``).
        example: ``example(batch, device, generator)`` -> ``(inputs, description)``: float32 inputs
            at the shape the op is used at (``batch`` None: its usual batch), for ``zsar bench``.
    """

    def __init__(self, name: str, inputs_type: type[AttentionInputs], *, lengths_name: str, n_fixed_name: str,
                 probe: Callable[[torch.Tensor, torch.Tensor], AttentionInputs],
                 example: Callable[[int | None, torch.device, torch.Generator], tuple[AttentionInputs, str]]):
        if name in ATTENTION_OPS:
            raise ValueError(f"attention op {name!r} is already registered")
        self.name = name
        self.inputs_type = inputs_type
        self.lengths_name = lengths_name
        self.n_fixed_name = n_fixed_name
        self.probe = probe
        self.example = example
        self.fused = FusedOp(name, inputs_type, outputs=("out", "lse"), differentiable_outputs=("out",),
                             differentiable_inputs=("q", "k", "v"), backends=backends())
        #: Backends in dispatch order (fastest first); ``backend=`` forces one by name.
        self.dispatcher = self.fused.dispatcher
        ATTENTION_OPS[name] = self

    def check_range(self, lengths: torch.Tensor, n_fixed: int, seq_len: int) -> None:
        """Raises ValueError unless ``0 <= lengths <= seq_len - n_fixed``; reads the values (a sync on CUDA)."""
        lo, hi = (int(x) for x in torch.aminmax(lengths))
        if lo < 0 or hi > seq_len - n_fixed:
            raise ValueError(
                f"{self.name}: {self.lengths_name} values must be in [0, L - {self.n_fixed_name} = "
                f"{seq_len - n_fixed}], got values in [{lo}, {hi}]"
            )

    def __call__(self, q, scale: float | None, backend: str | None, check_range: bool,
                 make_inputs: Callable[[float], AttentionInputs]) -> torch.Tensor:
        """Checks ``scale`` and ``backend``, builds the inputs (``make_inputs(scale)``), validates them,
        checks the lengths' range unless ``check_range`` is False (or under ``torch.compile``) and
        runs the op; returns ``out``."""
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1]) if isinstance(q, torch.Tensor) and q.dim() > 0 else 1.0
        elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"{self.name}: scale must be a finite number or None, got {scale!r}")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"{self.name}: backend must be a str or None, got {type(backend).__name__}")
        inputs = make_inputs(float(scale))
        inputs.validate()
        if check_range and not torch.compiler.is_compiling():
            self.check_range(inputs.lengths, inputs.n_fixed, inputs.seq_len)
        return self.fused(inputs, backend)[0]
