"""Small helpers shared across zsar's subpackages."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

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
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "glibc defaults (no mallopt here)"
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 and mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1:
        return "freed memory kept (glibc trim threshold 1 GiB, mmap threshold 32 MiB)"
    return "glibc defaults (mallopt refused)"


def default_mode(folder: bool = False) -> int:
    """The permissions a new file (or folder) gets from this process's umask, as ``open`` would give
    it: temporary files and folders (``mkstemp``, ``mkdtemp``) are made private (0600 / 0700), and a
    result renamed from one must not stay unreadable to the user's group."""
    return (0o777 if folder else 0o666) & ~_umask()


def _umask() -> int:
    # Read, not set and restored, where the kernel says it (Linux >= 4.7): os.umask(0) would leave a
    # moment in which another thread's new files get no mask at all.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o077)  # (the fallback's moment gives new files the strictest mask, never none)
    os.umask(umask)
    return umask


def write_atomic(path: str | Path, data: str | bytes | Callable[[BinaryIO], Any]) -> Path:
    """Writes ``data`` to ``path`` through a temporary file beside it, renamed over ``path`` once
    complete: a full disk or a kill leaves the previous file whole (and no temporary one).

    Args:
        path: the file to write.
        data: text (written as UTF-8), bytes, or ``writer(f)`` that writes into the open binary file
            ``f`` (e.g. ``lambda f: fig.savefig(f, format="png")``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_problem(path: str | Path) -> str | None:
    """What keeps ``path`` from being read as a file: ``"is a folder"``, ``"is not a regular file"``,
    ``"no such file"``, or None when it is a regular file (callers word the rest of the message)."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder"
    return "is not a regular file" if path.exists() else "no such file"


def parse_json(text: str | bytes, where: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads(text)``, the one JSON parser of zsar's readers: invalid JSON and JSON nested too
    deeply for the parser (a RecursionError otherwise) raise ``error`` with one line naming
    ``where`` (a file), never its content."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise error(f"{where} is not valid JSON (not UTF-8 text at byte {e.start})") from None
    except RecursionError:
        raise error(f"{where} is not valid JSON here (nested too deeply)") from None


def read_json(path: str | Path, error: type[Exception] = ValueError, encoding: str = "utf-8") -> Any:
    """The JSON value in the file ``path``, read with :func:`parse_json` (``error`` on bad data)."""
    try:
        text = Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise error(f"{path} is not valid JSON (not UTF-8 text at byte {e.start})") from None
    return parse_json(text, str(path), error)


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path``; anything else (invalid JSON or UTF-8, an array, a number) raises
    ``error`` with one line naming the file."""
    data = read_json(path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Runs the block with ``threads`` intra-op threads (None: leaves torch's setting alone)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_model_loading():
    """No "Loading weights" progress bar from Hugging Face transformers while loading local models
    (a label embedder, a backbone): it would print on every ``zsar predict``/``eval``. Restores the
    previous setting."""
    # deferred: transformers takes ~2 s to import
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
