"""The default test run's check of ``gpu_check.py`` (the one script of a GPU run), so it cannot rot
while no GPU is at hand: its oracle (fresh inputs, padding rows exactly 0, float64 reference) runs
here on the CPU backend and on the Triton kernels in the interpreter, and the script without a GPU
says so, exits 2 and still leaves its report. On a CUDA machine run the script itself (see its
docstring)."""

from __future__ import annotations

import json

import pytest
import torch

import gpu_check


def test_oracle_runs_on_cpu_backend():
    rows = gpu_check.check_oracle(torch.device("cpu"), [("cpu", torch.float32)], quick=True)
    assert len(rows) == len(gpu_check.QUICK_MASKED) + len(gpu_check.QUICK_BOTTLENECK)
    assert all(r["ok"] for r in rows), rows


@pytest.mark.slow  # ~30 s in the interpreter; the Triton kernels' own tests cover them by default
def test_oracle_runs_on_triton_interpreter():
    rows = gpu_check.check_oracle(torch.device("cpu"), [("triton", torch.float32)], quick=True)
    assert all(r["ok"] for r in rows), rows


def test_oracle_reports_a_wrong_result(monkeypatch):
    """A backend whose padding rows are not zero fails the oracle (checked through a real backend
    whose output is corrupted after the call)."""
    import zsar.ops

    real = zsar.ops.masked_attention

    def corrupted(*args, **kwargs):
        out = real(*args, **kwargs)
        return out + 1.0 if kwargs.get("backend") == "cpu" else out

    monkeypatch.setattr("zsar.ops.masked_attention", corrupted)
    monkeypatch.setattr(gpu_check, "QUICK_BOTTLENECK", [])
    rows = gpu_check.check_oracle(torch.device("cpu"), [("cpu", torch.float32)], quick=True)
    assert len(rows) == len(gpu_check.QUICK_MASKED) and not any(r["ok"] for r in rows)


def test_every_edge_case_is_well_formed():
    """The full case lists (run on the GPU only) build valid inputs for both ops."""
    calls = gpu_check.oracle_calls(quick=False)
    assert len(calls) == len(gpu_check.MASKED_CASES) + len(gpu_check.BOTTLENECK_CASES)
    for op, case, make in calls:
        call, valid = make(torch.Generator().manual_seed(0))
        assert valid.shape == (case[0], case[2]), (op, case)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_without_gpu_exits_2_and_reports(tmp_path, capsys):
    assert gpu_check.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stages"]["error"] == "no CUDA device visible to torch"
