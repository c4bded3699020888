"""The shared op scaffolding: backends' declared capabilities -> reasons, and a new fused op built
from nothing but its semantics and backends (registered here, in the test file alone).

The toy op ``zsar_test::row_scale`` (``y = x * w[:, None] + offset``, plus a non-differentiable
row sum) gets from :class:`zsar.ops._custom_op.FusedOp` what ``masked_attention`` gets: custom ops
with fake implementations, autograd, FLOP formulas, validation of direct calls, the eager fast path
and dispatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from zsar.ops import BackendUnavailableError
from zsar.ops._backend import Backend, Requirement, Support
from zsar.ops._custom_op import FusedOp, OpInputs, TensorSpec
from zsar.ops._dispatch import Dispatcher
from zsar.ops.masked_attention import MaskedAttentionInputs, dispatcher

# ---- reasons derived from declarations -----------------------------------------------------------

NEVER = Requirement("a thing this machine lacks", lambda device: f"no such thing on {device.type}")


class _Toy(Backend):
    name = "toy"
    supports = (
        Support("cuda", (torch.float16,)),
        Support("cpu", (torch.float32,), note="an emulator"),
        Support("cpu", (torch.float64,), requires=(NEVER,)),
    )
    max_head_dim = 32
    max_seq_len = 100
    mask_kinds = ("rest",)


def _probe(device="cpu", dtype=torch.float32, head_dim=16, seq_len=10, mask_kind="rest"):
    return SimpleNamespace(device=torch.device(device), dtype=dtype, head_dim=head_dim, seq_len=seq_len,
                           mask_kind=mask_kind)


@pytest.mark.parametrize(
    "probe,reasons",
    [
        (_probe(), []),
        (_probe(device="meta"), ["runs on cuda or cpu tensors, got meta"]),
        (_probe(dtype=torch.bfloat16),
         ["bfloat16 is not supported on cpu (an emulator); supported: float32, float64"]),
        (_probe(dtype=torch.float64), ["no such thing on cpu"]),
        (_probe(head_dim=33, seq_len=101, mask_kind="full"),
         ["head dim 33 is over the maximum 32", "sequence length 101 is over the maximum 100",
          "mask kind 'full' is not implemented; implemented: rest"]),
    ],
    ids=["usable", "device", "dtype", "requirement", "limits"],
)
def test_reasons_are_derived_from_the_declarations(probe, reasons):
    backend = _Toy()
    assert backend.not_supported_reasons(probe) == reasons
    assert backend.can_serve(probe) == (not reasons)


def test_declarations_drive_test_generation_and_devices():
    backend = _Toy()
    assert backend.devices == ("cuda", "cpu")
    assert backend.declared() == [("cuda", torch.float16), ("cpu", torch.float32), ("cpu", torch.float64)]
    assert backend.unmet_requirements("cpu", torch.float64) == ["no such thing on cpu"]
    assert backend.usable_device(torch.float64) is None
    with pytest.raises(ValueError, match="does not declare bfloat16 on cpu"):
        backend.unmet_requirements("cpu", torch.bfloat16)


def test_a_device_dtype_pair_is_declared_once():
    with pytest.raises(TypeError, match="cpu/float32 appears in two Support entries"):
        type("Twice", (Backend,), {"name": "twice", "supports": (Support("cpu", (torch.float32,)),) * 2})


def test_automatic_dispatch_asks_only_backends_of_the_inputs_device():
    """A backend that declares no support on the inputs' device type is not asked (its reasons are
    known from its declarations), yet the error still explains it; forcing it by name asks it."""
    asked = []

    class Counting(_Toy):
        def _reasons(self, inputs):
            asked.append(self.name)
            yield from super()._reasons(inputs)

    gpu_only = type("GpuOnly", (Counting,), {"name": "gpu_only", "supports": (Support("cuda", (torch.float32,)),)})
    cpu_too = type("CpuToo", (Counting,), {"name": "cpu_too"})
    chooser = Dispatcher("toy_op", [gpu_only(), cpu_too()])
    assert chooser.select(_probe()).name == "cpu_too" and asked == ["cpu_too"]
    with pytest.raises(BackendUnavailableError, match=r"(?s)gpu_only: runs on cuda tensors, got cpu.*"
                                                      r"cpu_too: head dim 64 is over the maximum 32"):
        chooser.select(_probe(head_dim=64))
    asked.clear()
    with pytest.raises(BackendUnavailableError, match="backend 'gpu_only' cannot run"):
        chooser.select(_probe(), "gpu_only")
    assert asked[0] == "gpu_only"
    assert chooser.select(_probe(device="cuda", dtype=torch.float16)).name == "cpu_too"  # _Toy declares cuda float16


@pytest.mark.parametrize("backend", dispatcher.backends, ids=lambda b: b.name)
def test_attention_backends_refuse_exactly_what_they_do_not_declare(backend):
    """Every declared pair whose requirements this machine meets is served; every other floating
    dtype on a declared device is refused with the same wording, by every backend."""
    for device in backend.devices:
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            probe = _probe(device=device, dtype=dtype)
            if (device, dtype) not in backend.declared():
                assert any(r.startswith(f"{str(dtype)[6:]} is not supported on {device}")
                           for r in backend.not_supported_reasons(probe))
            elif not backend.unmet_requirements(device, dtype):
                assert backend.not_supported_reasons(probe) == []
    too_wide = _probe(device=backend.devices[0], dtype=backend.declared()[0][1], head_dim=4096)
    if backend.max_head_dim is not None:
        assert f"head dim 4096 is over the maximum {backend.max_head_dim}" in backend.not_supported_reasons(too_wide)


def test_dispatch_probe_uses_the_op_inputs():
    """The reasons read the op's own inputs (device, dtype, head dim, length, mask kind)."""
    q = torch.zeros(1, 1, 4, 256)
    inputs = MaskedAttentionInputs(q, q, q, torch.zeros(1, dtype=torch.int32), 2, True, 0.1)
    assert (inputs.head_dim, inputs.seq_len, inputs.mask_kind) == (256, 4, "full")
    assert dispatcher.get("cpu").can_serve(inputs)
    assert "head dim 256 is over the maximum 128" in dispatcher.get("triton").not_supported_reasons(inputs)


# ---- a new op through the scaffolding ------------------------------------------------------------


@dataclass
class RowScaleInputs(OpInputs):
    x: torch.Tensor  # (N, D) floating
    w: torch.Tensor  # (N,) in the dtype of x
    offset: float

    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def seq_len(self):
        return self.x.shape[0]

    def validate(self):
        x, w = self.x, self.w
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError("row_scale: x must be a floating (N, D) tensor")
        if not isinstance(w, torch.Tensor) or w.shape != x.shape[:1] or w.dtype != x.dtype or w.device != x.device:
            raise ValueError(f"row_scale: w must have shape ({x.shape[0]},) and the dtype and device of x")
        if not math.isfinite(self.offset):
            raise ValueError("row_scale: offset must be finite")

    def output_specs(self):
        return TensorSpec(tuple(self.x.shape), self.x.dtype), TensorSpec(tuple(self.x.shape[:1]), self.x.dtype)

    def flops(self):
        return 2 * self.x.numel()

    def backward_flops(self):
        return 4 * self.x.numel()


class _TorchRowScale(Backend):
    name = "torch"
    supports = (Support("cpu", (torch.float32, torch.float64)),)

    def forward(self, inp):
        y = inp.x * inp.w[:, None] + inp.offset
        return y, y.sum(1)

    def backward(self, inp, outputs, grads):
        (dy,) = grads
        return dy * inp.w[:, None], (dy * inp.x).sum(1)


class _ShortRowScale(_TorchRowScale):
    """Preferred, but only for float64 and at most 4 rows (to see dispatch fall through)."""

    name = "short"
    supports = (Support("cpu", (torch.float64,)),)
    max_seq_len = 4


ROW_SCALE = FusedOp(
    "row_scale", RowScaleInputs, outputs=("y", "rowsum"), differentiable_outputs=("y",),
    differentiable_inputs=("x", "w"), backends=[_ShortRowScale(), _TorchRowScale()], namespace="zsar_test",
)


def _row_inputs(seed, n=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(n, generator=gen, dtype=dtype, requires_grad=True)
    return x, w


def test_new_op_schemas_follow_its_inputs():
    assert str(torch.ops.zsar_test.row_scale.default._schema) == (
        "zsar_test::row_scale(Tensor x, Tensor w, float offset, str backend) -> (Tensor, Tensor)"
    )
    assert str(torch.ops.zsar_test.row_scale_backward.default._schema) == (
        "zsar_test::row_scale_backward(Tensor dy, Tensor x, Tensor w, Tensor y, Tensor rowsum, float offset, "
        "str backend) -> (Tensor, Tensor)"
    )


@pytest.mark.parametrize("backend", ["short", "torch"])
def test_new_op_passes_opcheck(backend, seed):
    x, w = _row_inputs(seed)
    torch.library.opcheck(torch.ops.zsar_test.row_scale.default, (x, w, 0.5, backend))


def test_new_op_eager_path_and_custom_op_agree(seed):
    x, w = _row_inputs(seed)
    y, rowsum = ROW_SCALE(RowScaleInputs(x, w, 0.5))
    assert type(y.grad_fn).__name__ == "_EagerRowScaleBackward" and not rowsum.requires_grad
    op_y, _ = torch.ops.zsar_test.row_scale(x, w, 0.5, "short")
    dy = torch.randn(y.shape, dtype=y.dtype)
    for got, want in zip(torch.autograd.grad(y, (x, w), dy), torch.autograd.grad(op_y, (x, w), dy)):
        assert torch.equal(got, want)
    torch.testing.assert_close(y, x.detach() * w.detach()[:, None] + 0.5)


def test_new_op_dispatch_falls_through_and_explains(seed):
    x, w = _row_inputs(seed, n=6)
    inputs = RowScaleInputs(x, w, 0.0)
    assert ROW_SCALE.dispatcher.select(inputs).name == "torch"
    with pytest.raises(BackendUnavailableError, match="short: sequence length 6 is over the maximum 4"):
        ROW_SCALE(inputs, "short")


def test_new_op_registered_calls_validate(seed):
    x, w = _row_inputs(seed)
    with pytest.raises(ValueError, match="w must have shape"):
        torch.ops.zsar_test.row_scale(x, w[:2], 0.0, "")
    y, rowsum = torch.ops.zsar_test.row_scale(x, w, 0.0, "")
    with pytest.raises(ValueError, match=r"zsar_test::row_scale_backward: dy has shape \(3, 4\), expected \(3, 5\)"):
        torch.ops.zsar_test.row_scale_backward(torch.zeros(3, 4, dtype=x.dtype), x, w, y, rowsum, 0.0, "")
    with pytest.raises(TypeError, match="rowsum has dtype torch.float32, expected torch.float64"):
        torch.ops.zsar_test.row_scale_backward(torch.zeros_like(y), x, w, y, rowsum.float(), 0.0, "")


def test_new_op_flop_formulas(seed):
    x, w = _row_inputs(seed)
    with FlopCounterMode(display=False) as counter:
        y, _ = ROW_SCALE(RowScaleInputs(x, w, 0.0))
        y.sum().backward()
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.zsar_test.row_scale] == 2 * x.numel()
    assert counts[torch.ops.zsar_test.row_scale_backward] == 4 * x.numel()


def test_new_op_under_torch_compile(seed):
    x, w = _row_inputs(seed)
    compiled = torch.compile(lambda x, w: ROW_SCALE(RowScaleInputs(x, w, 1.0))[0].sum(), fullgraph=True)
    assert torch.allclose(compiled(x, w), (x * w[:, None] + 1.0).sum())
