"""MZST's AVT fusion network (the MZST paper, §4.2 and Eq. 2) and the feature-concatenation ablation
(Table 7): stacks of :class:`~zsar.models.layers.TransformerBlock` whose attention is
:func:`zsar.ops.bottleneck_attention` (:class:`~zsar.models.layers.BottleneckSelfAttention`)."""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn

from ..text.vocab import WordVocab
from .layers import BottleneckSelfAttention, TransformerBlock


def fusion_layer(dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, backend: str | None = None) -> TransformerBlock:
    """One fusion layer (the paper's Eq. 2): a pre-norm block attending with
    :class:`~zsar.models.layers.BottleneckSelfAttention` (``backend``: a forced
    ``bottleneck_attention`` backend, None: automatic); ``forward(x, n_valid, n_fusion)``."""
    return TransformerBlock(dim, heads, mlp_dim, dropout, attn_layer=partial(BottleneckSelfAttention, backend=backend))


class TextStream(nn.Module):
    """The text stream's own parts, used in training only: CLS_T, word and position embeddings, one
    layer per fusion block (run by :class:`AVTFusion`) and a final norm."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, mlp_dim: int, max_words: int,
                 dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.word_embed = nn.Embedding(vocab_size, dim, padding_idx=WordVocab.pad_id)
        self.word_pos = nn.Parameter(torch.zeros(1, max_words, dim))
        self.layers = nn.ModuleList(fusion_layer(dim, heads, mlp_dim, dropout, backend) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, word_ids: torch.Tensor) -> torch.Tensor:
        """``[CLS_T, words]`` ``(B, 1 + W, D)`` for word ids ``(B, W)``."""
        words = self.word_embed(word_ids) + self.word_pos[:, :word_ids.shape[1]]
        return torch.cat([self.cls_token.expand(words.shape[0], -1, -1), words], 1)


class AVTFusion(nn.Module):
    """The AVT fusion network: K blocks of (AV layer, text layer) sharing ``n_fusion`` fusion tokens.

    ``forward(av, av_valid, text=None, text_valid=None, text_stream=None, text_free_av=False)``
    takes each stream's tokens without the fusion slots (``av``: ``(B, L_av, D)`` with ``av_valid``
    valid tokens per sample; ``text`` likewise, run through ``text_stream``'s layers) and returns
    the normalised outputs ``(av_out, text_out)`` of the same shapes (``text_out`` None without
    text). With text and ``text_free_av``, ``av_out`` is instead the AV stream run without text
    (what inference computes), next to the joint pass that gives ``text_out``; the two share their
    first AV layer, which text has not reached yet.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, n_fusion: int, order: str,
                 dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        self.n_fusion, self.order = n_fusion, order
        self.fusion_tokens = nn.Parameter(torch.randn(1, n_fusion, dim) * 0.02)  # N(0, 0.02), as in the paper
        self.av_layers = nn.ModuleList(fusion_layer(dim, heads, mlp_dim, dropout, backend) for _ in range(depth))
        self.av_norm = nn.LayerNorm(dim)

    def _av_step(self, layer: TransformerBlock, av, f, av_valid):
        out = layer(torch.cat([av, f], 1), av_valid, self.n_fusion)
        return out[:, :-self.n_fusion], out[:, -self.n_fusion:]

    def forward(self, av, av_valid, text=None, text_valid=None, text_stream: TextStream | None = None,
                text_free_av: bool = False):
        n_f = self.n_fusion
        f = self.fusion_tokens.expand(av.shape[0], -1, -1).to(av.dtype)
        alone = None  # (tokens, fusion tokens) of the text-free AV pass, when asked for
        for k, av_layer in enumerate(self.av_layers):
            av, f_av = self._av_step(av_layer, av, f, av_valid)
            if text is None:  # inference: the AV stream alone
                f = f_av
                continue
            if text_free_av:
                alone = (av, f_av) if k == 0 else self._av_step(av_layer, *alone, av_valid)
            text_layer = text_stream.layers[k]
            out = text_layer(torch.cat([text, f_av if self.order == "sequential" else f], 1), text_valid, n_f)
            text, f_text = out[:, :-n_f], out[:, -n_f:]
            f = 0.5 * (f_av + f_text)
        av_out = self.av_norm(alone[0] if alone is not None else av)
        return av_out, (text_stream.norm(text) if text is not None else None)


class StreamEncoder(nn.Module):
    """One modality's own transformer over ``[CLS, tokens]`` (no fusion tokens); returns its
    normalised CLS output."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        self.layers = nn.ModuleList(fusion_layer(dim, heads, mlp_dim, dropout, backend) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, n_valid, 0)
        return self.norm(x[:, 0])


class LateFusion(nn.Module):
    """Feature concatenation (the paper's Table 7 ablation): a :class:`StreamEncoder` per modality
    with its own CLS token, and the CLS outputs concatenated ``(B, M x D)``."""

    def __init__(self, modalities: Sequence[str], dim: int, depth: int, heads: int, mlp_dim: int,
                 dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        self.cls_tokens = nn.Parameter(torch.zeros(1, len(modalities), dim))
        self.streams = nn.ModuleDict({m: StreamEncoder(dim, depth, heads, mlp_dim, dropout, backend) for m in modalities})

    def forward(self, tokens: dict[str, torch.Tensor], n_valid: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = []
        for i, (modality, stream) in enumerate(self.streams.items()):
            x = tokens[modality]
            x = torch.cat([self.cls_tokens[:, i:i + 1].expand(x.shape[0], -1, -1), x], 1)
            outs.append(stream(x, n_valid[modality]))
        return torch.cat(outs, -1)


class BranchHeads(nn.Module):
    """Feature concatenation's heads (the MZST paper's Table 7): one head per modality on that
    branch's own CLS output, outputs stacked ``(B, M, out)``. No parameter is shared between
    branches, so training them together on the sum of their losses trains each on its own."""

    def __init__(self, modalities: Sequence[str], make_head):
        super().__init__()
        self.heads = nn.ModuleDict({m: make_head() for m in modalities})

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        parts = h.chunk(len(self.heads), -1)  # LateFusion's concatenated CLS outputs, one per branch
        return torch.stack([head(x) for head, x in zip(self.heads.values(), parts)], 1)
