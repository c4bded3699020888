"""``zsar eval``: zero-shot accuracy of a checkpoint on a labelled video set."""

from __future__ import annotations

from ..data.config import FORMATS

_DESCRIPTION = (
    "Evaluate a zero-shot checkpoint on labelled videos whose classes serve as the candidate labels "
    "(0/100 protocol, or --protocol 0/50 for 10 random half-class splits). Prints top-1, top-5 and "
    "mean class accuracy of the semantic-transfer classifier, the semantic-space baseline and chance; "
    "--report writes them as JSON."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory")
    parser.add_argument("--annotations", required=True, metavar="PATH",
                        help="list file, splits folder, CSV or JSON (see --format)")
    parser.add_argument("--root", default=None, help="video folder (default: paths as written)")
    parser.add_argument("--format", default="list", choices=FORMATS, help="annotation format (default list)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line, that integer labels index (list format)")
    parser.add_argument("--split", default=None, help="split number/name where the format has splits")
    parser.add_argument("--subset", default="test", help="subset where the format has them (default test)")
    parser.add_argument("--protocol", default="0/100", choices=("0/100", "0/50"), help="default 0/100")
    parser.add_argument("--clips", type=int, default=None, help="clips per video (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--backend", default="auto", help="decoder backend (default auto)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--report", default=None, metavar="PATH", help="write the results as JSON")


def run(args) -> int:
    import os

    from . import CLIError

    if not os.path.isdir(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: no such directory")
    if not os.path.exists(args.annotations):
        raise CLIError(f"--annotations {args.annotations}: no such file or folder")

    from dataclasses import replace

    from ..data import VideoLoader
    from ..data.config import DataConfig
    from ..eval import write_results_json
    from ..eval.runner import encode_dataset, format_zero_shot_report, zero_shot_report
    from ..zeroshot import ZeroShotClassifier

    data = DataConfig(format=args.format, annotations=args.annotations, root=args.root, split=args.split,
                      subset=args.subset, classes=args.classes, backend=args.backend)
    videos = data.read()
    clf = ZeroShotClassifier.load(args.checkpoint, device=args.device)
    if clf.seen_labels is None:
        raise CLIError(f"--checkpoint {args.checkpoint}: records no seen classes (needed for the semantic-space baseline)")
    spec = clf.clip_spec if args.clips is None else replace(clf.clip_spec, num_clips=args.clips)
    loader = VideoLoader(videos, spec, args.batch, backend=args.backend, shuffle=False, num_shards=1)
    encoded = encode_dataset(clf.model, loader)
    if encoded.skipped:
        print(f"skipped {encoded.skipped} unreadable video(s)")
    results = {"checkpoint": args.checkpoint,
               **zero_shot_report(clf, encoded, videos.classes, protocol=args.protocol)}
    print(format_zero_shot_report(results))
    if args.report:
        write_results_json(args.report, results)
        print(f"report: {args.report}")
    return 0
