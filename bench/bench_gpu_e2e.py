"""The default test run's check of ``gpu_e2e.py`` (the GPU end-to-end script), so it cannot rot:
every section runs at tiny sizes on this machine and the table is written; without a GPU the full
run says so and exits 2. On a GPU machine run the script itself (its docstring has the commands)."""

from __future__ import annotations

import json

import pytest
import torch

import gpu_e2e


def test_quick_run_writes_every_section(tmp_path):
    assert gpu_e2e.main(["--quick", "--out", str(tmp_path), "--budget", "300"]) == 0
    data = json.loads((tmp_path / "gpu_e2e.json").read_text())
    rows = data["rows"]
    assert not [r for r in rows if "error" in r], rows
    sections = {r["section"] for r in rows}
    assert {"rest inference", "rest training step", "mzst", "video files", "training clips",
            "evaluation views (4 clips x 3 crops)"} <= sections
    measured = [r for r in rows if "clips_per_s" in r or "train_clips_per_s" in r]
    assert all(r.get("clips_per_s", r.get("train_clips_per_s")) > 0 for r in measured)
    fused, sdpa = [r for r in rows if r["section"] == "mzst"]
    assert "fused" in fused["contender"] and "SDPA" in sdpa["contender"]
    # the loader rows: PyAV always, DALI where it is installed
    assert any(r["contender"].startswith("pyav") and r.get("clips_per_s") for r in rows)
    table = (tmp_path / "gpu_e2e.md").read_text()
    assert table.startswith("# zsar GPU end to end") and "| section | contender |" in table


def test_sdpa_swap_matches_the_fused_op():
    from zsar.cli.bench import bench_model, synthetic_batch

    torch.manual_seed(0)
    model = bench_model("mzst_tiny", gpu_e2e.LABELS).eval()
    batch = synthetic_batch(model, gpu_e2e.LABELS, 2, torch.Generator().manual_seed(0))
    batch = batch.replace(audio_present=torch.tensor([True, False]))  # padding: a sample without audio
    with torch.no_grad():
        fused = model.encode(batch)
        assert gpu_e2e.use_sdpa(model) > 0
        sdpa = model.encode(batch)
    torch.testing.assert_close(sdpa, fused, atol=2e-4, rtol=2e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_full_run_without_gpu_exits_2(capsys, tmp_path):
    assert gpu_e2e.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
