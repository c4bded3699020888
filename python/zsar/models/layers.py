"""Transformer building blocks shared by the zsar models."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import masked_attention


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


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention over ``[CLS, visual..., words..., padding]`` with the ResT mask.

    The attention itself is the fused op :func:`zsar.ops.masked_attention`; ``mode`` is ``"rest"``
    (visual tokens never see words) or ``"full"``. ``n_text`` is validated once by the model, not
    in every layer (a range check reads it, which would sync the GPU 12 times per forward).
    """

    def __init__(self, dim: int, heads: int, mode: str = "rest", dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.mode, self.backend = heads, mode, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, n_visual: int, n_text: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (t.contiguous() for t in qkv)
        out = masked_attention(q, k, v, n_visual, n_text, mode=self.mode, backend=self.backend, check_n_text=False)
        return self.drop(self.proj(out.transpose(1, 2).reshape(B, L, D)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, mode: str = "rest", dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), MaskedSelfAttention(dim, heads, mode, dropout, backend)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, n_visual: int, n_text: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), n_visual, n_text)
        return x + self.mlp(self.norm2(x))


class MaskedTransformer(nn.Module):
    """A stack of :class:`TransformerBlock` with a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, mode: str = "rest", dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_dim, mode, dropout, backend) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, n_visual: int, n_text: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, n_visual, n_text)
        return self.norm(x)
