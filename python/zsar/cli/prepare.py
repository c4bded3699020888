"""``zsar prepare``: transcode a dataset folder into H.264 or VP9 for the fast decoding path.

See :func:`zsar.data.prepare.prepare_dataset` for what is converted, skipped and refused.
"""

from __future__ import annotations

import os
import signal
import sys

# Mirrors zsar.data.prepare.OUTPUT_EXTENSIONS (kept here so that building the parser stays light).
CODECS = ("h264", "vp9")

_DESCRIPTION = (
    "Transcode every video under SRC (by extension: mp4, avi, mkv, webm, mov, ...) into DST with the "
    "same folder tree, in a codec the fast decoding path reads: h264 (.mp4, decoded by DALI on the "
    "GPU) or vp9 (.webm, decoded by DALI on the CPU). Every frame is kept at the source frame rate "
    "(--fps resamples), and so is the audio track; --gop sets the keyframe interval, which decides how "
    "fast a clip is reached; each output records its settings in its comment tag, and one made with "
    "other settings is converted again. Runs in parallel with a progress bar and is resumable: outputs that "
    "already hold every frame are skipped, so an interrupted run can simply be started again (on "
    "SIGTERM, Ctrl-C or a kill the workers stop and leave no half-written file). A truncated source "
    "is converted with the frames it holds, noted, and recorded in DST/.zsar-prepare.json so that the "
    "next run skips it. Symbolically linked folders in SRC are noted and not searched unless "
    "--follow-symlinks is given. SRC is never written to: a DST equal to or inside SRC is refused."
)

_EPILOG = (
    "exit status: 0 when every video was converted or already prepared; 1 when some videos failed "
    "and --skip-errors let the run finish (they are listed on stderr); 2 on an error (bad folder or "
    "option, or an unreadable video without --skip-errors); 143 when stopped by SIGTERM."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.add_argument("src", metavar="SRC", help="folder of source videos (searched recursively)")
    parser.add_argument("dst", metavar="DST", help="output folder (created if needed; outside SRC)")
    parser.add_argument("--codec", choices=CODECS, default="h264",
                        help="target codec: h264 -> .mp4 for DALI on the GPU, vp9 -> .webm for DALI on the "
                        "CPU (default: h264)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="parallel processes (default: all CPUs available to this process)")
    parser.add_argument("--short-side", "--size", dest="size", type=int, default=None, metavar="S",
                        help="resize so that the short side is S pixels (even), keeping the aspect ratio "
                        "(default: keep the size)")
    parser.add_argument("--gop", type=int, default=None, metavar="N",
                        help="a keyframe exactly every N frames, so that a seek to any clip decodes fewer than N "
                        "frames it does not need (random training clips, all-views evaluation); e.g. 16 "
                        "(default: the encoder's, up to 250 for H.264)")
    parser.add_argument("--fps", type=float, default=None, metavar="F",
                        help="resample every video to F frames per second (frames repeated or dropped by time; "
                        "default: keep each source's rate)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="count and list unreadable videos instead of stopping at the first one")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="search symbolically linked folders in SRC too (links that loop are left out)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so that prepare_dataset stops its workers before exiting (a
    second SIGTERM would cut that short: ignored)."""
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _print_notes(summary, src: str, dst: str) -> None:
    from ..data.prepare import RECORD_FILE

    for folder, why in summary.skipped_folders:
        print(f"note: {os.path.join(src, folder)}: not searched: {why}", file=sys.stderr)
    for rel, frames, declared in summary.truncated:
        print(f"note: {os.path.join(src, rel)}: truncated source: {frames} of the {declared} frames its header "
              f"declares decode; converted with those (recorded in {os.path.join(dst, RECORD_FILE)})",
              file=sys.stderr)


def run(args) -> int:
    from ..data.prepare import WorkerLost, prepare_dataset
    from . import CLIError, check_output_folder

    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    if args.size is not None and (args.size < 2 or args.size % 2):
        raise CLIError(f"--short-side (--size) must be an even number of pixels >= 2, got {args.size}")
    if args.gop is not None and args.gop < 1:
        raise CLIError(f"--gop must be a positive number of frames, got {args.gop}")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise CLIError(f"--fps must be a frame rate in (0, 1000], got {args.fps}")
    # before any video is converted (the error would otherwise name the first source video); the folder
    # itself is made by the conversion, after its checks that DST does not overlap SRC
    check_output_folder(args.dst, "DST")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = prepare_dataset(args.src, args.dst, codec=args.codec, workers=args.workers, size=args.size,
                                  progress=not args.no_progress, skip_errors=args.skip_errors,
                                  follow_symlinks=args.follow_symlinks, gop=args.gop, fps=args.fps)
    except SystemExit as e:
        if e.code == 128 + signal.SIGTERM:
            print("zsar prepare: stopped by SIGTERM; finished outputs are kept, run again to resume", file=sys.stderr)
        raise
    except WorkerLost as e:
        raise CLIError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_notes(summary, args.src, args.dst)
    if not summary.total:
        from ..data.video import VIDEO_EXTENSIONS

        unsearched = (f"; {len(summary.skipped_folders)} folder(s) not searched, noted above"
                      if summary.skipped_folders else "")
        raise CLIError(f"no videos found in SRC {args.src} (extensions: {', '.join(VIDEO_EXTENSIONS)}{unsearched})")
    for _, reason in summary.failed:  # each reason names its file
        print(f"failed: {reason}", file=sys.stderr)
    settings = ", ".join(f"{k} {v}" for k, v in (("short side", args.size), ("gop", args.gop), ("fps", args.fps))
                         if v is not None)
    print(f"{args.src} -> {args.dst} ({args.codec}{', ' + settings if settings else ''}; recorded in each output's "
          f"comment tag): {summary}")
    return 1 if summary.failed else 0
