"""``zsar predict``: zero-shot labels for video files from a trained checkpoint.

Each video is read as the checkpoint's clip spec says (its clips averaged, its audio when the model
takes audio), scored by the checkpoint's zero-shot head against the given labels (ResT: composite
visual prototypes by semantic transfer from the seen classes; MZST: the labels' embeddings), and the
top-k labels are printed with softmax probabilities and, for a checkpoint with an open-set calibration
(:mod:`zsar.zeroshot.open_set`), each label's own match probability and "none of these".
"""

from __future__ import annotations

import json
import os
import sys

_DESCRIPTION = (
    "Zero-shot classification of video files against any labels. The checkpoint is a directory "
    "written by `zsar train`, `zsar demo` or `zsar gzsl` (model weights and the zero-shot head's "
    "settings). Labels "
    "need not be classes the model was trained on: ResT composes a visual prototype for each from "
    "related seen classes, MZST compares the video with the label's embedding."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any FFmpeg codec)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="checkpoint directory (e.g. runs/demo/checkpoint from zsar demo, OUT/checkpoints/best from zsar train)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", metavar='"a,b,c"', help="candidate labels, comma-separated")
    labels.add_argument("--labels-file", metavar="FILE", help="candidate labels, one per line")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="labels to show per video (default 5)")
    parser.add_argument("--clips", type=int, default=None, metavar="N",
                        help="clips per video, averaged (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-verify", action="store_true",
                        help="load a checkpoint whose config.json records no SHA-256 of its weights (first-format "
                             "checkpoints): only one you trust")
    parser.add_argument("--embeddings", default=None, metavar="PATH",
                        help="encode through this Parquet file (as zsar encode writes): resumable, reused when "
                             "complete, split across torchrun ranks (needed under torchrun; rank 0 prints)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow the checkpoint's label embedder to be a gensim pickle (.kv), which can run "
                             "code when loaded: only for checkpoints you trust")


def read_labels(args) -> list[str]:
    """The candidate labels of ``--labels`` (comma-separated) or ``--labels-file`` (one per line, UTF-8).

    Labels are stripped and blank ones dropped, then checked by :func:`zsar.text.check_labels`.

    Args:
        args: the parsed options; exactly one of ``args.labels`` and ``args.labels_file`` is set.

    Returns:
        The labels, in the order given.

    Raises:
        CLIError: the file is missing, a folder or not UTF-8, no label is left, or the check fails (a repeat,
            a control character).
    """
    from .._utils import file_problem
    from ..text import check_labels
    from . import CLIError

    if args.labels is not None:
        labels, where = [s.strip() for s in args.labels.split(",")], "--labels"
    else:
        where = f"--labels-file {args.labels_file}"
        problem = file_problem(args.labels_file)
        if problem:
            raise CLIError(f"{where}: {problem}, expected a labels file (one label per line)")
        try:
            with open(args.labels_file, encoding="utf-8") as f:
                labels = [line.strip() for line in f]
        except UnicodeDecodeError as e:
            raise CLIError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    labels = [label for label in labels if label]
    if not labels:
        raise CLIError(f"no labels given ({where} is empty)")
    try:
        return check_labels(labels, what=where)
    except (TypeError, ValueError) as e:
        raise CLIError(str(e)) from None


def run(args) -> int:
    from . import CLIError, check_output_file

    labels = read_labels(args)
    from ..data import media_file_problem

    bad = [(v, media_file_problem(v)) for v in args.videos]
    bad = [(v, why) for v, why in bad if why]
    if bad:
        raise CLIError(f"{bad[0][0]}: {bad[0][1]}" + (f" (and {len(bad) - 1} more bad video paths)" if len(bad) > 1 else ""))
    if not os.path.isdir(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: no such directory")
    if args.top_k < 1:
        raise CLIError("--top-k must be at least 1")
    check_output_file(args.embeddings, "--embeddings")  # before the encoding that would write it

    from dataclasses import replace

    import torch

    from ..zeroshot import ZeroShotClassifier

    clf = ZeroShotClassifier.load(args.checkpoint, device=args.device, trust_pickle=args.trust_pickle,
                                  verify=not args.no_verify)
    if args.clips is not None:
        if args.clips < 1:
            raise CLIError("--clips must be at least 1")
        clf.clip_spec = replace(clf.clip_spec, num_clips=args.clips, train=False)
    clf.set_labels(labels)
    k = min(args.top_k, len(labels))
    x = _encode(args, clf)
    if x is None:  # a rank other than 0 under torchrun
        return 0
    scores = clf.scores(x)
    probs = torch.softmax(scores / clf.temperature, dim=1)
    match = clf.open_set.probability(scores) if clf.open_set is not None else None
    top = probs.topk(k, dim=1)
    results = []
    for i, video in enumerate(args.videos):
        preds = []
        for p, j in zip(top.values[i].tolist(), top.indices[i].tolist()):
            pred = {"label": labels[j], "probability": round(float(p), 6), "similarity": round(float(scores[i, j]), 6)}
            if match is not None:  # this label's own calibrated probability: unchanged by the other labels
                pred["match"] = round(float(match[i, j]), 6)
            preds.append(pred)
        result = {"video": video, "predictions": preds}
        if match is not None:
            result["none_of_these"] = bool(match[i].max() < 0.5)
        results.append(result)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    if match is None:
        why = f" ({clf.open_set_missing})" if clf.open_set_missing else ""
        print(f"note: the checkpoint has no open-set calibration{why}: no 'match' scores or 'none of these'",
              file=sys.stderr)
    for r in results:
        print(r["video"] + ("  -> none of these (no label's match reaches 0.5)" if r.get("none_of_these") else ""))
        for rank, pred in enumerate(r["predictions"], 1):
            extra = f"  match {pred['match']:.3f}" if "match" in pred else ""
            print(f"  {rank}. {pred['label']:<40} {pred['probability']:.3f}{extra}")
    return 0


def _encode(args, clf):
    """The videos' representations ``(N, D)`` in argument order: in this process, or through
    ``--embeddings`` (split across torchrun ranks; None on ranks other than 0)."""
    from . import CLIError

    if args.embeddings is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise CLIError("under torchrun, give --embeddings PATH (the file the ranks' encodings merge into)")
        return clf.encode(args.videos)
    import torch

    from ..data import VideoList, VideoRecord
    from ..eval.embeddings import encode_videos, read_embeddings

    videos = VideoList([VideoRecord(os.path.abspath(v), -1, v) for v in dict.fromkeys(args.videos)], [])
    encode_videos(clf, videos, args.embeddings, checkpoint=os.path.abspath(args.checkpoint))
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    data = read_embeddings(args.embeddings)
    row = {vid: i for i, (vid, clip) in enumerate(zip(data["video_id"], data["clip"])) if clip == -1}
    missing = [v for v in args.videos if v not in row]
    if missing:
        raise CLIError(f"{missing[0]}: could not be read (skipped while encoding)")
    return torch.from_numpy(data["embedding"][[row[v] for v in args.videos]])
