"""``zsar demo``: the fused ResT attention op on a ResT-shaped batch.

Until the end-to-end zero-shot demo lands, this is the main job: it builds a batch shaped like ResT's
transformer input (CLS + 16 frames + up to 8 label words), checks every usable backend against the
float64 reference, and times the fused op against torch SDPA with the equivalent dense mask.
"""

from __future__ import annotations

import time


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=64, help="clips per batch (default 64)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (default 10)")


def _best_time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def run(args) -> int:
    import torch

    from ..ops.rest_attention import AttentionInputs, dispatcher, key_end, masked_attention
    from . import CLIError

    if args.batch < 1 or args.repeats < 1:
        raise CLIError("--batch and --repeats must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda requested but torch sees no CUDA device")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    B, H, L, D, n_visual = args.batch, 12, 25, 64, 17  # ResT: 12 heads of 64, CLS + 16 frames + 8 words
    gen = torch.Generator().manual_seed(0)
    n_text = torch.randint(1, L - n_visual + 1, (B,), generator=gen, dtype=torch.int32).to(device)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(device) for _ in range(4))
    print(f"masked_attention on {device}: B={B} H={H} L={L} (CLS + 16 frames + 1..8 words) Dh={D}\n")

    ref = masked_attention(q.double(), k.double(), v.double(), n_visual, n_text, backend="reference")
    print("backend      max |error| vs float64 reference")
    inp = AttentionInputs(q, k, v, n_text, n_visual, False, D**-0.5)
    for name, reasons in dispatcher.reasons(inp).items():
        if reasons:
            print(f"  {name:<10} not usable here: {reasons[0]}")
            continue
        err = (masked_attention(q, k, v, n_visual, n_text, backend=name).double() - ref).abs().max().item()
        print(f"  {name:<10} {err:.2e}")

    end = key_end(L, n_visual, n_text, False)
    mask = torch.arange(L, device=device)[None, None, :] < end[:, :, None]
    mask = (mask | (end == 0)[:, :, None])[:, None]  # padding rows: any finite row for SDPA
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def fused():
        masked_attention(*leaves, n_visual, n_text).backward(dout)

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=mask).backward(dout)

    auto = dispatcher.select(inp).name
    t_fused, t_sdpa = _best_time(fused, args.repeats, sync), _best_time(sdpa, args.repeats, sync)
    print(f"\nforward+backward, best of {args.repeats}:")
    print(f"  zsar masked_attention ({auto}): {t_fused * 1e3:8.2f} ms")
    print(f"  torch SDPA + dense bool mask:  {t_sdpa * 1e3:8.2f} ms")
    print(f"  speed-up: {t_sdpa / t_fused:.2f}x")
    return 0
