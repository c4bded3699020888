"""The CPU kernels' work sharing (csrc/cpu/thread_pool.h): an OpenMP team or zsar's own pool.

Items are handed out dynamically to the caller and whichever helpers are scheduled, so these check
what must not depend on that: bit-identical results for any thread count, calls from several Python
threads at once (one job at a time; the others run on their callers), and a forked child (whose
pool starts afresh: the parent's helper threads do not exist there).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from zsar import _ext
from zsar.ops import bottleneck_attention, masked_attention

pytestmark = pytest.mark.skipif(_ext.compiled() is None, reason="zsar._C is not built")

N_FUSION = 4


def _bottleneck(seed: int, B=3, H=4, L=300, D=32):
    """Forward and gradients of the cpu backend; large enough to run on several threads."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_valid = torch.randint(L // 3, L - N_FUSION + 1, (B,), generator=gen, dtype=torch.int32)
    n_valid[0] = L - N_FUSION
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = bottleneck_attention(*leaves, n_valid, N_FUSION, backend="cpu")
    out.backward(dout)
    return [out.detach()] + [t.grad for t in leaves]


def _masked(seed: int, mode: str, B=16, H=4, L=40, D=32, n_visual=24):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_text = torch.randint(1, L - n_visual + 1, (B,), generator=gen, dtype=torch.int32)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = masked_attention(*leaves, n_visual, n_text, mode=mode, backend="cpu")
    out.backward(dout)
    return [out.detach()] + [t.grad for t in leaves]


CALLS = {
    "bottleneck": lambda seed: _bottleneck(seed),
    "bottleneck, Dh=64, one sample of padding": lambda seed: _bottleneck(seed, B=2, H=3, L=520, D=64),
    "masked rest": lambda seed: _masked(seed, "rest"),
    "masked full": lambda seed: _masked(seed, "full"),
}


def _assert_identical(actual, expected, what):
    for name, a, e in zip(("out", "dq", "dk", "dv"), actual, expected):
        assert torch.equal(a, e), f"{what}: {name} differs (max |diff| {(a - e).abs().max().item():.3g})"


@pytest.fixture(params=["pool", "openmp"])
def threading_mode(request, monkeypatch):
    """Every test runs with zsar's pool and with an OpenMP team (read by the kernels at each call)."""
    monkeypatch.setenv("ZSAR_THREADING", request.param)
    return request.param


@pytest.mark.usefixtures("threading_mode")
@pytest.mark.parametrize("call", list(CALLS))
def test_results_do_not_depend_on_which_thread_runs_what(call):
    """For a given thread count, every call gives the same bits however the items fell to the
    caller and the helpers; across thread counts only the backward's dQ may round differently (its
    key-tile chunks follow the thread count and are summed in chunk order)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = CALLS[call](seed=11)
        for threads in (2, 3, 8):
            torch.set_num_threads(threads)
            first = CALLS[call](seed=11)
            for _ in range(3):  # later calls find the helpers started (and maybe still polling)
                _assert_identical(CALLS[call](seed=11), first, f"{call}, {threads} threads, again")
            _assert_identical(first[:1] + first[2:], one_thread[:1] + one_thread[2:], f"{call}, {threads} threads")
            torch.testing.assert_close(first[1], one_thread[1], rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(before)


@pytest.mark.usefixtures("threading_mode")
def test_calls_from_several_python_threads_at_once():
    """The kernels run without the GIL: while one call's job holds the pool, the others run on their
    own threads; every result must be the one a lone call gives."""
    seeds = list(range(6))
    expected = {s: _bottleneck(s, B=2, L=200) for s in seeds}
    results, errors = {}, []

    def worker(seed):
        try:
            for _ in range(3):
                results[seed] = _bottleneck(seed, B=2, L=200)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a call from a Python thread did not return"
    assert not errors, errors
    for s in seeds:
        _assert_identical(results[s], expected[s], f"thread with seed {s}")


def _core_bottleneck(seed: int, num_threads: int):
    """_bottleneck's forward and gradients through the compiled entry points with an explicit thread
    count: a forked child cannot run torch's own parallel ops (GNU OpenMP does not survive fork()),
    so there the tensors are made on one torch thread and only zsar's kernels use several."""
    from zsar.ops.attention import compiled
    from zsar.ops.bottleneck_attention import BottleneckAttentionInputs

    B, H, L, D = 3, 4, 300, 32
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_valid = torch.randint(L // 3, L - N_FUSION + 1, (B,), generator=gen, dtype=torch.int32)
    problem = compiled.problem(BottleneckAttentionInputs(q, k, v, n_valid, N_FUSION, D ** -0.5))
    core = _ext.compiled()
    out, dq, dk, dv = (torch.empty_like(q) for _ in range(4))
    lse = torch.empty(B, H, L)
    core.attention_forward_cpu(core.AttentionForward(
        problem, lengths=n_valid.data_ptr(), q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
        lse=lse.data_ptr(), num_threads=num_threads))
    core.attention_backward_cpu(core.AttentionBackward(
        problem, lengths=n_valid.data_ptr(), q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
        lse=lse.data_ptr(), dout=dout.data_ptr(), dq=dq.data_ptr(), dk=dk.data_ptr(), dv=dv.data_ptr(),
        num_threads=num_threads))
    return [out, dq, dk, dv]


def _child(queue, expected):
    torch.set_num_threads(1)
    try:
        got = _core_bottleneck(seed=5, num_threads=2)
        same = [torch.equal(g, e) for g, e in zip(got, expected)]
        queue.put("ok" if all(same) else f"results differ from the parent's (out, dq, dk, dv equal: {same})")
    except Exception as e:  # noqa: BLE001 - the parent reports it
        queue.put(repr(e))


def test_a_forked_child_runs_the_kernels_on_a_fresh_pool(monkeypatch):
    # The pool's own fork handling (GNU OpenMP's team does not survive fork(), torch's ops included).
    monkeypatch.setenv("ZSAR_THREADING", "pool")
    expected = _core_bottleneck(seed=5, num_threads=2)  # the parent's pool is started (a helper exists)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, expected))  # fork: the child inherits `expected`
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert got == "ok", f"the forked child: {got}"
    assert child.exitcode == 0


def test_build_info_reports_threads_and_how_they_share_work(monkeypatch):
    info = _ext.build_info()
    assert info["cpu_threads"] >= 1
    for setting, expected in (("pool", "pool"), ("openmp", "openmp" if info["openmp"] else "pool")):
        monkeypatch.setenv("ZSAR_THREADING", setting)
        assert _ext.compiled().build_info()["cpu_threading"] == expected


@pytest.mark.parametrize("given, busy, expected", [(None, 1.0, "passive"), (None, 0.1, "unset"),
                                                   (None, None, "unset"), ("active", 1.0, "active")])
def test_the_zsar_command_asks_for_passive_openmp_waits_on_a_busy_machine(given, busy, expected):
    """Spinning OpenMP threads cost 2-2.8x beside other work and passive waits 1.4x idle (RESULTS.md):
    the command sets passive before torch loads when the machine is busy, unless the environment says."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = (f"import os, sys, zsar.cli as cli; cli._openmp_waits(lambda: {busy!r}); "
            "assert 'torch' not in sys.modules; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_busy_cpus_sees_a_process_spinning_beside_it():
    from zsar.cli import _cpus_busy

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = _cpus_busy(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and busy >= 0.8, busy
