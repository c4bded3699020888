"""``zsar info``: the build and the usable kernel backends (same as ``python -m zsar.info``)."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    from .. import info

    data = info.collect()
    print(json.dumps(data, indent=2) if args.json else info.render(data))
    return 0
