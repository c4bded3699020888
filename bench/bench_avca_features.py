"""`zsar gzsl` on released-feature data of UCF-GZSL size, on the CPU: wall time of the whole two-stage
protocol, and the intra-op thread count the feature runner uses (1) against torch's default.

The corpus is synthetic (:func:`zsar.data.synthetic_features.write_synthetic_avca_features`) in the released
layout with UCF-GZSL's class counts (main split: 30 seen, 12 validation-unseen, 9 test-unseen classes) and
``--videos`` videos per class and stage (50: about 6,150 videos, UCF-GZSL's 51 classes of UCF101 hold about
6,800), SeLaVi-sized features (512-d audio and video). The model is ``mzst_features`` with its defaults
(fusion width 256, 2 blocks, 50 epochs searched in stage 1, batch 64).

Threads: one training step of ``mzst_features`` (batch 64) timed with 1 and with torch's default
thread count, interleaved (A, B, A, B, ...), median and min-max of the per-round ratios.

Run: ``python bench/bench_avca_features.py [--videos 50] [--epochs 50] [--out /tmp/avca_bench]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def thread_ab(rounds: int = 10) -> dict:
    import zsar
    from zsar.data import Batch

    names = [f"class {i}" for i in range(30)]
    torch.manual_seed(0)
    model = zsar.create_model("mzst_features", class_names=names, class_embeddings=torch.randn(30, 300))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.randint(0, 30, (64,))
    ids, n = model.tokenize_labels([names[i] for i in labels])
    batch = Batch(clips=torch.randn(64, 1, 512), labels=labels, audio=torch.randn(64, 1, 512),
                  audio_present=torch.ones(64, dtype=torch.bool), word_ids=ids, n_words=n)
    default = torch.get_num_threads()

    def step(threads: int) -> float:
        torch.set_num_threads(threads)
        t = time.perf_counter()
        for _ in range(5):
            opt.zero_grad()
            model.forward_train(batch)["loss"].backward()
            opt.step()
        return (time.perf_counter() - t) / 5

    step(1), step(default)  # warm-up
    one, many = [], []
    for _ in range(rounds):
        one.append(step(1))
        many.append(step(default))
    torch.set_num_threads(default)
    ratios = sorted(m / o for m, o in zip(many, one))
    return {"threads_default": default, "step_ms_1_thread": 1e3 * statistics.median(one),
            "step_ms_default": 1e3 * statistics.median(many), "ratio_median": statistics.median(ratios),
            "ratio_min": ratios[0], "ratio_max": ratios[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50, help="videos per class and stage")
    parser.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default: the model's 50)")
    parser.add_argument("--out", default="/tmp/avca_features_bench")
    parser.add_argument("--skip-threads", action="store_true")
    args = parser.parse_args()

    from zsar.data.synthetic_features import write_synthetic_avca_features
    from zsar.eval.recipes import GZSLConfig, run_gzsl_recipe

    out = Path(args.out)
    print(f"load before: {_load()}; torch threads {torch.get_num_threads()}", flush=True)
    if not args.skip_threads:
        print("training step, 1 thread vs default:", thread_ab(), f"(load {_load()})", flush=True)
    t = time.perf_counter()
    root = write_synthetic_avca_features(out / "UCF", n_seen=30, n_val_unseen=12, n_test_unseen=9,
                                         videos_per_class=args.videos, seed=0)
    print(f"corpus written in {time.perf_counter() - t:.1f} s", flush=True)
    stages = {"joint": {"epochs": args.epochs}} if args.epochs else {}
    config = GZSLConfig.from_dict(dict(dataset="ucf", split="main", model="mzst_features", batch_size=64,
                                       out_dir=str(out / "run"), progress=False, plot=False, device="cpu",
                                       stages=stages, data={"format": "avca_features", "annotations": str(root)}))
    t = time.perf_counter()
    report = run_gzsl_recipe(config)
    wall = time.perf_counter() - t
    s1, s2 = report["stage_1"], report["stage_2"]
    print(f"zsar gzsl (mzst_features, UCF-GZSL-sized, {s1['epochs']} epochs searched, stage 2 {s2['epochs']}): "
          f"{wall / 60:.1f} min wall; videos stage 1 {s1['videos']}, stage 2 {s2['videos']}; "
          f"test {({k: round(100 * v, 2) for k, v in report['test'].items()})}; load after: {_load()}", flush=True)


if __name__ == "__main__":
    main()
