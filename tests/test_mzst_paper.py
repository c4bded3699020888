"""MZST as the paper trains it: phi(s_v) through the batch and trainer, s_v from a torchvision video
classifier's metadata, pretrained backbones by name or file (offline, weights made here in their
real formats), unnormalised label targets, the paper's audio token layout, evaluation views and the
AVT Fusion + L_Task ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zsar
from zsar.data.batch import Batch, Sample, collate
from zsar.data.records import VideoList, VideoRecord
from zsar.data.video_labels import WithVideoLabels, embed_video_labels, read_video_labels
from zsar.models import create_model
from zsar.train import StageConfig, TrainConfig, Trainer

from videos import make_video

CLASSES = ["circle falling", "square growing", "triangle sliding"]


def tiny(**overrides):
    torch.manual_seed(0)
    emb = torch.randn(len(CLASSES), 12, generator=torch.Generator().manual_seed(1))
    return create_model("mzst_tiny", class_names=CLASSES, class_embeddings=emb, **overrides)


def samples(model, n=6, with_label=lambda i: True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    out = []
    for i in range(n):
        phi_v = torch.randn(c.embed_dim, generator=g) if with_label(i) else None
        out.append(Sample(torch.randn(c.frames, 3, c.image_size, c.image_size, generator=g), i % len(CLASSES),
                          audio=torch.randn(c.audio_length, c.mel_bins, generator=g), video_id=f"v{i}",
                          video_label_embedding=phi_v))
    return out


# ---- phi(s_v) ------------------------------------------------------------------------------------


def test_phi_sv_is_a_batch_field_that_survives_collate_to_and_replace():
    model = tiny()
    batch = collate(samples(model, 4, with_label=lambda i: i != 2))
    assert batch.video_label_embedding.shape == (4, 12)
    assert batch.video_label_present.tolist() == [True, True, False, True]
    assert not batch.video_label_embedding[2].any()
    moved = batch.to("cpu").replace(word_ids=torch.zeros(4, 2, dtype=torch.long))
    assert torch.equal(moved.video_label_embedding, batch.video_label_embedding)
    assert torch.equal(moved.video_label_present, batch.video_label_present)
    # The semantic loss regresses onto phi(s_t) + phi(s_v) where the video has one.
    model.train()
    f = torch.randn(4, 12)
    labels = batch.labels
    with_v = model._se_loss(f, labels, moved)
    without = model._se_loss(f, labels, moved.replace(video_label_embedding=None, video_label_present=None))
    target = model.class_embeddings[labels] + torch.where(batch.video_label_present[:, None],
                                                          batch.video_label_embedding, 0.0)
    torch.testing.assert_close(with_v, (f - target).pow(2).sum(-1).mean())
    assert not torch.isclose(with_v, without)


def test_the_trainer_feeds_phi_sv_to_the_semantic_loss(tmp_path):
    model = tiny()
    # phi(s_v) keyed by video id, attached by the dataset wrapper as zsar's loaders would.
    base = samples(model, 8, with_label=lambda i: False)
    labels = {f"v{i}": CLASSES[(i + 1) % 3] for i in range(0, 8, 2)}
    embedder = type("Fixed", (), {"embed": lambda self, names: np.stack(
        [np.full(12, float(CLASSES.index(n) + 1), np.float32) for n in names])})()
    data = WithVideoLabels(base, embed_video_labels(labels, embedder))
    data.collate_fn = collate  # a plain list has no collation of its own
    config = TrainConfig(model="mzst_tiny", stages={"joint": StageConfig(epochs=1)}, batch_size=4, seed=0,
                         device="cpu", out_dir=str(tmp_path / "run"), progress=False)
    Trainer(config, data, CLASSES, model=model).fit()
    seen, with_label = model.se_target_counts.tolist()
    assert seen == 8 and with_label == 4


def test_video_labeler_names_videos_by_the_weights_categories_and_caches(tmp_path, monkeypatch):
    """s_v from a torchvision Kinetics-400 classifier, its weights file placed in the hub cache
    (what a download leaves), class names from the weights' metadata; offline a missing file is
    named in one line."""
    from torchvision.models.video import R3D_18_Weights, r3d_18

    from zsar.models.video_labels import VideoLabeler, label_videos

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZSAR_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"r3d_18-b3b3357e\.pth.*place it at"):
        VideoLabeler("R3D_18_Weights.KINETICS400_V1")
    torch.manual_seed(0)
    net = r3d_18(weights=None)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(net.state_dict(), hub / "r3d_18-b3b3357e.pth")
    labeler = VideoLabeler("R3D_18_Weights.KINETICS400_V1", frames=4, stride=1, size=32, short_side=36)
    assert labeler.categories == R3D_18_Weights.KINETICS400_V1.meta["categories"]
    assert labeler.spec.mean == pytest.approx((0.43216, 0.394666, 0.37645))
    records = []
    for i in range(2):
        make_video(tmp_path / f"v{i}.mp4", t=8, seed=i)
        records.append(VideoRecord(str(tmp_path / f"v{i}.mp4"), 0, f"v{i}"))
    videos = VideoList(records, ["x"])
    cache = tmp_path / "video_labels.csv"
    got = label_videos(videos, cache, labeler, progress=False)
    assert set(got) == {"v0", "v1"} and set(got.values()) <= set(labeler.categories)
    assert read_video_labels(cache) == got
    # Cached: a second run classifies nothing (a labeler that would fail is never called).
    assert label_videos(videos, cache, labeler=object()) == got


# ---- pretrained backbones ------------------------------------------------------------------------


def _timm_vit(distilled: bool, embed_dim=64, depth=2, img=64, seed=0):
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    cls = VisionTransformerDistilled if distilled else VisionTransformer
    return cls(img_size=img, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=4, mlp_ratio=2.0)


@pytest.mark.parametrize("distilled", [True, False])
def test_ast_from_imagenet_vit_and_deit_files_as_asts_authors_did(tmp_path, distilled):
    vit = _timm_vit(distilled)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    model = tiny(audio_weights=path)
    ast = model.audio_encoder.net
    state = vit.state_dict()
    emb = ast.embeddings
    torch.testing.assert_close(emb.patch_embeddings.projection.weight, state["patch_embed.proj.weight"].sum(1, True))
    torch.testing.assert_close(emb.cls_token, state["cls_token"])
    torch.testing.assert_close(emb.distillation_token, state["dist_token"] if distilled else state["cls_token"])
    # 4 x 4 ImageNet patch grid -> AST's (f, t) = (8, 16): interpolated (both larger), in float64 here.
    n_prefix = 2 if distilled else 1
    grid = state["pos_embed"][:, n_prefix:].double().reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(4, 16), mode="bilinear")
    grid = torch.nn.functional.interpolate(grid, size=(8, 16), mode="bilinear")
    torch.testing.assert_close(emb.position_embeddings[:, 2:].double(), grid.flatten(2).transpose(1, 2))
    q, k, v = state["blocks.1.attn.qkv.weight"].chunk(3)
    torch.testing.assert_close(ast.layers[1].attention.v_proj.weight, v)
    tokens = model.audio_encoder(torch.randn(2, 256, 128))
    assert tokens.shape == (2, model.num_audio_tokens, 64) and torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match="ViT of width 32"):
        torch.save(_timm_vit(distilled, embed_dim=32).state_dict(), tmp_path / "narrow.pth")
        tiny(audio_weights=tmp_path / "narrow.pth")


def test_ast_position_grid_is_cut_to_the_centre_when_smaller(tmp_path):
    vit = _timm_vit(True, img=256)  # a 16 x 16 grid; AST's (8, 16): frequency rows cut to the centre 8
    torch.save(vit.state_dict(), tmp_path / "deit.pth")
    model = tiny(audio_weights=tmp_path / "deit.pth")
    grid = vit.state_dict()["pos_embed"][:, 2:].reshape(1, 16, 16, 64).permute(0, 3, 1, 2)[:, :, 4:12, :]
    torch.testing.assert_close(model.audio_encoder.net.embeddings.position_embeddings[:, 2:],
                               grid.flatten(2).transpose(1, 2))


def test_ast_from_a_hugging_face_folder_gives_finite_tokens(tmp_path):
    source = tiny()
    source.audio_encoder.net.save_pretrained(tmp_path / "ast")  # transformers' own format
    torch.manual_seed(5)
    model = create_model("mzst_tiny", class_names=CLASSES, embed_dim=12, audio_weights=str(tmp_path / "ast"))
    for a, b in zip(model.audio_encoder.state_dict().values(), source.audio_encoder.state_dict().values()):
        assert torch.equal(a, b)
    tokens = model.audio_encoder(torch.randn(1, 256, 128))
    assert torch.isfinite(tokens).all() and tokens.shape == (1, 128, 64)


def test_rest_frame_encoder_takes_torchvision_imagenet_weights_by_name(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZSAR_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        create_model("rest18", class_names=CLASSES, dim=64, depth=1, heads=4, mlp_dim=64,
                     backbone_weights="ResNet18_Weights.IMAGENET1K_V1")
    torch.manual_seed(1)
    net = resnet18(weights=None)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(net.state_dict(), hub / "resnet18-f37072fd.pth")
    model = create_model("rest18", class_names=CLASSES, dim=64, depth=1, heads=4, mlp_dim=64,
                         backbone_weights="ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(model.encoder.trunk.conv1.weight, net.conv1.weight)
    assert "backbone_weights" not in model.model_args()
    assert model.inputs.clip_spec().mean == pytest.approx((0.485, 0.456, 0.406))  # ImageNet's, as the weights


@pytest.mark.slow
def test_mvit_kinetics_weights_by_name_set_the_kinetics_normalisation(tmp_path, monkeypatch):
    from torchvision.models.video import mvit_v2_s

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZSAR_OFFLINE", "1")
    net = mvit_v2_s(weights=None)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(net.state_dict(), hub / "mvit_v2_s-ae3be167.pth")
    model = create_model("mzst", class_names=CLASSES, embed_dim=12, modalities=["video"], dim=64, heads=4,
                         mlp_dim=64, fusion_blocks=1, video_weights="MViT_V2_S_Weights.KINETICS400_V1")
    assert torch.equal(model.video_encoder.net.conv_proj.weight, net.conv_proj.weight)
    assert model.config.pixel_mean == (0.45, 0.45, 0.45) and model.config.pixel_std == (0.225, 0.225, 0.225)
    tokens = model.video_encoder(torch.randn(1, 16, 3, 224, 224))
    assert tokens.shape == (1, 392, 768) and torch.isfinite(tokens).all()


def test_model_inputs_carry_the_normalisation_and_views_every_loader_uses():
    from zsar.train.config import TrainConfig as Config
    from zsar.train.pipeline import Pipeline

    model = tiny()
    spec = model.inputs.clip_spec()
    assert spec.mean == (0.45, 0.45, 0.45) and spec.std == (0.225, 0.225, 0.225)  # Kinetics MViT's
    assert spec.views == 12 and spec.num_clips == 4 and spec.crop_mode == "three"  # the paper's 4 x 3
    pipeline = Pipeline(Config(model="mzst_tiny", device="cpu"), CLASSES, embedder=None, model=model)
    train, evaluation = pipeline.clip_specs(stride=2)
    assert train.views == 1 and train.mean == spec.mean and evaluation.views == 12 and evaluation.stride == 2
    assert pipeline.clip_specs(1, stride=2)[1].views == 1
    assert tiny(eval_clips=2, eval_crops=1).inputs.clip_spec().views == 2
    rest = create_model("rest_tiny", class_names=CLASSES)
    assert rest.inputs.clip_spec().views == 1 and rest.inputs.clip_spec().mean == (0.485, 0.456, 0.406)


# ---- targets, tokens, ablations ------------------------------------------------------------------


def test_mzst_default_targets_are_not_normalised_and_normalize_targets_switches():
    from zsar.models import default_embedder_spec
    from zsar.text import embedder_from_spec

    spec = default_embedder_spec("mzst")
    assert spec == {"type": "sentence", "normalize": False} and default_embedder_spec("rest18") == {"type": "sentence"}
    embedder = embedder_from_spec(spec)
    assert embedder.spec()["normalize"] is False  # what the saved classifier records
    raw = torch.as_tensor(embedder.embed(CLASSES))
    norms = raw.norm(dim=-1)
    assert (norms > 2).all(), norms  # the mean-pooled output, without all-MiniLM-L6-v2's final Normalize
    assert torch.allclose(torch.as_tensor(embedder_from_spec({"type": "sentence"}).embed(CLASSES)).norm(dim=-1),
                          torch.ones(3))
    plain = create_model("mzst_tiny", class_names=CLASSES, label_embedder=embedder)
    normed = create_model("mzst_tiny", class_names=CLASSES, label_embedder=embedder, normalize_targets=True)
    plain_norms = plain.class_embedding_targets(plain.class_embeddings).norm(dim=-1)
    normed_norms = normed.class_embedding_targets(normed.class_embeddings).norm(dim=-1)
    torch.testing.assert_close(plain_norms, norms)
    torch.testing.assert_close(normed_norms, torch.ones(3))


def test_audio_patch_stride_sets_the_token_count_and_position_embeddings():
    with torch.device("meta"):
        paper = create_model("mzst", class_names=CLASSES, embed_dim=12)
        ast_like = create_model("mzst", class_names=CLASSES, embed_dim=12, audio_patch_stride=10)
    assert paper.num_audio_tokens == 512 and paper.audio_encoder.grid == (8, 64)
    assert paper.audio_encoder.net.embeddings.position_embeddings.shape == (1, 514, 768)
    assert ast_like.num_audio_tokens == 1212
    assert ast_like.audio_encoder.net.embeddings.position_embeddings.shape == (1, 1214, 768)


def test_avt_fusion_with_the_task_loss_alone_runs_the_text_stream():
    model = tiny(losses=["task"], text_stream=True, heads_from="joint_pass")
    assert model.text_stream is not None and model.mlm_head is None and model.inputs.label_words
    batch = collate(samples(model, 3))
    ids, n = model.tokenize_labels([CLASSES[i] for i in batch.labels.tolist()])
    out = model.train().forward_train(batch.replace(word_ids=ids, n_words=n), "joint")
    assert set(out) == {"loss", "loss_task", "logits"}
    out["loss"].backward()
    assert model.text_stream.word_embed.weight.grad is not None  # the words reach the heads
    with pytest.raises(ValueError, match="joint_pass"):
        tiny(losses=["task"], text_stream=True)
    with pytest.raises(ValueError, match="text_stream=False"):
        tiny(text_stream=False)


def test_feature_concatenation_trains_each_branch_on_its_own_and_concatenates_embeddings():
    model = tiny(fusion="concat", losses=["task", "se"]).train()
    batch = collate(samples(model, 4, with_label=lambda i: False))
    out = model.forward_train(batch, "joint")
    # The video branch's gradient does not depend on the audio branch's loss: zero the audio
    # branch's heads' contribution and the video parameters' gradients stay the same.
    out["loss"].backward()
    video_grad = model.fusion.streams["video"].layers[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    h, _, _, _ = model._representations(batch)
    video_h = h.chunk(2, -1)[0]
    heads = model.task_head.heads["video"], model.semantic_head.heads["video"]
    loss = (torch.nn.functional.cross_entropy(heads[0](video_h), batch.labels)
            + model.loss_weights()[0] * (heads[1](video_h) - model.class_embeddings[batch.labels]).pow(2).sum(-1).mean()) / 2
    loss.backward()
    torch.testing.assert_close(model.fusion.streams["video"].layers[0].attn.qkv.weight.grad, video_grad)
    model.eval()
    f = model.encode(batch)
    assert f.shape == (4, 24)  # the two branches' 12-d embeddings
    targets = model.class_embedding_targets(model.class_embeddings)
    torch.testing.assert_close(targets, model.class_embeddings.repeat(1, 2))


def test_constant_schedule_keeps_the_learning_rate(tmp_path):
    from zsar.train.config import StageConfig as Stage

    model = tiny()
    data = WithVideoLabels(samples(model, 8), {})
    data.collate_fn = collate
    config = TrainConfig(model="mzst_tiny", stages={"joint": Stage(epochs=2, lr=1e-4, schedule="constant")},
                         batch_size=4, seed=0, device="cpu", out_dir=str(tmp_path / "run"), progress=False)
    history = Trainer(config, data, CLASSES, model=model).fit()["history"]
    assert [h["lr"] for h in history] == [1e-4, 1e-4]  # no cosine decay
    with pytest.raises(ValueError, match="schedule"):
        Stage(schedule="linear")


def test_gzsl_report_adds_the_uncalibrated_scores_at_beta_zero():
    from zsar.eval.recipes import _add_uncalibrated

    report = {"stage_2": {"curve": {"beta": [0.0, 0.2], "S": [0.9, 0.5], "U": [0.1, 0.4], "HM": [0.18, 0.44]}}}
    _add_uncalibrated(report)
    assert report["uncalibrated"] == {"beta": 0.0, "S": 0.9, "U": 0.1, "HM": 0.18}
