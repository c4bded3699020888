"""``zsar list``: what this installation can run, read from the registries (models, fused ops and their
backends, video decoders, dataset formats, evaluation protocols)."""

from __future__ import annotations

import json

KINDS = ("models", "ops", "decoders", "formats", "protocols")


def add_arguments(parser) -> None:
    parser.add_argument("kind", nargs="?", choices=KINDS, default=None, help="list only these (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def collect(kinds=KINDS) -> dict[str, list[dict]]:
    """Name and one-line description of every registered item of ``kinds``, from the live registries
    (so items registered by plugins imported before the call are listed too)."""
    out: dict[str, list[dict]] = {}
    if "models" in kinds:
        from ..models import list_models

        out["models"] = [{"name": name} for name in list_models()]
    if "ops" in kinds:
        from ..ops.attention import ATTENTION_OPS

        out["ops"] = [{"name": name, "backends": list(op.dispatcher.names)} for name, op in ATTENTION_OPS.items()]
    if "decoders" in kinds:
        from ..data.decoders import decoder_names, unavailable_reason

        out["decoders"] = [{"name": name, "unavailable": unavailable_reason(name, device="cpu")}
                           for name in decoder_names()]
    if "formats" in kinds:
        from ..data.formats import FORMATS

        out["formats"] = [{"name": f.name, "annotations": f.annotations,
                           "features": None if f.features is None else f"feature files, not videos: {f.features}"}
                          for f in FORMATS.values()]
    if "protocols" in kinds:
        from ..eval.protocols import PROTOCOLS

        out["protocols"] = [{"name": name} for name in (*PROTOCOLS, "gzsl")]
    return out


def run(args) -> int:
    data = collect(KINDS if args.kind is None else (args.kind,))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for kind, items in data.items():
        print(f"{kind}:")
        for item in items:
            extra = {k: v for k, v in item.items() if k != "name" and v is not None}
            detail = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in extra.items())
            print(f"  {item['name']}" + (f"  ({detail})" if detail else ""))
    return 0
