"""``zsar gzsl CONFIG [key=value ...]``: the AVCA two-stage GZSL benchmark of a registered model, from video
folders and split files."""

from __future__ import annotations


_DESCRIPTION = (
    "Run the AVCA generalized zero-shot protocol (UCF-GZSL, ActivityNet-GZSL, VGGSound-GZSL; main or cls "
    "split) for any registered model. The config is a `zsar train` config (model, model_args, stages, "
    "batch_size, embedder, data, out_dir) plus the benchmark keys below. The class splits are the packaged "
    "AVCA ones (or split_dir's); `data` is the dataset's training part and `test_data` the overrides that "
    "read its test part. Stage 1 trains a fresh model on stage_1_train for all the model's stage epochs, "
    "evaluating GZSL on stage_1_val_seen/unseen after every epoch, and keeps the epoch with the best "
    "calibrated HM and its beta; stage 2 retrains on stage_2_train for that many epochs and reports S, U, "
    "HM and ZSL on stage_2_test_seen/unseen with that beta. Writes out_dir/gzsl_report.json, "
    "out_dir/gzsl_tradeoff.png, the two training runs (out_dir/stage_1, out_dir/stage_2) and a zero-shot "
    "checkpoint of stage 2's model (out_dir/stage_2/checkpoints/last), and prints the papers' table. "
    "Any config key can be overridden as key=value (stages.joint.epochs=3, test_data.subset=test)."
)

_EXAMPLE = """example config (YAML), UCF101 in its own folder layout:
  dataset: ucf                      # ucf, activitynet or vggsound
  split: main                       # main or cls
  model: rest_tiny
  model_args: {frames: 8, image_size: 64}
  stages: {warmup: {epochs: 2}, joint: {epochs: 8}}   # stage 1 searches these 10 epochs
  batch_size: 16
  out_dir: runs/ucf_gzsl
  data: {format: ucf101, annotations: ucfTrainTestlist/, root: UCF-101/, subset: train}
  test_data: {subset: test}         # overrides of `data` that read the test part
  embedder: {type: word_vectors, path: GoogleNews-vectors-negative300.bin}
other keys: split_dir (own <stage>.txt class files, or the AVCA per-video <stage>.csv lists, with which
`data` is the whole dataset and test_data is left out), val_fraction (0.2: share of each seen class held
out for stage-1 validation), metric (l2 or cosine; default the model's zero-shot head's), beta_grid
(default 16 values evenly in [0, 3]), head_settings (e.g. {k: 5, theta: 0.5, rho: 3}) or head_selection (a
cross-validation grid, {} for the default one), eval_clips (default: the model's own views),
plot (true). With word vectors and a packaged split, labels are embedded through the packaged
*_w2v_class_names.csv maps.

the released AVCA-GZSL features (no videos needed), e.g. avgzsl_benchmark_datasets/UCF:
  dataset: ucf
  split: main                       # main: SeLaVi features; cls: C3D/VGGish (model: mzst_features_cls)
  model: mzst_features              # or rest_features (video features only)
  batch_size: 64
  out_dir: runs/ucf_gzsl_features
  data: {format: avca_features, annotations: avgzsl_benchmark_datasets/UCF}
the stages come from the folder's class-split/, the label vectors from its features/<name>/text/*.npy.
"""


def add_arguments(parser) -> None:
    import argparse
    import textwrap

    parser.description = textwrap.fill(_DESCRIPTION, 100)  # the raw formatter keeps the example's layout
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="YAML or JSON recipe config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow `embedder` to name a gensim pickle (.kv), which can run code when loaded")


def run(args) -> int:
    from ..eval.recipes import GZSLConfig
    from . import load_run_config

    config = load_run_config(GZSLConfig, args)
    if config is None:
        return 0
    from ..eval import format_gzsl_table
    from ..eval.recipes import run_gzsl_recipe

    report = run_gzsl_recipe(config, trust_pickle=args.trust_pickle)
    published = report.get("published") or []
    print(format_gzsl_table([report, *published]))
    for row in published:
        print(f"  {row['model']}: {row['source']}")
    stage_1 = report["stage_1"]
    print(f"stage 1 chose epoch {stage_1['best_epoch']} of {stage_1['epochs']} and beta {stage_1['beta']:.2f}")
    if "uncalibrated" in report:
        u = report["uncalibrated"]
        print(f"uncalibrated (beta = 0, no calibrated stacking, as the MZST paper reports): S {100 * u['S']:.2f}, "
              f"U {100 * u['U']:.2f}, HM {100 * u['HM']:.2f}")
    print(f"report: {report['report']}")
    if report["plot"]:
        print(f"plot: {report['plot']}")
    print(f"stage-2 checkpoint: {report['checkpoint']}")
    return 0
