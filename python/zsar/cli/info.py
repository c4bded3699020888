"""``zsar info``: the build and the usable kernel backends (same as ``python -m zsar.info``)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    from .. import info

    return info.main(["--json"] if args.json else [])
