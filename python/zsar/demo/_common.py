"""What the demos share: decoded-media caching, the step timer, loaders, report writing.

The demos train small models for many short epochs on a few hundred tiny videos, where decoding
costs more than training: :class:`MediaCache` decodes every file once (frames, and the audio
features of each clip window), and :class:`CachedClipDataset` plans and transforms clips exactly
as :class:`~zsar.data.VideoClipDataset` does, reading from the cache.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .._utils import torch_threads  # noqa: F401  (re-exported: the demos use it)
from ..data.decoders import read_frames
from ..data.loader import VideoClipDataset, clip_audio, clip_centre_seconds
from ..data.synthetic import SyntheticConfig
from ..data.transforms import ClipSpec, apply_plan

__all__ = ["DemoSettings", "MediaCache", "CachedClipDataset", "Steps", "loader", "default_workers", "torch_threads",
           "environment", "finish_report", "percent", "time_and_files"]


@dataclass
class DemoSettings:
    """What every demo's config holds: outputs, seeds, the benchmark, and how it runs.

    ``seed`` drives everything: the rendered videos, the held-out split (unless ``split_seed``
    picks another one) and training. ``data`` sizes the benchmark (its own ``seed`` and
    ``split_seed`` are replaced by the demo's). ``decoder``: the backend that decodes the videos
    once into memory; ``workers``: processes rendering and threads decoding (default: the CPU
    count, at most 8).
    """

    out_dir: str = "runs/demo"
    report: str | None = None  # default: out_dir/report.json
    seed: int = 0
    split_seed: int | None = None
    data: SyntheticConfig = field(default_factory=SyntheticConfig)
    device: str = "auto"
    decoder: str = "pyav"
    workers: int | None = None
    plots: bool = True
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = SyntheticConfig.from_dict(self.data)

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["data"] = self.data.to_dict()
        return d

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.out_dir) / "report.json"


class MediaCache:
    """Every frame of each video file, decoded once, and the audio features of each clip window.

    Decoding dominates a CPU epoch of a small model: a 24-frame VP9 video takes longer to decode
    than its clip takes to train on, and its audio window longer still. Frames are decoded through
    :func:`zsar.data.read_frames`; audio features through :func:`zsar.data.loader.clip_audio`, keyed
    by the clip's centre (the window is centred there), so a cached sample equals an uncached one.
    """

    def __init__(self, backend: str):
        self.backend = backend
        self.frames: dict[str, torch.Tensor] = {}
        self.audio: dict[tuple, tuple[torch.Tensor, bool]] = {}

    def get(self, path: str, info) -> torch.Tensor:
        """All frames of ``path`` ``(T, H, W, 3)`` uint8."""
        frames = self.frames.get(path)
        if frames is None:
            frames = read_frames(path, np.arange(info.num_frames), self.backend, device="cpu", info=info)
            self.frames[path] = frames
        return frames

    def get_audio(self, path: str, info, plan, spec, missing: str) -> tuple[torch.Tensor, bool]:
        """``(features, present)`` of the audio window of clip ``plan`` (see :func:`clip_audio`)."""
        key = (path, clip_centre_seconds(plan, info), spec, missing)
        found = self.audio.get(key)
        if found is None:
            found = self.audio[key] = clip_audio(path, info, plan, spec, missing)
        return found

    def fill(self, datasets: Sequence["CachedClipDataset"], workers: int, progress: bool,
             epochs: Iterable[int] = (0,)) -> None:
        """Decodes every video of ``datasets`` and, for those that load audio, the audio window of
        each of their clips in ``epochs`` (threads: FFmpeg decodes without holding the GIL)."""
        from tqdm.auto import tqdm

        epochs = list(epochs)
        frames, windows = {}, {}
        for ds in datasets:
            for i, record in enumerate(ds.videos):
                frames.setdefault(record.path, (ds, i))
                if ds.audio is not None:
                    info = ds.info(i)
                    for epoch in epochs:
                        plan = ds.plan(i, epoch)
                        windows.setdefault((record.path, clip_centre_seconds(plan, info)), (ds, i, plan))
        bar = tqdm(total=len(frames) + len(windows), desc="decoding videos", unit="file", disable=not progress,
                   dynamic_ncols=True)

        def video(item):
            ds, i = item
            self.get(ds.videos[i].path, ds.info(i))

        def audio(item):
            ds, i, plan = item
            self.get_audio(ds.videos[i].path, ds.info(i), plan, ds.audio, ds.policy.missing_audio)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for work, items in ((video, frames.values()), (audio, windows.values())):
                for _ in pool.map(work, items):
                    bar.update(1)
        bar.close()


class CachedClipDataset(VideoClipDataset):
    """:class:`~zsar.data.VideoClipDataset` whose videos (and audio windows) are decoded once into a
    shared :class:`MediaCache`; clips are then planned and transformed exactly as the uncached
    dataset does (same :func:`~zsar.data.plan_clip` draws for a given seed, epoch and index)."""

    def __init__(self, videos, spec: ClipSpec, cache: MediaCache, seed: int = 0, audio=None):
        super().__init__(videos, spec, backend=cache.backend, seed=seed, audio=audio)
        self.cache = cache

    def load(self, i: int, epoch: int | None = None) -> torch.Tensor:
        plan = self.plan(i, epoch)
        frames = self.cache.get(self.videos[i].path, self.info(i))
        return apply_plan(frames[torch.from_numpy(plan.indices.ravel())], plan, self.spec)

    def load_audio(self, i: int, epoch: int | None = None) -> tuple[torch.Tensor, bool]:
        if self.audio is None:
            return super().load_audio(i, epoch)  # raises: this dataset loads no audio
        return self.cache.get_audio(self.videos[i].path, self.info(i), self.plan(i, epoch), self.audio,
                                    self.policy.missing_audio)


def loader(dataset, batch_size: int = 64):
    """An in-order DataLoader over a dataset of samples (evaluation)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, collate_fn=getattr(dataset, "collate_fn", None))


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
            "python": platform.python_version(), "machine": platform.machine()}


def finish_report(report: dict[str, Any], config: DemoSettings, steps: Steps, start: float, table,
                  verbose: bool) -> dict[str, Any]:
    """Adds the timings (total seconds since ``start``, seconds per step) to a demo's report, writes
    it to ``config.report_path`` and, when ``verbose``, prints ``table(report)``."""
    report["seconds_by_step"] = steps.seconds
    report["seconds"] = round(time.perf_counter() - start, 2)
    path = config.report_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    if verbose:
        print(table(report), flush=True)
    return report


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
