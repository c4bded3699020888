"""``zsar train CONFIG [key=value ...]``: train a registered model on a video dataset and save a zero-shot
checkpoint."""

from __future__ import annotations


_DESCRIPTION = (
    "Train a registered model (e.g. rest18) on the videos a YAML/JSON config names (its `data` section: "
    "format, annotations, root), every training stage of the model (ResT: warmup, joint) with the "
    "model's default optimisers and schedules unless `stages` overrides them, resumable from "
    "out_dir/checkpoints/last (--no-resume starts over). Afterwards the model's zero-shot head is built "
    "(ResT: seen-class prototypes) and a zero-shot classifier is saved beside the best checkpoint, ready "
    "for `zsar predict` and `zsar eval`. Any config key can be overridden as key=value (nested: "
    "stages.warmup.epochs=5, data.root=/videos)."
)

_EXAMPLE = """example config (YAML):
  model: rest_tiny
  model_args: {frames: 8, image_size: 64}
  stages:                           # overrides of the model's stage defaults
    warmup: {epochs: 5, optimizer: sgd, lr: 0.01, weight_decay: 0.0001}
    joint: {epochs: 5, lr: 0.0003}
  batch_size: 16
  out_dir: runs/my_run
  data: {format: list, annotations: train.txt, root: videos/, stride: 2}
  embedder: {type: sentence}        # or {type: word_vectors, path: vectors.bin}
  head_settings: {k: 5, theta: 0.5, rho: 3}    # the zero-shot head's (ResT: the transfer program's)
  head_selection: {}                # or choose them by 5-fold cross-validation over the seen classes
                                    # (ResT 4.1; grid: {thetas: [...], ks: [...], rhos: [...]})
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
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow `embedder` to name a gensim pickle (.kv), which can run code when loaded")


def run(args) -> int:
    from ..train.config import TrainConfig
    from . import load_run_config

    config = load_run_config(TrainConfig, args)
    if config is None:
        return 0
    from ..train.pipeline import train_from_config

    summary = train_from_config(config, resume=not args.no_resume, trust_pickle=args.trust_pickle)
    if "checkpoint" in summary:
        print(f"zero-shot checkpoint: {summary['checkpoint']}")
        print(f"try: zsar predict VIDEO --checkpoint {summary['checkpoint']} --labels \"label one,label two\"")
    return 0
