"""Small helpers shared across zsar's subpackages."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def as_numpy(x) -> np.ndarray:
    """A host NumPy view/copy of an array-like or a (possibly CUDA, possibly grad-tracking) tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def keep_freed_memory() -> str:
    """Stop glibc from returning freed blocks to the kernel (and from serving big blocks with mmap),
    for the rest of the process; returns a one-line description of what was set.

    For benchmark processes: every op call allocates fresh multi-MB outputs, and with glibc's
    default thresholds whether a call gets memory just trimmed back to the kernel (and pays a
    page fault per 4 KiB on it, ~0.5 ms per MB on a VM) depends on everything else the process
    allocated. That swamps the ops' own times, whichever op is measured.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "glibc defaults (no mallopt here)"
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 and mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1:
        return "freed memory kept (glibc trim threshold 1 GiB, mmap threshold 32 MiB)"
    return "glibc defaults (mallopt refused)"


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path``; anything else (invalid JSON or UTF-8, an array, a number) raises
    ``error`` with one line naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@contextmanager
def torch_threads(threads: int | None):
    """Runs the block with ``threads`` intra-op threads (None: leaves torch's setting alone)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
