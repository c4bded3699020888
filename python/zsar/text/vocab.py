"""Label words and the word-level vocabulary of ResT's masked-token task."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

PAD, MASK, UNK = "[PAD]", "[MASK]", "[UNK]"
SPECIAL_TOKENS = (PAD, MASK, UNK)

# CamelCase boundaries ("ApplyEyeMakeup" -> Apply Eye Makeup, "YoYo" -> Yo Yo, "PlayingTabla") and
# runs of capitals followed by a word ("TVShow" -> TV Show).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s_\-/,]+")


def split_label(label: str) -> list[str]:
    """Lower-cased words of a class label, splitting CamelCase, underscores, hyphens and spaces.

    >>> split_label("ApplyEyeMakeup"), split_label("brush_hair"), split_label("playing cello")
    (['apply', 'eye', 'makeup'], ['brush', 'hair'], ['playing', 'cello'])
    """
    words = []
    for part in _SEPARATORS.split(label.strip()):
        words += [w.lower() for w in _CAMEL.split(part) if w]
    return [w for w in (re.sub(r"[^\w']", "", w) for w in words) if w]


class WordVocab:
    """Word-level vocabulary built from training labels, plus ``[PAD] [MASK] [UNK]``.

    Ids 0, 1, 2 are the special tokens; words follow in first-seen order, so a vocabulary built
    from the same labels is always the same (and round-trips through :meth:`to_list`).
    """

    def __init__(self, words: Iterable[str]):
        self.itos: list[str] = list(SPECIAL_TOKENS)
        self.stoi = {w: i for i, w in enumerate(self.itos)}  # membership in O(1): 3M words in seconds
        for w in words:
            if w not in self.stoi:
                self.stoi[w] = len(self.itos)
                self.itos.append(w)

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "WordVocab":
        return cls(w for label in labels for w in split_label(label))

    @classmethod
    def from_list(cls, itos: Sequence[str]) -> "WordVocab":
        if list(itos[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}, got {list(itos[:3])}")
        return cls(itos[len(SPECIAL_TOKENS):])

    def to_list(self) -> list[str]:
        return list(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    pad_id, mask_id, unk_id = 0, 1, 2

    def encode(self, label: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in split_label(label)]

    def encode_batch(self, labels: Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids (B, max_words) int64 padded with [PAD], n_words (B,) int32)``; longer labels are cut."""
        ids = torch.full((len(labels), max_words), self.pad_id, dtype=torch.int64)
        lengths = torch.zeros(len(labels), dtype=torch.int32)
        for b, label in enumerate(labels):
            words = self.encode(label)[:max_words]
            ids[b, : len(words)] = torch.tensor(words, dtype=torch.int64)
            lengths[b] = len(words)
        return ids, lengths


def mask_words(word_ids: torch.Tensor, n_words: torch.Tensor, mask_prob: float,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking of label words for a masked-token loss (ResT's MTL, MZST's MLM).

    Each valid word (position < ``n_words``) is replaced by ``[MASK]`` with probability
    ``mask_prob``, and at least one word per sample that has words (the one with the smallest draw).
    The draws come from ``generator`` on the CPU, so a seeded or resumed run masks the same words
    on any device.

    Args:
        word_ids: ``(B, W)`` int64 word ids.
        n_words: ``(B,)`` number of valid words per row.
        mask_prob: probability of masking each valid word, in [0, 1].
        generator: CPU generator for the draws (None: the global one).

    Returns:
        ``(masked_ids, targets)``: the ids with ``[MASK]`` put in, and the original ids at the
        masked positions with ``-100`` (cross-entropy's ignore index) elsewhere.
    """
    B, W = word_ids.shape
    device = word_ids.device
    n_words = n_words.to(device)
    valid = torch.arange(W, device=device)[None, :] < n_words[:, None]
    draw = torch.rand(B, W, generator=generator, device="cpu")
    # A copy from pageable memory makes the host wait for the GPU's queue every step; from pinned
    # memory it is queued like a kernel (the caching host allocator keeps the buffer until it ran).
    draw = draw.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else draw.to(device)
    masked = (draw < mask_prob) & valid
    forced = torch.where(valid, draw, torch.full_like(draw, 2.0)).argmin(1)
    need = (~masked.any(1)) & (n_words > 0)
    # No boolean indexing: it would sync the GPU once per step.
    masked |= need[:, None] & (torch.arange(W, device=device)[None, :] == forced[:, None])
    masked_ids = torch.where(masked, torch.full_like(word_ids, WordVocab.mask_id), word_ids)
    targets = torch.where(masked, word_ids, torch.full_like(word_ids, -100))
    return masked_ids, targets
