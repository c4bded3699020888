"""``zsar demo --model mzst``: the audio-visual MZST pipeline end to end on the synthetic benchmark.

The quick run (once per module) exercises every step: render videos with sound, decode frames and
audio windows once, train mzst_tiny with audio + video, video only and audio only, ZSL and GZSL
with beta calibrated on held-out videos, figures, report and checkpoint. Its checkpoint then
classifies real video files with sound, in-process and through ``zsar predict`` in a fresh
interpreter, and ``zsar eval`` reproduces the demo's numbers. The slow test runs the default demo
and checks the demo's targets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zsar.cli import main

RUN_KEYS = {"unseen_top1", "unseen_top5", "unseen_mean_class_accuracy", "semantic_baseline_top1", "seen_top1",
            "gzsl", "modalities", "train_seconds", "parameters", "beta_unit"}
REPORT_KEYS = {"model", "unseen_top1", "gzsl", "chance", "chance_top5", "runs", "targets", "calibration", "views", "lists",
               "n_seen_classes", "n_unseen_classes", "n_test_videos", "seen_classes", "unseen_classes", "files",
               "config", "environment", "seconds", "seconds_by_step"}
TARGETS = {"audio_video_top1_at_least_3x_chance", "audio_video_top1_above_video_only",
           "audio_video_top1_above_audio_only"}


def _read_list(path: str) -> list[tuple[str, str]]:
    """(relative path, label) of a list file: the benchmark's use label indices, the demo's names."""
    return [tuple(line.split("\t") if "\t" in line else line.rsplit(" ", 1))
            for line in Path(path).read_text().splitlines()]


def _check_report(report: dict) -> None:
    assert REPORT_KEYS <= set(report), sorted(REPORT_KEYS - set(report))
    assert set(report["runs"]) == {"audio_video", "video", "audio"} and set(report["targets"]) == TARGETS
    assert report["chance"] == pytest.approx(1 / len(report["unseen_classes"]))
    assert not set(report["seen_classes"]) & set(report["unseen_classes"])
    for name, run in report["runs"].items():
        assert RUN_KEYS <= set(run), (name, sorted(RUN_KEYS - set(run)))
        for key in ("unseen_top1", "unseen_top5", "unseen_mean_class_accuracy", "semantic_baseline_top1", "seen_top1"):
            assert 0.0 <= run[key] <= 1.0, (name, key, run[key])
        g = run["gzsl"]
        # The grid is in units of the mean norm of the run's class targets (its beta_unit).
        run_grid = [b * run["beta_unit"] for b in report["calibration"]["grid"]]
        assert g["beta"] in run_grid
        for part in (g, g["calibration"], g["uncalibrated"]):
            assert all(0.0 <= part[k] <= 1.0 for k in ("S", "U", "HM")), (name, part)
            assert part["HM"] == pytest.approx(0.0 if part["S"] * part["U"] == 0 else
                                               2 * part["S"] * part["U"] / (part["S"] + part["U"]))
        # Beta is the calibration set's choice: the smallest beta of the grid with its highest HM.
        calibration = g["calibration"]["curve"]
        assert calibration["beta"] == run_grid and g["curve"]["beta"] == run_grid
        best = max(calibration["HM"])
        assert g["beta"] == min(b for b, hm in zip(run_grid, calibration["HM"]) if hm == best)
        assert g["calibration"]["HM"] == best
    assert report["runs"]["video"]["modalities"] == ["video"] and report["runs"]["audio"]["modalities"] == ["audio"]
    assert report["unseen_top1"] == report["runs"]["audio_video"]["unseen_top1"]
    assert report["seconds"] > 0 and {"generate", "decode", "train_audio_video", "train_video", "train_audio",
                                      "report"} <= set(report["seconds_by_step"])


def _check_lists(report: dict, data: Path) -> None:
    """Test and calibration videos: disjoint, none trained on, the test ones the first of each class."""
    lists = {name: _read_list(path) for name, path in report["lists"].items()}
    train = {rel for rel, _ in _read_list(str(data / "seen_train.txt"))}
    files = {name: {rel for rel, _ in rows} for name, rows in lists.items()}
    assert not files["test_seen"] & files["calibration_seen"] and not files["test_unseen"] & files["calibration_unseen"]
    assert not (files["test_seen"] | files["calibration_seen"]) & train
    n_test = report["config"]["data"]["unseen_per_class"]
    assert len(lists["test_unseen"]) == n_test * len(report["unseen_classes"]) == report["n_test_videos"]["unseen"]
    assert all(rel.endswith(tuple(f"_{i:03d}.webm" for i in range(n_test))) for rel in files["test_unseen"])
    assert report["calibration"]["videos"] == {"seen": len(lists["calibration_seen"]),
                                               "unseen": len(lists["calibration_unseen"])}


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("mzst_demo")
    out, report_path = root / "demo", root / "reports" / "quick.json"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--model", "mzst", "--quick", "--out", str(out), "--report", str(report_path),
                     "--no-progress"])
    assert code == 0
    return out, json.loads(report_path.read_text()), printed.getvalue(), report_path


def _video_with_sound(path: Path) -> Path:
    """An H.264 + AAC .mp4 with a moving square and a 440 Hz tone, written with PyAV directly
    (not by zsar, and in codecs the demo's VP9/Opus files do not use)."""
    import av

    fps, seconds, rate = 12, 2, 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(fps * seconds):
            img = np.full((64, 64, 3), 40, np.uint8)
            img[20 + i:36 + i, 24:40] = (220, 60, 60)
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        t = np.arange(rate * seconds) / rate
        tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in audio.encode(frame):
            container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def test_quick_demo_reports_every_model_figures_and_lists(quick_demo):
    out, report, printed, report_path = quick_demo
    assert "MZST audio + video" in printed and "video only" in printed and "audio only" in printed
    assert "GZSL S" in printed and "chance" in printed and "targets:" in printed
    _check_report(report)
    _check_lists(report, out / "data")
    files = report["files"]
    assert files["report"] == str(report_path)
    for name in ("tsne_audio_video", "tsne_video", "tsne_audio", "gzsl_tradeoff"):
        assert Path(files[name]).parent == out and Path(files[name]).stat().st_size > 0, name
    assert report["environment"]["threads"] == 1  # the demo's default, restored afterwards
    assert torch.get_num_threads() >= 1


def test_quick_demo_checkpoint_predicts_videos_with_sound(quick_demo, tmp_path):
    """The audio-video checkpoint reads a file's frames and sound: through the API and `zsar predict`."""
    from zsar.zeroshot import ZeroShotClassifier

    out, report, _, _ = quick_demo
    labels = report["unseen_classes"]
    demo_video = out / "data" / _read_list(report["lists"]["test_unseen"])[0][0]
    outside = _video_with_sound(tmp_path / "square falling.mp4")
    clf = ZeroShotClassifier.load(report["files"]["checkpoint"], device="cpu")
    assert clf.model.inputs.audio is not None and clf.model.config.modalities == ("video", "audio")
    clf.set_labels(labels)
    probs = clf.predict_proba([str(demo_video), str(outside)])
    assert probs.shape == (2, len(labels)) and torch.allclose(probs.sum(1), torch.ones(2, dtype=probs.dtype))

    # The sound reaches the model: the same frames without their audio track score differently.
    batch = clf._load([str(outside)])
    assert bool(batch.audio_present.all())
    silent = clf.model.encode(batch.replace(audio_present=torch.zeros(1, dtype=torch.bool)))
    assert not torch.allclose(silent, clf.encode([str(outside)]))

    cmd = [sys.executable, "-m", "zsar.cli", "predict", str(demo_video), str(outside), "--checkpoint",
           report["files"]["checkpoint"], "--labels", ",".join(labels), "--top-k", str(len(labels)), "--json",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = json.loads(proc.stdout)
    assert [r["video"] for r in predicted] == [str(demo_video), str(outside)]
    match = clf.match_proba([str(demo_video), str(outside)]) if clf.open_set is not None else [None, None]
    for row, expected, matched in zip(predicted, probs, match):
        got = {p["label"]: p["probability"] for p in row["predictions"]}
        assert set(got) == set(labels)
        for j, label in enumerate(labels):
            assert got[label] == pytest.approx(float(expected[j]), abs=2e-6), label
        if matched is None:  # the one-epoch model did not separate its seen classes: no calibration
            assert "none_of_these" not in row and "match" not in row["predictions"][0]
            continue
        # The checkpoint's open-set calibration: each label's own match probability and "none of these".
        got_match = {p["label"]: p["match"] for p in row["predictions"]}
        for j, label in enumerate(labels):
            assert got_match[label] == pytest.approx(float(matched[j]), abs=2e-6), label
        assert row["none_of_these"] == (float(matched.max()) < 0.5)


def test_quick_demo_checkpoint_calibration_is_fitted_on_held_out_seen_videos(quick_demo):
    """The demo fits the MZST checkpoint's open-set calibration on its held-out seen-class videos
    (classes held out fold by fold): the fit on those videos, decoded from their files, gives the
    stored calibration, or, for the quick run's one-epoch model, the fitted scale the checkpoint
    records as why it has none (a representation that does not separate the classes)."""
    from zsar.zeroshot import ZeroShotClassifier
    from zsar.zeroshot.open_set import calibration_pairs, fit_platt

    out, report, _, _ = quick_demo
    clf = ZeroShotClassifier.load(report["files"]["checkpoint"], device="cpu")
    assert clf.model.zero_shot_head == "semantic_embedding"
    rows = _read_list(report["lists"]["calibration_seen"])
    x = clf.encode([str(out / "data" / rel) for rel, _ in rows])
    labels = torch.tensor([clf.seen_labels.index(name) for _, name in rows])
    scale, bias = fit_platt(*calibration_pairs(clf.head, clf.embedder, clf.model, x, labels, clf.seen_labels))
    summary = report["runs"]["audio_video"]["open_set"]
    if clf.open_set is None:
        assert summary is None and f"(fitted scale {scale:.3g})" in clf.open_set_missing
    else:
        assert (clf.open_set.videos, clf.open_set.classes) == (len(rows), len(report["seen_classes"]))
        assert clf.open_set.scale == pytest.approx(scale, rel=1e-4) and clf.open_set.bias == pytest.approx(bias, rel=1e-4)
        assert summary["scale"] == clf.open_set.scale


def test_train_calibrates_an_mzst_checkpoint(quick_demo, tmp_path):
    """`zsar train` of an MZST model fits the open-set calibration on its training videos (a head that
    needs no seen representations: at most 10 per class are encoded), or records why it could not
    (one epoch on two videos per class does not separate the classes); `zsar predict` says which."""
    out, report, _, _ = quick_demo
    data = out / "data"
    rows = [line.rsplit(" ", 1) for line in (data / "seen_train.txt").read_text().splitlines()]
    keep = [(rel, label) for rel, label in rows if int(label) < 4]
    (tmp_path / "train.txt").write_text("".join(f"{rel}\t{report['seen_classes'][int(label)]}\n" for rel, label in keep))
    config = tmp_path / "train.yaml"
    config.write_text("model: mzst_tiny\nstages: {joint: {epochs: 1}}\nbatch_size: 8\nprogress: false\n"
                      f"device: cpu\nout_dir: {tmp_path / 'run'}\n"
                      f"data: {{format: list, annotations: {tmp_path / 'train.txt'}, root: {data}, stride: 1}}\n")
    assert main(["train", str(config)]) == 0
    settings = json.loads((tmp_path / "run" / "checkpoints" / "best" / "zeroshot.json").read_text())
    assert settings["head"] == "semantic_embedding"
    if settings.get("open_set") is not None:
        assert (settings["open_set"]["videos"], settings["open_set"]["classes"]) == (len(keep), 4)
    else:
        assert "held-out seen classes" in settings["open_set_missing"]


def test_eval_on_the_checkpoint_reproduces_the_demo(quick_demo, tmp_path, capsys):
    """One evaluation path: `zsar eval` decodes the demo's lists itself (frames and sound, no cache)
    and gives the demo's audio-video ZSL numbers, and its GZSL ones at the demo's beta."""
    out, report, _, _ = quick_demo
    data, lists, run = out / "data", report["lists"], report["runs"]["audio_video"]
    ckpt = report["files"]["checkpoint"]
    zsl, gzsl = tmp_path / "zsl.json", tmp_path / "gzsl.json"
    assert main(["eval", "--checkpoint", ckpt, "--annotations", lists["test_unseen"], "--root", str(data),
                 "--backend", "pyav", "--report", str(zsl)]) == 0
    results = json.loads(zsl.read_text())
    assert results["classes"] == len(report["unseen_classes"])  # the list names its classes: the unseen ones
    assert results["transfer"]["top1"]["mean"] == pytest.approx(run["unseen_top1"], abs=1e-9)
    assert results["transfer"]["mean_class_accuracy"]["mean"] == pytest.approx(run["unseen_mean_class_accuracy"],
                                                                              abs=1e-9)
    assert main(["eval", "--checkpoint", ckpt, "--protocol", "gzsl", "--test-seen", lists["test_seen"],
                 "--test-unseen", lists["test_unseen"], "--root", str(data), "--beta", str(run["gzsl"]["beta"]),
                 "--backend", "pyav", "--report", str(gzsl)]) == 0
    capsys.readouterr()
    test = json.loads(gzsl.read_text())["test"]
    for key in ("S", "U", "HM"):
        assert test[key] == pytest.approx(run["gzsl"][key], abs=1e-9), key


def test_cached_samples_equal_uncached_ones(tmp_path):
    """The demo's media cache changes nothing: frames and audio windows of training clips (random
    starts, several epochs) and of evaluation clips equal VideoClipDataset's own decoding."""
    from zsar.data import AudioSpec, CachedClipDataset, ClipSpec, MediaCache, VideoClipDataset
    from zsar.data.synthetic import SyntheticConfig, generate_benchmark

    bench = generate_benchmark(SyntheticConfig.audio_visual(train_per_class=1, test_per_class=0, unseen_per_class=1,
                                                            frames=30), tmp_path / "data", workers=2, progress=False)
    videos = type(bench.seen_train)(bench.seen_train.records[:4], bench.seen_train.classes)
    audio = AudioSpec(target_length=128)  # 1.28 s windows in 2.5 s tracks: the window moves with the clip

    for spec in (ClipSpec(frames=4, stride=3, size=48, train=True), ClipSpec(frames=4, stride=2, size=48, num_clips=2)):
        cache = MediaCache("pyav")
        cached = CachedClipDataset(videos, spec, cache, seed=5, audio=audio)
        plain = VideoClipDataset(videos, spec, backend="pyav", seed=5, audio=audio)
        cache.fill([cached], workers=2, progress=False, epochs=range(3))
        filled = len(cache.audio)
        centres = set()
        for epoch in range(4):  # epoch 3 was not filled: decoded on demand
            for i in range(len(videos)):
                a, b = cached.sample(i, epoch), plain.sample(i, epoch)
                torch.testing.assert_close(a.clip, b.clip, rtol=0, atol=0)
                torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
                assert a.audio_present and b.audio_present
                centres.add((i, float(a.audio.sum())))
        assert len(cache.frames) == len(videos) and len(cache.audio) >= filled
        if spec.train:
            assert len(centres) > len(videos)  # the training windows really differ between epochs


def test_options_of_the_other_demo_are_one_line_errors(capsys):
    for argv, option in ((["--model", "mzst", "--warmup-epochs", "3"], "--warmup-epochs"),
                         (["--model", "mzst", "--transfer", "0.5,10,6"], "--transfer"),
                         (["--sounds", "beeping,humming"], "--sounds"), (["--epochs", "3"], "--epochs")):
        assert main(["demo", *argv, "--out", "unused"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err, err
    assert main(["demo", "--model", "mzst", "--sounds", "beeping,meowing", "--out", "unused"]) == 2
    assert "meowing" in capsys.readouterr().err


def test_cli_builds_the_mzst_config():
    import argparse

    from zsar.cli.demo import add_arguments, build_config
    from zsar.demo import MZSTDemoConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = build_config(parser.parse_args(["--model", "mzst", "--epochs", "7", "--test-videos", "5", "--seed", "2",
                                          "--sounds", "beeping,humming,buzzing,whistling"]))
    assert isinstance(cfg, MZSTDemoConfig) and cfg.epochs == 7 and cfg.seed == 2
    assert cfg.out_dir == MZSTDemoConfig().out_dir and cfg.data.unseen_per_class == 5
    assert cfg.model_overrides("audio_video")["loss_milestones"] == (2, 4)
    rendered = cfg.data_config()
    assert rendered.unseen_per_class == 5 + cfg.calibration_unseen_per_class and rendered.seed == 2
    assert len(rendered.sounds) == 4
    quick = build_config(parser.parse_args(["--model", "mzst", "--quick"]))
    assert quick.out_dir == "runs/demo-mzst-quick" and quick.epochs == 1
    assert quick.model_overrides("video") == {"loss_milestones": (), "se_weights": (0.25,), "mlm_weights": (0.25,),
                                             "modalities": ("video",)}


@pytest.mark.slow
def test_default_mzst_demo_reaches_the_targets(tmp_path):
    """The default demo through the console entry point, in a fresh interpreter (as a user runs it)."""
    report_path = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "zsar.cli", "demo", "--model", "mzst", "--out", str(tmp_path / "demo"),
           "--report", str(report_path), "--no-progress", "--check"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    _check_report(report)
    _check_lists(report, tmp_path / "demo" / "data")
    runs = report["runs"]
    assert runs["audio_video"]["unseen_top1"] >= 3 * report["chance"]
    # The trained model separates its seen classes: its checkpoint answers "none of these".
    assert runs["audio_video"]["open_set"]["scale"] > 0
    settings = json.loads((Path(report["files"]["checkpoint"]) / "zeroshot.json").read_text())
    assert settings["open_set"]["scale"] == runs["audio_video"]["open_set"]["scale"]
    assert runs["audio_video"]["unseen_top1"] > max(runs["video"]["unseen_top1"], runs["audio"]["unseen_top1"])
    assert report["seconds"] < 15 * 60
