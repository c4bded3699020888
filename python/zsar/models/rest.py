"""ResT: cross-modal ResNet-Transformer for zero-shot action recognition (ResT paper §3).

Tokens ``z0 = [CLS, r_1..r_T, w_1..w_N, padding]`` + learned position + modality embeddings go
through a transformer whose attention is :func:`zsar.ops.masked_attention` (visual tokens never see
words; words see every visual token and the words on their left). Losses: cross-entropy of an MLP
head on the CLS output over the seen classes, plus ``mtl_weight`` x the masked-token loss on label
words (p = 0.15 per word, at least one per sample).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import check_n_text_range
from ..text.vocab import WordVocab, mask_words
from .backbones import BACKBONES, FrameEncoder
from .base import ModelInputs, TrainingStage, ZeroShotModel
from .checkpoint import register_legacy_config
from .layers import MaskedTransformer, MaskedWordHead, init_transformer_weights
from .registry import Variant, register_variants
from .weights import load_backbone_weights

OBJECTIVES = ("both", "cls", "mlm")  # Table 3(b): CLS + MTL, CLS only, MLM only


@dataclass
class ResTConfig:
    """Everything needed to rebuild a ResT model; round-trips through JSON (``to_dict``/``from_dict``)."""

    backbone: str = "resnet18"
    frames: int = 16
    image_size: int = 224
    feature_dim: int | None = None  # p; None: the backbone's. Required with feature_input.
    feature_input: bool = False  # take precomputed per-frame features instead of pixels (Table 6)
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    num_classes: int = 400
    max_words: int = 8
    vocab: list[str] = field(default_factory=list)  # WordVocab.to_list(); empty: specials only
    attention: str = "rest"  # or "full" (Table 3(c))
    attention_backend: str | None = None  # force a masked_attention backend ("cpu", "cuda", ...); None: automatic
    objective: str = "both"
    mtl_weight: float = 0.5
    mask_prob: float = 0.15

    def __post_init__(self):
        if not self.feature_input and self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {sorted(BACKBONES)}")
        if self.feature_input and not self.feature_dim:
            raise ValueError("feature_input=True needs feature_dim (the size of the precomputed features)")
        if self.attention not in ("rest", "full"):
            raise ValueError(f"attention must be 'rest' or 'full', got {self.attention!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("num_classes", "max_words", "depth", "heads", "dim", "mlp_dim", "image_size", "frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {self.mask_prob}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ResT config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class ResT(ZeroShotModel):
    """The ResT model (see the module docstring), on the :class:`~zsar.models.base.ZeroShotModel`
    contract: clips ``(B, T, 3, H, W)`` (or features ``(B, T, p)`` in feature-input mode) in, the CLS
    output x out; zero-shot by semantic transfer of seen-class prototypes of x. Training runs two
    stages: ``warmup`` (the frame encoder with a linear classifier on averaged frame features, SGD)
    and ``joint`` (everything, AdamW), with label words for the masked-token loss."""

    zero_shot_head = "prototype_transfer"

    def __init__(self, config: ResTConfig):
        super().__init__()
        self.config = c = config
        self.vocab = WordVocab.from_list(c.vocab) if c.vocab else WordVocab([])
        if c.feature_input:
            self.encoder = None
            feature_dim, self.n_frame_tokens = c.feature_dim, c.frames
        else:
            self.encoder = FrameEncoder(c.backbone)
            feature_dim = c.feature_dim or self.encoder.feature_dim
            self.n_frame_tokens = self.encoder.num_tokens(c.frames)
        self.n_visual = 1 + self.n_frame_tokens
        self.seq_len = self.n_visual + c.max_words

        self.proj = nn.Linear(feature_dim, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.word_embed = nn.Embedding(len(self.vocab), c.dim, padding_idx=WordVocab.pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.seq_len, c.dim))
        self.modality_embed = nn.Embedding(2, c.dim)  # 0: CLS and visual, 1: text
        self.transformer = MaskedTransformer(c.dim, c.depth, c.heads, c.mlp_dim, c.attention, c.dropout,
                                             c.attention_backend)
        self.cls_head = nn.Sequential(nn.Linear(c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.num_classes))
        self.mtl_head = MaskedWordHead(c.dim, len(self.vocab))
        # Stage 1 (warm-up): a classifier on temporally averaged frame features, F alone.
        self.warmup_head = nn.Linear(feature_dim, c.num_classes)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_transformer_weights([self.proj, self.word_embed, self.modality_embed, self.transformer, self.cls_head,
                                  self.mtl_head])

    # ---- encoding --------------------------------------------------------------------------------

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """r: ``(B, T_tokens, p)`` from clips (or the features themselves in feature-input mode)."""
        if self.encoder is None:
            if clips.dim() != 3 or clips.shape[1] != self.n_frame_tokens:
                raise ValueError(
                    f"feature input must have shape (B, {self.n_frame_tokens}, {self.config.feature_dim}), "
                    f"got {tuple(clips.shape)}"
                )
            return clips
        if clips.dim() != 5 or clips.shape[1] != self.config.frames:
            raise ValueError(f"clips must have shape (B, {self.config.frames}, 3, H, W), got {tuple(clips.shape)}")
        return self.encoder(clips)

    def _tokens(self, features: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        B = features.shape[0]
        visual = torch.cat([self.cls_token.expand(B, -1, -1), self.proj(features)], dim=1)
        words = self.word_embed(word_ids)
        modality = torch.cat(
            [self.modality_embed.weight[0].expand(B, visual.shape[1], -1),
             self.modality_embed.weight[1].expand(B, words.shape[1], -1)], dim=1)
        L = visual.shape[1] + words.shape[1]
        return torch.cat([visual, words], dim=1) + self.pos_embed[:, :L] + modality

    def encode_tokens(self, features: torch.Tensor, word_ids: torch.Tensor, n_words: torch.Tensor) -> torch.Tensor:
        """Transformer outputs ``(B, n_visual + W, D)`` for frame features and (masked) word ids."""
        if word_ids.shape[1] > self.config.max_words:
            raise ValueError(f"at most max_words={self.config.max_words} word slots, got {word_ids.shape[1]}")
        # The range check reads the values: free for host tensors (the loader's word counts are made
        # on the host), a device sync per step for device ones, which are therefore not read here
        # (masked_attention's kernels never index past L whatever n_text holds).
        if n_words.device.type == "cpu" and not torch.compiler.is_compiling():
            check_n_text_range(n_words, self.n_visual, self.n_visual + word_ids.shape[1])
        n_words = n_words.to(device=features.device, dtype=torch.int32, non_blocking=True)
        return self.transformer(self._tokens(features, word_ids), self.n_visual, n_words)

    @torch.no_grad()
    def encode_video(self, clips: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Visual representation x (the CLS output) with text ``[MASK]`` (paper §3.3.2).

        ``clips``: ``(B, T, 3, H, W)``, or ``(B, N, T, 3, H, W)`` for N clips per video, whose
        representations are averaged. ``batch_size`` bounds how many clips go through at once.
        """
        n_clips = 1
        if clips.dim() == (4 if self.encoder is None else 6):
            n_clips = clips.shape[1]
            clips = clips.flatten(0, 1)
        chunks = clips.split(batch_size) if batch_size else (clips,)
        outs = []
        for chunk in chunks:
            B = chunk.shape[0]
            words = torch.full((B, 1), WordVocab.mask_id, dtype=torch.long, device=chunk.device)
            n_words = torch.ones(B, dtype=torch.int32, device=chunk.device)
            outs.append(self.encode_tokens(self.frame_features(chunk), words, n_words)[:, 0])
        x = torch.cat(outs)
        return x.view(-1, n_clips, x.shape[-1]).mean(1)

    # ---- the model contract ------------------------------------------------------------------------

    @property
    def inputs(self) -> ModelInputs:
        c = self.config
        return ModelInputs(frames=c.frames, image_size=c.image_size,
                           feature_dim=c.feature_dim if c.feature_input else None, label_words=True)

    def model_args(self) -> dict[str, Any]:
        return self.config.to_dict()

    def tokenize_labels(self, labels) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vocab.encode_batch(list(labels), self.config.max_words)

    def encode(self, batch) -> torch.Tensor:
        return self.encode_video(batch.clips)

    def encode_and_score(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encode_video(batch.clips)
        with torch.no_grad():
            return x, self.cls_head(x)

    @torch.no_grad()
    def seen_logits(self, batch, stage: str | None = None) -> torch.Tensor:
        if stage == "warmup":
            clips = batch.clips
            n_clips = 1
            if clips.dim() == (4 if self.encoder is None else 6):
                n_clips = clips.shape[1]
                clips = clips.flatten(0, 1)
            logits = self.warmup_head(self.frame_features(clips).mean(1))
            return logits.view(-1, n_clips, logits.shape[-1]).mean(1)
        return self.cls_head(self.encode_video(batch.clips))

    def training_stages(self) -> list[TrainingStage]:
        objective = self.config.objective

        def joint_trains(name: str) -> bool:
            if name.startswith("warmup_head."):
                return False
            if objective == "cls" and name.startswith("mtl_head."):
                return False
            return not (objective == "mlm" and name.startswith("cls_head."))

        joint = TrainingStage("joint", joint_trains, epochs=50, optimizer="adamw", lr=1.5e-4, weight_decay=0.05)
        if self.encoder is None:  # feature input: no frame encoder to warm up
            return [joint]
        warmup = TrainingStage("warmup", lambda name: name.startswith(("encoder.", "warmup_head.")),
                               epochs=150, optimizer="sgd", lr=0.01, weight_decay=1e-4)
        return [warmup, joint]

    def forward_train(self, batch, stage: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if stage == "warmup":
            return self.forward_warmup(batch.clips, batch.labels)
        if batch.word_ids is None or batch.n_words is None:
            raise ValueError("ResT's joint stage needs batch.word_ids and batch.n_words (the labels' words; "
                             "see ResT.tokenize_labels)")
        return self.forward_joint(batch.clips, batch.labels, batch.word_ids, batch.n_words, generator)

    def parts(self) -> dict[str, nn.Module | None]:
        return {"backbone": self.encoder, "projection": self.proj, "transformer": self.transformer}

    def describe(self) -> dict[str, Any]:
        c = self.config
        # Tokens of the inference sequence: [CLS, frame tokens, [MASK]].
        return {"backbone": None if c.feature_input else c.backbone, "tokens": self.n_visual + 1}

    def training_parts(self) -> dict[str, nn.Module | None]:
        return {"cls_head": self.cls_head, "mtl_head": self.mtl_head, "warmup_head": self.warmup_head}

    # ---- training --------------------------------------------------------------------------------

    def forward_joint(self, clips: torch.Tensor, labels: torch.Tensor, word_ids: torch.Tensor,
                      n_words: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Joint-stage forward: ``{"loss", "loss_cls", "loss_mtl", "logits"}`` (unused losses are 0)."""
        c = self.config
        masked_ids, targets = mask_words(word_ids, n_words, c.mask_prob, generator)
        out = self.encode_tokens(self.frame_features(clips), masked_ids, n_words)
        logits = self.cls_head(out[:, 0])
        zero = out.new_zeros(())
        loss_cls = F.cross_entropy(logits, labels) if c.objective in ("both", "cls") else zero
        loss_mtl = zero
        if c.objective in ("both", "mlm"):
            loss_mtl = self.mtl_head.loss(out[:, self.n_visual:], targets)
        weight = c.mtl_weight if c.objective == "both" else 1.0
        return {"loss": loss_cls + weight * loss_mtl, "loss_cls": loss_cls, "loss_mtl": loss_mtl, "logits": logits}

    def forward_warmup(self, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1: classify temporally averaged frame features with F alone."""
        logits = self.warmup_head(self.frame_features(clips).mean(1))
        loss = F.cross_entropy(logits, labels)
        return {"loss": loss, "loss_cls": loss, "logits": logits}


# ---- registration (paper §4.1 and Table 4; ``rest_tiny`` is for tests and CPU demos) -------------------


def build_rest(defaults: dict, class_names=None, backbone_weights=None, **overrides) -> ResT:
    """A ResT of a variant's ``defaults`` updated by ``overrides`` (fields of :class:`ResTConfig`).

    Args:
        class_names: the seen classes; set ``num_classes`` and the masked-token vocabulary unless
            given. None when rebuilding from :meth:`ResT.model_args`.
        backbone_weights: torchvision weights for the frame encoder, an enum name such as
            ``"ResNet18_Weights.IMAGENET1K_V1"`` or a state-dict file; read once, not recorded in
            the config.
    """
    if class_names is not None:
        # The seen classes set the classifier's width and the masked-token vocabulary.
        overrides.setdefault("num_classes", len(class_names))
        overrides.setdefault("vocab", WordVocab.from_labels(list(class_names)).to_list())
    model = ResT(ResTConfig.from_dict({**defaults, **overrides}))
    if backbone_weights is not None:
        if model.encoder is None:
            raise ValueError("backbone_weights given to a feature-input ResT (it has no frame encoder)")
        load_backbone_weights(model.encoder, backbone_weights)
    return model


#: name -> the ResT variant registered under it (the paper's §4.1 and Table 4).
REST_VARIANTS: dict[str, Variant] = {
    "rest18": Variant("ResT with a ResNet-18 frame encoder over 16 frames (the paper's main model)",
                      dict(backbone="resnet18", frames=16)),
    "rest34": Variant("ResT with a ResNet-34 frame encoder over 8 frames (Table 4)",
                      dict(backbone="resnet34", frames=8)),
    "rest101": Variant("ResT with a ResNet-101 frame encoder over 4 frames (Table 4)",
                       dict(backbone="resnet101", frames=4)),
    "rest_vgg16": Variant("ResT with a VGG-16 frame encoder over 16 frames (Table 4)",
                          dict(backbone="vgg16", frames=16)),
    "rest_mobilenet_v2": Variant("ResT with a MobileNet-v2 frame encoder over 16 frames (Table 4)",
                                 dict(backbone="mobilenet_v2", frames=16)),
    "rest_googlenet": Variant("ResT with a GoogLeNet frame encoder over 16 frames (Table 4)",
                              dict(backbone="googlenet", frames=16)),
    "rest_r2plus1d": Variant("ResT with an R(2+1)D-18 clip encoder over 16 frames of 112 x 112 (Table 4)",
                             dict(backbone="r2plus1d_18", frames=16, image_size=112)),
    "rest_tiny": Variant("A small ResT (a few-layer CNN, width 64, 2 blocks) for tests and the CPU demo",
                         dict(backbone="tiny", frames=8, image_size=64, dim=64, depth=2, heads=4, mlp_dim=128,
                              dropout=0.0)),
}
register_variants(build_rest, REST_VARIANTS)


#: The registered variant of each backbone, for checkpoints of the first format (which recorded no name).
_VARIANT_OF_BACKBONE = {variant.defaults["backbone"]: name for name, variant in REST_VARIANTS.items()}


def _legacy_config(model_config: dict) -> tuple[str, dict]:
    # Checkpoints of the first format stored the full ResTConfig, so any variant rebuilds them; the
    # one with the same backbone keeps the recorded name meaningful.
    return _VARIANT_OF_BACKBONE.get(model_config.get("backbone"), "rest18"), model_config


register_legacy_config("ResT", _legacy_config)
