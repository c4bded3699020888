"""Side-by-side benchmarks: each test times one contender of a group; the summary prints ratios.

Run: ``pytest bench/ --benchmark-only`` (add ``--benchmark-json=FILE`` to keep the raw numbers).
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

# group -> contender -> median seconds
_MEDIANS: dict[str, dict[str, float]] = defaultdict(dict)
# group -> name of the contender the others are compared with (ours)
_BASELINE: dict[str, str] = {}


@pytest.fixture
def record(benchmark):
    """``record(group, contender, fn, ours=False, rounds=20, warmup=3)``: benchmark ``fn`` and
    remember its median."""

    def _record(group: str, contender: str, fn, ours: bool = False, rounds: int = 20, warmup: int = 3):
        benchmark.group = group
        benchmark.name = contender
        benchmark.extra_info["contender"] = contender
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
        _MEDIANS[group][contender] = benchmark.stats.stats.median
        if ours:
            _BASELINE[group] = contender

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
