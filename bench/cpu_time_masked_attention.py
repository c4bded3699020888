"""CPU: the cpu backend of masked_attention (and bottleneck_attention) timed in thread CPU time.

On a loaded shared machine (the 2-core VM with a load average of ~10) wall-clock medians measure
the scheduler more than the kernels: bench_masked_attention_cpu.py's medians there are ~25x its idle
ones and swing by +-30% between identical runs. With one thread, the CPU time a call consumes
(``time.thread_time_ns``) excludes the time the thread waits for a core, so two builds can be
compared on such a machine: run this script alternately under each build's ``PYTHONPATH`` and
compare the medians (RESULTS.md, "masked_attention ... slice driver").

Shapes: ResT's (B=64, H=12, L=1+16+8, n_text 1..8, Dh=64, float32, mode rest) and, with
``--bottleneck``, MZST's fusion stream (B=8, H=12, L=400, 4 fusion tokens, a quarter of the batch
half padding). Prints one JSON line: per case, the median and minimum in milliseconds of CPU time
and of wall time.

Run: ``PYTHONPATH=<tree>/python python bench/cpu_time_masked_attention.py [--rounds 300]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from zsar.ops import bottleneck_attention, masked_attention


def _time(fn, rounds: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        fn()
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        wall.append((time.perf_counter_ns() - w0) / 1e6)
    return {"cpu_median_ms": statistics.median(cpu), "cpu_min_ms": min(cpu),
            "wall_median_ms": statistics.median(wall), "wall_min_ms": min(wall)}


def _cases(bottleneck: bool):
    gen = torch.Generator().manual_seed(0)
    B, H, L, D = 64, 12, 25, 64
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_text = torch.randint(1, 9, (B,), generator=gen, dtype=torch.int32)
    yield "masked", (q, k, v, dout), lambda q, k, v: masked_attention(q, k, v, 17, n_text, backend="cpu")
    if bottleneck:
        B, L = 8, 400
        q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
        n_valid = torch.full((B,), L - 4, dtype=torch.int32)
        n_valid[: B // 4] = (L - 4) // 2
        yield "bottleneck", (q, k, v, dout), lambda q, k, v: bottleneck_attention(q, k, v, n_valid, 4, backend="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--bottleneck", action="store_true", help="also time bottleneck_attention at L=400")
    args = parser.parse_args()
    torch.set_num_threads(1)  # thread CPU time covers all the work only with one thread
    out = {}
    for name, (q, k, v, dout), op in _cases(args.bottleneck):
        with torch.no_grad():
            out[f"{name} forward"] = _time(lambda: op(q, k, v), args.rounds, args.warmup)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def step():
            for t in leaves:
                t.grad = None
            op(*leaves).backward(dout)

        out[f"{name} forward+backward"] = _time(step, args.rounds, args.warmup)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
