"""The configuration of MZST (:class:`MZSTConfig`): every field that rebuilds its architecture and
training defaults; round-trips through JSON and is what a checkpoint's ``config.json`` records."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import from_dict as config_from_dict
from .backbones import AUDIO_BACKBONES, VIDEO_BACKBONES

__all__ = ["MZSTConfig", "MODALITIES", "LOSSES", "FUSIONS", "FUSION_ORDERS", "HEADS_FROM"]

MODALITIES = ("video", "audio")
LOSSES = ("task", "se", "mlm")
FUSIONS = ("bottleneck", "concat")
FUSION_ORDERS = ("sequential", "parallel")
HEADS_FROM = ("av_pass", "joint_pass")

#: torchvision's Kinetics-400 MViTv2-S weights expect pixels normalised with these (its ``transforms()``).
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@dataclass
class MZSTConfig:
    """Everything that rebuilds an MZST architecture; round-trips through JSON (see :class:`MZST`)."""

    modalities: tuple[str, ...] = ("video", "audio")
    video_backbone: str = "mvit_v2_s"
    audio_backbone: str = "ast_base"
    frames: int = 16
    image_size: int = 224
    audio_length: int = 1024  # log-mel frames (10 ms each)
    mel_bins: int = 128
    audio_patch_stride: int = 16  # the paper's non-overlapping 16 x 16 patches (512 tokens); AST's own: 10 (1,212)
    pixel_mean: tuple[float, ...] = KINETICS_MEAN  # what the video backbone's weights expect
    pixel_std: tuple[float, ...] = KINETICS_STD
    eval_clips: int = 4  # evaluation views: the paper's 4 clips x 3 crops, f(x) averaged over the 12
    eval_crops: int = 3
    dim: int = 768
    fusion_blocks: int = 4
    heads: int = 12
    mlp_dim: int = 3072
    fusion_tokens: int = 4
    dropout: float = 0.1
    attention_backend: str | None = None  # force a bottleneck_attention backend ("cpu", "cuda", ...); None: automatic
    fusion: str = "bottleneck"
    fusion_order: str = "sequential"
    heads_from: str = "av_pass"
    losses: tuple[str, ...] = ("task", "se", "mlm")
    text_stream: bool | None = None  # run the AVT fusion's text stream in training; None: with the MLM loss
    normalize_targets: bool = False
    num_classes: int = 400
    embed_dim: int = 300
    max_words: int = 8
    vocab: list[str] = field(default_factory=list)  # WordVocab.to_list(); empty: specials only
    mask_prob: float = 0.15
    loss_milestones: tuple[int, ...] = (20, 40)
    se_weights: tuple[float, ...] = (0.25, 0.1, 0.05)
    mlm_weights: tuple[float, ...] = (0.25, 0.1, 0.05)
    freeze_backbones: bool = False
    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.05

    def __post_init__(self):
        for name in ("modalities", "losses", "loss_milestones", "se_weights", "mlm_weights", "pixel_mean", "pixel_std"):
            setattr(self, name, tuple(getattr(self, name)))  # lists from JSON
        self.vocab = list(self.vocab)

        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

        def subset_of(name, allowed):
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty set of {allowed}, got {list(values)}")

        subset_of("modalities", MODALITIES)
        subset_of("losses", LOSSES)
        if "video" in self.modalities:
            one_of("video_backbone", tuple(VIDEO_BACKBONES))
        if "audio" in self.modalities:
            one_of("audio_backbone", tuple(AUDIO_BACKBONES))
        one_of("fusion", FUSIONS)
        one_of("fusion_order", FUSION_ORDERS)
        one_of("heads_from", HEADS_FROM)
        if not {"task", "se"} & set(self.losses):
            raise ValueError(f"losses must include 'task' or 'se' (zero-shot needs one of them), got {list(self.losses)}")
        if self.text_stream is False and "mlm" in self.losses:
            raise ValueError("the MLM loss reads the text stream: text_stream=False needs losses without 'mlm'")
        if self.text_stream and "mlm" not in self.losses and self.heads_from == "av_pass":
            raise ValueError("with text_stream=True and no MLM loss only the joint pass can use the text stream: "
                             "set heads_from='joint_pass' (Table 7's 'AVT Fusion + L_Task')")
        if self.text_stream and self.fusion == "concat":
            raise ValueError("fusion='concat' has no fusion tokens, so it has no text stream")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_mean and pixel_std need 3 values (std > 0), got {self.pixel_mean}, {self.pixel_std}")
        if self.eval_crops not in (1, 3):
            raise ValueError(f"eval_crops must be 1 (centre) or 3 (along the longer side), got {self.eval_crops}")
        if self.fusion == "concat" and "mlm" in self.losses:
            raise ValueError("fusion='concat' has no fusion tokens through which words could meet the video and "
                             "audio, so the MLM loss would learn nothing about them; use losses=('task', 'se')")
        for name in ("frames", "image_size", "audio_length", "mel_bins", "dim", "fusion_blocks", "heads", "mlp_dim",
                     "fusion_tokens", "num_classes", "embed_dim", "max_words", "epochs", "audio_patch_stride", "eval_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.mask_prob <= 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"mask_prob must be in [0, 1] and dropout in [0, 1), got {self.mask_prob}, {self.dropout}")
        if list(self.loss_milestones) != sorted(set(self.loss_milestones)):
            raise ValueError(f"loss_milestones must be increasing epochs, got {list(self.loss_milestones)}")
        for name in ("se_weights", "mlm_weights"):
            if len(getattr(self, name)) != len(self.loss_milestones) + 1:
                raise ValueError(f"{name} needs one weight per period: {len(self.loss_milestones) + 1} for "
                                 f"loss_milestones {list(self.loss_milestones)}, got {list(getattr(self, name))}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MZSTConfig":
        """The config of a dict (e.g. from JSON); unknown keys and mistyped values raise, naming the key."""
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
