"""ResT model: registry, config round-trip, masking rule, and the modality structure of its attention."""

from __future__ import annotations

import json

import pytest
import torch

import zsar
from zsar.data.batch import Batch
from zsar.models import ResTConfig
from zsar.text import WordVocab, split_label
from zsar.text.vocab import mask_words

LABELS = ["circle moving left", "square spinning", "triangle moving up", "circle spinning fast"]


def _tiny(**overrides):
    vocab = WordVocab.from_labels(LABELS)
    return zsar.create_model("rest_tiny", num_classes=len(LABELS), vocab=vocab.to_list(), **overrides), vocab


def test_registry_lists_every_variant():
    for name in ("rest18", "rest34", "rest101", "rest_vgg16", "rest_mobilenet_v2", "rest_googlenet", "rest_r2plus1d",
                 "rest_tiny"):
        assert name in zsar.list_models()


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'rest_nope'"):
        zsar.create_model("rest_nope")
    with pytest.raises(ValueError, match="frames must be >= 1"):
        zsar.create_model("rest_tiny", frames=0)
    with pytest.raises(ValueError, match="unknown backbone"):
        zsar.create_model("rest_tiny", backbone="resnet9000")
    with pytest.raises(ValueError, match="unknown ResT config keys"):
        ResTConfig.from_dict({"frames": 4, "nope": 1})


def test_config_round_trips_through_json():
    model, _ = _tiny()
    again = ResTConfig.from_dict(json.loads(model.config.to_json()))
    assert again == model.config


def test_r2plus1d_tokens_are_temporal_positions():
    model = zsar.create_model("rest_r2plus1d", dim=64, depth=1, heads=4, mlp_dim=64, num_classes=3)
    assert model.n_frame_tokens == 2 and model.n_visual == 3
    x = model.eval().encode_video(torch.randn(1, 16, 3, 112, 112))
    assert x.shape == (1, 64)


def test_cls_representation_ignores_label_words(seed):
    """Visual tokens never attend words, so the CLS output is the same whatever the words are."""
    torch.manual_seed(seed)
    model, vocab = _tiny()
    model.eval()
    clips = torch.randn(3, 8, 3, 64, 64)
    features = model.frame_features(clips)
    ids_a, n_a = vocab.encode_batch(LABELS[:3], 8)
    ids_b, n_b = vocab.encode_batch(LABELS[1:], 8)
    with torch.no_grad():
        cls_a = model.encode_tokens(features, ids_a, n_a)[:, 0]
        cls_b = model.encode_tokens(features, ids_b, n_b)[:, 0]
        cls_mask = model.encode_video(clips)
    torch.testing.assert_close(cls_a, cls_b, rtol=0, atol=0)
    # encode_video passes one word slot, not eight: the projections then run on another number of
    # token rows, and a GEMM may block (and round) differently for it (torch's AVX2 kernels under
    # OPENBLAS_CORETYPE=Zen: 1 float32 ulp). A word reaching the CLS token would move it by ~1e-2.
    torch.testing.assert_close(cls_a, cls_mask, rtol=1e-5, atol=1e-6)


def test_full_attention_ablation_lets_words_reach_cls(seed):
    torch.manual_seed(seed)
    model, vocab = _tiny(attention="full")
    model.eval()
    features = model.frame_features(torch.randn(2, 8, 3, 64, 64))
    ids_a, n_a = vocab.encode_batch(LABELS[:2], 8)
    ids_b, n_b = vocab.encode_batch(LABELS[2:], 8)
    with torch.no_grad():
        assert not torch.allclose(model.encode_tokens(features, ids_a, n_a)[:, 0], model.encode_tokens(features, ids_b, n_b)[:, 0])


def test_masking_rule(seed):
    model, vocab = _tiny()
    B, W = 2000, 8
    gen = torch.Generator().manual_seed(seed)
    n_words = torch.randint(0, W + 1, (B,), generator=gen, dtype=torch.int32)
    ids = torch.randint(3, len(vocab), (B, W), generator=gen)
    masked_ids, targets = mask_words(ids, n_words, model.config.mask_prob, generator=gen)
    valid = torch.arange(W)[None] < n_words[:, None]
    is_masked = targets >= 0
    assert not (is_masked & ~valid).any(), "only real words are masked"
    assert torch.equal(is_masked.any(1), n_words > 0), "at least one word per sample that has words"
    assert torch.equal(masked_ids[is_masked], torch.full_like(masked_ids[is_masked], WordVocab.mask_id))
    assert torch.equal(targets[is_masked], ids[is_masked]) and torch.equal(masked_ids[~is_masked], ids[~is_masked])
    # p = 0.15 per word, plus the forced one: on samples with many words the rate is close to 0.15.
    long = n_words == W
    rate = is_masked[long].float().mean().item()
    assert 0.13 < rate < 0.22, rate


def test_losses_and_objective_switches(seed):
    torch.manual_seed(seed)
    clips = torch.randn(4, 8, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 3])
    for objective in ("both", "cls", "mlm"):
        model, vocab = _tiny(objective=objective)
        ids, n = vocab.encode_batch(LABELS, 8)
        batch = Batch(clips=clips, labels=labels, word_ids=ids, n_words=n)
        out = model.forward_train(batch, "joint", generator=torch.Generator().manual_seed(seed))
        if objective == "both":
            torch.testing.assert_close(out["loss"], out["loss_cls"] + 0.5 * out["loss_mtl"])
        assert (out["loss_cls"] > 0) == (objective != "mlm")
        assert (out["loss_mtl"] > 0) == (objective != "cls")
        out["loss"].backward()


def test_feature_input_mode(seed):
    torch.manual_seed(seed)
    model = zsar.create_model("rest_tiny", feature_input=True, feature_dim=32, frames=5, num_classes=3)
    x = model.eval().encode_video(torch.randn(2, 4, 5, 32))  # 2 videos x 4 clips of 5 feature vectors
    assert x.shape == (2, 64)
    with pytest.raises(ValueError, match="feature input must have shape"):
        model.frame_features(torch.randn(2, 6, 32))


def test_encode_video_averages_clips(seed):
    torch.manual_seed(seed)
    model, _ = _tiny()
    model.eval()
    clips = torch.randn(2, 3, 8, 3, 64, 64)
    per_clip = model.encode_video(clips.flatten(0, 1)).view(2, 3, -1).mean(1)
    torch.testing.assert_close(model.encode_video(clips, batch_size=4), per_clip)


def test_split_label():
    assert split_label("ApplyEyeMakeup") == ["apply", "eye", "makeup"]
    assert split_label("brush_hair") == ["brush", "hair"]
    assert split_label("TVShow") == ["tv", "show"]


def test_user_backbone_weights_load(seed):
    """A torchvision-style state dict (with its classifier) loads into the frame encoder."""
    import torchvision

    from zsar.models.weights import load_backbone_weights

    torch.manual_seed(seed)
    source = torchvision.models.resnet18(weights=None)
    model = zsar.create_model("rest18", dim=64, depth=1, heads=4, mlp_dim=64, num_classes=3)
    missing = load_backbone_weights(model.encoder, source.state_dict())
    assert missing == []
    torch.testing.assert_close(model.encoder.trunk.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="backbone weights do not match"):
        load_backbone_weights(model.encoder, {"conv1.weight": torch.zeros(1)}, strict=True)
