"""Transformer building blocks shared by the zsar models.

One pre-norm :class:`TransformerBlock` whose attention is pluggable (timm's ``Block(attn_layer=...)``):
ResT's blocks attend through :func:`zsar.ops.masked_attention` (:class:`MaskedSelfAttention`), MZST's
fusion layers through :func:`zsar.ops.bottleneck_attention` (:class:`BottleneckSelfAttention`). The
block passes its extra forward arguments (the mask description) to the attention unchanged. One
masked-word head and loss (:class:`MaskedWordHead`) serves ResT's MTL and MZST's MLM.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import bottleneck_attention, masked_attention


def init_transformer_weights(modules) -> None:
    """ViT/BERT-style initialisation of ``modules`` (None entries skipped): linear and embedding
    weights from a truncated N(0, 0.02), biases 0."""
    for module in (m for m in modules if m is not None):
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=0.02)


class SelfAttention(nn.Module):
    """Multi-head self-attention: a fused QKV projection, :meth:`attend` over ``(B, H, L, Dh)``
    heads, an output projection and dropout. Subclasses pick the attention op in :meth:`attend`;
    ``forward(x, *mask)`` hands ``mask`` (the op's description of which tokens see which) to it."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *mask) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *mask) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (t.contiguous() for t in qkv)
        out = self.attend(q, k, v, *mask)
        return self.drop(self.proj(out.transpose(1, 2).reshape(B, L, D)))


class MaskedSelfAttention(SelfAttention):
    """ResT's attention over ``[CLS, visual..., words..., padding]``: :func:`zsar.ops.masked_attention`
    with ``mode`` ``"rest"`` (visual tokens never see words) or ``"full"``; mask ``(n_visual, n_text)``.
    ``n_text`` is validated once by the model, not in every layer (a range check reads it, which
    would sync the GPU once per layer)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, mode: str = "rest", backend: str | None = None):
        super().__init__(dim, heads, dropout)
        self.mode, self.backend = mode, backend

    def attend(self, q, k, v, n_visual: int, n_text: torch.Tensor) -> torch.Tensor:
        return masked_attention(q, k, v, n_visual, n_text, mode=self.mode, backend=self.backend, check_n_text=False)


class BottleneckSelfAttention(SelfAttention):
    """MZST's attention: :func:`zsar.ops.bottleneck_attention`, mask ``(n_valid, n_fusion)``: the valid
    positions of sample b are ``[0, n_valid[b])`` and the last ``n_fusion``; every valid query attends
    every valid key, padding rows are 0. The model builds ``n_valid`` itself, so its range is not
    read back (no device sync per layer); the kernels clamp it either way. ``backend`` forces a
    ``bottleneck_attention`` backend (None: automatic dispatch)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, backend: str | None = None):
        super().__init__(dim, heads, dropout)
        self.backend = backend

    def attend(self, q, k, v, n_valid: torch.Tensor, n_fusion: int) -> torch.Tensor:
        return bottleneck_attention(q, k, v, n_valid.to(torch.int32), n_fusion, backend=self.backend,
                                    check_n_valid=False)


class Mlp(nn.Module):
    """A transformer block's feed-forward network: Linear, GELU, Linear, back to ``dim``.

    Dropout follows the GELU and the output (ViT's placement).

    Args:
        dim: input and output size.
        hidden: the hidden layer's size (``mlp_dim`` of :class:`TransformerBlock`).
        dropout: probability of both dropouts.
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x), *mask), then x + MLP(LN(x)).

    Args:
        attn_layer: builds the attention, ``attn_layer(dim, heads, dropout)`` (e.g.
            ``functools.partial(MaskedSelfAttention, mode="full")``); default :class:`MaskedSelfAttention`.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_layer: Callable[..., SelfAttention] = MaskedSelfAttention):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attn_layer(dim, heads, dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, *mask) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), *mask)
        return x + self.mlp(self.norm2(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # MZST checkpoints written before its fusion layers were TransformerBlocks keep the attention's
        # projections one level up (``<layer>.qkv.*``, ``<layer>.proj.*``); same tensors, new names.
        for name in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):
            if prefix + name in state_dict and prefix + "attn." + name not in state_dict:
                state_dict[prefix + "attn." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MaskedTransformer(nn.Module):
    """ResT's stack of :class:`TransformerBlock` (attention :class:`MaskedSelfAttention`) with a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, mode: str = "rest", dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__()

        def attn_layer(d, h, p):
            return MaskedSelfAttention(d, h, p, mode, backend)

        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_dim, dropout, attn_layer) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, n_visual: int, n_text: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, n_visual, n_text)
        return self.norm(x)


class MaskedWordHead(nn.Sequential):
    """The masked-word head of ResT's MTL and MZST's MLM: Linear, GELU, LayerNorm, Linear(vocab)
    (BERT's prediction head), and its loss (:meth:`loss`)."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, vocab_size))

    def loss(self, word_outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the masked words: ``word_outputs`` ``(B, W, D)`` are the
        transformer's outputs at the word slots, ``targets`` ``(B, W)`` the masked words' ids and
        -100 elsewhere (:func:`zsar.text.vocab.mask_words`). A sum over a count clamped at 1: finite
        for a batch without words, and no host sync."""
        logits = self(word_outputs).flatten(0, 1).float()
        total = F.cross_entropy(logits, targets.flatten(), ignore_index=-100, reduction="sum")
        return total / (targets >= 0).sum().clamp(min=1)
