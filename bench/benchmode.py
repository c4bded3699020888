"""Full or quick: how big the benchmarks in ``bench/`` run.

* Full (opt-in): ``pytest bench/ --benchmark-only`` or ``ZSAR_BENCH=full``: the sizes and rounds
  each benchmark documents, for the numbers in ``RESULTS.md``.
* Quick (the default, so the default test command ``python -m pytest`` runs every benchmark and
  none can rot unseen): tiny sizes and one round each; nothing is timed meaningfully.

``bench/conftest.py`` decides the mode before the benchmark modules are imported.
"""

from __future__ import annotations

import os


def full() -> bool:
    """True when the benchmarks run at full size (``ZSAR_BENCH=full``, set by ``--benchmark-only``)."""
    return os.environ.get("ZSAR_BENCH", "quick") == "full"


def pick(full_value, quick_value):
    """``full_value`` in a full run, ``quick_value`` in the quick (default) one."""
    return full_value if full() else quick_value
