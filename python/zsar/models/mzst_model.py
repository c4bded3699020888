"""The MZST model (:class:`MZST`): backbone tokens, the AVT fusion network, the heads and losses.

Built and registered by :mod:`zsar.models.mzst`; configured by :class:`~zsar.models.mzst_config.MZSTConfig`.
"""

from __future__ import annotations

import bisect
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..text.vocab import WordVocab, mask_words
from .backbones import AUDIO_BACKBONES, VIDEO_BACKBONES
from ..data.audio import AudioSpec
from .base import ModelInputs, TrainingStage, ZeroShotModel
from .fusion import AVTFusion, BranchHeads, LateFusion, TextStream
from .layers import MaskedWordHead, init_transformer_weights
from .mzst_config import MZSTConfig

__all__ = ["MZST"]


class MZST(ZeroShotModel):
    """The multimodal zero-shot transformer (see the module docstring; design notes: ``docs/mzst.md``).

    Built by :func:`zsar.models.create_model` (``"mzst"``, ``"mzst_tiny"``) with ``class_names`` (the
    seen classes) and ``class_embeddings`` (their label embeddings phi ``(C, embed_dim)``, the
    semantic loss's targets, saved with the weights; or :meth:`set_class_embeddings`).

    The paper's rows and the settings that reproduce them (``model_args`` of ``zsar train`` with
    model ``mzst``; "K595+ImageNet" is ``video_weights`` = an MViTv2-S trained on K595 by the
    recipe in ``docs/mzst.md`` and ``audio_weights="timm/deit_base_distilled_patch16_384.fb_in1k"``):

    * Table 4 MViT-v2 (V) / AST (A): ``modalities=["video"]`` / ``["audio"]``.
    * Table 5/7 MZST (A, V), AVT Fusion + L_Task + L_SE + L_MLM: the defaults.
    * Table 7 Feature Concatenation: ``fusion="concat", losses=["task", "se"]`` (each branch trained
      on its own losses, f(x) the concatenated branch embeddings). With "VGG" pretraining: the same
      on precomputed features.
    * Table 7 Bottleneck Transformer (AV fusion without the text stream): ``losses=["task", "se"]``.
    * Table 7 AVT Fusion + L_Task: ``losses=["task"], text_stream=True, heads_from="joint_pass"``;
      + L_SE: ``losses=["task", "se"], text_stream=True, heads_from="joint_pass"``.
    * Table 8 S2V not normalised / normalised: the default embedder (``{type: sentence, normalize:
      false}``) / ``normalize_targets=True``; W2V: ``embedder: {type: word_vectors, path: ...}``
      with ``normalize_targets`` false / true.
    * Table 6 (GZSL, no calibration): ``zsar gzsl`` reports ``uncalibrated`` (beta = 0) beside AVCA's
      calibrated scores.

    Defaults that are the paper's: 16 frames of 224^2, MViTv2-S and AST-Base with non-overlapping
    16 x 16 audio patches (512 tokens; ``audio_patch_stride=10`` gives AST's 1,212), 4 fusion tokens
    from N(0, 0.02), the three losses with lambda = sigma = 0.25 / 0.1 / 0.05 over epochs 1-20 / 21-40
    / 41+, unnormalised sentence-embedding targets, phi(s_v) + phi(s_t) where a video has s_v,
    AdamW at lr 1e-4 for 100 epochs (constant lr and batch 64: ``docs/recipes/mzst_paper.yaml``),
    evaluation over 4 clips x 3 crops. Everything else (fusion width 768 and 4 blocks, which CLS
    the heads read, weight decay 0.05, the cosine schedule of ``zsar train``) is this package's
    choice, listed in ``docs/mzst.md``.
    """

    zero_shot_head = "semantic_embedding"
    flop_convention = "macs"  # torchvision's and fvcore's figures (MViTv2-S: 64.2 GFLOPs)

    def __init__(self, config: MZSTConfig, class_embeddings=None):
        super().__init__()
        self.config = c = config
        self.vocab = WordVocab.from_list(c.vocab) if c.vocab else WordVocab([])
        self.use_video, self.use_audio = "video" in c.modalities, "audio" in c.modalities
        self.with_mlm = "mlm" in c.losses
        self.with_text = c.text_stream if c.text_stream is not None else self.with_mlm
        D = c.dim

        self.video_encoder, self.audio_encoder = self._build_encoders(c)
        self.num_video_tokens = self.video_encoder.num_tokens if self.use_video else 0
        self.num_audio_tokens = self.audio_encoder.num_tokens if self.use_audio else 0
        self.video_proj = nn.Linear(self.video_encoder.dim, D) if self.use_video else None
        self.audio_proj = nn.Linear(self.audio_encoder.dim, D) if self.use_audio else None
        # Learned embeddings: 0 video tokens, 1 audio tokens (CLS tokens have their own).
        self.modality_embed = nn.Parameter(torch.zeros(2, D))

        if c.fusion == "bottleneck":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))  # CLS_V
            self.fusion = AVTFusion(D, c.fusion_blocks, c.heads, c.mlp_dim, c.fusion_tokens, c.fusion_order, c.dropout,
                                    c.attention_backend)
        else:
            self.cls_token = None
            self.fusion = LateFusion(c.modalities, D, c.fusion_blocks, c.heads, c.mlp_dim, c.dropout, c.attention_backend)
        self.text_stream = self.mlm_head = None
        if self.with_text:
            self.text_stream = TextStream(len(self.vocab), D, c.fusion_blocks, c.heads, c.mlp_dim, c.max_words, c.dropout,
                                          c.attention_backend)
        if self.with_mlm:
            self.mlm_head = MaskedWordHead(D, len(self.vocab))

        def heads(make):  # concatenation: one head per branch (see BranchHeads)
            return make() if c.fusion == "bottleneck" else BranchHeads(c.modalities, make)

        self.task_head = heads(lambda: nn.Linear(D, c.num_classes)) if "task" in c.losses else None
        self.semantic_head = heads(lambda: nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, c.embed_dim))) \
            if "se" in c.losses else None

        self.register_buffer("class_embeddings", torch.zeros(c.num_classes, c.embed_dim))
        # [training samples seen, of which with a video classifier's label]: scales the class targets.
        self.register_buffer("se_target_counts", torch.zeros(2, dtype=torch.int64))
        self._has_class_embeddings = False
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_has_class_embeddings", True))
        self._epoch = 0
        self._init_weights()
        if class_embeddings is not None:
            self.set_class_embeddings(class_embeddings)

    def _build_encoders(self, c: MZSTConfig) -> tuple[nn.Module | None, nn.Module | None]:
        """The modules that turn each stream's input into tokens (``num_tokens``, ``dim``): the backbones.
        Feature-input models (:mod:`zsar.models.feature_input`) put their feature stems here instead."""
        video = VIDEO_BACKBONES[c.video_backbone](c.frames, c.image_size) if self.use_video else None
        audio = AUDIO_BACKBONES[c.audio_backbone](c.audio_length, c.mel_bins, c.audio_patch_stride) if self.use_audio else None
        return video, audio

    def _init_weights(self):
        # Everything but the backbones (their own init) and the fusion tokens (N(0, 0.02), set above).
        init_transformer_weights([self.video_proj, self.audio_proj, self.fusion, self.text_stream, self.task_head,
                                  self.semantic_head, self.mlm_head])
        for name, p in self.named_parameters():
            own_token = not name.startswith(("video_encoder.", "audio_encoder."))
            if own_token and name.endswith(("cls_token", "cls_tokens", "word_pos", "modality_embed")):
                nn.init.trunc_normal_(p, std=0.02)

    # ---- the contract ----------------------------------------------------------------------------

    @property
    def inputs(self) -> ModelInputs:
        c = self.config
        audio = (AudioSpec(target_length=c.audio_length, mel_bins=c.mel_bins, required=not self.use_video)
                 if self.use_audio else None)
        return ModelInputs(frames=c.frames, image_size=c.image_size, audio=audio, label_words=self.with_text,
                           mean=c.pixel_mean, std=c.pixel_std, eval_clips=c.eval_clips,
                           eval_crop="three" if c.eval_crops == 3 else "center")

    def model_args(self) -> dict[str, Any]:
        """The config as JSON-able builder arguments (the class embeddings travel with the weights)."""
        return self.config.to_dict()

    def tokenize_labels(self, labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vocab.encode_batch(labels, self.config.max_words)

    def training_stages(self) -> list[TrainingStage]:
        c = self.config
        frozen = ("video_encoder.", "audio_encoder.") if c.freeze_backbones else ()
        return [TrainingStage(name="joint", trains=lambda name: not name.startswith(frozen) if frozen else True,
                              epochs=c.epochs, optimizer="adamw", lr=c.lr, weight_decay=c.weight_decay)]

    def set_epoch(self, epoch: int) -> None:
        """The current training epoch (0-based), which picks the loss weights (:meth:`loss_weights`)."""
        self._epoch = int(epoch)

    def loss_weights(self, epoch: int | None = None) -> tuple[float, float]:
        """``(lambda, sigma)``: the weights of L_SE and L_MLM at ``epoch`` (default: the current one)."""
        c = self.config
        period = bisect.bisect_right(c.loss_milestones, self._epoch if epoch is None else epoch)
        return c.se_weights[period], c.mlm_weights[period]

    def set_class_embeddings(self, embeddings) -> None:
        """The seen classes' label embeddings phi ``(num_classes, embed_dim)`` (tensor, array or nested lists)."""
        e = torch.as_tensor(embeddings, dtype=torch.float32)
        expected = tuple(self.class_embeddings.shape)
        if tuple(e.shape) != expected:
            raise ValueError(f"class_embeddings must have shape {expected} (num_classes, embed_dim), got {tuple(e.shape)}")
        if not torch.isfinite(e).all():
            raise ValueError("class_embeddings hold non-finite values")
        self.class_embeddings.copy_(e)
        self._has_class_embeddings = True

    def class_embedding_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Where f(x) of a class with label embedding phi should land: phi (normalised when the model
        was trained on normalised targets) times 1 + the fraction of training samples whose target
        also held a video classifier's label embedding; with feature concatenation, repeated once per
        branch (f(x) concatenates the branches' embeddings). Zero-shot compares f(x) with these."""
        targets = self._branch_targets(embeddings)
        return targets.repeat(1, len(self.config.modalities)) if self.config.fusion == "concat" else targets

    def _branch_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        e = F.normalize(embeddings, dim=-1) if self.config.normalize_targets else embeddings
        seen, with_video_label = self.se_target_counts.tolist()
        return e * (1.0 + with_video_label / seen if seen else 1.0)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_backbones:  # frozen backbones never use dropout or stochastic depth
            for enc in (self.video_encoder, self.audio_encoder):
                if enc is not None:
                    enc.eval()
        return self

    def parts(self) -> dict[str, nn.Module]:
        """The modules :meth:`encode` runs: backbones, projections, the fusion network and the head
        that gives f(x) (the semantic head; the task head when f(x) is its ConSE mix)."""
        parts = {"backbone_video": self.video_encoder, "backbone_audio": self.audio_encoder,
                 "projection_video": self.video_proj, "projection_audio": self.audio_proj, "fusion": self.fusion,
                 "semantic_head": self.semantic_head if self.semantic_head is not None else self.task_head}
        return {name: module for name, module in parts.items() if module is not None}

    def training_parts(self) -> dict[str, nn.Module]:
        """Modules only training runs: the text stream, the MLM head and (beside a semantic head) the task head."""
        parts = {"text_stream": self.text_stream, "mlm_head": self.mlm_head,
                 "task_head": self.task_head if self.semantic_head is not None else None}
        return {name: module for name, module in parts.items() if module is not None}

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"modalities": list(c.modalities),
                "video_backbone": c.video_backbone if self.use_video else None,
                "audio_backbone": c.audio_backbone if self.use_audio else None,
                "video_tokens": self.num_video_tokens, "audio_tokens": self.num_audio_tokens,
                "fusion": c.fusion, "fusion_blocks": c.fusion_blocks, "fusion_tokens": c.fusion_tokens, "dim": c.dim}

    # ---- encoding --------------------------------------------------------------------------------

    def _backbone(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.config.freeze_backbones:
            with torch.no_grad():
                return encoder(x)
        return encoder(x)

    def _tokens(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, int, int]:
        """Projected tokens per modality ``{"video": (B*N, Nv, D), "audio": (B*N, Na, D)}``, audio
        presence ``(B*N,)`` (None: no audio modality), videos B and clips per video N."""
        c, tokens = self.config, {}
        B, n_clips, present = len(batch), 1, None
        if self.use_video:
            clips = batch.clips
            if clips.dim() == 6:
                n_clips = clips.shape[1]
                clips = clips.flatten(0, 1)
            if clips.dim() != 5 or tuple(clips.shape[1:3]) != (c.frames, 3):
                raise ValueError(f"clips must have shape (B, {c.frames}, 3, H, W) or (B, N, {c.frames}, 3, H, W), "
                                 f"got {tuple(batch.clips.shape)}")
            tokens["video"] = self.video_proj(self._backbone(self.video_encoder, clips)) + self.modality_embed[0]
        if self.use_audio:
            audio, present = batch.audio, batch.audio_present
            per_clip = audio is not None and audio.dim() == 4
            if audio is not None and per_clip:
                n_clips = audio.shape[1]
            if present is None:
                present = torch.full((B,), audio is not None, dtype=torch.bool, device=self.device)
            present = present.to(self.device).repeat_interleave(n_clips)
            expected = (c.audio_length, c.mel_bins)
            if audio is not None and tuple(audio.shape[-2:]) != expected:
                raise ValueError(f"audio must have shape (B, {expected[0]}, {expected[1]}) (AST log-mel frames x bins), "
                                 f"got {tuple(audio.shape)}")
            # Skip AST when no sample has audio (checking costs one sync; not on meta tensors).
            if audio is None or (not present.is_meta and not bool(present.any())):
                feats = self.audio_proj.weight.new_zeros(B * n_clips, self.num_audio_tokens, c.dim)
            else:
                feats = self.audio_proj(self._backbone(self.audio_encoder, audio.flatten(0, 1) if per_clip else audio))
                if not per_clip and n_clips > 1:  # one AST pass per video, shared by its clips
                    feats = feats.repeat_interleave(n_clips, 0)
            tokens["audio"] = feats + self.modality_embed[1]
        return tokens, present, B, n_clips

    def _av_stream(self, tokens, present):
        """``[CLS_V, video, audio]`` ``(B, L, D)`` and the valid count per sample (audio last, so missing
        audio is padding)."""
        parts, n_valid = [self.cls_token.expand(next(iter(tokens.values())).shape[0], -1, -1)], 1
        if "video" in tokens:
            parts.append(tokens["video"])
            n_valid += self.num_video_tokens
        n_valid = torch.full((parts[0].shape[0],), n_valid, dtype=torch.int32, device=parts[0].device)
        if "audio" in tokens:
            parts.append(tokens["audio"])
            n_valid = n_valid + present.to(torch.int32) * self.num_audio_tokens
        return torch.cat(parts, 1), n_valid

    def _representations(self, batch, text=None):
        """``(h, text_out, B, N)``: the head input per clip ``(B*N, D')`` and, with ``text = (word_ids,
        n_words)``, the text stream's word outputs of the joint pass ``(B, W, D)``."""
        tokens, present, B, n_clips = self._tokens(batch)
        if self.config.fusion == "concat":
            n = next(iter(tokens.values())).shape[0]
            n_valid = {"video": torch.full((n,), 1 + self.num_video_tokens, dtype=torch.int32, device=self.device)}
            if present is not None:
                n_valid["audio"] = 1 + present.to(torch.int32) * self.num_audio_tokens
            return self.fusion(tokens, n_valid), None, B, n_clips
        av, av_valid = self._av_stream(tokens, present)
        if text is None:
            return self.fusion(av, av_valid)[0][:, 0], None, B, n_clips
        word_ids, n_words = text
        text_valid = 1 + n_words.to(device=av.device, dtype=torch.int32)
        av_out, text_out = self.fusion(av, av_valid, self.text_stream.tokens(word_ids), text_valid, self.text_stream,
                                       text_free_av=self.config.heads_from == "av_pass")
        return av_out[:, 0], text_out[:, 1:], B, n_clips

    def _semantic(self, h: torch.Tensor) -> torch.Tensor:
        """f(x) ``(B, embed_dim)``; with feature concatenation the branches' embeddings concatenated."""
        if self.semantic_head is not None:
            return self.semantic_head(h).flatten(1)
        # ConSE: the task head's belief over the seen classes, as a mix of their targets.
        return (self.task_head(h).softmax(-1) @ self._branch_targets(self.class_embeddings).to(h.dtype)).flatten(1)

    def _seen_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.task_head is not None:
            logits = self.task_head(h)
            return logits.mean(1) if logits.dim() == 3 else logits  # concatenation: the branches' mean
        targets = self.class_embedding_targets(self.class_embeddings).to(h.dtype)
        return -torch.cdist(self.semantic_head(h), targets).pow(2)

    def encode(self, batch) -> torch.Tensor:
        """f(x) ``(B, embed_dim)`` from the AV stream alone, averaged over each video's clips."""
        h, _, B, n_clips = self._representations(batch)
        return self._semantic(h).view(B, n_clips, -1).mean(1)

    def encode_and_score(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(encode(batch), seen_logits(batch))`` from one pass."""
        h, _, B, n_clips = self._representations(batch)
        return self._semantic(h).view(B, n_clips, -1).mean(1), self._seen_logits(h).view(B, n_clips, -1).mean(1)

    def seen_logits(self, batch, stage: str | None = None) -> torch.Tensor:
        """Task-head scores over the seen classes ``(B, num_classes)``, averaged over clips."""
        h, _, B, n_clips = self._representations(batch)
        logits = self._seen_logits(h)
        return logits.view(B, n_clips, -1).mean(1)

    # ---- training --------------------------------------------------------------------------------

    def forward_train(self, batch, stage: str = "joint", generator: torch.Generator | None = None):
        """``{"loss", "loss_task", "loss_se", "loss_mlm", "logits"}`` (the parts in ``config.losses``)."""
        c = self.config
        if (batch.clips.dim() == 6 and self.use_video) or (batch.audio is not None and batch.audio.dim() == 4):
            raise ValueError("training takes one clip per video: clips (B, T, 3, H, W), audio (B, frames, mel_bins)")
        labels = batch.labels.to(self.device)
        text = None
        if self.with_text:
            if batch.word_ids is None or batch.n_words is None:
                raise ValueError("the text stream needs batch.word_ids and batch.n_words (model.tokenize_labels of "
                                 "each sample's label)")
            word_ids = batch.word_ids.to(self.device)
            if word_ids.shape[1] > c.max_words:
                raise ValueError(f"at most max_words={c.max_words} word slots, got {word_ids.shape[1]}")
            if self.with_mlm:
                word_ids, targets = mask_words(word_ids, batch.n_words, c.mask_prob, generator)
            text = (word_ids, batch.n_words)
        h, text_out, _, _ = self._representations(batch, text)
        se_weight, mlm_weight = self.loss_weights()
        out: dict[str, torch.Tensor] = {}
        loss = h.new_zeros(())
        if self.task_head is not None:
            logits = self.task_head(h)
            if logits.dim() == 3:  # concatenation: each branch's own loss, averaged over the branches
                out["loss_task"] = F.cross_entropy(logits.flatten(0, 1).float(), labels.repeat_interleave(logits.shape[1]))
                logits = logits.mean(1)
            else:
                out["loss_task"] = F.cross_entropy(logits.float(), labels)
            out["logits"] = logits.detach()
            loss = loss + out["loss_task"]
        if self.semantic_head is not None:
            out["loss_se"] = self._se_loss(self.semantic_head(h).float(), labels, batch)
            loss = loss + se_weight * out["loss_se"]
        if self.with_mlm:
            out["loss_mlm"] = self.mlm_head.loss(text_out, targets)
            loss = loss + mlm_weight * out["loss_mlm"]
        out["loss"] = loss
        return out

    def _se_loss(self, f: torch.Tensor, labels: torch.Tensor, batch) -> torch.Tensor:
        if not self._has_class_embeddings:
            raise RuntimeError("the semantic loss needs the seen classes' label embeddings: build the model with "
                               "class_embeddings= or call model.set_class_embeddings(...)")
        norm = (lambda e: F.normalize(e, dim=-1)) if self.config.normalize_targets else (lambda e: e)
        target = norm(self.class_embeddings[labels].float())
        # phi(s_v): the label a pretrained video classifier gave the video, where the dataset has one.
        video_label = getattr(batch, "video_label_embedding", None)
        n_with = torch.zeros((), dtype=torch.int64, device=f.device)
        if video_label is not None:
            present = getattr(batch, "video_label_present", None)
            present = torch.ones(len(batch), dtype=torch.bool) if present is None else present
            present = present.to(f.device)
            target = target + torch.where(present[:, None], norm(video_label.to(f.device).float()), 0.0)
            n_with = present.sum()
        if self.training:
            self.se_target_counts += torch.stack([n_with.new_tensor(len(batch)), n_with])
        if f.dim() == 3:  # concatenation: each branch regresses the target on its own
            target = target[:, None]
        return (f - target).pow(2).sum(-1).mean()
