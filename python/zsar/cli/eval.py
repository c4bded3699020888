"""``zsar eval``: zero-shot accuracy of a checkpoint on labelled videos (0/100, 0/50, or GZSL)."""

from __future__ import annotations

_DESCRIPTION = (
    "Evaluate a zero-shot checkpoint on labelled videos. 0/100 (default) and 0/50: the classes of "
    "--annotations are the candidate labels (0/50: 10 random half-class splits); prints top-1, top-5 and "
    "mean class accuracy of the zero-shot classifier, the semantic-space baseline and chance. "
    "--protocol gzsl: generalized zero-shot learning on --test-seen (videos of classes the checkpoint was "
    "trained on) and --test-unseen (videos of classes it was not); the search space is the classes of both "
    "lists, beta (added to seen-class distances, calibrated stacking) is calibrated on --val-seen/--val-unseen "
    "by the best HM over 16 values in [0, 3], or fixed with --beta; prints S, U, HM and ZSL in the papers' "
    "table layout. All lists are read with --format/--root/--classes. --report writes the results as JSON."
)

_EXAMPLE = """examples:
  zsar eval --checkpoint runs/exp/checkpoints/best --annotations test.txt --root videos/
  zsar eval --protocol gzsl --checkpoint runs/ucf_gzsl/stage_2/checkpoints/last --root videos/ \\
      --test-seen test_seen.txt --test-unseen test_unseen.txt --val-seen val_seen.txt --val-unseen val_unseen.txt \\
      --dataset ucf --report gzsl.json --plot gzsl.png
"""

_GZSL_LISTS = ("test_seen", "test_unseen", "val_seen", "val_unseen")


def add_arguments(parser) -> None:
    import argparse
    import textwrap

    from . import finite_float

    parser.description = textwrap.fill(_DESCRIPTION, 100)  # the raw formatter keeps the example's layout
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory")
    parser.add_argument("--annotations", default=None, metavar="PATH",
                        help="0/100, 0/50: list file, splits folder, CSV or JSON (see --format)")
    parser.add_argument("--root", default=None, help="video folder (default: paths as written)")
    parser.add_argument("--format", default="list",
                        help="annotation format: list, folder, ucf101, ... (`zsar list formats`; default list)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line, that integer labels index (list format)")
    parser.add_argument("--split", default=None, help="split number/name where the format has splits")
    parser.add_argument("--subset", default=None, help="subset where the format has them (default test)")
    parser.add_argument("--protocol", default="0/100",
                        help="a registered class-split protocol (0/100, 0/50, ...: `zsar list protocols`), or gzsl "
                             "(seen and unseen test lists; default 0/100)")
    gzsl = parser.add_argument_group("gzsl")
    gzsl.add_argument("--test-seen", default=None, metavar="PATH", help="test videos of seen classes")
    gzsl.add_argument("--test-unseen", default=None, metavar="PATH", help="test videos of unseen classes")
    gzsl.add_argument("--val-seen", default=None, metavar="PATH", help="validation videos of seen classes")
    gzsl.add_argument("--val-unseen", default=None, metavar="PATH", help="validation videos of unseen classes")
    gzsl.add_argument("--beta", type=finite_float, default=None, help="fixed calibration instead of --val-seen/--val-unseen")
    gzsl.add_argument("--metric", default=None, choices=("l2", "cosine"),
                      help="distance to the class embeddings (default: the zero-shot head's)")
    gzsl.add_argument("--dataset", default=None,
                      help="benchmark name for the report and table (ucf, activitynet, vggsound print as the papers')")
    gzsl.add_argument("--gzsl-split", default="main", choices=("main", "cls"),
                      help="AVCA split the lists come from, for the table (default main)")
    gzsl.add_argument("--plot", default=None, metavar="PATH", help="write the S/U trade-off plot over beta")
    parser.add_argument("--clips", type=int, default=None, help="clips per video (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--backend", default="auto", help="decoder backend (default auto)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--report", default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable video, naming it (default: skip it with a warning; the "
                             "count is printed and written to the report as skipped_videos)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="read list entries that resolve outside --root (../, absolute paths); refused otherwise")
    parser.add_argument("--no-verify", action="store_true",
                        help="load a checkpoint whose config.json records no SHA-256 of its weights (first-format "
                             "checkpoints): only one you trust")
    parser.add_argument("--embeddings", default=None, metavar="PATH",
                        help="0/100, 0/50: encode through this Parquet file (zsar encode's columns plus seen_logits): "
                             "resumable after a kill, reused when complete, and split across torchrun ranks "
                             "(needed under torchrun)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow the checkpoint's label embedder to be a gensim pickle (.kv), which can run "
                             "code when loaded: only for checkpoints you trust")


def _check_options(args) -> None:
    import os

    from . import CLIError, check_output_file

    if not os.path.isdir(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: no such directory")
    from ..eval.protocols import PROTOCOLS  # deferred: torch, which --help does not need

    if args.protocol not in (*PROTOCOLS, "gzsl"):
        raise CLIError(PROTOCOLS.unknown(args.protocol, extra=("gzsl",), argument="--protocol"))
    from ..data.formats import video_format

    fmt = video_format(args.format, "--format", "zsar eval")  # one line naming the option, not data.format
    fmt.check_options(args.split, args.subset, split_name="--split", subset_name="--subset")
    given = [name for name in _GZSL_LISTS if getattr(args, name) is not None]
    if args.protocol != "gzsl":
        if given or args.beta is not None or args.plot is not None:
            raise CLIError(f"--test-seen/--test-unseen/--val-seen/--val-unseen/--beta/--plot are for --protocol gzsl, "
                           f"not {args.protocol}")
        if args.annotations is None:
            raise CLIError("--annotations is required (the labelled videos to evaluate on)")
        paths = {"--annotations": args.annotations}
    else:
        if args.annotations is not None:
            raise CLIError("--protocol gzsl reads --test-seen and --test-unseen, not --annotations")
        for name in ("test_seen", "test_unseen"):
            if getattr(args, name) is None:
                raise CLIError(f"--protocol gzsl needs --{name.replace('_', '-')}")
        has_val = (args.val_seen is not None, args.val_unseen is not None)
        if has_val[0] != has_val[1]:
            raise CLIError("give both --val-seen and --val-unseen (calibration needs seen and unseen classes)")
        if has_val[0] == (args.beta is not None):
            raise CLIError("give --val-seen and --val-unseen to calibrate beta, or a fixed --beta (not both)")
        paths = {f"--{name.replace('_', '-')}": getattr(args, name) for name in given}
    for flag, path in paths.items():
        if not os.path.exists(path):
            raise CLIError(f"{flag} {path}: no such file or folder")
    check_output_file(args.report, "--report")
    check_output_file(args.plot, "--plot")
    check_output_file(args.embeddings, "--embeddings")
    if args.plot is not None:
        _check_plot_format(args.plot)


def _check_plot_format(path: str) -> None:
    """Refuses a ``--plot`` file in a format the figure cannot be written in, before the run."""
    from ..eval.plots import figure_format
    from . import CLIError

    try:
        figure_format(path)
    except ValueError as e:
        raise CLIError(f"--plot {e}") from None


def _name_classes(annotations: str, videos, classes_file: str | None, clf):
    """Zero-shot evaluation embeds the class *names*: a list of integer labels without --classes has only
    the numbers as names, which scored 0% top-1 without a word. Such labels are read as the checkpoint's
    seen classes when it records exactly that many (said on stderr); otherwise the run is refused."""
    import sys

    from . import CLIError

    classes = videos.classes
    if not classes:
        raise CLIError(f"{annotations}: no labelled videos (zero-shot evaluation needs labels)")
    if classes_file is not None or not all(str(name).strip().lstrip("-").isdigit() for name in classes):
        return videos
    seen = list(clf.seen_labels or [])
    if len(seen) == len(classes):
        print(f"note: {annotations}: labels 0..{len(classes) - 1} read as the checkpoint's {len(seen)} seen classes "
              f"({seen[0]!r}, ...); pass --classes FILE to name them otherwise", file=sys.stderr)
        videos.classes = seen
        return videos
    raise CLIError(f"{annotations}: the labels are class numbers ({classes[0]}..{classes[-1]}) and no class names "
                   f"were given (the checkpoint records {len(seen)} seen classes, not {len(classes)}): pass --classes "
                   f"FILE (one class name per line, in label order), or write class names in the list")


def run(args) -> int:
    from . import CLIError

    _check_options(args)

    from dataclasses import replace

    from ..data.config import DataConfig
    from ..eval import write_results_json
    from ..zeroshot import ZeroShotClassifier

    def read(annotations):
        videos = DataConfig(format=args.format, annotations=annotations, root=args.root, split=args.split,
                            subset=args.subset or "test", classes=args.classes, backend=args.backend,
                            allow_outside_root=args.allow_outside_root).read()
        return _name_classes(annotations, videos, args.classes, clf)

    clf = ZeroShotClassifier.load(args.checkpoint, device=args.device, trust_pickle=args.trust_pickle,
                                  verify=not args.no_verify)
    if args.clips is not None:
        clf.clip_spec = replace(clf.clip_spec, num_clips=args.clips)
    if args.protocol == "gzsl":
        results = _gzsl(args, clf, read)
    else:
        if clf.seen_labels is None:
            raise CLIError(f"--checkpoint {args.checkpoint}: records no seen classes (needed for the semantic-space baseline)")
        results = _zero_shot(args, clf, read(args.annotations))
        if results is None:  # a rank other than 0 under torchrun
            return 0
    if args.report:
        write_results_json(args.report, results)
        print(f"report: {args.report}")
    return 0


def _zero_shot(args, clf, videos) -> dict | None:
    import os

    from ..eval.runner import format_zero_shot_report, zero_shot_report
    from . import CLIError

    if args.embeddings is not None:
        from ..eval.embeddings import encode_videos, encoded_set_from_table

        table = encode_videos(clf, videos, args.embeddings, seen_logits=True, batch_size=args.batch,
                              backend=args.backend, checkpoint=os.path.abspath(args.checkpoint),
                              on_error=_on_error(args))
        if int(os.environ.get("RANK", "0")) != 0:
            return None  # rank 0 reports
        encoded = encoded_set_from_table(table)
    else:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise CLIError("under torchrun, give --embeddings PATH (the file the ranks' encodings merge into)")
        from ..data import evaluation_loader
        from ..zeroshot import encode_loader

        loader = evaluation_loader(videos, clf.clip_spec, args.batch, audio=clf.model.inputs.audio,
                                   backend=args.backend, on_error=_on_error(args))
        encoded = encode_loader(clf.model, loader, with_seen_logits=True)
    _say_skipped(encoded.skipped, len(videos))
    results = {"checkpoint": args.checkpoint, **zero_shot_report(clf, encoded, videos.classes, protocol=args.protocol)}
    print(format_zero_shot_report(results))
    return results


def _gzsl(args, clf, read) -> dict:
    from ..eval import format_gzsl_table
    from ..eval.recipes import AVCA_SPLITS, evaluate_gzsl_checkpoint

    lists = {name: read(getattr(args, name)) for name in _GZSL_LISTS if getattr(args, name) is not None}
    report = evaluate_gzsl_checkpoint(clf, lists["test_seen"], lists["test_unseen"], val_seen=lists.get("val_seen"),
                                      val_unseen=lists.get("val_unseen"), beta=args.beta, metric=args.metric,
                                      batch_size=args.batch, backend=args.backend, on_error=_on_error(args))
    report = {"checkpoint": args.checkpoint, "dataset": args.dataset, "split": AVCA_SPLITS[args.gzsl_split],
              **report}
    _say_skipped(report["skipped_videos"], len(lists["test_seen"]) + len(lists["test_unseen"]))
    print(format_gzsl_table(report))
    how = "calibrated on the validation lists" if report["calibration"] == "validation" else "fixed"
    print(f"beta {report['beta']:.2f} ({how}), {report['metric']} distance")
    if args.plot:
        from ..eval.plots import plot_gzsl_tradeoff

        print(f"plot: {plot_gzsl_tradeoff(report['curve'], args.plot, chosen_beta=report['beta'])}")
    return report


def _on_error(args) -> str:
    """An unreadable video: skipped and counted (the default: one bad file in a large collection should
    not end a long evaluation), or with --strict the run stops naming it."""
    return "raise" if args.strict else "skip"


def _say_skipped(skipped: int, total: int) -> None:
    import sys

    if skipped:
        print(f"warning: skipped {skipped} of {total} unreadable video(s) (their decoder errors are logged above; "
              "--strict stops at the first); the accuracies are over the others", file=sys.stderr)
