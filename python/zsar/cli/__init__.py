"""The ``zsar`` command. Each subcommand lives in its own module (``COMMANDS``).

Building the parser imports every subcommand's module (for its options), so a module imports at its
top only what its options need; what a command runs is imported inside its ``run``, so that
``zsar --help`` and each command load only their own layers (the one place in the package where
deferred imports need no comment of their own: ``tests/test_layers.py``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "info": ("zsar.cli.info", "show how zsar was built and which kernel backends work here"),
    "list": ("zsar.cli.listing", "list the registered models, ops, decoders, dataset formats and protocols"),
    "demo": ("zsar.cli.demo", "run the main demonstration on data zsar generates itself"),
    "train": ("zsar.cli.train", "train a model (ResT, ...) on a video dataset and save a zero-shot checkpoint"),
    "eval": ("zsar.cli.eval", "zero-shot accuracy of a checkpoint on labelled videos"),
    "gzsl": ("zsar.cli.gzsl", "the AVCA two-stage GZSL benchmark (UCF/ActivityNet/VGGSound) of a model, from a config"),
    "predict": ("zsar.cli.predict", "zero-shot labels for video files against any labels"),
    "encode": ("zsar.cli.encode", "write one embedding per video (and per clip) with its path and label to Parquet"),
    "bench": ("zsar.cli.bench", "quick throughput measurements (attention op, model, video decoding)"),
    "flops": ("zsar.cli.flops", "per-clip multiply-adds (the papers' GFLOPs) and parameters of a model"),
    "prepare": ("zsar.cli.prepare", "transcode a dataset folder into H.264 or VP9 for fast decoding"),
    "relatedness": ("zsar.cli.relatedness", "MZSL-50 semantic relatedness, buckets and score of a class list"),
}


class CLIError(Exception):
    """An error to report as one line (bad path, bad option), without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and infinities are refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``zsar`` parser: ``--version`` and one subcommand per :data:`COMMANDS` entry.

    Imports each subcommand's module for its ``add_arguments``; the module's name is stored as
    ``args._module``, whose ``run`` :func:`main` calls.
    """
    parser = _Parser(prog="zsar", description="Zero-shot action recognition in video.")
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"zsar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def load_run_config(config_cls, args):
    """``config_cls.load(args.config, args.overrides)`` for the commands that run from a config file;
    prints it and returns None with ``--print-config``. Bad files and values are one-line errors."""
    import json
    import os

    if not os.path.isfile(args.config):
        raise CLIError(f"config file {args.config}: no such file")
    try:
        config = config_cls.load(args.config, args.overrides)
    except TypeError as e:
        raise CLIError(str(e)) from None
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return None
    out_dir = getattr(config, "out_dir", None)
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CLIError(f"out_dir {out_dir}: is a file, not a folder")
    return config


def check_output_file(path: str | None, option: str) -> None:
    """Refuses an output file path that names a folder, whose parent is a file, or where this user
    may not write (before the work that would write it)."""
    import os

    if path is None:
        return
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise CLIError(f"{option} {path}: {parent} is a file, not a folder")
    if parent and not os.access(parent, os.W_OK | os.X_OK):  # (files are written beside, then renamed)
        raise CLIError(f"{option} {path}: no permission to write in {parent}")


def check_output_folder(path: str, option: str) -> None:
    """Refuses an output folder path that names a file, or lies under one (before the work that would
    fill it); the folder itself is made by that work."""
    import os

    if os.path.exists(path):
        if not os.path.isdir(path):
            raise CLIError(f"{option} {path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CLIError(f"{option} {path}: no permission to write in it")
    else:
        check_output_file(path, option)  # a file above the folder to make


def _run_errors() -> tuple[type[Exception], ...]:
    """Errors of a run that are the user's to fix (a locked run folder, a diverged loss): one line."""
    from ..train import NonFiniteLossError, RunLockedError

    return (NonFiniteLossError, RunLockedError)


def _log_to_stderr() -> None:
    """Show zsar's info-level messages (e.g. the decoder chosen for each kind of file) on stderr. Under
    torchrun only rank 0 says them (every rank would repeat them); the other ranks show warnings, with
    their rank."""
    import logging
    import os

    logger = logging.getLogger("zsar")
    if not logger.handlers:
        rank = os.environ.get("RANK", "0")
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zsar: %(message)s" if rank == "0" else f"zsar (rank {rank}): %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if rank == "0" else logging.WARNING)



def check_device(text: str, option: str = "--device") -> str:
    """``text`` when it names a device zsar can run on here (``cpu``, ``cuda``, ``cuda:N`` of an
    existing GPU); else :class:`CLIError` saying why."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise CLIError(f"{option} {text!r}: not a device; expected cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        raise CLIError(f"{option} {text!r}: zsar runs on cpu or cuda, not {device.type}")
    if not torch.cuda.is_available():
        raise CLIError(f"{option} {text!r}: torch sees no CUDA device here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"{option} {text!r}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 to "
                       f"cuda:{torch.cuda.device_count() - 1})")
    return text


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message (C++ errors carry backtraces), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line. ``key=value`` overrides may follow options (``zsar train CFG
    --print-config key=v``): argparse ends a ``nargs="*"`` positional at the first option and would
    refuse the rest, so those left over are added to the command's overrides."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
                "=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # argparse's own error for what is left
    return args


def _cpus_busy(seconds: float = 0.25) -> float | None:
    """How many CPUs' worth of time the machine spent busy over the next ``seconds`` (all processes;
    ``/proc/stat``, time stolen by a hypervisor counted as busy); None where that file is unreadable."""
    import time

    def sample():
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        total = [int(x) for x in lines[0].split()[1:]]
        idle = total[3] + (total[4] if len(total) > 4 else 0)  # idle + iowait
        return sum(total[:8]), idle, sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())

    try:
        total0, idle0, n_cpus = sample()
        time.sleep(seconds)
        total1, idle1, _ = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return n_cpus * (elapsed - (idle1 - idle0)) / elapsed if elapsed > 0 else None


def _openmp_waits(cpus_busy: Callable[[], float | None] = _cpus_busy) -> None:
    """OMP_WAIT_POLICY=passive for torch's OpenMP threads when the machine is busy with other work as
    the command starts (``cpus_busy()``, CPUs' worth, >= 0.5), unless the environment sets the policy
    (then nothing is sampled). OpenMP reads it once, when torch loads: the command decides before
    anything imports torch.

    Why it depends (bench/RESULTS.md, mzst_tiny training step, batch 16, 2 cores): idle, OpenMP's
    default (idle threads spin a while before sleeping) is 1.4x faster than passive (ResT small 1.3x);
    beside one CPU-bound process, passive was 2.1-10x faster (spinning threads take the time slices
    the working ones need; a shorter spin, GOMP_SPINCOUNT=10000, still lost 1.8x), beside two 1.0-1.4x.
    With passive waits zsar's CPU kernels share a call through their own pool (csrc/cpu/thread_pool.h),
    which never waits at a barrier for a thread the machine has not run."""
    import os

    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    busy = cpus_busy()
    if busy is not None and busy >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "passive"


def main(argv: list[str] | None = None) -> int:
    """The ``zsar`` command: parses ``argv``, checks ``--device``, runs the subcommand.

    Errors print as one line on stderr, without a traceback (the user's to fix, or the machine's).

    Args:
        argv: the arguments after ``zsar``; None reads ``sys.argv``.

    Returns:
        The exit status: the subcommand's own; 2 for errors the user fixes (:class:`CLIError`, a
        missing file, a bad value, a locked run folder, a diverged loss); 1 for an OS, memory or
        runtime error; 130 when interrupted; 0 when stdout's reader closed the pipe.
    """
    _openmp_waits()
    args = _parse(argv)
    _log_to_stderr()
    try:
        if getattr(args, "device", None) is not None:
            args.device = check_device(args.device)
        code = importlib.import_module(args._module).run(args)
        sys.stdout.flush()  # a closed pipe shows here, in the handlers below, not at interpreter exit
        return code
    except (CLIError, FileNotFoundError, ValueError, *_run_errors()) as exc:
        print(f"zsar {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like (an OSError: caught before those)
        # Python would report the pipe again when it flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a full disk, an output path that is a folder or a file, permissions
        print(f"zsar {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:  # an allocation torch could not make, a kernel refusing
        print(f"zsar {args.command}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"zsar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
