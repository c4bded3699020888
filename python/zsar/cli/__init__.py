"""The ``zsar`` command. Each subcommand lives in its own module (``COMMANDS``).

Building the parser imports every subcommand's module (for its options), so a module imports at its
top only what its options need; what a command runs is imported inside its ``run``, so that
``zsar --help`` and each command load only their own layers (the one place in the package where
deferred imports need no comment of their own: ``tests/test_layers.py``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "info": ("zsar.cli.info", "show how zsar was built and which kernel backends work here"),
    "demo": ("zsar.cli.demo", "run the main demonstration on data zsar generates itself"),
    "train": ("zsar.cli.train", "train a model (ResT, ...) on a video dataset and save a zero-shot checkpoint"),
    "eval": ("zsar.cli.eval", "zero-shot accuracy of a checkpoint on labelled videos"),
    "gzsl": ("zsar.cli.gzsl", "the AVCA two-stage GZSL benchmark (UCF/ActivityNet/VGGSound) of a model, from a config"),
    "predict": ("zsar.cli.predict", "zero-shot labels for video files against any labels"),
    "bench": ("zsar.cli.bench", "quick throughput measurements (attention op, model, video decoding)"),
    "flops": ("zsar.cli.flops", "per-clip multiply-adds (the papers' GFLOPs) and parameters of a model"),
    "prepare": ("zsar.cli.prepare", "transcode a dataset folder into H.264 or VP9 for fast decoding"),
    "relatedness": ("zsar.cli.relatedness", "MZSL-50 semantic relatedness, buckets and score of a class list"),
}


class CLIError(Exception):
    """An error to report as one line (bad path, bad option), without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsar", description="Zero-shot action recognition in video.")
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
    return config


def _run_errors() -> tuple[type[Exception], ...]:
    """Errors of a run that are the user's to fix (a locked run folder, a diverged loss): one line."""
    from ..train import NonFiniteLossError, RunLockedError

    return (NonFiniteLossError, RunLockedError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args)
    except (CLIError, FileNotFoundError, ValueError, *_run_errors()) as exc:
        print(f"zsar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print(f"zsar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
