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


def test_the_cpu_prefix_kernels_refuse_scratch_that_would_not_fit(monkeypatch):
    """The rest/full cpu kernels keep L x L scratch per thread (x4 with gradients): past the limit the
    backend says so instead of allocating; the bottleneck kind (tiled, O(L)) is not affected."""
    from zsar.ops._dispatch import BackendUnavailableError

    q, k, v = _inputs()
    need = min(torch.get_num_threads(), B * H) * 4 * L * 16 * 4  # ld = L rounded up to 8 = 16; float32
    monkeypatch.setenv("ZSAR_LIMIT_ATTENTION_SCRATCH_BYTES", str(need - 1))
    with pytest.raises(BackendUnavailableError, match=r"cpu: its rest-mask kernels keep L x L scratch per thread"):
        _masked_backend(q, k, v, "cpu")
    with torch.no_grad():  # one buffer without gradients
        _masked_backend(q, k, v, "cpu")
    bottleneck_attention(q, k, v, torch.tensor([5, 8], dtype=torch.int32), 2, backend="cpu").sum().backward()
    monkeypatch.setenv("ZSAR_LIMIT_ATTENTION_SCRATCH_BYTES", str(need))
    _masked_backend(q, k, v, "cpu").sum().backward()


def _masked_backend(q, k, v, backend):
    if not torch.is_grad_enabled():
        q, k, v = (t.detach() for t in (q, k, v))
    return masked_attention(q, k, v, 8, torch.tensor([2, 3], dtype=torch.int32), backend=backend)


def test_a_long_masked_attention_is_refused_before_allocating():
    """masked_attention at L = 32768 (3 MiB of inputs) once took more than 6 GB on the cpu backend:
    with no backend able to serve it in bounded memory, the call fails at once, naming each reason."""
    import os
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from zsar.ops import masked_attention, BackendUnavailableError\n"
        "q = torch.randn(1, 1, 32768, 8, requires_grad=True)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    masked_attention(q, q, q, 1, torch.tensor([32767], dtype=torch.int32))\n"
        "except BackendUnavailableError as e:\n"
        "    print('REFUSED', str(e).replace(chr(10), ' | '))\n"
        "print('GROWTH_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "cpu: its rest-mask kernels keep L x L scratch" in out.stdout, out.stdout
    assert "reference: its dense L x L scores" in out.stdout, out.stdout
    assert int(out.stdout.split("GROWTH_KB")[1]) < 200_000, out.stdout  # the call allocates nothing large
