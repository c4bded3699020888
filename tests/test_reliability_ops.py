"""Double backward through the fused ops (a gradient penalty) is refused with a clear error, on the
eager path and on the registered custom-op path, instead of a silently wrong second-order gradient."""

from __future__ import annotations

import pytest
import torch

from zsar.ops import bottleneck_attention, masked_attention

B, H, L, D = 2, 2, 12, 8


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=gen, dtype=torch.float32).requires_grad_() for _ in range(3)]


def _masked(q, k, v):
    return masked_attention(q, k, v, 8, torch.tensor([2, 3], dtype=torch.int32))


def _bottleneck(q, k, v):
    return bottleneck_attention(q, k, v, torch.tensor([5, 8], dtype=torch.int32), 2)


class _CountCalls(torch.overrides.TorchFunctionMode):
    """Any torch-function mode sends the ops down their registered custom-op path."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("op", [_masked, _bottleneck], ids=["masked_attention", "bottleneck_attention"])
@pytest.mark.parametrize("path", ["eager", "custom_op"])
def test_double_backward_is_refused(op, path):
    q, k, v = _inputs()
    mode = _CountCalls() if path == "custom_op" else None
    with mode if mode is not None else torch.enable_grad():
        out = op(q, k, v)
        out = out[0] if isinstance(out, tuple) else out
        (gq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
        loss = out.sum() + gq.square().sum()  # a loss with a gradient penalty
        with pytest.raises(RuntimeError, match="twice|double backward"):
            loss.backward()


@pytest.mark.parametrize("op", [_masked, _bottleneck], ids=["masked_attention", "bottleneck_attention"])
def test_first_order_gradients_still_work(op):
    q, k, v = _inputs(1)
    out = op(q, k, v)
    out = out[0] if isinstance(out, tuple) else out
    out.square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_the_reference_path_refuses_dense_scores_that_would_not_fit(monkeypatch):
    """The limit is lowered so that the test stays small; by default L=32768 (12 GiB of scores) is refused."""
    from zsar.ops._dispatch import BackendUnavailableError

    q, k, v = _inputs()
    monkeypatch.setenv("ZSAR_LIMIT_ATTENTION_DENSE_BYTES", str(3 * B * H * L * L * 4 - 1))
    with pytest.raises(BackendUnavailableError, match=r"reference: its dense L x L scores at L=12"):
        masked_attention(q, k, v, 8, torch.tensor([2, 3], dtype=torch.int32), backend="reference")
    monkeypatch.setenv("ZSAR_LIMIT_ATTENTION_DENSE_BYTES", str(3 * B * H * L * L * 4))
    masked_attention(q, k, v, 8, torch.tensor([2, 3], dtype=torch.int32), backend="reference")
