"""``zsar demo``: the main job, end to end on a synthetic benchmark zsar renders itself.

Renders compositional action videos (colour × shape × motion, unseen classes = held-out
compositions), trains a small ResT on the seen classes, transfers seen-class visual prototypes to the
unseen classes through the semantic-relatedness integer program, and reports zero-shot accuracy
against the semantic-space baseline and chance. See :mod:`zsar.demo`.
"""

from __future__ import annotations

_DESCRIPTION = (
    "Run the ResT zero-shot pipeline end to end on data zsar generates: render a compositional action "
    "benchmark to video files (unseen classes are held-out compositions such as 'red star moving up'), "
    "train a small ResT on the seen classes (warm-up + joint stage), compute seen-class prototypes, "
    "solve the transfer program (HiGHS) and classify the unseen videos. Prints top-1/top-5/mean class "
    "accuracy of the transfer, the semantic-space baseline and chance; writes figures, a JSON report "
    "and a checkpoint for `zsar predict`. A few minutes on a 2-core CPU with the defaults."
)

_EPILOG = """examples:
  zsar demo                                  the default run (writes runs/demo/)
  zsar demo --seed 1 --split-seed 7          other videos, another held-out composition split
  zsar demo --quick --out /tmp/demo          a seconds-long smoke run (accuracy meaningless)
  zsar predict runs/demo/data/videos/unseen_test/*/*_000.webm --checkpoint runs/demo/checkpoint \\
      --labels-file runs/demo/data/classes_unseen.txt
"""


def add_arguments(parser) -> None:
    import argparse

    from ..demo import DemoConfig

    d = DemoConfig()
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default {d.out_dir})")
    parser.add_argument("--report", default=None, metavar="PATH", help="JSON report path (default DIR/report.json)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of videos, split and training (default {d.seed})")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of the held-out composition split alone (default: --seed)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny benchmark and one epoch per stage: a smoke test of every step")
    size = parser.add_argument_group("benchmark size (defaults: the standard demo; --quick shrinks them)")
    size.add_argument("--colors", default=None, metavar="A,B,..", help=f"colour words (default {','.join(d.data.colors)})")
    size.add_argument("--shapes", default=None, metavar="A,B,..", help=f"shape words (default {','.join(d.data.shapes)})")
    size.add_argument("--motions", default=None, metavar="A,B,..",
                      help=f"motion phrases (default {','.join(d.data.motions)})")
    size.add_argument("--unseen-fraction", type=float, default=None,
                      help=f"share of compositions held out (default {d.data.unseen_fraction})")
    size.add_argument("--train-videos", type=int, default=None, metavar="N",
                      help=f"training videos per seen class (default {d.data.train_per_class})")
    size.add_argument("--test-videos", type=int, default=None, metavar="N",
                      help=f"test videos per unseen class (default {d.data.unseen_per_class})")
    size.add_argument("--frame-size", type=int, default=None, metavar="PX",
                      help=f"video width and height (default {d.data.size})")
    size.add_argument("--noise", type=float, default=None, help=f"pixel noise std (default {d.data.noise})")
    size.add_argument("--distractors", type=int, default=None, help=f"distractor objects per video (default {d.data.distractors})")
    size.add_argument("--format", default=None, choices=(".webm", ".mp4", ".avi", ".mkv"),
                      help=f"video container/codec (default {d.data.ext}: VP9)")
    train = parser.add_argument_group("training and transfer")
    train.add_argument("--warmup-epochs", type=int, default=None, help=f"stage-1 epochs (default {d.warmup_epochs})")
    train.add_argument("--joint-epochs", type=int, default=None, help=f"stage-2 epochs (default {d.joint_epochs})")
    train.add_argument("--batch-size", type=int, default=None, help=f"clips per step (default {d.batch_size})")
    train.add_argument("--transfer", default=None, metavar="THETA,K,RHO",
                       help="fix the transfer program's (ϑ, K, ρ) instead of choosing them by 5-fold "
                            "cross-validation over the seen classes")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--workers", type=int, default=None,
                       help="processes rendering and threads decoding videos (default: CPU count)")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 unless the targets are met (unseen top-1 >= 3x chance and "
                             "above the semantic-space baseline)")


def _words(text: str | None):
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


def build_config(args):
    """The :class:`~zsar.demo.DemoConfig` the command-line options describe."""
    import dataclasses

    from ..demo import DemoConfig, quick_config

    cfg = quick_config() if args.quick else DemoConfig()
    if args.quick and args.out is None:
        args.out = "runs/demo-quick"
    data_changes = {k: v for k, v in {
        "colors": _words(args.colors), "shapes": _words(args.shapes), "motions": _words(args.motions),
        "unseen_fraction": args.unseen_fraction, "train_per_class": args.train_videos,
        "unseen_per_class": args.test_videos, "size": args.frame_size, "noise": args.noise,
        "distractors": args.distractors, "ext": args.format}.items() if v is not None}
    data = dataclasses.replace(cfg.data, **data_changes)
    from . import CLIError

    if args.transfer is not None:
        try:
            theta, k, rho = args.transfer.split(",")
            fixed = {"select": False, "theta": float(theta), "k": int(k), "rho": int(rho)}
        except ValueError:
            raise CLIError(f"--transfer expects THETA,K,RHO such as 0.5,10,6; got {args.transfer!r}") from None
    else:
        fixed = {}
    changes = {k: v for k, v in {
        "out_dir": args.out, "report": args.report, "seed": args.seed, "split_seed": args.split_seed,
        "warmup_epochs": args.warmup_epochs, "joint_epochs": args.joint_epochs, "batch_size": args.batch_size,
        "device": args.device, "workers": args.workers}.items() if v is not None}
    changes.update(fixed)
    return dataclasses.replace(cfg, data=data, plots=not args.no_plots, progress=not args.no_progress, **changes)


def run(args) -> int:
    from ..demo import run_demo

    report = run_demo(build_config(args))
    if args.check and not all(report["targets"].values()):
        return 1
    return 0
