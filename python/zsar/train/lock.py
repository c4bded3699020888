"""An exclusive lock on a run's output folder, so that two trainings never write into one folder.

The lock is an ``flock`` on ``OUT/.lock``: the kernel releases it when the holder exits, however it
exits, so the lock of a killed run is simply taken over. The file records the holder (pid, host,
start time) for the error message of a refused run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .._utils import parse_json

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


class RunLock:
    """Context manager holding ``directory/.lock`` exclusively (created with the folder)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use by another training run ({holder}); "
                                 "wait for it or choose another out_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = parse_json(os.pread(fd, 4096, 0).decode() or "{}", "lock file")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
