"""``python -m zsar.info`` / ``zsar info``: how zsar was built and which backends of every registered
op (:data:`zsar.ops.ATTENTION_OPS`) work here."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

from . import _ext
from ._version import __version__
from .ops import ATTENTION_OPS


def _probe_devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return devices


def backend_table(op: str = "masked_attention") -> list[dict]:
    """For each device and dtype: every backend of the registered op ``op`` with its reasons (empty = usable)."""
    attention_op = ATTENTION_OPS[op]
    rows = []
    for device in _probe_devices():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            q = torch.empty(1, 1, 4, 64, device=device, dtype=dtype)
            lengths = torch.zeros(1, dtype=torch.int32, device=device)
            rows.append({"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                         "backends": attention_op.dispatcher.reasons(attention_op.probe(q, lengths))})
    return rows


def collect() -> dict:
    """What ``zsar info`` reports, as JSON-serialisable data: versions, GPUs, build and backends.

    Returns:
        A dict with the zsar, python, torch and torch CUDA versions, the platform, the CUDA device
        names, whether ``TRITON_INTERPRET=1`` is set, the compiled core's :func:`zsar._ext.build_info`
        under ``"build"``, the op names under ``"ops"``, and each op's :func:`backend_table` under
        its name (``zsar info --json`` prints it as is).
    """
    return {
        "zsar": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "build": _ext.build_info(),
        "ops": list(ATTENTION_OPS),
        **{op: backend_table(op) for op in ATTENTION_OPS},
    }


def render(info: dict) -> str:
    """Formats :func:`collect`'s dict as the ``zsar info`` table.

    Args:
        info: the dict :func:`collect` returns.

    Returns:
        Versions and GPUs, the compiled core (compiler, CPU kernels' instruction set, threading,
        CUDA architectures, or why it is unavailable), then per op, device and dtype the usable
        backends in dispatch order and why each other one is not.
    """
    b = info["build"]
    lines = [
        f"zsar {info['zsar']}  (python {info['python']}, torch {info['torch']}, torch CUDA {info['torch_cuda']})",
        f"platform: {info['platform']}",
        f"GPUs: {', '.join(info['cuda_devices']) or 'none'}",
        "",
        "compiled core zsar._C:",
    ]
    if not b["available"]:
        lines.append(f"  unavailable: {b['error']}")
    else:
        lines += [
            f"  compiler: {b['compiler']}  (CPU kernels: {b['cpu_isa']})",
            f"  threads:  {b['cpu_threads']} by default, shared through {'an OpenMP team' if b['cpu_threading'] == 'openmp' else 'its own pool'}"
            f" (ZSAR_THREADING, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')};"
            f" torch.set_num_threads caps a call)",
            f"  CUDA:     {'on (archs %s, runtime %s)' % (b['cuda_archs'], b['cuda_runtime_version']) if b['cuda'] else 'off'}",
        ]
    for op in info["ops"]:
        lines += ["", f"{op} backends (dispatch order; first usable one wins):"]
        for row in info[op]:
            usable = [n for n, why in row["backends"].items() if not why]
            lines.append(f"  {row['device']:<7} {row['dtype']:<9} usable: {', '.join(usable)}")
            for name, why in row["backends"].items():
                if why:
                    lines.append(f"      {name}: {'; '.join(why)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m zsar.info [--json]``: prints :func:`collect` as a table (or one JSON object)."""
    parser = argparse.ArgumentParser(prog="python -m zsar.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    data = collect()
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
