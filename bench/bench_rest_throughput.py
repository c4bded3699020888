"""ResT throughput on the CPU: clips/s of inference and of training steps, fused vs dense attention.

A small config (TinyCNN frame encoder, 16 frames of 64x64, a 4-layer 256-d transformer with heads of
64, up to 8 label words), batch 16, float32, torch's threads. The same model runs its attention
through zsar's fused cpu backend and through the dense-mask reference backend (what the model would
cost with a plain masked attention); everything else is identical. The GFLOPs per clip come from
`zsar flops`' counter (multiply-adds); training is counted as 3x inference. A training step is
the contract's ``forward_train(batch, "joint")`` (classification + masked-word losses) and AdamW.

Run: ``pytest bench/bench_rest_throughput.py --benchmark-only``; without ``--benchmark-only`` one
round at batch 2 with 4 frames of 32x32 (see ``benchmode.py``).
"""

from __future__ import annotations

import pytest
import torch

from benchmode import pick

import zsar
from zsar.data.batch import Batch
from zsar.models.complexity import count_flops
from zsar.text import WordVocab

B, FRAMES, SIZE = pick((16, 16, 64), (2, 4, 32))
SMALL = dict(frames=FRAMES, image_size=SIZE, dim=pick(256, 64), depth=pick(4, 1), heads=4, mlp_dim=pick(1024, 128),
             dropout=0.0, max_words=8)
LABELS = [f"action {w} {x}" for w in ("moving", "spinning", "jumping", "rolling") for x in ("left", "right")]


def _model(backend: str):
    vocab = WordVocab.from_labels(LABELS)
    return zsar.create_model("rest_tiny", num_classes=len(LABELS), vocab=vocab.to_list(),
                             attention_backend=backend, **SMALL), vocab


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(B, FRAMES, 3, SIZE, SIZE, generator=gen)
    labels = torch.randint(0, len(LABELS), (B,), generator=gen)
    return clips, labels


def _gflops_per_clip() -> float:
    model, _ = _model("cpu")
    return count_flops(model)["gflops_per_clip"]


@pytest.mark.parametrize("backend,contender", [("cpu", "zsar fused (cpu)"), ("reference", "dense-mask attention")])
def test_inference(record, benchmark, batch, backend, contender):
    model, _ = _model(backend)
    model.eval()
    clips, _ = batch
    benchmark.extra_info["gflops_per_clip"] = _gflops_per_clip()
    with torch.no_grad():
        median = record(f"rest small inference ({B} clips)", contender, lambda: model.encode_video(clips), ours=backend == "cpu")
    if median:
        benchmark.extra_info["clips_per_s"] = B / median


@pytest.mark.parametrize("backend,contender", [("cpu", "zsar fused (cpu)"), ("reference", "dense-mask attention")])
def test_training_step(record, benchmark, batch, backend, contender):
    model, vocab = _model(backend)
    model.train()
    clips, labels = batch
    ids, n_words = model.tokenize_labels([LABELS[i] for i in labels.tolist()])
    batch = Batch(clips=clips, labels=labels, word_ids=ids, n_words=n_words)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        model.forward_train(batch, "joint", gen)["loss"].backward()
        opt.step()

    benchmark.extra_info["gflops_per_clip"] = 3 * _gflops_per_clip()
    median = record(f"rest small training step ({B} clips)", contender, step, ours=backend == "cpu")
    if median:
        benchmark.extra_info["clips_per_s"] = B / median
