"""MZST throughput: training steps and inference in clips/s, on the CPU (mzst_tiny) and, with a CUDA
GPU, the full model at batch 16 in bf16.

CPU groups (``mzst_tiny``: 8 x 64^2 video -> 64 tokens, 128 x 256 log-mel -> 128 tokens, width 64,
2 fusion blocks; batch 16, float32, torch's threads):

* training step (AdamW) with the default ``heads_from="av_pass"`` against ``"joint_pass"``: what the
  leak-free default (the heads read an AV pass without text, a second run of the AV fusion layers)
  costs over the paper read literally;
* inference (``encode``, one clip per video) with audio against without audio (AST skipped);
* the fusion attention end to end: the same model (same weights) with its fusion layers on the
  fused op (cpu backend) against SDPA with a boolean key mask (the layers swapped, as in
  ``gpu_e2e.py``), a training step and inference, interleaved round by round (``benchmode``), the
  ratio and its spread printed with the load and thread settings.

GPU groups (skipped without CUDA): the full ``mzst`` (MViTv2-S + AST-base + 4 fusion blocks of
768), batch 16, bf16 autocast: a training step and inference; peak memory in ``extra_info``.
The fusion attention is ``zsar.ops.bottleneck_attention`` on the model's ``attention_backend``
(``auto``: the fused cpu kernels here, cuda on a GPU); the op itself is compared with SDPA in
``bench_bottleneck_attention_cpu.py``.

Run: ``pytest bench/bench_mzst.py --benchmark-only``; without ``--benchmark-only`` one round at
batch 2 (see ``benchmode.py``).
"""

from __future__ import annotations

import pytest
import torch

from benchmode import interleaved, pick, report_line, summary

import zsar
from zsar.data.batch import Batch

B = pick(16, 2)
LABELS = [f"{shape} {motion} {sound}" for shape in ("circle", "square") for motion in ("falling", "growing")
          for sound in ("beeping", "humming")]


def _model(name: str, device: str = "cpu", **overrides):
    torch.manual_seed(0)
    emb = torch.randn(len(LABELS), 300, generator=torch.Generator().manual_seed(1))
    return zsar.create_model(name, class_names=LABELS, class_embeddings=emb, **overrides).to(device)


def _batch(model, device: str = "cpu", audio: bool = True) -> Batch:
    g = torch.Generator().manual_seed(0)
    c = model.config
    labels = torch.randint(0, len(LABELS), (B,), generator=g)
    word_ids, n_words = model.tokenize_labels([LABELS[i] for i in labels.tolist()])
    return Batch(clips=torch.randn(B, c.frames, 3, c.image_size, c.image_size, generator=g), labels=labels,
                 audio=torch.randn(B, c.audio_length, c.mel_bins, generator=g),
                 audio_present=torch.full((B,), audio), word_ids=word_ids, n_words=n_words).to(device)


def _train_step(model, batch, autocast: torch.dtype | None = None):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(batch.clips.device.type, dtype=autocast, enabled=autocast is not None):
            loss = model.forward_train(batch, "joint", gen)["loss"]
        loss.backward()
        opt.step()
        if batch.clips.is_cuda:
            torch.cuda.synchronize()

    return step


# The quick run times only the default (building mzst_tiny alone takes seconds on a loaded CPU).
@pytest.mark.parametrize("heads_from", pick(["av_pass", "joint_pass"], ["av_pass"]))
def test_tiny_training_step(record, benchmark, heads_from):
    model = _model("mzst_tiny", heads_from=heads_from)
    median = record(f"mzst_tiny training step ({B} clips, cpu)", f"heads_from={heads_from}", _train_step(model, _batch(model)),
           ours=heads_from == "av_pass", rounds=10)
    if median:
        benchmark.extra_info["clips_per_s"] = B / median


@pytest.mark.parametrize("audio", [True, False])
def test_tiny_inference(record, benchmark, audio):
    model = _model("mzst_tiny").eval()
    batch = _batch(model, audio=audio)
    with torch.no_grad():
        median = record(f"mzst_tiny inference ({B} clips, cpu)", "with audio" if audio else "without audio (AST skipped)",
               lambda: model.encode(batch), ours=audio, rounds=10)
    if median:
        benchmark.extra_info["clips_per_s"] = B / median


@pytest.mark.parametrize("stage", ["training step", "inference"])
def test_tiny_fused_vs_sdpa(benchmark, stage):
    import gpu_e2e  # its SDPA swap of the fusion layers

    model = _model("mzst_tiny")
    batch = _batch(model)
    if stage == "training step":
        run = _train_step(model, batch)
    else:
        model.eval()

        def run():
            with torch.no_grad():
                model.encode(batch)

    def with_sdpa():
        gpu_e2e.use_sdpa(model)
        try:
            run()
        finally:
            gpu_e2e.use_sdpa(model, on=False)

    s = summary(*interleaved(run, with_sdpa, pick(9, 1), warmup=pick(2, 0)))
    benchmark.extra_info[stage] = s
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + report_line(f"mzst_tiny {stage} ({B} clips)", "SDPA key mask", "fused cpu", s))


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@gpu
def test_full_training_step_bf16(record, benchmark):
    model = _model("mzst", "cuda")
    step = _train_step(model, _batch(model, "cuda"), autocast=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    median = record("mzst training step (16 clips, bf16, cuda)", "zsar bottleneck_attention (auto)", step, ours=True, rounds=10)
    if median:
        benchmark.extra_info["clips_per_s"] = B / median
    benchmark.extra_info["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30


@gpu
def test_full_inference_bf16(record, benchmark):
    model = _model("mzst", "cuda").eval()
    batch = _batch(model, "cuda")

    def run():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model.encode(batch)
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    median = record("mzst inference (16 clips, bf16, cuda)", "zsar bottleneck_attention (auto)", run, ours=True, rounds=10)
    if median:
        benchmark.extra_info["clips_per_s"] = B / median
    benchmark.extra_info["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
