"""The front end every attention op shares, written once: its :class:`~zsar.ops._custom_op.FusedOp`
declaration (outputs ``out`` and ``lse``, gradients for ``q, k, v``, every attention backend), the
argument checks and the call, plus the registry of attention ops that ``zsar info`` and
``zsar bench`` list.

An op is its :class:`~.inputs.AttentionInputs` dataclass (its arguments, and which of them are the
mask kind, ``n_fixed`` and ``lengths``: the mask as data, as in flash-attention's varlen interface)
and an :class:`AttentionOp`; its public function documents the arguments and passes them on by
name.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..._registry import Registry
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
ATTENTION_OPS: Registry["AttentionOp"] = Registry("attention op", "op")


class AttentionOp:
    """One registered attention op: the front end its public function calls.

    Args:
        inputs_type: its :class:`AttentionInputs` dataclass; ``inputs_type.op`` is the op's name
            (``torch.ops.zsar.<name>``).
        example: ``example(batch, device, generator)`` -> ``(inputs, description)``: float32 inputs
            at the shape the op is used at (``batch`` None: its usual batch), for ``zsar bench``.
        probe_args: the op's arguments other than ``q, k, v``, the lengths and ``scale`` for
            :meth:`probe` (e.g. a mode flag), when they have no default.

    Raises:
        ValueError: if an op of that name is already registered.
    """

    def __init__(self, inputs_type: type[AttentionInputs], *,
                 example: Callable[[int | None, torch.device, torch.Generator], tuple[AttentionInputs, str]],
                 probe_args: dict | None = None):
        self.name = inputs_type.op
        self.inputs_type = inputs_type
        self.example = example
        self._probe_args = {inputs_type.n_fixed_field: max(1, inputs_type.min_fixed), **(probe_args or {})}
        self.fused = FusedOp(self.name, inputs_type, outputs=("out", "lse"), differentiable_outputs=("out",),
                             differentiable_inputs=("q", "k", "v"), backends=backends())
        #: Backends in dispatch order (fastest first); ``backend=`` forces one by name.
        self.dispatcher = self.fused.dispatcher
        ATTENTION_OPS.register(self.name, self)

    def probe(self, q: torch.Tensor, lengths: torch.Tensor) -> AttentionInputs:
        """Inputs of a small call on ``q``'s device and dtype, to ask every backend whether it could
        serve them (``zsar info``)."""
        return self.inputs_type(q=q, k=q, v=q, scale=0.125, **{self.inputs_type.lengths_field: lengths},
                                **self._probe_args)

    def check_range(self, lengths: torch.Tensor, n_fixed: int, seq_len: int) -> None:
        """Raises ValueError unless ``0 <= lengths <= seq_len - n_fixed``; reads the values (a sync on CUDA)."""
        if lengths.device.type == "cpu" and lengths.numel() <= 256:
            # A small host tensor: a Python list is ~5 us cheaper than aminmax and two item() reads,
            # which matters for the microsecond-sized calls of short sequences.
            values = lengths.tolist()
            lo, hi = (min(values), max(values)) if values else (0, 0)
        else:
            lo, hi = (int(x) for x in torch.aminmax(lengths))
        if lo < 0 or hi > seq_len - n_fixed:
            lengths_name, n_fixed_name = self.inputs_type.lengths_field, self.inputs_type.n_fixed_field
            raise ValueError(
                f"{self.name}: {lengths_name} values must be in [0, L - {n_fixed_name} = "
                f"{seq_len - n_fixed}], got values in [{lo}, {hi}]"
            )

    def __call__(self, q, k, v, *, scale: float | None = None, backend: str | None = None,
                 check_lengths: bool = True, **mask_args) -> torch.Tensor:
        """The op's public call: checks ``scale`` (default ``1 / sqrt(Dh)``) and ``backend``, builds the
        inputs from ``mask_args`` (the op's other fields, by name), validates them, checks the
        lengths' range unless ``check_lengths`` is False (or under ``torch.compile``) and runs the
        op; returns ``out``."""
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1]) if isinstance(q, torch.Tensor) and q.dim() > 0 else 1.0
        elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"{self.name}: scale must be a finite number or None, got {scale!r}")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"{self.name}: backend must be a str or None, got {type(backend).__name__}")
        inputs = self.inputs_type(q=q, k=k, v=v, scale=float(scale), **mask_args)
        inputs.validate()
        if check_lengths and not torch.compiler.is_compiling():
            self.check_range(inputs.lengths, inputs.n_fixed, inputs.seq_len)
        return self.fused(inputs, backend)[0]
