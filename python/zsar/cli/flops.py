"""``zsar flops``: per-clip multiply-adds ("GFLOPs" as in the ResT paper) and parameters of a model.

The count runs the model's inference path (its ``encode``; for ResT tokens ``[CLS, r_1..r_T, [MASK]]``),
one clip at batch 1, under ``torch.utils.flop_counter.FlopCounterMode``, custom ops included; see
:mod:`zsar.models.complexity` for the counting conventions and how they relate to the paper.
"""

from __future__ import annotations

import json

# Mirrors zsar.models.complexity.CONVENTIONS (kept here so that `zsar --help` does not import torch).
CONVENTIONS = ("thop", "macs")

_CONVENTION_HELP = (
    "how to count (default: the model's: thop for ResT, macs for MZST). thop: multiply-adds of convolutions, linear layers and attention, "
    "plus 4 ops per element of every normalisation (batch/layer norm) and 1 op per element of average "
    "pooling; activations, max pooling and additions count 0 (the convention of the thop counter, which "
    "reproduces the ResT paper's Table 4 within 2%%). macs: multiply-adds only."
)

_DESCRIPTION = (
    "Print per-clip multiply-adds in the papers' 'GFLOPs' (10^9 multiply-adds, not 2x) and parameter "
    "counts of a registered model, counting zsar's custom attention ops (ResT's masked_attention, MZST's "
    "bottleneck_attention). The inference setting "
    "of the ResT paper: tokens [CLS, frame tokens, [MASK]], one clip at batch 1; clips multiply the "
    "total. Fast: the backbones are only traced on the meta device."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.add_argument("model", help="a registered model (`zsar list models` lists them), e.g. rest18, rest34, rest101, "
                        "rest_vgg16, rest_mobilenet_v2, rest_googlenet, rest_r2plus1d")
    parser.add_argument("--frames", type=int, default=None, metavar="T",
                        help="frames per clip (default: the model's, e.g. 16 for rest18)")
    parser.add_argument("--clips", type=int, default=1, metavar="N",
                        help="clips per video; the total is N x the per-clip count (default 1)")
    parser.add_argument("--convention", choices=CONVENTIONS, default=None, help=_CONVENTION_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def render(r: dict) -> str:
    """The human-readable report of a :func:`zsar.models.complexity.count_flops` result."""
    if r["image_size"] is not None:
        source = f"{r['frames']} frames of {r['image_size']}x{r['image_size']}"
    else:
        source = f"{r['frames']} frames of precomputed features"
    if r.get("audio"):
        source += f" + audio {r['audio'][0]}x{r['audio'][1]} log-mel"
    facts = {k: v for k, v in r.items() if k in _FACTS and v is not None}
    lines = [f"{r['model']}: {source}"]
    if facts:
        lines.append(", ".join(f"{_FACTS[k]}: {v}" for k, v in facts.items()))
    lines += [f"convention: {r['convention']}", "", f"{'part':<13}{'GFLOPs/clip':>12}{'params':>13}"]
    params = r["params_parts"]
    for part, gflops in r["parts_gflops"].items():
        lines.append(f"{part:<13}{gflops:>12.3f}{_millions(params.get(part, 0)):>13}")
    lines.append(f"{'total':<13}{r['gflops_per_clip']:>12.3f}{_millions(r['params']):>13}")
    clips = r["clips"]
    lines += [
        "",
        (f"{r['gflops_per_clip']:.2f} GFLOPs/clip x {clips} clip{'s' if clips != 1 else ''} = "
         f"{r['gflops_total']:.2f} GFLOPs  (GFLOPs = 10^9 multiply-adds, as in the ResT paper)"),
    ]
    custom = {k: v for k, v in r["ops_gflops"].items() if not k.startswith(("aten.", "prims."))}
    if custom:
        lines.append("custom ops (included): " + ", ".join(f"{k} {v:.4f} GFLOPs/clip" for k, v in custom.items()))
    lines.append(f"params count the parts used at inference ('other': embeddings and tokens); the training-only "
                 f"heads add {_millions(r['params_training_heads'])} ({_millions(r['params_all'])} in all)")
    return "\n".join(lines)


#: Facts of ``describe()`` shown in the report header, with their labels.
_FACTS = {"backbone": "backbone", "tokens": "transformer tokens", "video_tokens": "video tokens",
          "audio_tokens": "audio tokens"}


def run(args) -> int:
    from ..models.complexity import count_flops
    from . import CLIError

    if args.frames is not None and args.frames < 1:
        raise CLIError(f"--frames must be at least 1, got {args.frames}")
    if args.clips < 1:
        raise CLIError(f"--clips must be at least 1, got {args.clips}")
    result = count_flops(args.model, frames=args.frames, clips=args.clips, convention=args.convention)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
