"""Independent float64 statements of the attention ops' contracts: masked_attention
(python/zsar/ops/masked_attention.py) and bottleneck_attention (python/zsar/ops/bottleneck_attention.py).

Written from the spec, not from zsar's code: the mask is spelled out element by element, and
gradients come from torch.autograd through a dense masked softmax. For non-finite inputs and
extreme scales, :func:`attention_bounds` states the two computations every backend must lie between.
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


def bottleneck_mask(seq_len: int, n_valid: list[int], n_fusion: int) -> torch.Tensor:
    """(B, L, L) bool: query i may attend key j in bottleneck_attention (both are valid tokens:
    the stream's first n_valid[b] positions or one of the last n_fusion)."""
    valid = torch.zeros(len(n_valid), seq_len, dtype=torch.bool)
    for b, n in enumerate(n_valid):
        for i in range(seq_len):
            valid[b, i] = i < n or i >= seq_len - n_fusion
    return valid[:, :, None] & valid[:, None, :]


def dense_attention(q, k, v, n_visual: int, n_text: list[int], mode: str = "rest", scale=None):
    """Differentiable float64 reference of masked_attention; padding rows are 0 and pass no gradient."""
    return dense_masked_attention(q, k, v, allowed_mask(q.shape[0], q.shape[2], n_visual, n_text, mode), scale)


def dense_bottleneck_attention(q, k, v, n_valid: list[int], n_fusion: int, scale=None):
    """Differentiable float64 reference of bottleneck_attention; padding rows are 0 and pass no gradient."""
    return dense_masked_attention(q, k, v, bottleneck_mask(q.shape[2], n_valid, n_fusion), scale)


def dense_masked_attention(q, k, v, allowed: torch.Tensor, scale=None):
    """Softmax attention restricted to the (B, L, L) ``allowed`` pairs; rows with none are 0."""
    D = q.shape[-1]
    scale = D ** -0.5 if scale is None else scale
    mask = allowed[:, None]
    valid_row = mask.any(-1, keepdim=True)
    # Padding rows get a dummy key so their softmax stays finite; they are zeroed afterwards.
    safe_mask = mask | ~valid_row
    scores = (q @ k.transpose(-1, -2)) * scale
    p = torch.softmax(scores.masked_fill(~safe_mask, float("-inf")), dim=-1)
    return (p @ v) * valid_row


def masked_attention_bounds(q, k, v, dout, n_visual: int, n_text: list[int], mode: str, scale: float):
    """:func:`attention_bounds` of masked_attention (valid tokens ``[0, n_visual + n_text[b])``)."""
    B, _, L, _ = q.shape
    valid = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        valid[b, : n_visual + n_text[b]] = True
    return attention_bounds(q, k, v, dout, allowed_mask(B, L, n_visual, n_text, mode), valid, scale)


def bottleneck_attention_bounds(q, k, v, dout, n_valid: list[int], n_fusion: int, scale: float):
    """:func:`attention_bounds` of bottleneck_attention."""
    allowed = bottleneck_mask(q.shape[2], n_valid, n_fusion)
    return attention_bounds(q, k, v, dout, allowed, allowed.any(-1), scale)


def attention_bounds(q, k, v, dout, allowed: torch.Tensor, valid: torch.Tensor, scale: float):
    """Outputs and gradients ``(out, dq, dk, dv)`` of two float64 computations, explicit (no autograd),
    for the ``(B, L, L)`` ``allowed`` pairs over the ``(B, L)`` ``valid`` tokens:

    * ``exact``: a (query, key) pair the mask excludes contributes nothing, even where a value is
      non-finite (every product is taken pair by pair and masked before the sums);
    * ``dense``: every product over the sample's valid tokens is taken, with probability 0 (and
      score gradient ``0 * (dP - delta)``) on excluded pairs, so ``0 * inf`` gives NaN there.

    Padding positions are never read by either, and padding rows are 0. Returns ``(exact, dense)``.
    """
    q, k, v, dout = (t.double() for t in (q, k, v, dout))
    allowed = allowed[:, None]  # (B, 1, L, L)
    tok = valid[:, None, :, None]  # (B, 1, L, 1)
    pair = tok & valid[:, None, None, :]  # both tokens valid
    q, k, v, dout = (torch.where(tok, t, 0.0) for t in (q, k, v, dout))  # padding is never read

    def pairwise(a, b):  # (B, H, L, L, D): a_i * b_j
        return a[:, :, :, None, :] * b[:, :, None, :, :]

    def masked_sum(terms, keep, dim):  # sum over `dim` of the kept terms only
        return torch.where(keep[..., None], terms, 0.0).sum(dim)

    scores = torch.where(allowed, masked_sum(pairwise(q, k), pair, -1) * scale, float("-inf"))
    lse = torch.logsumexp(scores, -1, keepdim=True)
    p = torch.where(allowed, torch.exp(scores - lse), 0.0)
    results = []
    for keep in (allowed, pair):  # exact, dense
        out = masked_sum(p[..., None] * v[:, :, None, :, :], keep, -2)
        out = torch.where(tok, out, 0.0)
        delta = (dout * out).sum(-1, keepdim=True)
        dp = masked_sum(pairwise(dout, v), keep, -1)
        ds = torch.where(keep, p * (dp - delta), 0.0)
        dq = masked_sum(ds[..., None] * k[:, :, None, :, :], keep, -2) * scale
        dk = masked_sum(ds.transpose(-1, -2)[..., None] * q[:, :, None, :, :], keep.transpose(-1, -2), -2) * scale
        dv = masked_sum(p.transpose(-1, -2)[..., None] * dout[:, :, None, :, :], keep.transpose(-1, -2), -2)
        results.append(tuple(torch.where(tok, t, 0.0) for t in (out, dq, dk, dv)))
    return results[0], results[1]


def separated_rows(q, k, allowed: torch.Tensor, scale: float, margin: float = 1e-3) -> torch.Tensor:
    """``(B, H, L)`` bool: rows whose best allowed score beats the runner-up by more than ``margin``
    relative to its size, in float64 over the given (float32) inputs. At a huge scale such a row's
    softmax is one-hot on the same key in every precision, so its output and the value gradient it
    sends are exact whatever the rounding; rows with near ties may legitimately pick either key."""
    q, k = q.double(), k.double()
    scores = ((q @ k.transpose(-1, -2)) * scale).masked_fill(~allowed[:, None], float("-inf"))
    top2 = scores.topk(min(2, scores.shape[-1]), dim=-1).values
    if top2.shape[-1] < 2:
        return torch.isfinite(top2[..., 0])
    gap = top2[..., 0] - top2[..., 1]
    return torch.isfinite(top2[..., 0]) & (gap > margin * top2[..., 0].abs().clamp_min(1e-30))
