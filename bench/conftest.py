"""Side-by-side benchmarks: each test times one contender of a group; the summary prints ratios.

Run: ``pytest bench/ --benchmark-only`` (add ``--benchmark-json=FILE`` to keep the raw numbers).
Without ``--benchmark-only`` (e.g. the default ``python -m pytest``, which collects ``bench/``)
every benchmark runs once at a tiny size (see ``benchmode.py``).
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass


def pytest_addoption(parser):
    parser.addoption(
        "--malloc",
        choices=("steady", "default"),
        default="steady",
        help="steady (default): keep freed memory in the process (glibc mallopt), so every round "
        "measures the ops and not page faults on memory glibc just returned to the kernel; "
        "default: leave glibc's trim/mmap thresholds alone",
    )


_MALLOC_STATE = "glibc defaults"


def pytest_configure(config):
    global _MALLOC_STATE
    if config.getoption("benchmark_only", False):
        os.environ.setdefault("ZSAR_BENCH", "full")
    import benchmode

    # The quick run shares its process with the test suite: leave glibc's allocator alone there.
    if benchmode.full() and config.getoption("--malloc", "default") == "steady":
        from zsar._utils import keep_freed_memory

        _MALLOC_STATE = keep_freed_memory()


def pytest_report_header(config):
    import benchmode

    return f"zsar bench: {'full' if benchmode.full() else 'quick (tiny sizes, one round)'}, malloc {_MALLOC_STATE}"


# group -> contender -> median seconds
_MEDIANS: dict[str, dict[str, float]] = defaultdict(dict)
# group -> name of the contender the others are compared with (ours)
_BASELINE: dict[str, str] = {}


@pytest.fixture
def record(benchmark):
    """``record(group, contender, fn, ours=False, rounds=20, warmup=3)``: benchmark ``fn``, remember
    and return its median in seconds (None under ``--benchmark-disable``). In the quick mode ``fn``
    runs once."""
    import benchmode

    def _record(group: str, contender: str, fn, ours: bool = False, rounds: int = 20, warmup: int = 3):
        if not benchmode.full():
            rounds, warmup = 1, 0
        benchmark.group = group
        benchmark.name = contender
        benchmark.extra_info["contender"] = contender
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
        if benchmark.stats is None:  # --benchmark-disable: fn ran once, untimed
            return None
        _MEDIANS[group][contender] = benchmark.stats.stats.median
        if ours:
            _BASELINE[group] = contender
        return benchmark.stats.stats.median

    return _record


def pytest_terminal_summary(terminalreporter):
    if not _MEDIANS:
        return
    tr = terminalreporter
    tr.section("ratios (peer median / zsar median; > 1 means zsar is faster)")
    for group, medians in _MEDIANS.items():
        ours = _BASELINE.get(group)
        if ours is None or ours not in medians:
            continue
        for contender, median in medians.items():
            if contender != ours:
                tr.write_line(
                    f"{group}: {contender} {median * 1e3:.2f} ms / {ours} {medians[ours] * 1e3:.2f} ms "
                    f"= {median / medians[ours]:.2f}x"
                )
