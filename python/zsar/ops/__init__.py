"""Fused ops of zsar, each a ``torch.library`` custom op with several backends."""

from ._dispatch import BackendUnavailableError
from .masked_attention import masked_attention

__all__ = ["BackendUnavailableError", "masked_attention"]
