"""What every attention backend is given: ``q, k, v``, a softmax scale and a mask descriptor.

Each attention op has its own :class:`AttentionInputs` dataclass, whose fields are the op's
arguments. It states as data which of them form the mask descriptor that the backends read
(``lengths_field``, ``n_fixed_field``, ``min_fixed`` and ``mask_kind``: flash-attention's varlen
interface style, a mask is a kind plus integers); the checks, output shapes and FLOP counts are
defined here once.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch._subclasses.fake_tensor import FakeTensor

from .._custom_op import OpInputs, TensorSpec
from .masks import MASK_KINDS, MaskKind

__all__ = ["AttentionInputs", "accum_dtype"]


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: the dtype of the saved log-sum-exp and of the
    reference backend's arithmetic."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class AttentionInputs(OpInputs):
    """Base of an attention op's inputs. Subclasses are dataclasses with fields ``q``, ``k``, ``v``,
    the mask arguments and ``scale``, and set the class attributes below.

    ``q, k, v``: contiguous ``(B, H, L, Dh)`` tensors of one floating dtype on one device;
    the lengths: contiguous int32 ``(B,)`` on the same device.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float

    #: The op's name (``torch.ops.zsar.<op>``), used in error messages.
    op: ClassVar[str]
    #: The field holding the per-sample lengths of the mask (int32 ``(B,)``).
    lengths_field: ClassVar[str]
    #: The field holding the tokens every sample has (an int in ``[min_fixed, L]``).
    n_fixed_field: ClassVar[str]
    min_fixed: ClassVar[int] = 0

    @property
    def mask_kind(self) -> str:
        """The :data:`~.masks.MASK_KINDS` name; a class attribute, or a property of the op's flags."""
        raise NotImplementedError

    @property
    def n_fixed(self) -> int:
        return getattr(self, self.n_fixed_field)

    @property
    def lengths(self) -> torch.Tensor:
        return getattr(self, self.lengths_field)

    def validate(self) -> None:
        """Checks ``q, k, v``, ``scale`` and the mask arguments (no tensor values are read), then the
        op's own parameters (:meth:`check_params`).

        Raises:
            TypeError / ValueError: naming the argument.
        """
        q, lengths, n_fixed = self.q, self.lengths, self.n_fixed
        # One combined test for the usual, valid call (this runs on every call; the checks one by
        # one cost ~8 us of a short sequence's ~100 us forward, bench/RESULTS.md session 13); the
        # checks below find what is wrong when it fails.
        if (
            self._usual_qkv() and type(lengths) is torch.Tensor and lengths.dtype == torch.int32
            and lengths.dim() == 1 and lengths.shape[0] == q.shape[0] and lengths.device == q.device
            and lengths.is_contiguous() and type(n_fixed) is int and self.min_fixed <= n_fixed <= q.shape[2]
        ):
            self.check_params()
            return
        self.check_qkv(self.op)
        self.check_fixed(self.op, self.n_fixed_field, n_fixed, self.min_fixed)
        self.check_lengths(self.op, self.lengths_field, lengths)
        self.check_params()

    def check_params(self) -> None:
        """Checks the op's parameters beyond the mask descriptor (none by default)."""

    @property
    def mask(self) -> MaskKind:
        return MASK_KINDS[self.mask_kind]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def seq_len(self) -> int:
        return self.q.shape[2]

    @property
    def head_dim(self) -> int:
        return self.q.shape[3]

    # ---- semantics shared by the attention ops ----------------------------------------------------

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """``out`` like ``q``; ``lse`` ``(B, H, L)`` in :func:`accum_dtype`."""
        q = self.q
        return TensorSpec(tuple(q.shape), q.dtype), TensorSpec(tuple(q.shape[:3]), accum_dtype(q.dtype))

    def attended_pairs(self) -> int:
        """(query, key) pairs the mask allows, summed over the batch, for one head.

        Exact when ``lengths`` holds real values; for fake/meta tensors (under torch.compile or a
        meta-device FLOP count) every sample is assumed to have the maximum length.
        """
        lengths, n_fixed, seq_len = self.lengths, self.n_fixed, self.seq_len
        if isinstance(lengths, FakeTensor) or lengths.device.type == "meta":
            counts = [seq_len - n_fixed] * lengths.shape[0]
        else:
            counts = self.mask.clamp(lengths, n_fixed, seq_len).tolist()
        return self.mask.pairs(counts, n_fixed, seq_len)

    def flops(self) -> int:
        _, H, _, D = self.q.shape
        return 2 * 2 * H * D * self.attended_pairs()  # QK^T and PV

    def backward_flops(self) -> int:
        _, H, _, D = self.q.shape
        return 5 * 2 * H * D * self.attended_pairs()  # recompute QK^T, dV, dP, dQ, dK

    def _usual_qkv(self) -> bool:
        """``q, k, v`` and ``scale`` pass :meth:`check_qkv`, in one combined test (the usual call)."""
        q, k, v, scale = self.q, self.k, self.v, self.scale
        return (
            isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
            and q.dim() == 4 and q.is_floating_point() and k.shape == q.shape and v.shape == q.shape
            and k.dtype == q.dtype and v.dtype == q.dtype and k.device == q.device and v.device == q.device
            and q.numel() > 0 and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
            and type(scale) is float and math.isfinite(scale)
        )

    def check_qkv(self, op: str) -> None:
        """Checks ``q, k, v`` and ``scale`` (no tensor values are read).

        Raises:
            TypeError / ValueError: naming the argument.
        """
        if self._usual_qkv():
            return
        q, k, v, scale = self.q, self.k, self.v, self.scale
        for name, t in (("q", q), ("k", self.k), ("v", self.v)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(f"{op}: {name} must have shape (B, H, L, Dh), got {t.dim()} dims {tuple(t.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        for name, t in (("k", self.k), ("v", self.v)):
            if t.shape != q.shape:
                raise ValueError(f"{op}: {name} has shape {tuple(t.shape)}, expected the shape of q {tuple(q.shape)}")
            if t.dtype != q.dtype:
                raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected the dtype of q ({q.dtype})")
            if t.device != q.device:
                raise ValueError(f"{op}: {name} is on {t.device}, expected the device of q ({q.device})")
        if q.numel() == 0:
            raise ValueError(f"{op}: q, k, v must not be empty, got shape {tuple(q.shape)}")
        for name, t in (("q", q), ("k", self.k), ("v", self.v)):
            if not t.is_contiguous():
                raise ValueError(f"{op}: {name} must be contiguous; call .contiguous() first")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be a finite number, got {scale!r}")

    def check_fixed(self, op: str, name: str, value, low: int) -> None:
        """Checks the fixed token count of a mask (an int in ``[low, L]``)."""
        L = self.q.shape[2]
        if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
            raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
        if not low <= value <= L:
            raise ValueError(f"{op}: {name} must be in [{low}, L={L}], got {value}")

    def check_lengths(self, op: str, name: str, lengths) -> None:
        """Checks a per-sample count tensor: int32 ``(B,)``, contiguous, on the device of ``q``."""
        B = self.q.shape[0]
        if not isinstance(lengths, torch.Tensor):
            raise TypeError(f"{op}: {name} must be an int32 tensor of shape ({B},), got {type(lengths).__name__}")
        if lengths.dtype != torch.int32:
            raise TypeError(f"{op}: {name} must have dtype torch.int32, got {lengths.dtype}")
        if lengths.shape != (B,):
            raise ValueError(f"{op}: {name} must have shape ({B},) (one count per sample), got {tuple(lengths.shape)}")
        if lengths.device != self.q.device:
            raise ValueError(f"{op}: {name} is on {lengths.device}, expected the device of q ({self.q.device})")
        if not lengths.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous; call .contiguous() first")
