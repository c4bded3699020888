"""The MZST demo: audio-visual zero-shot action recognition end to end on a benchmark zsar renders.

:func:`run_mzst_demo` (``zsar demo --model mzst``) runs the MZST pipeline on the audio-visual
synthetic benchmark (:meth:`zsar.data.synthetic.SyntheticConfig.audio_visual`), on a CPU in minutes:

1. render the benchmark to real video files with sound: labels "<shape> <motion> <sound>", where
   the shape and motion are drawn and never heard and the sound is heard and never drawn; the
   crossed split holds out 2 x 2 blocks (two visible compositions x two sounds), so on the unseen
   classes neither modality alone names the class;
2. decode every video and every clip's audio window once (:class:`~zsar.data.cache.MediaCache`);
3. train ``mzst_tiny`` on the seen classes three times with the same budget: audio + video, video
   only and audio only (the MZST paper's Table 4 rows), each with its task, semantic (L_SE) and
   masked-word losses;
4. zero-shot (ZSL): f(x) of the unseen test videos, classified by the nearest class embedding (L2)
   among the unseen labels, through the same runner as ``zsar eval``
   (:func:`zsar.eval.runner.zero_shot_report`);
5. generalized zero-shot (GZSL): seen and unseen test videos searched among all labels, with
   calibrated stacking (:func:`zsar.eval.avca.evaluate_gzsl`); beta is calibrated on videos that
   are neither trained on nor tested (see :class:`MZSTDemoConfig`);
6. print a table, write a JSON report, t-SNE figures of f(x) and the class embeddings per model
   (the MZST paper's Fig. 6), the GZSL trade-off of the audio-video model, and a zero-shot
   checkpoint of the audio-video model that ``zsar predict`` and
   :meth:`~zsar.zeroshot.ZeroShotClassifier.load` accept.

    from zsar.demo import MZSTDemoConfig, run_mzst_demo
    report = run_mzst_demo(MZSTDemoConfig(out_dir="runs/demo-mzst"))
    report["runs"]["audio_video"]["unseen_top1"], report["gzsl"]["HM"], report["chance"]
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import torch_threads, write_atomic
from ..data import CachedClipDataset, MediaCache, evaluation_loader
from ..data.records import VideoList
from ..data.synthetic import SyntheticBenchmark, SyntheticConfig, generate_benchmark
from ..data.transforms import CROPS
from ..eval.avca import GZSLEvalSet, evaluate_gzsl
from ..eval.runner import seen_accuracy, zero_shot_report
from ..models import create_model, default_embedder_spec
from ..text import embedder_from_spec
from ..train.config import StageConfig, TrainConfig
from ..train.pipeline import Pipeline, first_per_class
from ..zeroshot.heads import METRICS
from ._common import (DemoSettings, Steps, default_workers, environment, finish_report, open_set_summary, percent,
                      time_and_files)

__all__ = ["MZSTDemoConfig", "mzst_quick_config", "run_mzst_demo", "format_mzst_report", "RUNS"]

#: The models the demo trains, by report key: their modalities and how tables name them.
RUNS: dict[str, tuple[tuple[str, ...], str]] = {
    "audio_video": (("video", "audio"), "MZST audio + video"),
    "video": (("video",), "MZST video only"),
    "audio": (("audio",), "MZST audio only"),
}
#: The model whose checkpoint, GZSL trade-off and targets the demo reports.
MAIN_RUN = "audio_video"
#: Target: audio + video unseen top-1 at least this many times chance (and above both single modalities).
CHANCE_FACTOR = 3.0
#: The paper's loss weights (lambda for L_SE, sigma for L_MLM) per period of training.
_PAPER_LOSS_WEIGHTS = (0.25, 0.1, 0.05)


@dataclass
class MZSTDemoConfig(DemoSettings):
    """Everything :func:`run_mzst_demo` does, with defaults that fit a 2-core CPU in minutes.

    Outputs, seeds, the benchmark and how it runs: :class:`~zsar.demo._common.DemoSettings`.
    ``data`` is an audio-visual benchmark; its ``test_per_class`` and ``unseen_per_class`` are the
    *test* videos per seen and unseen class.

    Training: each model in ``runs`` (keys of :data:`RUNS`) is ``model`` with those modalities and
    ``model_args``, trained ``epochs`` epochs with AdamW at ``lr`` (cosine schedule) on clips of
    the model's frames at ``stride``, cropped ``crop``; the loss weights follow the paper's schedule
    (lambda = sigma = 0.25, 0.1, then 0.05) with its periods scaled to ``epochs`` (ending at
    ``epochs // 3`` and ``2 * epochs // 3``).

    GZSL calibration (beta of calibrated stacking, ``metric`` distances, chosen on ``beta_grid``
    as the value with the highest HM, the smallest on ties): the benchmark renders
    ``calibration_seen_per_class`` and ``calibration_unseen_per_class`` more videos per seen and
    unseen class beside the test videos (a video's content depends only on its class, subset and
    index, so the test videos are those of the plain benchmark). Beta is chosen on those
    calibration videos, held out from training and from every test, and applied unchanged to the
    test videos; the test videos never take part in any choice. The calibration set has videos of
    the unseen classes (a validation part of those classes, as a GZSL validation split has); the
    class-disjoint alternative (AVCA's: pseudo-unseen classes cut from the seen ones and a second
    model trained without them, as ``zsar gzsl`` does) would cost another training run.

    Why these defaults: ``mzst_tiny`` (a two-block MViT and AST, width 64) hears the sounds within a
    few epochs but sees the shapes and motions only after several hundred optimiser steps; 8-clip
    batches give it twice the steps of 16-clip ones at about the same cost per epoch, and 45
    epochs leave the cosine schedule enough learning rate when the visual part sets in (with
    16-clip batches and 30 epochs the audio-video model stayed below audio alone). 8 frames at
    stride 3 span a 24-frame video, and the centre crop keeps the object in view. ``threads=1``:
    the tiny model's operations are too small to gain much from a second thread, and on a busy
    machine (or in a container with fewer free cores than torch assumes) the threads of every
    operation wait for the slowest, and the demo's time then depends on the other load.
    """

    out_dir: str = "runs/demo-mzst"
    data: SyntheticConfig = field(default_factory=SyntheticConfig.audio_visual)
    calibration_seen_per_class: int = 3
    calibration_unseen_per_class: int = 4
    model: str = "mzst_tiny"
    model_args: dict[str, Any] = field(default_factory=dict)
    runs: tuple[str, ...] = tuple(RUNS)
    stride: int = 3
    crop: str = "center"
    eval_clips: int = 1
    epochs: int = 45
    lr: float = 5e-4
    weight_decay: float = 0.05
    batch_size: int = 8
    metric: str = "l2"
    # Calibration betas in units of the mean norm of the seen classes' targets (1 for unit-norm
    # embeddings): f(x) lands near them, so the distances a beta trades scale with that norm.
    beta_grid: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 0.5, 101), 6).tolist())
    threads: int | None = 1  # torch CPU threads while the demo runs (None: torch's default)

    def __post_init__(self):
        super().__post_init__()
        self.runs, self.beta_grid = tuple(self.runs), tuple(float(b) for b in self.beta_grid)
        if not self.data.sounds or not self.data.audio:
            raise ValueError("the MZST demo needs an audio-visual benchmark with a sound part "
                             "(SyntheticConfig.audio_visual(...))")
        unknown = [r for r in self.runs if r not in RUNS]
        if unknown or MAIN_RUN not in self.runs or len(set(self.runs)) != len(self.runs):
            raise ValueError(f"runs must be distinct names of {list(RUNS)} including {MAIN_RUN!r}, "
                             f"got {list(self.runs)}")
        for name in ("stride", "eval_clips", "batch_size", "epochs", "calibration_seen_per_class",
                     "calibration_unseen_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.data.test_per_class < 1:
            raise ValueError("data.test_per_class must be >= 1: GZSL tests on held-out videos of the seen classes")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not self.beta_grid or 0.0 not in self.beta_grid or not all(np.isfinite(self.beta_grid)):
            raise ValueError(f"beta_grid must be finite betas including 0 (no calibration), got {list(self.beta_grid)}")
        forced = sorted({"modalities", "class_names", "class_embeddings"} & set(self.model_args))
        if forced:
            raise ValueError(f"model_args must not set {forced}: the demo sets them per run")

    def data_config(self) -> SyntheticConfig:
        """The benchmark as rendered: the demo's seeds, test plus calibration videos per class."""
        return dataclasses.replace(self.data, seed=self.seed, split_seed=self.split_seed,
                                   test_per_class=self.data.test_per_class + self.calibration_seen_per_class,
                                   unseen_per_class=self.data.unseen_per_class + self.calibration_unseen_per_class)

    def model_overrides(self, run: str) -> dict[str, Any]:
        """The builder arguments of ``run``'s model (besides the classes and their embeddings)."""
        milestones = tuple(sorted({m for m in (self.epochs // 3, 2 * self.epochs // 3) if m > 0}))
        weights = _PAPER_LOSS_WEIGHTS[:len(milestones) + 1]
        return {"loss_milestones": milestones, "se_weights": weights, "mlm_weights": weights, **self.model_args,
                "modalities": RUNS[run][0]}


def mzst_quick_config(**overrides) -> MZSTDemoConfig:
    """A seconds-long MZST demo for tests and smoke checks: few short videos, one epoch per model.

    Its accuracies mean little; it exercises every step and writes every output.
    """
    data = SyntheticConfig.audio_visual(train_per_class=2, test_per_class=1, unseen_per_class=1, frames=12)
    base = dict(data=data, calibration_seen_per_class=1,
                calibration_unseen_per_class=1, stride=1, epochs=1, batch_size=8)
    base.update(overrides)
    return MZSTDemoConfig(**base)


# ---- helpers -------------------------------------------------------------------------------------


def _write_list(path: Path, root: Path, videos: VideoList) -> str:
    """A list file of the ``list`` format with class names (``relative/path<TAB>label``), so that
    each list names its own classes: ``zsar eval`` reads it without a class file, for ZSL
    (``--annotations``) and GZSL (``--test-seen``, ``--val-unseen``, ...) alike."""
    write_atomic(path, "".join(f"{Path(r.path).relative_to(root).as_posix()}\t{videos.classes[r.label]}\n"
                               for r in videos))
    return str(path)


# ---- the demo ------------------------------------------------------------------------------------


def run_mzst_demo(config: MZSTDemoConfig | None = None, verbose: bool = True) -> dict[str, Any]:
    """Runs the demo described in the module docstring; returns (and writes) the report.

    The report holds fractions in [0, 1] and seconds. ``runs`` has one entry per trained model
    (``audio_video``, ``video``, ``audio``): ZSL ``unseen_top1``, ``unseen_top5``,
    ``unseen_mean_class_accuracy``, the ``semantic_baseline_*`` of its task head, ``seen_top1``
    (task head on the seen test videos), ``gzsl`` (test ``S``, ``U``, ``HM`` at the calibrated
    ``beta``, the calibration set's scores, and the scores at beta = 0) and ``train_seconds``.
    At the top level: ``unseen_top1`` and ``gzsl`` of the audio-video model, ``chance``,
    ``targets`` (audio + video top-1 at least 3x chance and above each single modality), the
    classes, the calibration scheme, the files written, the configuration and ``seconds``
    (total) and ``seconds_by_step``. ``verbose`` prints step headers and the results table.
    """
    cfg = config or MZSTDemoConfig()
    with torch_threads(cfg.threads):
        return _run(cfg, verbose)


def _run(cfg: MZSTDemoConfig, verbose: bool) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(3 + len(cfg.runs), verbose)
    data_cfg = cfg.data_config()
    workers = default_workers(cfg.workers)

    with steps("generate", f"rendering the audio-visual benchmark into {out / 'data'}"):
        bench: SyntheticBenchmark = generate_benchmark(data_cfg, out / "data", workers=workers, progress=cfg.progress)
        seen, unseen = bench.seen_classes, bench.unseen_classes
        test_seen, calibration_seen = first_per_class(bench.seen_test, cfg.data.test_per_class)
        test_unseen, calibration_unseen = first_per_class(bench.unseen_test, cfg.data.unseen_per_class)
        lists = {name: _write_list(bench.root / f"{name}.txt", bench.root, videos) for name, videos in (
            ("test_seen", test_seen), ("test_unseen", test_unseen), ("calibration_seen", calibration_seen),
            ("calibration_unseen", calibration_unseen))}
    if verbose:
        print(f"      {len(seen)} seen classes ({len(bench.seen_train)} training videos), {len(unseen)} unseen classes "
              f"({len(test_unseen)} test videos), e.g. unseen {unseen[0]!r}; GZSL calibration on "
              f"{len(calibration_seen)} + {len(calibration_unseen)} held-out videos", flush=True)

    with steps("decode", "loading the label embedder and decoding the videos and their sound"):
        # The embedder loads before training so that a broken install fails in seconds, not minutes.
        loaded = time.perf_counter()
        # The model's own label embedder (MZST: unnormalised sentence embeddings, as the paper).
        embedder = embedder_from_spec(default_embedder_spec(cfg.model))
        steps.seconds["load_embedder"] = round(time.perf_counter() - loaded, 2)
        # Every run reads the same inputs (the modalities change the model, not its frames or audio
        # window), so one cache serves all: those of the audio-video model.
        inputs = create_model(cfg.model, class_names=seen, **cfg.model_overrides(MAIN_RUN)).inputs
        audio = inputs.audio
        train_spec = inputs.clip_spec(stride=cfg.stride, train=True, crop=cfg.crop)
        # Fewer views than the paper's 4 clips x 3 crops (the model's default): cfg.eval_clips centred clips.
        eval_spec = dataclasses.replace(train_spec, train=False, num_clips=cfg.eval_clips, crop=None)
        cache = MediaCache(cfg.decoder)
        train_set = CachedClipDataset(bench.seen_train, train_spec, cache, seed=cfg.seed, audio=audio)
        eval_sets = {name: CachedClipDataset(getattr(bench, name), eval_spec, cache, audio=audio)
                     for name in ("seen_test", "unseen_test")}
        cache.fill([train_set], workers, cfg.progress, epochs=range(cfg.epochs))
        cache.fill(list(eval_sets.values()), workers, cfg.progress)
    steps.seconds["decode"] = round(steps.seconds["decode"] - steps.seconds["load_embedder"], 2)

    results: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    encoded_unseen: dict[str, Any] = {}
    for run in cfg.runs:
        modalities, title = RUNS[run]
        epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
        with steps(f"train_{run}", f"{title}: training {cfg.model} ({' + '.join(modalities)}) on the seen classes "
                                   f"for {epochs}, then ZSL and GZSL on the test videos"):
            overrides = cfg.model_overrides(run)
            train_cfg = TrainConfig(
                model=cfg.model, model_args=overrides,
                stages={"joint": StageConfig(cfg.epochs, "adamw", cfg.lr, cfg.weight_decay)},
                batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, num_workers=0,
                out_dir=str(out / "train" / run), progress=cfg.progress, log_every=10,
                head_settings={"metric": cfg.metric})
            pipeline = Pipeline(train_cfg, seen, embedder)
            shutil.rmtree(out / "train" / run, ignore_errors=True)  # a fresh run, not a resumed one
            trained = time.perf_counter()
            pipeline.fit(train_set)
            model = pipeline.model.eval()
            train_seconds = round(time.perf_counter() - trained, 2)

            encoded = {name: pipeline.encode(evaluation_loader(ds, batch_size=64), f"{name} videos",
                                             with_seen_logits=True) for name, ds in eval_sets.items()}
            # Open-set "none of these": calibrated on the held-out calibration videos of the seen
            # classes (never trained on), the classes held out fold by fold.
            calibration = encoded["seen_test"].select([r.video_id for r in calibration_seen])
            clf = pipeline.classifier(None, calibration=calibration, clip_spec=eval_spec)
            zsl_set = encoded["unseen_test"].select([r.video_id for r in test_unseen])
            zsl = zero_shot_report(clf, zsl_set, unseen, protocol="0/100", dataset="synthetic audio-visual")
            by_id = {v: x for e in encoded.values() for v, x in zip(e.video_ids, e.x)}

            def encode(videos: VideoList):
                ids = [r.video_id for r in videos]
                return torch.stack([by_id[v] for v in ids]), ids

            beta_unit = float(model.class_embedding_targets(model.class_embeddings).norm(dim=-1).mean())
            gzsl = evaluate_gzsl(encode, _class_matrix(clf), GZSLEvalSet(seen, test_seen, test_unseen),
                                 val=GZSLEvalSet(seen, calibration_seen, calibration_unseen), metric=cfg.metric,
                                 grid=[b * beta_unit for b in cfg.beta_grid])
            results[run] = _run_summary(zsl, gzsl, seen_accuracy(encoded["seen_test"].select(
                [r.video_id for r in test_seen])))
            results[run].update(modalities=list(modalities), train_seconds=train_seconds, beta_unit=beta_unit,
                                parameters=sum(p.numel() for p in model.parameters()),
                                open_set=open_set_summary(clf, zsl_set.x, encoded["seen_test"].select(
                                    [r.video_id for r in test_seen]).x, unseen))
            models[run], encoded_unseen[run] = (pipeline, clf), zsl_set
        if verbose:
            r = results[run]
            print(f"      unseen top-1 {percent(r['unseen_top1']).strip()} (chance {percent(zsl['chance']).strip()}); "
                  f"GZSL S {percent(r['gzsl']['S']).strip()}, U {percent(r['gzsl']['U']).strip()}, "
                  f"HM {percent(r['gzsl']['HM']).strip()} at beta {r['gzsl']['beta']:g}", flush=True)

    with steps("report", "writing the checkpoint, figures and the report"):
        pipeline, clf = models[MAIN_RUN]
        # The audio-video model with its zero-shot head: `zsar predict` reads it.
        checkpoint = pipeline.save(clf, out / "checkpoint")
        files = {"report": str(cfg.report_path), "checkpoint": str(checkpoint), "data": str(bench.root)}
        if cfg.plots:
            files.update(_plots(out, cfg, models, encoded_unseen, unseen, results, verbose))
        chance = 1.0 / len(unseen)
        main = results[MAIN_RUN]
        targets = {"audio_video_top1_at_least_3x_chance": main["unseen_top1"] >= CHANCE_FACTOR * chance}
        for run in cfg.runs:
            if run != MAIN_RUN:
                targets[f"audio_video_top1_above_{run}_only"] = main["unseen_top1"] > results[run]["unseen_top1"]
        report: dict[str, Any] = {
            "model": cfg.model,
            "unseen_top1": main["unseen_top1"],
            "gzsl": {k: main["gzsl"][k] for k in ("S", "U", "HM", "beta")},
            "chance": chance,
            "chance_top5": min(5, len(unseen)) / len(unseen),
            "runs": results,
            "targets": targets,
            "n_seen_classes": len(seen),
            "n_unseen_classes": len(unseen),
            "n_train_videos": len(bench.seen_train),
            "n_test_videos": {"seen": len(test_seen), "unseen": len(test_unseen)},
            "calibration": {
                "method": "beta of calibrated stacking with the highest HM on held-out calibration videos of the "
                          "seen and unseen classes (neither trained on nor tested), then applied to the test videos",
                "videos": {"seen": len(calibration_seen), "unseen": len(calibration_unseen)},
                "metric": cfg.metric, "grid": list(cfg.beta_grid),
                "grid_unit": "the mean norm of the seen classes' targets (per run)"},
            "views": {"clips": cfg.eval_clips, "crops": 1,
                      "note": f"the demo evaluates {cfg.eval_clips} centred clip(s) per video; the paper (and "
                              f"{cfg.model}'s default) {inputs.eval_clips} clips x 3 crops"},
            "seen_classes": seen,
            "unseen_classes": unseen,
            "lists": lists,
            "files": files,
            "config": cfg.to_dict(),
            "environment": environment(pipeline.trainer.device),
        }
    return finish_report(report, cfg, steps, start, format_mzst_report, verbose)


def _class_matrix(clf):
    """Labels -> their class matrix in the model's space (the classifier's head and embedder),
    without changing the classifier's labels."""
    return lambda labels: clf.head.class_matrix(list(labels), clf.embedder, clf.model)


def _run_summary(zsl: dict, gzsl: dict, seen_top1: float) -> dict[str, Any]:
    """One model's ZSL (zero_shot_report) and GZSL (evaluate_gzsl) numbers for the report."""
    def metric(result: dict, key: str) -> float:
        return result[key]["mean"] if key in result else 1.0  # top-5 is left out with at most 5 classes
    at_zero = gzsl["curve"]["beta"].index(0.0)
    return {
        "unseen_top1": metric(zsl["transfer"], "top1"),
        "unseen_top5": metric(zsl["transfer"], "top5"),
        "unseen_mean_class_accuracy": metric(zsl["transfer"], "mean_class_accuracy"),
        "semantic_baseline_top1": metric(zsl["semantic_baseline"], "top1"),
        "semantic_baseline_mean_class_accuracy": metric(zsl["semantic_baseline"], "mean_class_accuracy"),
        "seen_top1": seen_top1,
        "gzsl": {**{k: gzsl["test"][k] for k in ("S", "U", "HM")}, "beta": gzsl["beta"],
                 "calibration": {**{k: gzsl["validation"][k] for k in ("S", "U", "HM")},
                                 "curve": gzsl["validation"]["curve"]},
                 "uncalibrated": {k: gzsl["curve"][k][at_zero] for k in ("S", "U", "HM")},
                 "curve": gzsl["curve"]},
    }


def _plots(out: Path, cfg: MZSTDemoConfig, models: dict, encoded_unseen: dict, unseen: list[str],
           results: dict, verbose: bool) -> dict[str, str]:
    """Per model, a t-SNE of f(x) of the unseen test videos with their class embeddings (the MZST
    paper's Fig. 6: the modalities side by side), and the audio-video model's GZSL trade-off on
    the test videos with the calibrated beta. Skipped without matplotlib/scikit-learn."""
    try:
        from ..eval.plots import plot_gzsl_tradeoff, plot_tsne  # lazy: matplotlib is optional
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        if verbose:
            print(f"      figures skipped: {e}", flush=True)
        return {}
    files = {}
    for run, (_, clf) in models.items():
        encoded = encoded_unseen[run]
        clf.set_labels(unseen)
        path = plot_tsne(encoded.x, encoded.labels, out / f"fig6_tsne_{run}.png", prototypes=clf.class_matrix,
                         class_names=unseen, prototype_label="class embeddings",
                         title=f"{RUNS[run][1]}: f(x) of unseen videos")
        files[f"tsne_{run}"] = str(path)
    gzsl = results[MAIN_RUN]["gzsl"]
    files["gzsl_tradeoff"] = str(plot_gzsl_tradeoff(gzsl["curve"], out / "gzsl_tradeoff.png", chosen_beta=gzsl["beta"],
                                                    title=f"{RUNS[MAIN_RUN][1]}: GZSL on the test videos "
                                                          "(beta calibrated on held-out videos)"))
    return files


def format_mzst_report(report: dict[str, Any]) -> str:
    """The results table of an MZST demo report (percentages)."""
    tests = report["n_test_videos"]
    lines = [f"zero-shot on {report['n_unseen_classes']} unseen classes (held-out compositions), "
             f"{tests['unseen']} test videos; GZSL adds {tests['seen']} test videos of the "
             f"{report['n_seen_classes']} seen classes",
             f"{'model':<24}{'ZSL top-1':>10}{'top-5':>8}{'mean cls':>10}{'GZSL S':>9}{'U':>8}{'HM':>8}{'beta':>7}"]
    lines.append("-" * len(lines[-1]))
    for run, r in report["runs"].items():
        g = r["gzsl"]
        lines.append(f"{RUNS[run][1]:<24}{percent(r['unseen_top1']):>10}{percent(r['unseen_top5']):>8}"
                     f"{percent(r['unseen_mean_class_accuracy']):>10}{percent(g['S']):>9}{percent(g['U']):>8}"
                     f"{percent(g['HM']):>8}{g['beta']:>7.3f}")
    lines.append(f"{'chance':<24}{percent(report['chance']):>10}{percent(report['chance_top5']):>8}"
                 f"{percent(report['chance']):>10}")
    main = report["runs"][MAIN_RUN]
    lines.append(f"(audio + video: semantic-space baseline top-1 {percent(main['semantic_baseline_top1']).strip()}; "
                 f"seen classes, task head on held-out videos: top-1 {percent(main['seen_top1']).strip()}; "
                 f"GZSL HM without calibration {percent(main['gzsl']['uncalibrated']['HM']).strip()})")
    t = report["targets"]
    ratio = report["unseen_top1"] / report["chance"]
    parts = [f"audio + video top-1 >= {CHANCE_FACTOR:g}x chance: "
             f"{'yes' if t['audio_video_top1_at_least_3x_chance'] else 'NO'} ({ratio:.1f}x)"]
    for run, r in report["runs"].items():
        if run != MAIN_RUN:
            margin = 100 * (report["unseen_top1"] - r["unseen_top1"])
            parts.append(f"above {run} only: {'yes' if t[f'audio_video_top1_above_{run}_only'] else 'NO'} "
                         f"({margin:+.1f} points)")
    lines.append("targets: " + "; ".join(parts))
    if "views" in report:
        lines.append(f"views: {report['views']['note']}")
    lines += time_and_files(report)
    return "\n".join(lines)
