"""The registered ops called directly (``torch.ops.zsar.masked_attention[_backward]``), in process.

Both ops validate what they are given in the shared scaffolding (``zsar.ops._custom_op``) before
any backend runs: inconsistent tensors raise a one-line TypeError/ValueError naming the argument,
never reach a kernel (the backward op used to crash the process, rc 139, on an empty ``lse`` or
``n_text``, and return garbage for an int64 ``n_text`` or an undersized ``dout``). A crash here
takes the test run down with it, which is the point of calling them in process.
"""

from __future__ import annotations

import pytest
import torch

from ops_params import backend_names, usable_device
from zsar.ops.masked_attention import dispatcher

B, H, L, D, N_VISUAL = 2, 2, 8, 16, 3
BACKENDS = backend_names(dispatcher) + [""]  # "" = automatic dispatch


def _device(backend: str) -> torch.device:
    return torch.device("cpu") if backend == "" else usable_device(dispatcher, backend)


def _good(device, seed, backend):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(device) for _ in range(4))
    n_text = torch.tensor([1, L - N_VISUAL], dtype=torch.int32, device=device)
    out, lse = torch.ops.zsar.masked_attention(q, k, v, n_text, N_VISUAL, False, 0.25, backend)
    return dict(dout=dout, q=q, k=k, v=v, n_text=n_text, out=out, lse=lse, n_visual=N_VISUAL, full=False,
                scale=0.25, backend=backend)


def _backward(a):
    return torch.ops.zsar.masked_attention_backward(
        a["dout"], a["q"], a["k"], a["v"], a["n_text"], a["out"], a["lse"], a["n_visual"], a["full"], a["scale"],
        a["backend"],
    )


def _forward(a):
    return torch.ops.zsar.masked_attention(
        a["q"], a["k"], a["v"], a["n_text"], a["n_visual"], a["full"], a["scale"], a["backend"]
    )


# name -> (changes to the good arguments, exception, message fragment)
BAD = {
    "empty_lse": (lambda a: dict(lse=a["lse"].new_empty(0)), ValueError, r"lse has shape \(0,\), expected \(2, 2, 8\)"),
    "undersized_lse": (lambda a: dict(lse=a["lse"][:, :, :4].contiguous()), ValueError, "lse has shape"),
    "lse_dtype": (lambda a: dict(lse=a["lse"].double()), TypeError, "lse has dtype torch.float64"),
    "lse_device": (lambda a: dict(lse=a["lse"].to("meta")), ValueError, "lse is on meta"),
    "empty_n_text": (lambda a: dict(n_text=a["n_text"][:0]), ValueError, r"n_text must have shape \(2,\)"),
    "int64_n_text": (lambda a: dict(n_text=a["n_text"].long()), TypeError, "n_text must have dtype torch.int32"),
    "k_other_size": (lambda a: dict(k=torch.zeros(B, H, L + 1, D, device=a["k"].device)), ValueError, "k has shape"),
    "v_other_dtype": (lambda a: dict(v=a["v"].double()), TypeError, "v has dtype"),
    "undersized_dout": (lambda a: dict(dout=a["dout"][..., : D // 2].contiguous()), ValueError, "dout has shape"),
    "dout_dtype": (lambda a: dict(dout=a["dout"].double()), TypeError, "dout has dtype"),
    "out_shape": (lambda a: dict(out=a["out"][:, :1].contiguous()), ValueError, "out has shape"),
    "q_rank": (lambda a: dict(q=a["q"][0]), ValueError, "q must have shape"),
    "q_integer": (lambda a: dict(q=a["q"].to(torch.int32)), TypeError, "q must be a floating-point tensor"),
    "q_non_contiguous": (lambda a: dict(q=a["q"].transpose(2, 3).contiguous().transpose(2, 3)), ValueError,
                         "q must be contiguous"),
    "empty_batch": (lambda a: {n: a[n][:0] for n in ("q", "k", "v", "dout", "out", "lse", "n_text")}, ValueError,
                    "must not be empty"),
    "n_visual_zero": (lambda a: dict(n_visual=0), ValueError, r"n_visual must be in \[1, L=8\]"),
    "n_visual_past_end": (lambda a: dict(n_visual=L + 1), ValueError, "n_visual must be in"),
    "nan_scale": (lambda a: dict(scale=float("nan")), ValueError, "scale must be a finite number"),
    "inf_scale": (lambda a: dict(scale=float("inf")), ValueError, "scale must be a finite number"),
    "unknown_backend": (lambda a: dict(backend="nope"), ValueError, "backend='nope' is not a backend"),
}
FORWARD_ONLY_FIELDS = {"q", "k", "v", "n_text", "n_visual", "full", "scale", "backend"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(BAD))
def test_backward_op_rejects_inconsistent_tensors(case, backend, seed):
    args = _good(_device(backend), seed, backend)
    change, exc, match = BAD[case]
    args.update(change(args))
    with pytest.raises(exc, match=match):
        _backward(args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in BAD if set(BAD[c][0](_good("cpu", 0, ""))) <= FORWARD_ONLY_FIELDS])
def test_forward_op_rejects_inconsistent_tensors(case, backend, seed):
    args = _good(_device(backend), seed, backend)
    change, exc, match = BAD[case]
    args.update(change(args))
    with pytest.raises(exc, match=match):
        _forward(args)


@pytest.mark.parametrize("backend", backend_names(dispatcher))
def test_backward_op_accepts_strided_saved_tensors(backend, seed):
    """A non-contiguous ``lse``/``dout``/``out`` of the right shape is made contiguous, not rejected."""
    args = _good(_device(backend), seed, backend)
    expected = _backward(args)

    def strided(t):  # same values, transposed storage
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    args.update(dout=strided(args["dout"]), out=strided(args["out"]), lse=strided(args["lse"]))
    assert not args["lse"].is_contiguous()
    for got, want in zip(_backward(args), expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", backend_names(dispatcher))
def test_out_of_range_n_text_is_clamped_alike_by_every_backend(backend, seed):
    """Called directly (no range check), every backend clamps n_text to [0, L - n_visual] the same
    way: the result is the call with the clamped counts, and memory is never read out of bounds."""
    device = _device(backend)
    args = _good(device, seed, backend)
    args["n_text"] = torch.tensor([-3, 1000], dtype=torch.int32, device=device)
    out, lse = _forward(args)
    args["n_text"] = torch.tensor([0, L - N_VISUAL], dtype=torch.int32, device=device)
    out_clamped, lse_clamped = _forward(args)
    assert torch.equal(out, out_clamped) and torch.equal(lse, lse_clamped)


def test_every_attention_op_is_registered_and_listed_by_info_and_bench():
    """The attention ops register themselves (``zsar.ops.ATTENTION_OPS``); ``zsar info`` reports the
    backends of each and ``zsar bench attention`` checks and times each, without a list of its own."""
    from zsar import info
    from zsar.ops import ATTENTION_OPS

    assert set(ATTENTION_OPS) == {"masked_attention", "bottleneck_attention"}
    for name, op in ATTENTION_OPS.items():
        assert op.fused.qualname == f"zsar::{name}" and hasattr(torch.ops.zsar, name)
    data = info.collect()
    text = info.render(data)
    for name in ATTENTION_OPS:
        assert f"{name} backends" in text
        cpu32 = next(r for r in data[name] if r["device"] == "cpu" and r["dtype"] == "float32")
        assert cpu32["backends"]["cpu"] == [] and cpu32["backends"]["reference"] == []


@pytest.mark.slow  # times every op at its model's shape (~20 s); `zsar bench attention --op` runs by default
def test_bench_attention_times_every_registered_op():
    import argparse
    import contextlib
    import io

    from zsar.cli import bench
    from zsar.ops import ATTENTION_OPS

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench.run(parser.parse_args(["attention", "--batch", "1", "--repeats", "1", "--malloc", "default",
                                            "--device", "cpu"])) == 0
    for name in ATTENTION_OPS:
        assert f"zsar {name} (cpu)" in out.getvalue()


def test_attention_ops_share_one_front_end():
    """Scale, backend and range checks come from one place and name the op and its own argument."""
    from zsar.ops import bottleneck_attention, masked_attention

    q = torch.randn(1, 1, 6, 8)
    with pytest.raises(ValueError, match=r"^bottleneck_attention: n_valid values must be in \[0, L - n_fusion = 4\]"):
        bottleneck_attention(q, q, q, torch.tensor([5], dtype=torch.int32), 2)
    with pytest.raises(ValueError, match=r"^masked_attention: n_text values must be in \[0, L - n_visual = 4\]"):
        masked_attention(q, q, q, 2, torch.tensor([5], dtype=torch.int32))
    for op in (lambda **kw: bottleneck_attention(q, q, q, torch.tensor([1], dtype=torch.int32), 2, **kw),
               lambda **kw: masked_attention(q, q, q, 2, torch.tensor([1], dtype=torch.int32), **kw)):
        with pytest.raises(ValueError, match="scale must be a finite number or None, got nan"):
            op(scale=float("nan"))
        with pytest.raises(TypeError, match="backend must be a str or None, got int"):
            op(backend=3)
