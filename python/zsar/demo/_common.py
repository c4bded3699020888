"""What the demos share: their settings, the step timer, report writing.

Their videos are decoded once into memory by :class:`zsar.data.cache.MediaCache` (decoding costs
more than training a tiny model on a few hundred small videos)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._utils import write_atomic
from ..data.decoders import fallback_decoder
from ..data.synthetic import SyntheticConfig

__all__ = ["DemoSettings", "Steps", "default_workers", "environment", "finish_report", "open_set_summary", "percent",
           "time_and_files"]


@dataclass
class DemoSettings:
    """What every demo's config holds: outputs, seeds, the benchmark, and how it runs.

    ``seed`` drives everything: the rendered videos, the held-out split (unless ``split_seed``
    picks another one) and training. ``data`` sizes the benchmark (its own ``seed`` and
    ``split_seed`` are replaced by the demo's). ``decoder``: the backend that decodes the videos
    once into memory (default: the registry's decoder that reads any codec); ``workers``: processes
    rendering and threads decoding (default: the CPU count, at most 8).
    """

    out_dir: str = "runs/demo"
    report: str | None = None  # default: out_dir/report.json
    seed: int = 0
    split_seed: int | None = None
    data: SyntheticConfig = field(default_factory=SyntheticConfig)
    device: str = "auto"
    decoder: str | None = None  # default: the decoder that reads any codec (zsar.data.decoders.fallback_decoder)
    workers: int | None = None
    plots: bool = True
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = SyntheticConfig.from_dict(self.data)
        self.decoder = fallback_decoder(self.decoder or "auto")

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["data"] = self.data.to_dict()
        return d

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.out_dir) / "report.json"


class Steps:
    """Wall-clock seconds per pipeline step, with a numbered header per step."""

    def __init__(self, total: int, verbose: bool):
        self.seconds: dict[str, float] = {}
        self.total, self.verbose, self.n = total, verbose, 0

    @contextmanager
    def __call__(self, name: str, title: str):
        self.n += 1
        if self.verbose:
            print(f"[{self.n}/{self.total}] {title}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)


def default_workers(workers: int | None) -> int:
    """Processes rendering and threads decoding: ``workers``, or the CPU count (at most 8)."""
    return workers if workers is not None else min(torch.multiprocessing.cpu_count(), 8)


def environment(device) -> dict[str, Any]:
    """Where a demo ran (recorded in its report)."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "python": platform.python_version(), "machine": platform.machine(),
            # which vector kernels ran (zsar demo pins them to AVX2 for numbers that do not depend on the CPU)
            "cpu_kernels": {k: os.environ.get(k, "") for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                                                                "ZSAR_CPU_ISA")},
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def finish_report(report: dict[str, Any], config: DemoSettings, steps: Steps, start: float, table,
                  verbose: bool) -> dict[str, Any]:
    """Adds the timings (total seconds since ``start``, seconds per step) to a demo's report, writes
    it to ``config.report_path`` and, when ``verbose``, prints ``table(report)``."""
    report["seconds_by_step"] = steps.seconds
    report["seconds"] = round(time.perf_counter() - start, 2)
    path = config.report_path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report, indent=2) + "\n")
    if verbose:
        print(table(report), flush=True)
    return report


def open_set_summary(clf, unseen_x: torch.Tensor, seen_x: torch.Tensor | None,
                     unseen_labels: list[str]) -> dict[str, Any] | None:
    """How the classifier's open-set calibration answers among the unseen labels: the share of
    unseen test videos it gives a label (``unseen_answered``; the rest are wrongly "none of these")
    and the share of seen test videos, which show none of those labels, it answers "none of these"
    (``seen_rejected``). None without a calibration."""
    if clf.open_set is None:
        return None
    with torch.no_grad():
        matrix = clf.head.class_matrix(list(unseen_labels), clf.embedder, clf.model)

        def answered(x) -> float:
            return float((clf.open_set.answer(clf.head.scores(x, matrix)) >= 0).double().mean())

        return {**clf.open_set.to_dict(), "threshold": clf.open_set.threshold,
                "unseen_answered": answered(unseen_x),
                "seen_rejected": None if seen_x is None or not len(seen_x) else 1.0 - answered(seen_x)}


def percent(value: float | None) -> str:
    """A fraction as a right-aligned percentage (``-`` for None or NaN)."""
    if value is None or value != value:
        return f"{'-':>6} "
    return f"{100 * value:6.1f}%"


def time_and_files(report: dict[str, Any]) -> list[str]:
    """The closing lines of a demo's table: seconds per step and the files written."""
    lines = [f"time: {report['seconds']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                        report["seconds_by_step"].items()) + ")"]
    files = report.get("files", {})
    if files:
        lines.append("files: " + ", ".join(f"{k} {v}" for k, v in files.items()))
    return lines
