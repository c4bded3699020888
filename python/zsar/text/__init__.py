"""Label text: word splitting, the label-word vocabulary (and, later, semantic embedders)."""

from .vocab import SPECIAL_TOKENS, WordVocab, split_label

__all__ = ["SPECIAL_TOKENS", "WordVocab", "split_label"]
