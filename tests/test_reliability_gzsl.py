"""zsar gzsl: one lock for the whole protocol run, and a finished run kept whole until its
replacement is complete (the recipe's small model and files of tests/test_gzsl_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_gzsl_cli import _config, _run, dataset  # noqa: F401  (dataset is a fixture)
from zsar.cli import main

MODEL = "model: test_gzsl_mean_colour\nstages: {fit: {epochs: 2}}\n"


def test_a_rerun_keeps_the_finished_run_until_it_is_complete(dataset, monkeypatch):  # noqa: F811
    import zsar.eval.recipes as recipes

    config = _config(dataset, "rerun", MODEL)
    assert _run(["gzsl", str(config)])[0] == 0
    out = dataset / "rerun"
    ckpt = out / "stage_2" / "checkpoints" / "last"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    report = (out / "gzsl_report.json").read_bytes()

    classifier = recipes._RegisteredModelRunner.classifier

    def killed(self):  # the re-run dies in stage 2, after training, before its zero-shot checkpoint
        if self._built >= 2:
            raise KeyboardInterrupt
        return classifier(self)

    monkeypatch.setattr(recipes._RegisteredModelRunner, "classifier", killed)
    assert _run(["gzsl", str(config)])[0] == 130
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # zeroshot.json included
    assert (out / "gzsl_report.json").read_bytes() == report
    monkeypatch.undo()
    assert _run(["gzsl", str(config)])[0] == 0
    new = json.loads((out / "gzsl_report.json").read_text())
    assert new["checkpoint"] == str(ckpt) and (ckpt / "zeroshot.json").is_file()
    assert not (out / ".gzsl-next").exists() and not (out / ".gzsl-old").exists()


def test_two_runs_into_one_folder(dataset, capsys):  # noqa: F811
    """The second run fails at once, naming the first, instead of both writing a mix."""
    config = _config(dataset, "locked", MODEL)
    out = dataset / "locked"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from zsar.train.lock import RunLock\n"
        f"with RunLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["gzsl", str(config)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {holder.pid}" in err and "\n" not in err
        assert not (out / "stage_1").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("fail_at", range(1, 8))
def test_an_interrupted_swap_never_leaves_a_report_over_a_mix(tmp_path, monkeypatch, fail_at):
    """Replacing a finished run's entries stops at any rename: the folder then holds either no report
    (unfinished: the next run redoes it) or the old report with all the old entries."""
    import zsar.eval.recipes as recipes

    out, work = tmp_path / "out", tmp_path / "out" / ".gzsl-next"
    names = ["stage_1", "stage_2", "plot.png", "gzsl_report.json"]
    for folder, tag in ((out, "old"), (work, "new")):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_text(tag)
    calls = []
    replace = os.replace

    def dies(src, dst):
        calls.append(src)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(recipes.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        recipes._move_into_place(work, out, names)
    if (out / "gzsl_report.json").exists():
        tags = {(out / name).read_text() for name in names if (out / name).exists()}
        assert tags == {"old"} and all((out / name).exists() for name in names)
    else:  # unfinished: the next run redoes it; the old report is set aside, not lost
        assert (out / ".gzsl-old" / "gzsl_report.json").read_text() == "old"
