"""MZST: the multimodal zero-shot transformer (video + audio + text, attention-bottleneck fusion).

From "A Multimodal Benchmark and Improved Architecture for Zero Shot Learning" (Doshi et al.; the
MZST paper, §4-5): MViTv2 video tokens and AST audio tokens (:mod:`zsar.models.backbones`) fused
with the label words by the AVT fusion network (:mod:`zsar.models.fusion`); a task head, the
semantic head f(x) trained towards phi(s_v) + phi(s_t), and a masked-word head; zero-shot by the
nearest class embedding to f(x). The model: :mod:`zsar.models.mzst_model`; its config:
:mod:`zsar.models.mzst_config`; architecture and design notes: ``docs/mzst.md``. Registered as
``mzst`` (the paper's sizes) and ``mzst_tiny`` (small backbones for CPU tests and the demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..text.vocab import WordVocab
from .mzst_config import MZSTConfig
from .mzst_model import MZST
from .registry import Variant, register_variants
from .weights import load_audio_weights, load_video_weights

__all__ = ["MZST", "MZSTConfig", "MZST_VARIANTS", "build_mzst"]


# ---- registration --------------------------------------------------------------------------------


def build_mzst(defaults: dict, class_names: Sequence[str] | None = None, class_embeddings=None,
               video_weights: str | Path | None = None, audio_weights=None, *, model_cls: type[MZST] | None = None,
               config_cls: type[MZSTConfig] = MZSTConfig, **overrides) -> MZST:
    """An :class:`MZST` from a variant's defaults and ``overrides`` (fields of :class:`MZSTConfig`).

    Args:
        class_names: the seen classes; sets ``num_classes`` and, unless ``vocab`` is given, the word
            vocabulary of the MLM. None when rebuilding from :meth:`MZST.model_args`.
        class_embeddings: their label embeddings ``(C, embed_dim)`` (tensor, array or nested lists);
            ``embed_dim`` is taken from them. May be set later with :meth:`MZST.set_class_embeddings`.
        video_weights: torchvision MViT weights: an enum name (``"MViT_V2_S_Weights.KINETICS400_V1"``;
            its pixel normalisation then becomes ``pixel_mean``/``pixel_std`` unless overridden) or
            a state-dict file (safetensors or PyTorch). See :func:`zsar.models.weights.load_video_weights`.
        audio_weights: a Hugging Face AST repo id or folder, an AST state dict or file, or ImageNet
            ViT/DeiT weights (``"timm/<name>"`` or a timm state-dict file) adapted to AST as its
            authors did. See :func:`zsar.models.weights.load_audio_weights`.
        model_cls, config_cls: the model class and its config class (subclasses such as the feature-input
            models of :mod:`zsar.models.feature_input`; default :class:`MZST`, :class:`MZSTConfig`).
    Weights are read once at construction and not recorded in :meth:`MZST.model_args` (the weights
    themselves are).
    """
    args = {**defaults, **overrides}
    if class_names is not None:
        args.setdefault("num_classes", len(class_names))
        if args["num_classes"] != len(class_names):
            raise ValueError(f"num_classes={args['num_classes']} but {len(class_names)} class_names were given")
        if not args.get("vocab"):
            args["vocab"] = WordVocab.from_labels(class_names).to_list()
    if class_embeddings is not None:
        class_embeddings = torch.as_tensor(class_embeddings, dtype=torch.float32)
        if class_embeddings.dim() != 2:
            raise ValueError(f"class_embeddings must be (num_classes, embed_dim), got shape {tuple(class_embeddings.shape)}")
        args.setdefault("embed_dim", class_embeddings.shape[1])
        args.setdefault("num_classes", class_embeddings.shape[0])
    model = (model_cls or MZST)(config_cls.from_dict(args), class_embeddings)
    if video_weights is not None:
        if model.video_encoder is None:
            raise ValueError("video_weights given to a model without the video modality")
        meta = load_video_weights(model.video_encoder, video_weights)
        if "mean" in meta and not {"pixel_mean", "pixel_std"} & set(overrides):
            model.config.pixel_mean, model.config.pixel_std = tuple(meta["mean"]), tuple(meta["std"])
    if audio_weights is not None:
        if model.audio_encoder is None:
            raise ValueError("audio_weights given to a model without the audio modality")
        load_audio_weights(model.audio_encoder, audio_weights)
    return model


#: MZST's label embeddings by default: the sentence model's mean-pooled output without its final
#: Normalize (the paper's unnormalised targets; Table 8 shows normalised ones do much worse).
MZST_EMBEDDER = {"type": "sentence", "normalize": False}


#: name -> the MZST variant registered under it.
MZST_VARIANTS: dict[str, Variant] = {
    "mzst": Variant("MZST at the paper's sizes: MViTv2-S (16 x 224^2) and AST-Base, width 768, 4 fusion blocks"),
    "mzst_tiny": Variant(
        "A small MZST for CPU tests and the demo: a two-block MViT (8 x 64^2 video -> 64 tokens), a two-layer AST "
        "(128 x 256 log-mel -> 128 tokens), width 64, 2 fusion blocks; a CPU training step at batch 4 in well "
        "under a second",
        dict(video_backbone="mvit_tiny", audio_backbone="ast_tiny", frames=8, image_size=64, audio_length=256,
             dim=64, fusion_blocks=2, heads=4, mlp_dim=128, dropout=0.0)),
}
register_variants(build_mzst, MZST_VARIANTS, label_embeddings=True, embedder=MZST_EMBEDDER)
