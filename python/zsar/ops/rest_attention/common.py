"""Inputs and backend interface shared by the ``masked_attention`` backends."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._dispatch import Backend

MAX_HEAD_DIM = 128


@dataclass(frozen=True)
class AttentionInputs:
    """Validated inputs of one ``masked_attention`` call.

    ``q, k, v``: contiguous ``(B, H, L, Dh)`` tensors of one dtype on one device.
    ``n_text``: contiguous int32 ``(B,)`` on the same device, values in ``[0, L - n_visual]``.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    n_text: torch.Tensor
    n_visual: int
    full: bool
    scale: float

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def device(self) -> torch.device:
        return self.q.device


class MaskedAttentionBackend(Backend[AttentionInputs]):
    """A ``masked_attention`` backend: forward returns ``(out, lse)``; backward the input grads.

    ``out`` has the dtype of ``q``; ``lse`` is ``(B, H, L)`` in :func:`accum_dtype` (the log-sum-exp
    of the scaled scores per query row, 0 on padding rows). Padding rows of ``out`` and of every gradient are 0.
    Backends never return tensors that alias their inputs.
    """

    name: str

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def backward(
        self, inp: AttentionInputs, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: the dtype of the saved log-sum-exp and of the
    reference backend's arithmetic."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def key_end(seq_len: int, n_visual: int, n_text: torch.Tensor, full: bool) -> torch.Tensor:
    """``(B, L)`` number of keys each query attends to (a prefix ``[0, key_end)``; 0 = padding row).

    The torch twin of ``masked_attention_key_end`` in ``csrc/include/zsar/masked_attention.h``.
    """
    i = torch.arange(seq_len, device=n_text.device, dtype=torch.int64)[None, :]
    n_valid = (n_visual + n_text.to(torch.int64))[:, None]
    if full:
        end = n_valid.expand(-1, seq_len)
    else:
        end = torch.where(i < n_visual, torch.full_like(i, n_visual), i + 1)
        end = end.expand(n_text.shape[0], -1)
    return torch.where(i < n_valid, end, torch.zeros_like(end))
