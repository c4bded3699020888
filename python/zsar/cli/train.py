"""``zsar train CONFIG [key=value ...]``: train ResT on a video dataset and save a zero-shot checkpoint."""

from __future__ import annotations

import json

_DESCRIPTION = (
    "Train a ResT model on the videos a YAML/JSON config names (its `data` section: format, "
    "annotations, root), both stages with the config's optimisers and schedules, resumable from "
    "out_dir/checkpoints/last. Afterwards the seen-class prototypes are computed and a zero-shot "
    "classifier is saved beside the best checkpoint, ready for `zsar predict` and `zsar eval`. "
    "Any config key can be overridden as key=value (nested: warmup.epochs=5, data.root=/videos)."
)

_EXAMPLE = """example config (YAML):
  model: rest_tiny
  model_args: {frames: 8, image_size: 64}
  warmup: {epochs: 5, optimizer: sgd, lr: 0.01, weight_decay: 0.0001}
  joint: {epochs: 5, optimizer: adamw, lr: 0.0003, weight_decay: 0.05}
  batch_size: 16
  out_dir: runs/my_run
  data: {format: list, annotations: train.txt, root: videos/, stride: 2}
  embedder: {type: sentence}        # or {type: word_vectors, path: vectors.bin}
"""


def add_arguments(parser) -> None:
    import argparse

    parser.description = _DESCRIPTION
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="YAML or JSON training config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if out_dir has a checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    import os

    from . import CLIError

    if not os.path.isfile(args.config):
        raise CLIError(f"config file {args.config}: no such file")
    from ..train.config import TrainConfig

    try:
        config = TrainConfig.load(args.config, args.overrides)
    except TypeError as e:
        raise CLIError(str(e)) from None
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if args.no_resume:
        import shutil

        last = os.path.join(config.out_dir, "checkpoints", "last")
        if os.path.exists(last):
            shutil.rmtree(last)
    from ..train.pipeline import train_from_config

    summary = train_from_config(config)
    if "checkpoint" in summary:
        print(f"zero-shot checkpoint: {summary['checkpoint']}")
        print(f"try: zsar predict VIDEO --checkpoint {summary['checkpoint']} --labels \"label one,label two\"")
    return 0
