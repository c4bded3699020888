"""An independent float64 statement of the masked_attention contract (DESIGN.md §2.1).

Written from the spec, not from zsar's code: the mask is spelled out element by element, and
gradients come from torch.autograd through a dense masked softmax.
"""

import torch


def allowed_mask(batch: int, seq_len: int, n_visual: int, n_text: list[int], mode: str) -> torch.Tensor:
    """(B, L, L) bool: query i may attend key j."""
    mask = torch.zeros(batch, seq_len, seq_len, dtype=torch.bool)
    for b in range(batch):
        n_valid = n_visual + n_text[b]
        for i in range(n_valid):
            for j in range(n_valid):
                if mode == "full":
                    mask[b, i, j] = True
                elif i < n_visual:  # CLS / frame token: visual keys only
                    mask[b, i, j] = j < n_visual
                else:  # word token: all visual keys, words on its left, itself
                    mask[b, i, j] = j < n_visual or j <= i
    return mask


def dense_attention(q, k, v, n_visual: int, n_text: list[int], mode: str = "rest", scale=None):
    """Differentiable float64 reference; padding rows are 0 and pass no gradient."""
    B, _, L, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    mask = allowed_mask(B, L, n_visual, n_text, mode)[:, None]
    valid_row = mask.any(-1, keepdim=True)
    # Padding rows get a dummy key so their softmax stays finite; they are zeroed afterwards.
    safe_mask = mask | ~valid_row
    scores = (q @ k.transpose(-1, -2)) * scale
    p = torch.softmax(scores.masked_fill(~safe_mask, float("-inf")), dim=-1)
    return (p @ v) * valid_row
