"""``zsar demo``: the end-to-end zero-shot pipeline on the synthetic benchmark.

The quick run exercises every step (render, decode, train both stages, prototypes, cross-validated
transfer, baseline, figures, report, checkpoint) in well under a minute. The slow tests run the
default demo, as the README's first command does, and check the demo's targets on the default
split and on a composition split chosen by another seed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zsar.cli import main

REPORT_KEYS = {"unseen_top1", "unseen_top5", "unseen_mean_class_accuracy", "semantic_baseline_top1",
               "semantic_baseline_top5", "semantic_baseline_mean_class_accuracy", "chance", "chance_top5",
               "seen_top1", "seconds", "seconds_by_step", "targets", "transfer_params", "transfer_edges",
               "seen_classes", "unseen_classes", "files", "config"}
FRACTIONS = ("unseen_top1", "unseen_top5", "unseen_mean_class_accuracy", "semantic_baseline_top1",
             "semantic_baseline_top5", "semantic_baseline_mean_class_accuracy", "chance", "chance_top5", "seen_top1")


def _check_report(report: dict) -> None:
    assert REPORT_KEYS <= set(report), sorted(REPORT_KEYS - set(report))
    for key in FRACTIONS:
        assert 0.0 <= report[key] <= 1.0, (key, report[key])
    assert report["chance"] == pytest.approx(1 / len(report["unseen_classes"]))
    assert report["seconds"] > 0 and set(report["seconds_by_step"]) >= {"generate", "train", "transfer"}
    assert not set(report["seen_classes"]) & set(report["unseen_classes"])
    assert set(report["transfer_edges"]) == set(report["unseen_classes"])
    for unseen, edges in report["transfer_edges"].items():
        assert edges and set(edges) <= set(report["seen_classes"]), unseen


def test_quick_demo_writes_report_figures_and_a_usable_checkpoint(tmp_path, capsys):
    out, report_path = tmp_path / "demo", tmp_path / "reports" / "quick.json"
    assert main(["demo", "--quick", "--out", str(out), "--report", str(report_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "semantic-space baseline" in printed and "chance" in printed and "targets:" in printed

    report = json.loads(report_path.read_text())
    _check_report(report)
    files = report["files"]
    assert files["report"] == str(report_path)
    # The figures (matplotlib and scikit-learn are in the test environment).
    assert files["fig3"] == str(out / "fig3_transfer_matrices.png") and files["fig4"] == str(out / "fig4_tsne.png")
    assert (out / "fig3_transfer_matrices.png").stat().st_size > 0 and (out / "fig4_tsne.png").stat().st_size > 0
    assert (out / "data" / "split.json").is_file() and (out / "data" / "unseen_test.txt").is_file()

    # The checkpoint classifies a video file against the unseen labels, as `zsar predict` would.
    from zsar.zeroshot import ZeroShotClassifier

    clf = ZeroShotClassifier.load(files["checkpoint"], device="cpu")
    unseen_list = (out / "data" / "unseen_test.txt").read_text().splitlines()
    video = out / "data" / unseen_list[0].rsplit(" ", 1)[0]
    clf.set_labels(report["unseen_classes"])
    probs = clf.predict_proba([str(video)])
    assert probs.shape == (1, len(report["unseen_classes"])) and abs(float(probs.sum()) - 1) < 1e-5
    # ... and carries its open-set calibration ("none of these"), which the report summarises.
    assert clf.open_set is not None and clf.open_set.scale > 0
    assert report["open_set"]["scale"] == clf.open_set.scale and 0 <= report["open_set"]["unseen_answered"] <= 1


def test_eval_on_the_demo_checkpoint_reports_what_the_demo_reports(tmp_path, capsys):
    """One evaluation runner: `zsar eval` on the demo's checkpoint and unseen videos gives the demo's
    transfer and semantic-space baseline numbers, top-5 included."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    demo = json.loads((out / "report.json").read_text())
    data, eval_report = out / "data", tmp_path / "eval.json"
    assert len(demo["unseen_classes"]) >= 5  # so that top-5 is a real measurement
    assert main(["eval", "--checkpoint", demo["files"]["checkpoint"], "--annotations", str(data / "unseen_test.txt"),
                 "--root", str(data), "--classes", str(data / "classes_unseen.txt"), "--backend", "pyav",
                 "--report", str(eval_report)]) == 0  # the decoder the demo used
    printed = capsys.readouterr().out
    assert "semantic-space baseline" in printed and "top5" in printed
    results = json.loads(eval_report.read_text())
    for key, prefix in (("transfer", "unseen"), ("semantic_baseline", "semantic_baseline")):
        for metric in ("top1", "top5", "mean_class_accuracy"):
            assert results[key][metric]["mean"] == pytest.approx(demo[f"{prefix}_{metric}"], abs=1e-9), (key, metric)


def test_quick_demo_is_deterministic_and_reuses_its_videos(tmp_path):
    import argparse

    from zsar.cli.demo import add_arguments, build_config
    from zsar.demo import run_demo

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", str(tmp_path), "--no-progress", "--no-plots", "--seed", "3"])
    first = run_demo(build_config(args), verbose=False)
    second = run_demo(build_config(args), verbose=False)
    assert second["seconds_by_step"]["generate"] < first["seconds_by_step"]["generate"]  # videos reused
    for key in FRACTIONS:
        assert first[key] == second[key], key
    assert first["unseen_classes"] == second["unseen_classes"]


def test_split_seed_selects_another_held_out_split(tmp_path):
    import argparse

    from zsar.cli.demo import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    a = build_config(parser.parse_args(["--seed", "0"]))
    b = build_config(parser.parse_args(["--seed", "0", "--split-seed", "7"]))
    from zsar.data.synthetic import split_compositions

    assert split_compositions(a.data_config()) != split_compositions(b.data_config())
    assert a.data_config().seed == b.data_config().seed == 0


def test_help_and_bad_options_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--report", "--seed", "--split-seed", "--quick", "--train-videos", "--warmup-epochs",
                   "--transfer", "--check"):
        assert option in text
    assert main(["demo", "--transfer", "0.5,10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--transfer" in err
    assert main(["demo", "--colors", "red,mauve", "--out", "unused"]) == 2
    assert "mauve" in capsys.readouterr().err


def _run_default(tmp_path, *extra) -> dict:
    """The default demo through the console entry point, in a fresh interpreter (as a user runs it)."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "zsar.cli", "demo", "--out", str(tmp_path / "demo"), "--report", str(report),
           "--no-progress", "--check", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    result = json.loads(report.read_text()) if report.exists() else None
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return result


@pytest.mark.slow
def test_default_demo_reaches_the_targets(tmp_path):
    report = _run_default(tmp_path)
    _check_report(report)
    assert report["unseen_top1"] >= 3 * report["chance"]
    assert report["unseen_top1"] > report["semantic_baseline_top1"]
    assert report["seconds"] < 15 * 60


@pytest.mark.slow
def test_demo_on_a_composition_split_it_has_not_seen(tmp_path):
    from zsar.data.synthetic import split_compositions
    from zsar.demo import DemoConfig

    report = _run_default(tmp_path, "--split-seed", "7")
    default_unseen = split_compositions(DemoConfig().data_config())[1]
    assert report["config"]["split_seed"] == 7
    assert set(report["unseen_classes"]) != set(default_unseen)
    assert report["unseen_top1"] >= 3 * report["chance"]
    assert report["unseen_top1"] > report["semantic_baseline_top1"]


@pytest.mark.parametrize("argv,message", [
    (["--transfer", "0.5,-1,3"], "--transfer '0.5,-1,3': k must be >= 0, got -1"),
    (["--transfer", "0.5,3,-2"], "--transfer '0.5,3,-2': rho must be >= 0, got -2"),
    (["--transfer", "inf,3,2"], "--transfer 'inf,3,2': theta must be finite, got inf"),
    (["--transfer", "0.5,1.5,2"], "--transfer '0.5,1.5,2': k must be a whole number, got '1.5'"),
    (["--transfer", "0.5,3"], "--transfer '0.5,3': expected THETA,K,RHO such as 0.5,10,6"),
    (["--workers", "-1"], "--workers must be at least 0, got -1"),
    (["--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file, not a folder"),
    (["--out", "{tmp}/a_file/demo"], "--out {tmp}/a_file/demo: {tmp}/a_file is a file, not a folder"),
    (["--report", "{tmp}/a_folder"], "--report {tmp}/a_folder: is a folder; give a file name"),
    (["--report", "{tmp}/a_file/r.json"], "--report {tmp}/a_file/r.json: {tmp}/a_file is a file, not a folder"),
])
def test_bad_options_and_outputs_are_refused_before_the_demo_runs(argv, message, tmp_path, capsys, monkeypatch):
    """Checked up front, as one line naming the option: the demo (here replaced by one that fails) never starts."""
    from zsar import demo

    def must_not_run(config, *args, **kwargs):
        raise AssertionError("the demo started")

    for model, entry in list(demo.DEMOS.items()):
        monkeypatch.setitem(demo.DEMOS, model, (*entry[:2], must_not_run, *entry[3:]))
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "demo")]
    assert main(["demo", "--quick", "--no-progress", *out, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zsar demo: error: {message.replace('{tmp}', str(tmp_path))}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]


def test_workers_0_renders_and_decodes_in_this_process(tmp_path, monkeypatch):
    """--workers 0 is accepted (like 1: no worker processes or threads); only negative counts are refused."""
    import argparse

    from zsar.cli.demo import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert build_config(parser.parse_args(["--quick", "--workers", "0", "--out", str(tmp_path)])).workers == 0
