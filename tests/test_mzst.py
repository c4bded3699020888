"""MZST: the full model's parts and token counts, mzst_tiny on real audio-visual files, missing audio
as padding, the attention against a float64 reference, the paper's ablation options, the losses and
their schedule, user weights, and rebuilding from model_args."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsar.data.audio import audio_features
from zsar.data.batch import Batch, Sample, collate
from zsar.data.loader import load_clip
from zsar.data.synthetic import SyntheticConfig, generate_benchmark
from zsar.models import create_model
from zsar.models.mzst import MZST, MZSTConfig
from zsar.ops import bottleneck_attention
from zsar.text.vocab import WordVocab, mask_words

from videos import make_video

CLASSES = ["circle falling beeping", "circle sliding humming", "square growing buzzing", "square falling humming",
           "triangle sliding beeping", "triangle growing buzzing"]


def tiny(seed: int = 0, class_names=CLASSES, embed_dim: int = 12, **overrides) -> MZST:
    torch.manual_seed(seed)
    emb = torch.randn(len(class_names), embed_dim, generator=torch.Generator().manual_seed(seed + 1))
    return create_model("mzst_tiny", class_names=class_names, class_embeddings=emb, **overrides)


def random_batch(model: MZST, B: int = 4, seed: int = 0, present=None, words: bool = True) -> Batch:
    """Random inputs of the model's shapes (for checks that need no real files)."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    labels = torch.randint(0, c.num_classes, (B,), generator=g)
    word_ids, n_words = model.tokenize_labels([CLASSES[i % len(CLASSES)] for i in labels.tolist()])
    return Batch(clips=torch.randn(B, c.frames, 3, c.image_size, c.image_size, generator=g), labels=labels,
                 audio=torch.randn(B, c.audio_length, c.mel_bins, generator=g),
                 audio_present=torch.ones(B, dtype=torch.bool) if present is None else torch.tensor(present),
                 word_ids=word_ids if words else None, n_words=n_words if words else None)


def trainable_without_grad(model: MZST) -> list[str]:
    trains = model.training_stages()[0].trains
    return [n for n, p in model.named_parameters() if trains(n) and p.requires_grad and p.grad is None]


# ---- the full model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_on_meta():
    with torch.device("meta"):
        return create_model("mzst", class_names=[f"class {i}" for i in range(10)])


def test_full_model_has_mvit_v2_s_and_ast_base_with_their_token_counts(full_on_meta):
    from torchvision.models.video import MViT, mvit_v2_s
    from transformers import ASTConfig, ASTModel

    m = full_on_meta
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    with torch.device("meta"):
        # AST-base (ViT-B/16) with the MZST paper's non-overlapping patches (stride 16).
        reference_mvit, reference_ast = mvit_v2_s(), ASTModel(ASTConfig(frequency_stride=16, time_stride=16))
    assert isinstance(m.video_encoder.net, MViT) and isinstance(m.audio_encoder.net, ASTModel)
    # MViTv2-S is 34.5 M parameters with its 400-way classifier, which MZST drops.
    assert count(reference_mvit) == 34_537_744
    assert count(m.video_encoder) == count(reference_mvit) - count(reference_mvit.head) == 34_230_144
    assert count(m.audio_encoder) == count(reference_ast) == 85_649_664  # 514 position embeddings, not 1,214
    c = m.config
    per_layer = 4 * c.dim * c.dim + 2 * c.dim * c.mlp_dim + 4 * c.dim + c.mlp_dim + c.dim + 4 * c.dim  # + biases, norms
    assert count(m.fusion) == c.fusion_blocks * per_layer + c.fusion_tokens * c.dim + 2 * c.dim
    assert count(m.text_stream) == c.fusion_blocks * per_layer + (1 + len(m.vocab) + c.max_words + 2) * c.dim
    assert (c.fusion_blocks, c.dim, c.heads, c.mlp_dim, c.fusion_tokens) == (4, 768, 12, 3072, 4)
    assert 175e6 < count(m) < 185e6
    assert (m.num_video_tokens, m.num_audio_tokens) == (392, 512)
    assert m.video_encoder.grid == (8, 7, 7) and m.audio_encoder.grid == (8, 64)
    # The backbones really give those tokens (shapes only, on the meta device).
    assert m.video_encoder(torch.zeros(2, 16, 3, 224, 224, device="meta")).shape == (2, 392, 768)
    assert m.audio_encoder(torch.zeros(2, 1024, 128, device="meta")).shape == (2, 512, 768)
    assert m.inputs.frames == 16 and m.inputs.image_size == 224
    assert (m.inputs.audio.target_length, m.inputs.audio.mel_bins) == (1024, 128) and m.inputs.label_words
    with pytest.raises(ValueError, match="16 frames of 224"):
        with torch.device("meta"):
            create_model("mzst", frames=8)


def test_zsar_flops_counts_torchvisions_mvit_v2_s_then_ast_and_the_fusion():
    """zsar flops mzst: MViTv2-S alone is torchvision's 64.2 GFLOPs (multiply-adds) at 16 x 224^2."""
    from zsar.models.complexity import count_flops

    report = count_flops("mzst", convention="macs")
    parts = report["parts_gflops"]
    assert parts["backbone_video"] == pytest.approx(64.224, abs=0.001)  # torchvision's MViT_V2_S "GFLOPS"
    assert parts["backbone_audio"] == pytest.approx(48.63, abs=0.01)  # ViT-B over 2 + 512 tokens (the paper's patches)
    # 4 layers of 768 over 1 + 392 + 512 + 4 tokens: 25.74 in linear layers + 5.08 in attention products
    # (30.81; the attention part is counted where the counter knows the CPU SDPA kernel's formula).
    assert parts["fusion"] == pytest.approx(25.74, abs=0.01) or parts["fusion"] == pytest.approx(30.81, abs=0.01)
    assert report["gflops_per_clip"] == pytest.approx(sum(parts.values()))
    assert report["video_tokens"] == 392 and report["audio_tokens"] == 512 and report["audio"] == [1024, 128]
    assert report["params_parts"]["backbone_video"] == 34_230_144
    assert report["params_parts"]["backbone_audio"] == 85_649_664
    assert set(report["params_parts"]) >= {"fusion", "projection_video", "projection_audio", "semantic_head"}
    assert report["params_training_heads"] > 28e6  # the text stream (4 layers), MLM and task heads


# ---- real batches ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def av_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mzst_av")
    bench = generate_benchmark(SyntheticConfig.audio_visual(train_per_class=1, test_per_class=0, unseen_per_class=1,
                                                            frames=10, size=64), root / "bench", workers=2,
                               progress=False)
    silent = root / "silent.webm"
    make_video(silent, t=10, h=64, w=64)  # no audio track
    return bench, silent


def real_batch(model: MZST, classes, paths, labels) -> Batch:
    """Real files through zsar's decoding and audio features, collated like the loaders do."""
    spec = model.inputs.clip_spec(num_clips=1, crop="center")  # one view (the model's default is 4 x 3)
    samples = []
    for i, (path, label) in enumerate(zip(paths, labels)):
        audio, present = audio_features(path, target_length=model.config.audio_length)
        samples.append(Sample(clip=load_clip(path, spec), label=label, audio=audio, audio_present=present,
                              video_id=str(path), position=i))
    batch = collate(samples)
    word_ids, n_words = model.tokenize_labels([classes[i] for i in labels])
    return batch.replace(word_ids=word_ids, n_words=n_words)


def test_tiny_on_real_videos_with_and_without_audio(av_files):
    bench, silent = av_files
    model = tiny(class_names=bench.seen_classes)
    records = list(bench.seen_train)[:3]
    batch = real_batch(model, bench.seen_classes, [r.path for r in records] + [str(silent)], [r.label for r in records] + [0])
    assert batch.audio.shape == (4, 256, 128) and batch.audio_present.tolist() == [True, True, True, False]
    assert batch.clips.shape == (4, 8, 3, 64, 64)
    model.train()
    out = model.forward_train(batch, "joint", torch.Generator().manual_seed(0))
    assert {"loss", "loss_task", "loss_se", "loss_mlm"} <= set(out)
    assert all(torch.isfinite(out[k]) for k in ("loss", "loss_task", "loss_se", "loss_mlm"))
    out["loss"].backward()
    assert trainable_without_grad(model) == []
    model.eval()
    with torch.no_grad():
        f, logits = model.encode(batch), model.seen_logits(batch)
    assert f.shape == (4, 12) and logits.shape == (4, len(bench.seen_classes)) and torch.isfinite(f).all()
    # The silent video's row is what it gives alone (padding does not leak across the batch).
    alone = real_batch(model, bench.seen_classes, [str(silent)], [0])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(alone)[0], f[3], rtol=1e-4, atol=1e-5)


# ---- missing audio -----------------------------------------------------------------------------------


def test_missing_audio_is_padding_exactly():
    model = tiny().eval()
    batch = random_batch(model, present=[False, True, False, True])
    with torch.no_grad():
        f = model.encode(batch)
        # Whatever the features of a sample without audio hold, its output is the same...
        noisy = batch.replace(audio=batch.audio + 5 * torch.randn_like(batch.audio))
        changed = model.encode(noisy)
        torch.testing.assert_close(changed[[0, 2]], f[[0, 2]], rtol=0, atol=0)
        assert not torch.allclose(changed[[1, 3]], f[[1, 3]])
        # ...and equals CLS_V of an AV stream that has no audio slots at all.
        tokens, _, _, _ = model._tokens(batch)
        n_video = model.num_video_tokens
        av = torch.cat([model.cls_token.expand(4, -1, -1), tokens["video"]], 1)  # no audio slots
        h = model.fusion(av, torch.full((4,), 1 + n_video, dtype=torch.int32))[0][:, 0]
        torch.testing.assert_close(model.semantic_head(h)[[0, 2]], f[[0, 2]], rtol=1e-5, atol=1e-6)
        # No audio in the batch at all: every sample as if silent, and AST is not run.
        calls = []
        model.audio_encoder.register_forward_hook(lambda *a: calls.append(1))
        none = model.encode(batch.replace(audio=None, audio_present=None))
        silent = model.encode(batch.replace(audio_present=torch.zeros(4, dtype=torch.bool)))
        assert calls == []
        torch.testing.assert_close(none, silent, rtol=0, atol=0)
        torch.testing.assert_close(none[[0, 2]], f[[0, 2]], rtol=0, atol=0)


def test_clips_per_video_are_averaged_and_share_one_audio_pass():
    model = tiny().eval()
    b1, b2 = random_batch(model, B=2, seed=1), random_batch(model, B=2, seed=2)
    multi = Batch(clips=torch.stack([b1.clips, b2.clips], 1), labels=b1.labels, audio=b1.audio,
                  audio_present=b1.audio_present)
    with torch.no_grad():
        expected = (model.encode(b1) + model.encode(b1.replace(clips=b2.clips))) / 2
        torch.testing.assert_close(model.encode(multi), expected, rtol=1e-5, atol=1e-6)
        per_clip = multi.replace(audio=torch.stack([b1.audio, b1.audio], 1))
        torch.testing.assert_close(model.encode(per_clip), expected, rtol=1e-5, atol=1e-6)
        assert model.seen_logits(multi).shape == (2, len(CLASSES))


# ---- attention ----------------------------------------------------------------------------------------


def reference_attention(q, k, v, n_valid, n_fusion):
    """Float64, one sample at a time: softmax over the valid keys only; padding rows are 0."""
    B, H, L, Dh = q.shape
    rows = []
    for b in range(B):
        valid = [i for i in range(L) if i < n_valid[b] or i >= L - n_fusion]
        out = torch.zeros(H, L, Dh, dtype=q.dtype)
        if valid:
            idx = torch.tensor(valid)
            qb, kb, vb = q[b][:, idx], k[b][:, idx], v[b][:, idx]
            p = torch.softmax(qb @ kb.transpose(-1, -2) / Dh ** 0.5, dim=-1)
            out = out.index_copy(1, idx, p @ vb)
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("n_fusion", [0, 1, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bottleneck_attention_matches_a_float64_reference(seed, n_fusion, dtype):
    g = torch.Generator().manual_seed(seed)
    B, H, L, Dh = 5, 3, 13, 16
    n_valid = [0, 1, 6, L - n_fusion, int(torch.randint(0, L - n_fusion + 1, (1,), generator=g))]
    q, k, v = (torch.randn(B, H, L, Dh, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    grad = torch.randn(B, H, L, Dh, generator=g, dtype=torch.float64)
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(*ref_in, n_valid, n_fusion)
    ref.backward(grad)
    ins = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = bottleneck_attention(*ins, torch.tensor(n_valid, dtype=torch.int32), n_fusion)
    out.backward(grad.to(dtype))
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref.detach(), **tol)
    for mine, theirs in zip(ins, ref_in):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, **tol)
    # Padding: rows are 0 and neither queries nor keys/values there get gradient.
    for b, n in enumerate(n_valid):
        pad = slice(n, L - n_fusion)
        assert (out[b, :, pad] == 0).all() and all((t.grad[b, :, pad] == 0).all() for t in ins)


# ---- options (the paper's ablations) ------------------------------------------------------------------

OPTIONS = {
    "paper": {},
    "video_only": dict(modalities=("video",)),  # Table 4: MViT-v2
    "audio_only": dict(modalities=("audio",)),  # Table 4: AST
    "concat": dict(fusion="concat", losses=("task", "se")),  # Table 7: feature concatenation
    "task_only": dict(losses=("task",)),  # Table 7
    "task_se": dict(losses=("task", "se")),
    "se_mlm": dict(losses=("se", "mlm")),
    "normalized": dict(normalize_targets=True),  # Table 8
    "parallel": dict(fusion_order="parallel"),  # MBT's order
    "joint_pass": dict(heads_from="joint_pass"),
    "frozen": dict(freeze_backbones=True),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_trains_encodes_and_rebuilds_from_model_args(name):
    model = tiny(**OPTIONS[name])
    losses = model.config.losses
    batch = random_batch(model, present=[True, False, True, True], words="mlm" in losses)
    model.train()
    out = model.forward_train(batch, "joint", torch.Generator().manual_seed(0))
    assert set(out) - {"logits"} == {"loss"} | {f"loss_{part}" for part in losses}
    out["loss"].backward()
    assert trainable_without_grad(model) == []  # DDP needs a gradient for every trained parameter
    assert model.inputs.label_words == ("mlm" in losses)
    assert (model.inputs.audio is None) == ("audio" not in model.config.modalities)
    model.eval()
    with torch.no_grad():
        f, logits = model.encode(batch), model.seen_logits(batch)
        both = model.encode_and_score(batch)  # one pass, for evaluation
    branches = len(model.config.modalities) if model.config.fusion == "concat" else 1  # concatenated embeddings
    assert f.shape == (4, 12 * branches) and logits.shape == (4, len(CLASSES))
    torch.testing.assert_close(both, (f, logits))
    # model_args is JSON and rebuilds the same architecture; the weights (class embeddings included) load back.
    args = json.loads(json.dumps(model.model_args()))
    rebuilt = create_model("mzst_tiny", class_names=None, **args).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(batch), f)
    torch.testing.assert_close(rebuilt.class_embeddings, model.class_embeddings)


def test_single_modality_models_ignore_the_other_modality():
    video, audio = tiny(modalities=("video",)).eval(), tiny(modalities=("audio",)).eval()
    assert video.audio_encoder is None and audio.video_encoder is None
    batch = random_batch(video)
    other = random_batch(video, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(video.encode(batch.replace(audio=other.audio)), video.encode(batch), rtol=0, atol=0)
        torch.testing.assert_close(audio.encode(batch.replace(clips=other.clips)), audio.encode(batch), rtol=0, atol=0)
        # An audio-only model on a video without audio sees its CLS token and fusion tokens only.
        silent = batch.replace(audio_present=torch.zeros(4, dtype=torch.bool))
        f = audio.encode(silent)
        torch.testing.assert_close(f, f[:1].expand_as(f))


def test_concat_fusion_has_one_stream_per_modality_and_no_fusion_tokens():
    model = tiny(fusion="concat", losses=("task", "se"))
    assert set(model.fusion.streams) == {"video", "audio"} and not hasattr(model.fusion, "fusion_tokens")
    assert model.text_stream is None and model.cls_token is None
    assert {m: h.in_features for m, h in model.task_head.heads.items()} == {"video": 64, "audio": 64}  # per branch
    with pytest.raises(ValueError, match="concat"):
        tiny(fusion="concat")  # the MLM needs the fusion tokens


def test_heads_read_the_av_pass_unless_asked_for_the_joint_pass():
    """By default the heads never see the label words (inference has none); joint_pass is the paper read literally."""
    for heads_from, depends in (("av_pass", False), ("joint_pass", True)):
        model = tiny(heads_from=heads_from).train()
        batch = random_batch(model)
        other_words = batch.replace(word_ids=torch.roll(batch.word_ids, 1, 0), n_words=torch.roll(batch.n_words, 1, 0))
        a = model.forward_train(batch, "joint", torch.Generator().manual_seed(0))
        b = model.forward_train(other_words, "joint", torch.Generator().manual_seed(0))
        assert torch.equal(a["logits"], b["logits"]) != depends, heads_from
        assert not torch.equal(a["loss_mlm"], b["loss_mlm"])
        if heads_from == "av_pass":  # the heads' input is exactly what inference computes
            with torch.no_grad():
                h_train = model._representations(batch, (batch.word_ids, batch.n_words))[0]
                torch.testing.assert_close(h_train, model._representations(batch)[0], rtol=0, atol=0)


def test_fusion_orders_differ_only_in_which_fusion_tokens_the_text_layer_sees():
    model = tiny().eval()
    torch.manual_seed(3)
    av, text = torch.randn(2, 9, 64), torch.randn(2, 5, 64)
    av_valid, text_valid = torch.tensor([9, 6], dtype=torch.int32), torch.tensor([5, 3], dtype=torch.int32)
    stream = model.text_stream
    with torch.no_grad():
        sequential, av_alone = model.fusion(av, av_valid, text, text_valid, stream), model.fusion(av, av_valid)
        model.fusion.order = "parallel"
        parallel = model.fusion(av, av_valid, text, text_valid, stream)
        torch.testing.assert_close(model.fusion(av, av_valid), av_alone, rtol=0, atol=0)  # without text: no order
    assert not torch.allclose(sequential[1], parallel[1]) and not torch.allclose(sequential[0], parallel[0])
    assert not torch.allclose(sequential[0], av_alone[0])  # the text reaches the AV stream through F
    # One block by hand, sequential: text runs with the AV-updated fusion tokens, then they are averaged.
    fusion = model.fusion
    fusion.order = "sequential"
    with torch.no_grad():
        f = fusion.fusion_tokens.expand(2, -1, -1)
        out_av = fusion.av_layers[0](torch.cat([av, f], 1), av_valid, 4)
        out_text = stream.layers[0](torch.cat([text, out_av[:, -4:]], 1), text_valid, 4)
        f1 = (out_av[:, -4:] + out_text[:, -4:]) / 2
        out_av2 = fusion.av_layers[1](torch.cat([out_av[:, :-4], f1], 1), av_valid, 4)
        torch.testing.assert_close(fusion.av_norm(out_av2[:, :-4]), sequential[0], rtol=1e-5, atol=1e-6)


# ---- losses --------------------------------------------------------------------------------------------


def test_loss_schedule_follows_the_paper_and_is_configurable():
    model = tiny()
    expected = {0: 0.25, 19: 0.25, 20: 0.1, 39: 0.1, 40: 0.05, 99: 0.05}
    for epoch, weight in expected.items():
        assert model.loss_weights(epoch) == (weight, weight)
    custom = tiny(loss_milestones=(5,), se_weights=(1.0, 0.5), mlm_weights=(0.3, 0.0))
    assert custom.loss_weights(4) == (1.0, 0.3) and custom.loss_weights(5) == (0.5, 0.0)
    with pytest.raises(ValueError, match="one weight per period"):
        tiny(loss_milestones=(5,))
    with pytest.raises(ValueError, match="increasing"):
        tiny(loss_milestones=(40, 20))
    # The total is L_task + lambda L_SE + sigma L_MLM at the epoch the trainer set.
    model.train()
    batch = random_batch(model)
    for epoch, weight in ((3, 0.25), (25, 0.1), (60, 0.05)):
        model.set_epoch(epoch)
        out = model.forward_train(batch, "joint", torch.Generator().manual_seed(0))
        torch.testing.assert_close(out["loss"], out["loss_task"] + weight * out["loss_se"] + weight * out["loss_mlm"])


def test_semantic_loss_targets_normalisation_and_video_labels():
    for normalize in (False, True):
        model = tiny(normalize_targets=normalize).eval()  # eval: no dropout, and counts are not updated
        batch = random_batch(model)
        norm = (lambda e: F.normalize(e, dim=-1)) if normalize else (lambda e: e)
        phi = model.class_embeddings[batch.labels]
        f = model.encode(batch)
        out = model.forward_train(batch, "joint", torch.Generator().manual_seed(0))
        torch.testing.assert_close(out["loss_se"], ((f - norm(phi)) ** 2).sum(1).mean())
        # phi(s_v): a video classifier's label embedding, where the dataset gives one.
        video_label = torch.randn(4, 12) * 3
        with_video = batch.replace()
        with_video.video_label_embedding = video_label
        with_video.video_label_present = torch.tensor([True, False, True, True])
        out = model.forward_train(with_video, "joint", torch.Generator().manual_seed(0))
        target = norm(phi) + torch.where(with_video.video_label_present[:, None], norm(video_label), 0.0)
        torch.testing.assert_close(out["loss_se"], ((f - target) ** 2).sum(1).mean())
    # Training counts the samples with phi(s_v); zero-shot targets are scaled to match.
    model = tiny().train()
    e = torch.randn(3, 12)
    torch.testing.assert_close(model.class_embedding_targets(e), e)
    model.forward_train(with_video, "joint", torch.Generator().manual_seed(0))
    model.forward_train(random_batch(model), "joint", torch.Generator().manual_seed(0))
    assert model.se_target_counts.tolist() == [8, 3]
    torch.testing.assert_close(model.class_embedding_targets(e), e * (1 + 3 / 8))
    assert tiny(normalize_targets=True).class_embedding_targets(e).norm(dim=1).allclose(torch.ones(3))


def test_without_a_semantic_or_task_head_zero_shot_still_has_an_answer():
    task_only = tiny(losses=("task",)).eval()
    batch = random_batch(task_only)
    with torch.no_grad():
        h = task_only._representations(batch)[0]
        conse = task_only.task_head(h).softmax(-1) @ task_only.class_embeddings
        torch.testing.assert_close(task_only.encode(batch), conse)
    se_only = tiny(losses=("se",)).eval()
    assert se_only.task_head is None
    with torch.no_grad():
        f = se_only.encode(batch)
        torch.testing.assert_close(se_only.seen_logits(batch), -torch.cdist(f, se_only.class_embeddings) ** 2,
                                   rtol=1e-4, atol=1e-4)


def test_mlm_masks_label_words_and_predicts_them_from_the_text_stream(seed):
    g = torch.Generator().manual_seed(seed)
    word_ids = torch.randint(3, 20, (64, 6), generator=g)
    n_words = torch.randint(0, 7, (64,), generator=g, dtype=torch.int32)
    masked, targets = mask_words(word_ids, n_words, 0.15, torch.Generator().manual_seed(seed))
    again = mask_words(word_ids, n_words, 0.15, torch.Generator().manual_seed(seed))
    assert torch.equal(masked, again[0]) and torch.equal(targets, again[1])
    is_masked = masked == WordVocab.mask_id
    valid = torch.arange(6)[None] < n_words[:, None]
    assert not (is_masked & ~valid).any()  # padding is never masked
    assert (is_masked.sum(1) >= 1)[n_words > 0].all() and not is_masked[n_words == 0].any()  # at least one
    assert torch.equal(targets[is_masked], word_ids[is_masked]) and (targets[~is_masked] == -100).all()
    assert torch.equal(masked[~is_masked], word_ids[~is_masked])
    # In the model: the MLM loss is the cross-entropy of the text stream's masked positions.
    model = tiny().eval()
    batch = random_batch(model)
    gen = torch.Generator().manual_seed(seed)
    out = model.forward_train(batch, "joint", gen)
    m_ids, m_targets = mask_words(batch.word_ids, batch.n_words, 0.15, torch.Generator().manual_seed(seed))
    _, text_out, _, _ = model._representations(batch, (m_ids, batch.n_words))
    logits = model.mlm_head(text_out)
    torch.testing.assert_close(out["loss_mlm"], F.cross_entropy(logits[m_targets >= 0], m_targets[m_targets >= 0]))


# ---- stages, weights and errors ---------------------------------------------------------------------------


def test_training_stage_and_frozen_backbones():
    (stage,) = tiny().training_stages()
    assert (stage.name, stage.optimizer, stage.lr, stage.epochs) == ("joint", "adamw", 1e-4, 100)
    assert stage.trains("video_encoder.net.conv_proj.weight") and stage.trains("fusion.fusion_tokens")
    frozen = tiny(freeze_backbones=True).train()
    (stage,) = frozen.training_stages()
    assert not stage.trains("video_encoder.net.conv_proj.weight") and not stage.trains("audio_encoder.net.layernorm.bias")
    assert stage.trains("video_proj.weight") and stage.trains("semantic_head.0.weight")
    assert not frozen.video_encoder.training and not frozen.audio_encoder.training and frozen.fusion.training
    frozen.forward_train(random_batch(frozen), "joint", torch.Generator().manual_seed(0))["loss"].backward()
    assert all(p.grad is None for p in frozen.video_encoder.parameters())
    assert all(p.grad is None for p in frozen.audio_encoder.parameters())


def test_user_backbone_weights_from_local_files(tmp_path):
    from safetensors.torch import save_file
    from transformers import ASTConfig, ASTModel

    source = tiny(seed=1)
    # Video: a torchvision state dict (its classifier is ignored), as safetensors or a PyTorch file.
    mvit_state = {k: v.contiguous() for k, v in source.video_encoder.net.state_dict().items()}
    save_file({**mvit_state, "head.1.weight": torch.zeros(3, 64)}, tmp_path / "mvit.safetensors")
    torch.save(mvit_state, tmp_path / "mvit.pth")
    # Audio: a Hugging Face folder, and a state dict with the older transformers names and prefix.
    source.audio_encoder.net.save_pretrained(tmp_path / "ast")
    legacy = {}
    for k, v in source.audio_encoder.net.state_dict().items():
        for new, old in (("layers.", "encoder.layer."), ("attention.q_proj", "attention.attention.query"),
                         ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                         ("mlp.fc2", "output.dense")):
            k = k.replace(new, old)
        legacy[f"audio_spectrogram_transformer.{k}"] = v
    for video, audio in ((tmp_path / "mvit.safetensors", tmp_path / "ast"), (tmp_path / "mvit.pth", legacy)):
        model = tiny(seed=2, video_weights=video, audio_weights=audio)
        for mine, theirs in ((model.video_encoder, source.video_encoder), (model.audio_encoder, source.audio_encoder)):
            for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
                assert torch.equal(a, b), name
    assert "video_weights" not in tiny().model_args()
    with pytest.raises(ValueError, match="does not match the MViT"):
        tiny(video_weights=tmp_path / "ast" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="video_weights"):
        tiny(video_weights=tmp_path / "missing.pth")
    ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, max_length=256, frequency_stride=16,
                       time_stride=16)).save_pretrained(tmp_path / "other_ast")
    with pytest.raises(ValueError, match="audio_weights"):
        tiny(audio_weights=tmp_path / "other_ast")
    (tmp_path / "not_weights.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read"):
        tiny(audio_weights=tmp_path / "not_weights.pth")


def test_clear_errors():
    with pytest.raises(ValueError, match="modalities"):
        tiny(modalities=("smell",))
    with pytest.raises(ValueError, match="'task' or 'se'"):
        tiny(losses=("mlm",))
    with pytest.raises(ValueError, match="unknown config key"):
        tiny(fusion_layers=3)
    with pytest.raises(ValueError, match="num_classes=3 but 6 class_names"):
        tiny(num_classes=3)
    model = tiny()
    with pytest.raises(ValueError, match="clips must have shape"):
        model.encode(random_batch(model).replace(clips=torch.zeros(4, 5, 3, 64, 64)))
    with pytest.raises(ValueError, match="audio must have shape"):
        model.encode(random_batch(model).replace(audio=torch.zeros(4, 100, 128)))
    with pytest.raises(ValueError, match="word_ids"):
        model.forward_train(random_batch(model, words=False), "joint")
    with pytest.raises(ValueError, match="class_embeddings must have shape"):
        model.set_class_embeddings(torch.zeros(6, 5))
    bare = create_model("mzst_tiny", class_names=CLASSES, embed_dim=12)
    with pytest.raises(RuntimeError, match="label embeddings"):
        bare.forward_train(random_batch(bare), "joint")
    bare.set_class_embeddings(torch.randn(6, 12).tolist())
    assert torch.isfinite(bare.forward_train(random_batch(bare), "joint")["loss"])
    assert MZSTConfig.from_dict(json.loads(MZSTConfig().to_json())) == MZSTConfig()


@pytest.mark.parametrize("fusion", ["bottleneck", "concat"])
def test_attention_backend_forces_every_fusion_layers_backend(fusion):
    """``attention_backend`` (as ResT's) reaches every bottleneck_attention call: the reference backend
    gives the cpu backend's training loss and gradients (same weights), and a name no backend has is
    refused with the op's list of backends."""
    from zsar.models.layers import BottleneckSelfAttention

    extra = {} if fusion == "bottleneck" else {"fusion": "concat", "losses": ("task", "se")}
    auto, forced = tiny(**extra), tiny(attention_backend="reference", **extra)
    forced.load_state_dict(auto.state_dict())
    layers = [m for m in forced.modules() if isinstance(m, BottleneckSelfAttention)]
    assert layers and {m.backend for m in layers} == {"reference"}
    batch = random_batch(auto, present=[True, False, True, True])
    losses = [m.forward_train(batch, "joint", torch.Generator().manual_seed(0))["loss"] for m in (auto, forced)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(auto.named_parameters(), forced.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="backend='nope' is not a backend"):
        tiny(attention_backend="nope", **extra).encode(batch)
