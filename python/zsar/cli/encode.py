"""``zsar encode``: one embedding per video (and per clip with --per-clip) with its path and label, to a
Parquet file that search, clustering or a vector database can read; resumable, and split across
``torchrun`` ranks (see :mod:`zsar.eval.embeddings`)."""

from __future__ import annotations

import os

_DESCRIPTION = (
    "Write the zero-shot representation of every video (what the checkpoint's model encodes, clips averaged; "
    "--per-clip adds one row per clip) with its path, id, label and class to a Parquet file (columns path, "
    "video_id, label, class, clip, embedding). Videos are files given as arguments, or a dataset read with "
    "--format/--annotations/--root like `zsar eval`. Chunks of --chunk-size videos are written as parts "
    "first and merged at the end, so a killed run resumes where it stopped; under torchrun the ranks split "
    "the chunks and rank 0 writes the one merged file."
)

_EXAMPLE = """examples:
  zsar encode --checkpoint runs/demo/checkpoint --out emb.parquet a.mp4 b.mp4
  zsar encode --checkpoint CKPT --format folder --annotations videos/ --subset all --out emb.parquet
  torchrun --nproc_per_node=4 -m zsar.cli encode --checkpoint CKPT --format folder --annotations videos/ \\
      --subset all --out emb.parquet
"""


def add_arguments(parser) -> None:
    import argparse

    parser.description = _DESCRIPTION
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (or give --annotations)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory")
    parser.add_argument("--out", required=True, metavar="PATH", help="the Parquet file to write")
    add_dataset_arguments(parser, subset="all")
    parser.add_argument("--per-clip", action="store_true", help="also one row per clip (clip 0..N-1)")
    parser.add_argument("--clips", type=int, default=None, help="clips per video (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="videos per part file, the unit of resuming and of the split across ranks (default 64)")
    parser.add_argument("--backend", default="auto", help="decoder backend (default auto)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow the checkpoint's label embedder to be a gensim pickle (.kv)")


def add_dataset_arguments(parser, subset: str) -> None:
    """The options that read a labelled dataset (``encode``, ``predict``): as ``zsar eval``'s."""
    group = parser.add_argument_group("dataset (instead of VIDEO files)")
    group.add_argument("--annotations", default=None, metavar="PATH",
                       help="list file, class folder (--format folder), splits folder, CSV or JSON")
    group.add_argument("--format", default="list", help="annotation format (`zsar list formats`; default list)")
    group.add_argument("--root", default=None, help="video folder (default: paths as written)")
    group.add_argument("--classes", default=None, metavar="FILE", help="class names, one per line")
    group.add_argument("--split", default=None, help="split number/name or spec where the format has one")
    group.add_argument("--subset", default=None, help=f"subset where the format has them (default {subset})")
    parser.set_defaults(default_subset=subset)


def read_videos(args):
    """The :class:`~zsar.data.VideoList` of VIDEO files (label -1) or of ``--annotations``."""
    from . import CLIError

    if bool(args.videos) == (args.annotations is not None):
        raise CLIError("give VIDEO files or --annotations (a dataset), not both or neither")
    if args.videos:
        from ..data import VideoList, VideoRecord, media_file_problem

        for v in args.videos:
            why = media_file_problem(v)
            if why:
                raise CLIError(f"{v}: {why}")
        ids = {}
        records = []
        for v in args.videos:
            path = os.path.abspath(v)
            if path in ids:
                raise CLIError(f"{v}: given twice")
            ids[path] = True
            records.append(VideoRecord(path, -1, v))
        return VideoList(records, [])
    from ..data.config import DataConfig
    from ..data.formats import video_format

    fmt = video_format(args.format, "--format", f"zsar {args.command}")  # one line naming the option
    fmt.check_options(args.split, args.subset, split_name="--split", subset_name="--subset")
    if not os.path.exists(args.annotations):
        raise CLIError(f"--annotations {args.annotations}: no such file or folder")
    return DataConfig(format=args.format, annotations=args.annotations, root=args.root, split=args.split,
                      subset=args.subset or args.default_subset, classes=args.classes, backend=args.backend).read()


def load_classifier(args):
    """The checkpoint's :class:`~zsar.zeroshot.ZeroShotClassifier` with ``--clips`` applied."""
    from dataclasses import replace

    from ..zeroshot import ZeroShotClassifier
    from . import CLIError

    if not os.path.isdir(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: no such directory")
    if args.clips is not None and args.clips < 1:
        raise CLIError(f"--clips must be at least 1, got {args.clips}")
    clf = ZeroShotClassifier.load(args.checkpoint, device=args.device, trust_pickle=args.trust_pickle)
    if args.clips is not None:
        clf.clip_spec = replace(clf.clip_spec, num_clips=args.clips, train=False)
    return clf


def run(args) -> int:
    from . import CLIError, check_output_file

    if not args.out.endswith(".parquet"):
        raise CLIError(f"--out {args.out}: expected a .parquet file name")
    check_output_file(args.out, "--out")  # before the encoding that would write it
    if args.batch < 1 or args.chunk_size < 1:
        raise CLIError(f"--batch and --chunk-size must be at least 1, got {args.batch} and {args.chunk_size}")
    videos = read_videos(args)
    clf = load_classifier(args)
    from ..eval.embeddings import encode_videos

    table = encode_videos(clf, videos, args.out, per_clip=args.per_clip, batch_size=args.batch,
                          chunk_size=args.chunk_size, backend=args.backend, checkpoint=os.path.abspath(args.checkpoint),
                          progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        print(f"{args.out}: {table.num_rows} rows, {meta.get('zsar.dim', '?')}-d embeddings"
              + (f", {meta['zsar.skipped']} unreadable video(s) skipped" if meta.get("zsar.skipped", "0") != "0" else ""))
    return 0
