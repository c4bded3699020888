"""Feature-input models: MZST and ResT on precomputed per-video (or per-segment) features.

The audio-visual zero-shot benchmarks run on released features (AVCA-GZSL: SeLaVi 512-d audio and
video features for ``main_split``, C3D 4096-d video and VGGish 128-d audio for ``cls_split``), and the
MZST paper reports MZST on them too (§5.3, Table 5's "VGG†" row, Table 6's "MZST (VGG)" row).

* **MZST** (:class:`MZSTFeatures`): each stream's features ``(B, T, F)`` (``T = 1`` for per-video
  averages; a 2-D ``(B, F)`` input is one token) go through a :class:`FeatureTokens` stem in place of
  the backbone (a LayerNorm over F, plus a learned per-segment embedding when ``T > 1``), then MZST's
  own linear projection to the fusion width and modality embedding; the bottleneck fusion, heads,
  losses and zero-shot head are MZST's, unchanged. Registered as ``mzst_features`` (SeLaVi: 512-d
  audio and video), ``mzst_features_cls`` (C3D 4096-d video, VGGish 128-d audio) and
  ``mzst_features_tiny`` (for tests).
* **ResT** reuses its own feature-input mode (``ResTConfig(feature_input=True, feature_dim=p)``: the
  frame encoder skipped, features ``(B, T, p)`` projected to the transformer width, no warm-up stage),
  on the video features only: ``rest_features`` (512-d SeLaVi video) and ``rest_features_cls``
  (4096-d C3D).

The sizes (fusion width 256, 2 blocks, 4 heads) are this package's choice for inputs of one token per
stream: the papers give none for the feature setting. The data come from
:class:`zsar.data.AVCAFeatureDataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..data.audio import AudioSpec
from .base import ModelInputs
from .backbones import AUDIO_BACKBONES, VIDEO_BACKBONES
from .mzst import MZST, MZSTConfig, build_mzst
from .registry import Variant, register_variants
from .rest import build_rest

__all__ = ["FEATURES", "FeatureTokens", "MZSTFeaturesConfig", "MZSTFeatures", "MZST_FEATURE_VARIANTS",
           "REST_FEATURE_VARIANTS"]

#: The backbone name of a stream fed precomputed features.
FEATURES = "features"


def _no_backbone(*_args):
    raise ValueError(f"backbone {FEATURES!r} takes precomputed features: build one of the feature-input models "
                     f"({', '.join(MZST_FEATURE_VARIANTS)}) instead of plain MZST")


# Known to MZSTConfig's backbone check; only MZSTFeatures builds the stem (plain MZST gets a clear error).
VIDEO_BACKBONES.setdefault(FEATURES, _no_backbone)
AUDIO_BACKBONES.setdefault(FEATURES, _no_backbone)


class FeatureTokens(nn.Module):
    """Precomputed features as tokens: ``(B, T, F)`` (or ``(B, F)``, one token) -> ``(B, T, F)``.

    A LayerNorm over F (released features differ in scale: SeLaVi embeddings, C3D fc6 activations,
    VGGish embeddings) and, for ``T > 1`` segments, a learned per-segment embedding (the backbones'
    tokens carry position; features do not). The model's linear projection then maps F to its width.

    Args:
        num_tokens: segments per video (T).
        dim: feature size (F).
        modality: ``video`` or ``audio``, for messages.
    """

    def __init__(self, num_tokens: int, dim: int, modality: str = "video"):
        super().__init__()
        self.num_tokens, self.dim, self.modality = int(num_tokens), int(dim), modality
        self.norm = nn.LayerNorm(self.dim)
        self.segment_embed = nn.Parameter(torch.zeros(1, self.num_tokens, self.dim)) if self.num_tokens > 1 else None
        if self.segment_embed is not None:
            nn.init.trunc_normal_(self.segment_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[:, None]
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.num_tokens, self.dim):
            raise ValueError(f"{self.modality} features must have shape (B, {self.num_tokens}, {self.dim}) (segments x "
                             f"feature size), got {tuple(x.shape)}")
        x = self.norm(x.float())
        return x if self.segment_embed is None else x + self.segment_embed


@dataclass
class MZSTFeaturesConfig(MZSTConfig):
    """:class:`MZSTConfig` for precomputed features: the backbones are :data:`FEATURES`, and each stream
    takes ``<modality>_segments`` tokens of ``<modality>_feature_dim`` values (``frames``, ``image_size``,
    ``audio_length`` and ``mel_bins`` are unused)."""

    video_backbone: str = FEATURES
    audio_backbone: str = FEATURES
    video_feature_dim: int = 512
    audio_feature_dim: int = 512
    video_segments: int = 1
    audio_segments: int = 1

    def __post_init__(self):
        for name in ("video_backbone", "audio_backbone"):
            if getattr(self, name) != FEATURES:
                raise ValueError(f"{name} must be {FEATURES!r} for a feature-input MZST, got {getattr(self, name)!r}")
        for name in ("video_feature_dim", "audio_feature_dim", "video_segments", "audio_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        super().__post_init__()


class MZSTFeatures(MZST):
    """MZST on precomputed features (see the module docstring): batches carry ``clips`` = video features
    ``(B, T_v, F_v)`` and ``audio`` = audio features ``(B, T_a, F_a)`` (``audio_present`` as for MZST)."""

    def _build_encoders(self, c: MZSTFeaturesConfig):
        video = FeatureTokens(c.video_segments, c.video_feature_dim, "video") if self.use_video else None
        audio = FeatureTokens(c.audio_segments, c.audio_feature_dim, "audio") if self.use_audio else None
        return video, audio

    @property
    def inputs(self) -> ModelInputs:
        c = self.config
        audio = AudioSpec(target_length=c.audio_segments, mel_bins=c.audio_feature_dim) if self.use_audio else None
        return ModelInputs(frames=c.video_segments, image_size=1, audio=audio, label_words=self.with_text,
                           feature_dim=c.video_feature_dim if self.use_video else None)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {**super().describe(), "video_backbone": None, "audio_backbone": None,
                "video_features": [c.video_segments, c.video_feature_dim] if self.use_video else None,
                "audio_features": [c.audio_segments, c.audio_feature_dim] if self.use_audio else None}

    def _tokens(self, batch):
        """Projected tokens per stream, audio presence ``(B,)`` (None without audio), B, and 1 clip per video."""
        tokens, present, B = {}, None, len(batch)
        if self.use_video:
            tokens["video"] = self.video_proj(self.video_encoder(batch.clips.to(self.device))) + self.modality_embed[0]
        if self.use_audio:
            audio, present = batch.audio, batch.audio_present
            if present is None:
                present = torch.full((B,), audio is not None, dtype=torch.bool)
            present = present.to(self.device)
            if audio is None:  # no audio: padding (see MZST), never attended
                feats = self.audio_proj.weight.new_zeros(B, self.num_audio_tokens, self.config.dim)
            else:
                feats = self.audio_proj(self.audio_encoder(audio.to(self.device)))
            tokens["audio"] = feats + self.modality_embed[1]
        return tokens, present, B, 1


#: name -> the feature-input MZST variant. Fusion width 256 with 2 blocks for one token per stream; 50
#: epochs and lr 1e-4 with AdamW as AVCA trains on these features (its run scripts: 50 epochs).
_FEATURE_SIZES = dict(dim=256, fusion_blocks=2, heads=4, mlp_dim=1024, dropout=0.1, epochs=50,
                      loss_milestones=(20, 40))
MZST_FEATURE_VARIANTS: dict[str, Variant] = {
    "mzst_features": Variant("Feature-input MZST on AVCA's 512-d SeLaVi audio and video features (main split)",
                             dict(video_feature_dim=512, audio_feature_dim=512, **_FEATURE_SIZES)),
    "mzst_features_cls": Variant("Feature-input MZST on AVCA's 4096-d C3D video and 128-d VGGish audio (cls split)",
                                 dict(video_feature_dim=4096, audio_feature_dim=128, **_FEATURE_SIZES)),
    "mzst_features_tiny": Variant("A small feature-input MZST for tests",
                                  dict(video_feature_dim=512, audio_feature_dim=512, dim=32, fusion_blocks=1,
                                       heads=2, mlp_dim=64, dropout=0.0, epochs=10)),
}
register_variants(partial(build_mzst, model_cls=MZSTFeatures, config_cls=MZSTFeaturesConfig), MZST_FEATURE_VARIANTS,
                  label_embeddings=True)

#: name -> the variant of ResT's feature-input mode on the video features.
_REST_FEATURE_SIZES = dict(feature_input=True, frames=1, dim=256, depth=4, heads=4, mlp_dim=1024, dropout=0.1)
REST_FEATURE_VARIANTS: dict[str, Variant] = {
    "rest_features": Variant("ResT's feature-input mode on AVCA's 512-d SeLaVi video features (main split)",
                             dict(feature_dim=512, **_REST_FEATURE_SIZES)),
    "rest_features_cls": Variant("ResT's feature-input mode on AVCA's 4096-d C3D video features (cls split)",
                                 dict(feature_dim=4096, **_REST_FEATURE_SIZES)),
}
register_variants(build_rest, REST_FEATURE_VARIANTS)
