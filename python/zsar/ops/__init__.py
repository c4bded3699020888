"""Fused ops of zsar, each a ``torch.library`` custom op with several backends."""

from ._dispatch import BackendUnavailableError
from .rest_attention import check_n_text_range, masked_attention

__all__ = ["BackendUnavailableError", "check_n_text_range", "masked_attention"]
