"""Mask kinds of the fused attention kernels: which (query, key) pairs each sample attends.

A mask is a kind plus integers (never an ``L x L`` tensor): ``n_fixed`` (tokens every sample has)
and ``lengths`` (an int32 ``(B,)`` per-sample count), the same descriptor the compiled core takes
(``AttentionMask`` in ``csrc/include/zsar/attention.h``, which states the kinds for the
kernels). Lengths are clamped to ``[0, L - n_fixed]`` by every backend, so a bad value can never
index out of bounds.

This module is the torch statement of each kind, used by the reference backend, the FLOP formulas
and the tests. A new kind is a :class:`MaskKind` subclass registered in :data:`MASK_KINDS` (with
the ``code`` of its ``zsar::MaskKind`` value) plus its kernels; backends list the kinds they
implement in ``mask_kinds``.
"""

from __future__ import annotations

import torch

__all__ = ["MASK_KINDS", "MaskKind", "key_end"]


class MaskKind:
    """One mask kind. Subclasses set ``name`` and ``code`` and implement :meth:`valid`, :meth:`allowed`
    and :meth:`pairs`."""

    name: str
    code: int  # the zsar::MaskKind value in csrc/include/zsar/attention.h

    def clamp(self, lengths: torch.Tensor, n_fixed: int, seq_len: int) -> torch.Tensor:
        """``lengths`` as int64, clamped to ``[0, seq_len - n_fixed]`` like the kernels do."""
        return lengths.to(torch.int64).clamp(0, seq_len - n_fixed)

    def valid(self, seq_len: int, n_fixed: int, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool: the sample's valid (non-padding) positions."""
        raise NotImplementedError

    def allowed(self, seq_len: int, n_fixed: int, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, L, L)`` bool: query ``i`` attends key ``j``."""
        raise NotImplementedError

    def pairs(self, counts: list[int], n_fixed: int, seq_len: int) -> int:
        """Attended (query, key) pairs summed over samples with the given clamped lengths."""
        raise NotImplementedError


class _PrefixMaskKind(MaskKind):
    """Kinds whose sample has valid tokens ``[0, n_fixed + length)`` and whose queries attend a
    prefix ``[0, key_end(i))`` of the keys (what the kernels exploit)."""

    full: bool

    def valid(self, seq_len, n_fixed, lengths):
        i = torch.arange(seq_len, device=lengths.device)
        return i[None, :] < (n_fixed + self.clamp(lengths, n_fixed, seq_len))[:, None]

    def allowed(self, seq_len, n_fixed, lengths):
        end = key_end(seq_len, n_fixed, lengths, self.full)
        j = torch.arange(seq_len, device=end.device)
        return j[None, None, :] < end[:, :, None]

    def pairs(self, counts, n_fixed, seq_len):
        if self.full:
            return sum((n_fixed + n) ** 2 for n in counts)
        # visual rows see n_fixed keys; word row r (1-based) sees n_fixed + r keys
        return sum(n_fixed * n_fixed + n * n_fixed + n * (n + 1) // 2 for n in counts)


class RestMask(_PrefixMaskKind):
    """ResT: ``n_fixed`` visual tokens (CLS + frames) see only each other; word ``i`` sees every
    visual token and the words up to and including itself."""

    name, code, full = "rest", 0, False


class FullMask(_PrefixMaskKind):
    """Every valid token sees every valid token (ResT's Table 3(c) ablation)."""

    name, code, full = "full", 1, True


class BottleneckMask(MaskKind):
    """MZST's attention bottlenecks: the valid tokens of a sample are its stream's prefix
    ``[0, length)`` and the ``n_fixed`` fusion tokens at the end ``[L - n_fixed, L)``; every valid
    token sees every valid token (``n_fixed`` may be 0: plain key padding)."""

    name, code = "bottleneck", 2

    def valid(self, seq_len, n_fixed, lengths):
        i = torch.arange(seq_len, device=lengths.device)
        length = self.clamp(lengths, n_fixed, seq_len)
        return (i[None, :] < length[:, None]) | (i[None, :] >= seq_len - n_fixed)

    def allowed(self, seq_len, n_fixed, lengths):
        valid = self.valid(seq_len, n_fixed, lengths)
        return valid[:, :, None] & valid[:, None, :]

    def pairs(self, counts, n_fixed, seq_len):
        return sum((n + n_fixed) ** 2 for n in counts)


MASK_KINDS: dict[str, MaskKind] = {kind.name: kind for kind in (RestMask(), FullMask(), BottleneckMask())}


def key_end(seq_len: int, n_visual: int, n_text: torch.Tensor, full: bool) -> torch.Tensor:
    """``(B, L)`` number of keys each query attends to (a prefix ``[0, key_end)``; 0 = padding row).

    The torch twin of ``SampleMask::key_end`` in ``csrc/include/zsar/attention.h``; ``n_text``
    is clamped to ``[0, L - n_visual]`` like the kernels clamp it.
    """
    i = torch.arange(seq_len, device=n_text.device, dtype=torch.int64)[None, :]
    n_valid = (n_visual + n_text.to(torch.int64).clamp(0, seq_len - n_visual))[:, None]
    if full:
        end = n_valid.expand(-1, seq_len)
    else:
        end = torch.where(i < n_visual, torch.full_like(i, n_visual), i + 1)
        end = end.expand(n_text.shape[0], -1)
    return torch.where(i < n_valid, end, torch.zeros_like(end))
