"""The default test run's check of ``gpu_check.py`` (a script for CUDA machines), so it cannot rot:
its correctness sweep runs on the CPU backend here, and without a GPU the script says so and exits 2.
On a CUDA machine run the script itself (see its docstring)."""

from __future__ import annotations

import pytest
import torch

import gpu_check


def test_correctness_sweep_runs_on_cpu():
    rows = gpu_check.check_correctness(torch.device("cpu"), [("cpu", torch.float32)])
    assert len(rows) == len(gpu_check.CHECK_SHAPES)
    assert all(r["ok"] for r in rows), rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_without_gpu_exits_2(capsys):
    assert gpu_check.main(["--no-tests"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
