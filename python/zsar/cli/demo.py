"""``zsar demo``: the main jobs, end to end on synthetic benchmarks zsar renders itself.

``--model rest`` (default): renders compositional action videos (colour × shape × motion, unseen
classes = held-out compositions), trains a small ResT on the seen classes, transfers seen-class
visual prototypes to the unseen classes through the semantic-relatedness integer program, and
reports zero-shot accuracy against the semantic-space baseline and chance.

``--model mzst``: renders audio-visual videos (shape × motion drawn, sound heard), trains
``mzst_tiny`` with audio + video, video only and audio only, and reports zero-shot accuracy of each
and GZSL S, U and HM with calibrated stacking. See :mod:`zsar.demo`.
"""

from __future__ import annotations

_DESCRIPTION = (
    "Run a zero-shot pipeline end to end on data zsar generates. "
    "--model rest (default): render a compositional action benchmark to video files (unseen classes are "
    "held-out compositions such as 'red star sliding'), train a small ResT on the seen classes (warm-up + "
    "joint stage), compute seen-class prototypes, solve the transfer program (HiGHS) and classify the unseen "
    "videos; prints top-1/top-5/mean class accuracy of the transfer, the semantic-space baseline and chance. "
    "--model mzst: render an audio-visual benchmark (labels such as 'circle falling beeping': the shape and "
    "motion are seen, the sound is heard), train mzst_tiny with audio + video, video only and audio only "
    "(same budget), and report zero-shot accuracy on the unseen classes and GZSL S, U and HM (beta "
    "calibrated on held-out videos). Both write figures, a JSON report and a checkpoint for `zsar predict`; "
    "with the defaults about 1.5 minutes (ResT) and 6.5 minutes (MZST) on an idle 2-core CPU (--quick: under a "
    "minute)."
)

_EPILOG = """examples:
  zsar demo                                  the ResT demo (writes runs/demo/)
  zsar demo --seed 1 --split-seed 7          other videos, another held-out composition split
  zsar demo --quick --out /tmp/demo          a seconds-long smoke run (accuracy meaningless)
  zsar predict runs/demo/data/videos/unseen_test/*/*_000.webm --checkpoint runs/demo/checkpoint \\
      --labels-file runs/demo/data/classes_unseen.txt
  zsar demo --model mzst                     the MZST audio-visual demo (writes runs/demo-mzst/)
  zsar demo --model mzst --quick             its smoke run (writes runs/demo-mzst-quick/)
  zsar predict runs/demo-mzst/data/videos/unseen_test/*/*_000.webm --checkpoint runs/demo-mzst/checkpoint \\
      --labels-file runs/demo-mzst/data/classes_unseen.txt
"""

#: Output folders of --quick runs (the full runs' are the configs' defaults).
_QUICK_OUT = {"rest": "runs/demo-quick", "mzst": "runs/demo-mzst-quick"}
#: Options (argparse dests) that only one demo takes.
_ONLY_FOR = {"colors": "rest", "unseen_fraction": "rest", "warmup_epochs": "rest", "joint_epochs": "rest",
             "transfer": "rest", "sounds": "mzst", "epochs": "mzst"}


#: The defaults of DemoConfig ("rest") and MZSTDemoConfig ("mzst") that --help shows, mirrored here so that
#: `zsar demo --help` does not import torch (tests/test_cli_fast.py checks they equal the configs').
HELP_DEFAULTS = {
    "rest": {"out_dir": "runs/demo", "seed": 0, "colors": ("red", "green", "blue", "yellow", "purple"),
             "shapes": ("circle", "square", "triangle", "star"),
             "motions": ("falling", "sliding", "shaking", "growing", "blinking"), "unseen_fraction": 0.25,
             "train_per_class": 12, "unseen_per_class": 8, "size": 48, "noise": 0.04, "distractors": 2,
             "ext": ".webm", "warmup_epochs": 50, "joint_epochs": 15, "batch_size": 16},
    "mzst": {"out_dir": "runs/demo-mzst", "shapes": ("circle", "square", "triangle"),
             "motions": ("falling", "sliding", "growing"), "sounds": ("beeping", "humming", "buzzing"),
             "train_per_class": 12, "unseen_per_class": 8, "size": 64, "epochs": 45, "batch_size": 8},
}


class _Defaults:
    """Attribute access to one demo's HELP_DEFAULTS (``d.data.shapes`` and ``d.seed`` alike)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)
        self.data = self


def add_arguments(parser) -> None:
    import argparse

    from . import finite_float

    d, m = _Defaults(HELP_DEFAULTS["rest"]), _Defaults(HELP_DEFAULTS["mzst"])
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", default="rest", choices=("rest", "mzst"),
                        help="which demo: ResT on the visual benchmark (default) or MZST on the audio-visual one")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help=f"output folder (default {d.out_dir}, or {m.out_dir} with --model mzst)")
    parser.add_argument("--report", default=None, metavar="PATH", help="JSON report path (default DIR/report.json)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of videos, split and training (default {d.seed})")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of the held-out composition split alone (default: --seed)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny benchmark and one epoch per stage: a smoke test of every step")
    size = parser.add_argument_group("benchmark size (defaults: the standard demo; --quick shrinks them)")
    size.add_argument("--colors", default=None, metavar="A,B,..",
                      help=f"colour words (rest; default {','.join(d.data.colors)})")
    size.add_argument("--shapes", default=None, metavar="A,B,..",
                      help=f"shape words (default {','.join(d.data.shapes)}; mzst {','.join(m.data.shapes)})")
    size.add_argument("--motions", default=None, metavar="A,B,..",
                      help=f"motion phrases (default {','.join(d.data.motions)}; mzst {','.join(m.data.motions)})")
    size.add_argument("--sounds", default=None, metavar="A,B,..",
                      help=f"sound words (mzst; default {','.join(m.data.sounds)})")
    size.add_argument("--unseen-fraction", type=finite_float, default=None,
                      help=f"share of compositions held out (rest; default {d.data.unseen_fraction})")
    size.add_argument("--train-videos", type=int, default=None, metavar="N",
                      help=f"training videos per seen class (default {d.data.train_per_class}; "
                           f"mzst {m.data.train_per_class})")
    size.add_argument("--test-videos", type=int, default=None, metavar="N",
                      help=f"test videos per unseen class (default {d.data.unseen_per_class}; "
                           f"mzst {m.data.unseen_per_class})")
    size.add_argument("--frame-size", type=int, default=None, metavar="PX",
                      help=f"video width and height (default {d.data.size}; mzst {m.data.size})")
    size.add_argument("--noise", type=finite_float, default=None, help=f"pixel noise std (default {d.data.noise})")
    size.add_argument("--distractors", type=int, default=None, help=f"distractor objects per video (default {d.data.distractors})")
    size.add_argument("--format", default=None, choices=(".webm", ".mp4", ".avi", ".mkv"),
                      help=f"video container/codec (default {d.data.ext}: VP9)")
    train = parser.add_argument_group("training and transfer")
    train.add_argument("--warmup-epochs", type=int, default=None,
                       help=f"stage-1 epochs (rest; default {d.warmup_epochs})")
    train.add_argument("--joint-epochs", type=int, default=None,
                       help=f"stage-2 epochs (rest; default {d.joint_epochs})")
    train.add_argument("--epochs", type=int, default=None, help=f"epochs of each model (mzst; default {m.epochs})")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"clips per step (default {d.batch_size}; mzst {m.batch_size})")
    train.add_argument("--transfer", default=None, metavar="THETA,K,RHO",
                       help="fix the transfer program's (ϑ, K, ρ) instead of choosing them by 5-fold "
                            "cross-validation over the seen classes (rest)")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--workers", type=int, default=None,
                       help="processes rendering and threads decoding videos (0 or 1: in this process; "
                            "default: CPU count)")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--native-cpu-kernels", action="store_true",
                        help="let torch, MKL, oneDNN and zsar's own CPU kernels use this CPU's widest vector "
                             "instructions (e.g. AVX-512) instead of AVX2 kernels: ATEN_CPU_CAPABILITY, MKL_CBWR, "
                             "ONEDNN_MAX_CPU_ISA and ZSAR_CPU_ISA are not set to AVX2; faster on some CPUs, but the "
                             "numbers then depend on the CPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 unless the targets are met (rest: unseen top-1 >= 3x chance and "
                             "above the semantic-space baseline; mzst: audio + video unseen top-1 >= 3x chance and "
                             "above video only and audio only)")


def _words(text: str | None):
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


def build_config(args):
    """The demo config (:class:`~zsar.demo.DemoConfig` or :class:`~zsar.demo.MZSTDemoConfig`) the
    command-line options describe."""
    import dataclasses

    from ..demo import DEMOS
    from . import CLIError

    model = getattr(args, "model", "rest")
    for dest, only in _ONLY_FOR.items():
        if only != model and getattr(args, dest) is not None:
            raise CLIError(f"--{dest.replace('_', '-')} applies to --model {only} only")
    config_cls, quick, _, _ = DEMOS[model]
    cfg = quick() if args.quick else config_cls()
    if args.quick and args.out is None:
        args.out = _QUICK_OUT[model]
    data_changes = {k: v for k, v in {
        "colors": _words(args.colors), "shapes": _words(args.shapes), "motions": _words(args.motions),
        "sounds": _words(args.sounds), "unseen_fraction": args.unseen_fraction, "train_per_class": args.train_videos,
        "unseen_per_class": args.test_videos, "size": args.frame_size, "noise": args.noise,
        "distractors": args.distractors, "ext": args.format}.items() if v is not None}
    data = dataclasses.replace(cfg.data, **data_changes)

    if args.workers is not None and args.workers < 0:  # 0 and 1: render and decode in this process
        raise CLIError(f"--workers must be at least 0, got {args.workers}")
    fixed = {} if args.transfer is None else _transfer(args.transfer)
    changes = {k: v for k, v in {
        "out_dir": args.out, "report": args.report, "seed": args.seed, "split_seed": args.split_seed,
        "warmup_epochs": args.warmup_epochs, "joint_epochs": args.joint_epochs, "epochs": args.epochs,
        "batch_size": args.batch_size, "device": args.device, "workers": args.workers}.items() if v is not None}
    changes.update(fixed)
    return dataclasses.replace(cfg, data=data, plots=not args.no_plots, progress=not args.no_progress, **changes)


def _transfer(text: str) -> dict:
    """The fixed transfer settings of ``--transfer THETA,K,RHO``, checked as the transfer program
    checks them (:func:`zsar.zeroshot.transfer.check_transfer_params`) before the training that would
    use them."""
    from ..zeroshot.transfer import check_transfer_params
    from . import CLIError

    def number(part: str, kind: type, name: str):
        try:
            return kind(part)
        except ValueError:
            raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {part!r}") from None

    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError("expected THETA,K,RHO such as 0.5,10,6")
        theta, k, rho = number(parts[0], float, "theta"), number(parts[1], int, "k"), number(parts[2], int, "rho")
        k, theta, rho = check_transfer_params(k, theta, rho)
    except (TypeError, ValueError) as e:
        raise CLIError(f"--transfer {text!r}: {e}") from None
    return {"select": False, "theta": theta, "k": k, "rho": rho}


def check_outputs(config) -> None:
    """Refuses an output folder (``--out``) that is a file or lies under one, and a report path
    (``--report``, default ``OUT/report.json``) that is a folder or lies under a file, before the demo
    renders and trains."""
    from . import check_output_file, check_output_folder

    check_output_folder(str(config.out_dir), "--out")
    check_output_file(str(config.report_path), "--report" if config.report else "report (--report)")


#: Kernels every x86-64 CPU with AVX2 runs alike: torch's vectorised ops, MKL's BLAS (conditional numerical
#: reproducibility) and oneDNN's convolutions otherwise pick AVX-512 code where the CPU has it, whose different
#: summation order changed the MZST demo's weights (max |diff| 9e-5 after one epoch) and so its accuracies.
#: zsar's own CPU kernels likewise (ZSAR_CPU_ISA: its bottleneck attention has an AVX-512 variant).
REPRODUCIBLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                            "ZSAR_CPU_ISA": "avx2"}


def pin_cpu_kernels() -> dict[str, str]:
    """Ask torch, MKL, oneDNN and zsar's own CPU kernels for AVX2 code (:data:`REPRODUCIBLE_CPU_KERNELS`,
    ``ZSAR_CPU_ISA=avx2`` included; a variable the environment already sets is kept), so that a seed gives
    the same numbers on any AVX2 CPU. Takes effect only before torch is imported (the `zsar` command parses
    its options without importing it); returns the settings in force."""
    import os
    import sys

    if "torch" not in sys.modules:
        for key, value in REPRODUCIBLE_CPU_KERNELS.items():
            os.environ.setdefault(key, value)
    return {key: os.environ.get(key, "") for key in REPRODUCIBLE_CPU_KERNELS}


def run(args) -> int:
    if not args.native_cpu_kernels:
        pin_cpu_kernels()
    from ..demo import DEMOS

    config = build_config(args)
    check_outputs(config)
    report = DEMOS[getattr(args, "model", "rest")][2](config)
    if args.check and not all(report["targets"].values()):
        return 1
    return 0
