"""Full or quick: how big the benchmarks in ``bench/`` run.

* Full (opt-in): ``pytest bench/ --benchmark-only`` or ``ZSAR_BENCH=full``: the sizes and rounds
  each benchmark documents, for the numbers in ``RESULTS.md``.
* Quick (the default, so the default test command ``python -m pytest`` runs every benchmark and
  none can rot unseen): tiny sizes and one round each; nothing is timed meaningfully.

``bench/conftest.py`` decides the mode before the benchmark modules are imported.

Also the timing every peer comparison here uses (:func:`interleaved`, :func:`summary`): the two
contenders alternate call by call in one process, the order flipped each pair, so both see the same
machine load; ratios per pair, median (min-max; for short calls, many pairs and the min-max of
block medians).
"""

from __future__ import annotations

import os
import statistics
import time


def full() -> bool:
    """True when the benchmarks run at full size (``ZSAR_BENCH=full``, set by ``--benchmark-only``)."""
    return os.environ.get("ZSAR_BENCH", "quick") == "full"


def pick(full_value, quick_value):
    """``full_value`` in a full run, ``quick_value`` in the quick (default) one."""
    return full_value if full() else quick_value


def interleaved(ours, peer, pairs: int, warmup: int = 2, min_seconds: float = 0.0) -> tuple[list[float], list[float]]:
    """Seconds per call of ``ours`` and ``peer``, alternating, the order flipped each pair: at least
    ``pairs`` pairs, and more until the pairs took ``min_seconds`` (short calls: enough pairs for a
    median that the machine's jitter does not move)."""
    for _ in range(warmup):
        ours(), peer()
    t_ours, t_peer = [], []
    start = time.perf_counter()
    i = 0
    while i < pairs or (min_seconds and (i % 2 or time.perf_counter() - start < min_seconds)):  # ends on an even count
        for fn, times in ((ours, t_ours), (peer, t_peer)) if i % 2 == 0 else ((peer, t_peer), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        i += 1
    return t_ours, t_peer


#: Above this many pairs the spread is over blocks (see :func:`summary`).
SPREAD_BLOCKS = 7


def summary(t_ours, t_peer) -> dict:
    """Medians (ms) of both contenders, the ratio peer / ours per pair (median; > 1: zsar faster),
    its spread (min, max) and the load average as the group ended.

    The spread is over the pairs when there are at most ``2 * SPREAD_BLOCKS`` of them; over more
    (short calls, see ``min_seconds`` of :func:`interleaved`) it is over the medians of
    ``SPREAD_BLOCKS`` consecutive blocks of pairs, so that it says how far the median moves over the
    run rather than how far a single call of a few microseconds was interrupted."""
    ratios = [p / o for o, p in zip(t_ours, t_peer)]
    spread = ratios
    if len(ratios) > 2 * SPREAD_BLOCKS:
        size = len(ratios) // SPREAD_BLOCKS
        spread = [statistics.median(ratios[b * size:(b + 1) * size]) for b in range(SPREAD_BLOCKS)]
    return dict(zsar_ms=statistics.median(t_ours) * 1e3, peer_ms=statistics.median(t_peer) * 1e3,
                ratio=statistics.median(ratios), ratio_min=min(spread), ratio_max=max(spread),
                pairs=len(ratios), load=os.getloadavg()[0])


def report_line(group: str, peer: str, ours: str, s: dict) -> str:
    """One printed result: the ratio with its spread, the load, and the settings that move it (OpenMP's
    wait policy, torch's threads, how zsar's kernels share a call: csrc/cpu/thread_pool.h)."""
    import torch

    from zsar import _ext

    core = _ext.compiled()
    threading = f"zsar {core.build_info()['cpu_threading']}" if core is not None else "zsar not built"
    return (f"{group}: {peer} {s['peer_ms']:.2f} ms / {ours} {s['zsar_ms']:.2f} ms = {s['ratio']:.2f}x "
            f"({s['ratio_min']:.2f}-{s['ratio_max']:.2f}), load {s['load']:.1f}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, threads {torch.get_num_threads()} "
            f"({threading}), {s['pairs']} pairs")
