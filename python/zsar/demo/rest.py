"""The ResT demo: zero-shot action recognition end to end on a benchmark zsar renders itself.

:func:`run_demo` (``zsar demo``, ``zsar demo --model rest``) runs the whole ResT pipeline on the synthetic compositional
benchmark (:mod:`zsar.data.synthetic`), on a CPU in a few minutes:

1. render the benchmark to real video files (seen classes for training, held-out compositions as
   unseen classes);
2. decode the videos through the package's data path (:func:`~zsar.data.probe_video`,
   :func:`~zsar.data.read_frames`, :func:`~zsar.data.plan_clip`, :func:`~zsar.data.apply_plan`);
3. train a small ResT on the seen classes with :class:`~zsar.train.Trainer`, both stages (frame
   encoder warm-up, then the whole model with the masked-token loss);
4. compute the seen-class visual prototypes (mean CLS representation with ``[MASK]`` text);
5. embed the labels (offline sentence embedder), relate unseen to seen labels, solve the transfer
   integer program with HiGHS and composite one visual prototype per unseen class (Eq. 1-6);
6. classify the unseen test videos by the nearest composite prototype, and compare with the
   semantic-space baseline (nearest seen class, then its most related unseen label) and chance;
7. print a table, write the figures (ResT Fig. 3 matrices, Fig. 4 t-SNE), a JSON report, and a
   zero-shot checkpoint that ``zsar predict`` and :meth:`ZeroShotClassifier.load` accept.

    from zsar.demo import DemoConfig, run_demo
    report = run_demo(DemoConfig(out_dir="runs/demo", seed=0))
    report["unseen_top1"], report["semantic_baseline_top1"], report["chance"]
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import CachedClipDataset, MediaCache, evaluation_loader
from ..data.synthetic import SyntheticBenchmark, SyntheticConfig, generate_benchmark
from ..eval.runner import seen_accuracy, zero_shot_report
from ..text import SentenceEmbedder
from ..train.config import StageConfig, TrainConfig
from ..train.pipeline import Pipeline
from ..zeroshot import HeadSelection, cosine_similarity_matrix
from ._common import (DemoSettings, Steps, default_workers, environment, finish_report, open_set_summary, percent,
                      time_and_files)

__all__ = ["DemoConfig", "quick_config", "run_demo", "format_report"]

#: The demo's targets: unseen top-1 at least this many times chance, and above the semantic-space
#: baseline (the comparison of ResT Table 3(b)).
CHANCE_FACTOR = 3.0


def _demo_data() -> SyntheticConfig:
    # 5 colours x 4 shapes x 5 motions = 100 compositions, 25 held out (chance 4%). Small frames
    # keep the CPU budget for training; objects are large enough for a 3-layer CNN to see their shape.
    return SyntheticConfig(size=48, object_size=0.18)


@dataclass
class DemoConfig(DemoSettings):
    """Everything :func:`run_demo` does, with defaults that fit a 2-core CPU in a few minutes.

    Outputs, seeds, the benchmark and how it runs: :class:`~zsar.demo._common.DemoSettings`.
    Training: ``warmup_*`` (stage 1, SGD on the frame encoder) and ``joint_*`` (stage 2, AdamW on
    everything); clips of ``model_args["frames"]`` frames at ``stride``. Transfer: ``(theta, k,
    rho)`` of the integer program (ResT Eq. 2-5) are chosen by 5-fold cross-validation over the
    seen classes on the grids ``cv_*`` (as in the paper; the folds are scored on the held-out test
    videos of the seen classes, or on their training videos when ``data.test_per_class`` is 0), or
    fixed to ``theta``, ``k``, ``rho`` with ``select=False``.

    Why these defaults: a 3-layer CNN needs a few thousand SGD steps before it tells shapes apart
    (colour comes first, then motion, then shape), so the budget goes to many short warm-up epochs
    on 4-frame clips of 48-pixel videos rather than to longer clips or larger frames. The label
    embedder relates labels about as much through their colour as through their shape or motion
    words, so good composites need more than the 3 or 4 nearest seen classes; the cross-validated
    ``rho`` is typically 6 to 10.
    """

    data: SyntheticConfig = field(default_factory=_demo_data)
    model: str = "rest_tiny"
    model_args: dict[str, Any] = field(default_factory=lambda: {"frames": 4})
    stride: int = 4
    eval_clips: int = 1
    warmup_epochs: int = 50
    warmup_lr: float = 0.1
    joint_epochs: int = 15
    joint_lr: float = 1e-3
    batch_size: int = 16
    select: bool = True
    cv_thetas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    cv_ks: tuple[int, ...] = (5, 10, 20)
    cv_rhos: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)
    k: int = 10
    theta: float = 0.0
    rho: int = 8

    def __post_init__(self):
        super().__post_init__()
        for name in ("cv_thetas", "cv_ks", "cv_rhos"):
            setattr(self, name, tuple(getattr(self, name)))
        for name in ("stride", "eval_clips", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.joint_epochs < 1:
            raise ValueError("warmup_epochs must be >= 0 and joint_epochs >= 1")

    def data_config(self) -> SyntheticConfig:
        return dataclasses.replace(self.data, seed=self.seed, split_seed=self.split_seed)


def quick_config(**overrides) -> DemoConfig:
    """A seconds-long demo for tests and smoke checks: tiny benchmark, one epoch per stage.

    Its accuracies mean little; it exercises every step and writes every output.
    """
    data = SyntheticConfig(colors=("red", "green", "blue"), shapes=("circle", "square", "triangle"),
                           motions=("moving left", "moving right", "growing"), train_per_class=3,
                           test_per_class=1, unseen_per_class=2, frames=12, size=32, object_size=0.2)
    base = dict(data=data, warmup_epochs=1, joint_epochs=1, batch_size=8)
    base.update(overrides)
    return DemoConfig(**base)


# ---- the demo ------------------------------------------------------------------------------------


def run_demo(config: DemoConfig | None = None, verbose: bool = True) -> dict[str, Any]:
    """Runs the demo described in the module docstring; returns (and writes) the report.

    The report holds fractions in [0, 1] and seconds: ``unseen_top1``, ``unseen_top5``,
    ``unseen_mean_class_accuracy``, the same for ``semantic_baseline_*``, ``chance`` (and
    ``chance_top5``), ``seen_top1`` (the CLS head on held-out videos of seen classes), ``seconds``
    (total) and ``seconds_by_step``, ``targets`` (whether unseen top-1 ≥ 3× chance and above the
    baseline), the classes, the transfer edges, the files written and the configuration.
    ``verbose`` prints step headers and the results table.
    """
    cfg = config or DemoConfig()
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(6, verbose)
    data_cfg = cfg.data_config()
    workers = default_workers(cfg.workers)

    with steps("generate", f"rendering the synthetic benchmark into {out / 'data'}"):
        bench: SyntheticBenchmark = generate_benchmark(data_cfg, out / "data", workers=workers, progress=cfg.progress)
    n_seen, n_unseen = len(bench.seen_classes), len(bench.unseen_classes)
    if verbose:
        print(f"      {n_seen} seen classes ({len(bench.seen_train)} training videos), {n_unseen} unseen classes "
              f"({len(bench.unseen_test)} test videos), e.g. unseen {bench.unseen_classes[0]!r}", flush=True)

    with steps("decode", "loading the label embedder and decoding the videos"):
        # The embedder loads before training so that a broken install fails in seconds, not minutes.
        loaded = time.perf_counter()
        embedder = SentenceEmbedder()
        steps.seconds["load_embedder"] = round(time.perf_counter() - loaded, 2)
        selection = HeadSelection(cfg.cv_thetas, cfg.cv_ks, cfg.cv_rhos, seed=cfg.seed) if cfg.select else None
        train_cfg = TrainConfig(
            model=cfg.model, model_args={"image_size": data_cfg.size, **cfg.model_args},
            stages={"warmup": StageConfig(cfg.warmup_epochs, "sgd", cfg.warmup_lr, 1e-4),
                    "joint": StageConfig(cfg.joint_epochs, "adamw", cfg.joint_lr, 0.05)},
            batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, num_workers=0,
            out_dir=str(out / "train"), progress=cfg.progress, log_every=10,
            head_settings={"theta": cfg.theta, "k": cfg.k, "rho": cfg.rho}, head_selection=selection)
        pipeline = Pipeline(train_cfg, bench.seen_classes, embedder)
        train_spec, eval_spec = pipeline.clip_specs(cfg.eval_clips, stride=cfg.stride, size=data_cfg.size)
        cache = MediaCache(cfg.decoder)
        train_set = CachedClipDataset(bench.seen_train, train_spec, cache, seed=cfg.seed)
        eval_sets = {name: CachedClipDataset(getattr(bench, name), eval_spec, cache)
                     for name in ("seen_train", "seen_test", "unseen_test")}
        cache.fill([train_set, eval_sets["seen_test"], eval_sets["unseen_test"]], workers, cfg.progress)
    steps.seconds["decode"] = round(steps.seconds["decode"] - steps.seconds["load_embedder"], 2)

    with steps("train", f"training {cfg.model} on the seen classes: {cfg.warmup_epochs} warm-up + "
                        f"{cfg.joint_epochs} joint epochs"):
        shutil.rmtree(out / "train", ignore_errors=True)  # a fresh run, not a resumed one
        pipeline.fit(train_set)

    def encode(name: str, desc: str):
        return pipeline.encode(evaluation_loader(eval_sets[name], batch_size=64), desc, with_seen_logits=True)

    with steps("encode", "seen-class prototypes and test-video representations"):
        seen_train = encode("seen_train", "seen training videos")
        seen_test = encode("seen_test", "seen test videos") if len(bench.seen_test) else None
        unseen_test = encode("unseen_test", "unseen test videos")

    with steps("transfer", "semantic transfer: (ϑ, K, ρ) by cross-validation, integer program (HiGHS), "
                           "composite prototypes"):
        # Folds are scored on held-out videos of the seen classes (on the training videos without them).
        clf = pipeline.classifier(seen_train, validation=seen_test, clip_spec=eval_spec)
        params = {k: clf.head.settings()[k] for k in ("theta", "k", "rho")}
        if verbose:
            _print_selection(clf.selection, params)
        # The same runner as `zsar eval`: the classifier's labels are the unseen classes (0/100).
        results = zero_shot_report(clf, unseen_test, bench.unseen_classes, protocol="0/100", dataset="demo")
        relatedness = cosine_similarity_matrix(embedder.embed(bench.unseen_classes), embedder.embed(bench.seen_classes))
        transfer, baseline = _metrics(results["transfer"]), _metrics(results["semantic_baseline"])
        # The evaluated model with its prototypes and transfer settings: `zsar predict` reads it.
        checkpoint = pipeline.save(clf, out / "checkpoint")

    with steps("report", "writing figures and the report"):
        files = {"report": str(cfg.report_path), "checkpoint": str(checkpoint), "data": str(bench.root)}
        if cfg.plots:
            files.update(_plots(out, relatedness, clf.assignment, bench, unseen_test.x, unseen_test.labels,
                                clf.class_matrix, verbose))
        chance = results["chance"]
        report: dict[str, Any] = {
            "unseen_top1": transfer["top1"],
            "unseen_top5": transfer["top5"],
            "unseen_mean_class_accuracy": transfer["mean_class_accuracy"],
            "semantic_baseline_top1": baseline["top1"],
            "semantic_baseline_top5": baseline["top5"],
            "semantic_baseline_mean_class_accuracy": baseline["mean_class_accuracy"],
            "chance": chance,
            "chance_top5": results["chance_top5"],
            "seen_top1": seen_accuracy(seen_test) if seen_test is not None else None,
            "n_seen_classes": n_seen,
            "n_unseen_classes": n_unseen,
            "n_train_videos": len(bench.seen_train),
            "n_unseen_test_videos": len(bench.unseen_test),
            "targets": {
                "unseen_top1_at_least_3x_chance": transfer["top1"] >= CHANCE_FACTOR * chance,
                "unseen_top1_above_semantic_baseline": transfer["top1"] > baseline["top1"],
            },
            "seen_classes": bench.seen_classes,
            "unseen_classes": bench.unseen_classes,
            "transfer_params": params,
            "transfer_selection": clf.selection,
            "open_set": open_set_summary(clf, unseen_test.x, None if seen_test is None else seen_test.x,
                                         bench.unseen_classes),
            "transfer_edges": {u: [bench.seen_classes[i] for i in np.flatnonzero(clf.assignment[j])]
                               for j, u in enumerate(bench.unseen_classes)},
            "files": files,
            "config": cfg.to_dict(),
            "environment": environment(pipeline.trainer.device),
        }
    return finish_report(report, cfg, steps, start, format_report, verbose)


def _metrics(result: dict) -> dict[str, float]:
    """top1/top5/mean_class_accuracy of a 0/100 protocol result (top-5 is 1 with at most 5 classes)."""
    metrics = {k: result[k]["mean"] for k in ("top1", "top5", "mean_class_accuracy") if k in result}
    metrics.setdefault("top5", 1.0)
    return metrics


def _print_selection(selection: dict[str, Any], params: dict[str, Any]) -> None:
    """What the head's cross-validation chose (or why the settings stayed fixed)."""
    if "cv_top1" in selection:
        print(f"      chosen by {selection['method']}: theta={params['theta']:g}, K={params['k']}, "
              f"rho={params['rho']} (fold top-1 {100 * selection['cv_top1']:.1f}%)", flush=True)
    elif "reason" in selection:
        print(f"      cross-validation not possible ({selection['reason']}); using theta={params['theta']}, "
              f"K={params['k']}, rho={params['rho']}", flush=True)


def _plots(out: Path, relatedness, assignment, bench, features, labels, prototypes, verbose: bool) -> dict:
    """ResT Fig. 3 (relatedness and adjacency) and Fig. 4 (t-SNE of unseen videos and their
    composite prototypes). Plotting is optional: without matplotlib/scikit-learn it is skipped."""
    try:
        from ..eval.plots import plot_transfer_matrices, plot_tsne  # lazy: matplotlib is optional
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        if verbose:
            print(f"      figures skipped: {e}", flush=True)
        return {}
    fig3 = plot_transfer_matrices(relatedness, assignment, out / "fig3_transfer_matrices.png",
                                  unseen_labels=bench.unseen_classes, seen_labels=bench.seen_classes,
                                  title="unseen × seen: label relatedness and transfer edges")
    fig4 = plot_tsne(features, labels, out / "fig4_tsne.png", prototypes=prototypes,
                     class_names=bench.unseen_classes, title="unseen test videos and composite prototypes (stars)")
    return {"fig3": str(fig3), "fig4": str(fig4)}


def format_report(report: dict[str, Any]) -> str:
    """The results table of a demo report (percentages)."""
    rows = [("ResT + semantic transfer (visual space)", "unseen"), ("semantic-space baseline", "semantic_baseline")]
    lines = [f"zero-shot on {report['n_unseen_classes']} unseen classes (held-out compositions), "
             f"{report['n_unseen_test_videos']} test videos; trained on {report['n_seen_classes']} seen classes",
             f"{'method':<42}{'top-1':>8}{'top-5':>8}{'mean class acc':>16}"]
    lines.append("-" * len(lines[-1]))
    for name, key in rows:
        lines.append(f"{name:<42}{percent(report[key + '_top1']):>8}{percent(report[key + '_top5']):>8}"
                     f"{percent(report[key + '_mean_class_accuracy']):>16}")
    lines.append(f"{'chance':<42}{percent(report['chance']):>8}{percent(report['chance_top5']):>8}"
                 f"{percent(report['chance']):>16}")
    if report.get("seen_top1") is not None:
        lines.append(f"(seen classes, CLS head on held-out videos: top-1 {percent(report['seen_top1']).strip()})")
    t = report["targets"]
    ratio = report["unseen_top1"] / report["chance"]
    margin = 100 * (report["unseen_top1"] - report["semantic_baseline_top1"])
    lines.append(f"targets: top-1 >= {CHANCE_FACTOR:g}x chance: {'yes' if t['unseen_top1_at_least_3x_chance'] else 'NO'} "
                 f"({ratio:.1f}x); above the semantic-space baseline: "
                 f"{'yes' if t['unseen_top1_above_semantic_baseline'] else 'NO'} ({margin:+.1f} points)")
    lines += time_and_files(report)
    return "\n".join(lines)
