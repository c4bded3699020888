"""MZST: the multimodal zero-shot transformer (video + audio + text, attention-bottleneck fusion).

From "A Multimodal Benchmark and Improved Architecture for Zero Shot Learning" (Doshi et al.; the
MZST paper, §4-5). A video clip goes through torchvision's MViTv2-S and its audio (AST's log-mel input,
:func:`zsar.data.audio_features`) through an Audio Spectrogram Transformer built on Hugging Face
transformers' ``ASTModel``; both token sequences are projected to the fusion width and fused with
the label text by the AVT fusion network, K blocks of attention-bottleneck transformer layers:

* audio-video stream ``[CLS_V, video tokens, audio tokens, F]``, text stream ``[CLS_T, word
  tokens, F]``, with ``L_f`` shared fusion tokens F;
* in each block the AV layer updates F to F_AV, the text layer runs with F_AV and gives F_T, and
  the next F is (F_AV + F_T) / 2 (the paper's Eq. 2 and the sentence after it);
  ``fusion_order="parallel"`` gives both layers the same F instead (MBT's order);
* attention is :func:`bottleneck_attention` over each stream's buffer: every valid token attends
  every valid token, padding (missing audio, unused word slots) is skipped.

Heads on the CLS_V output: a linear task head over the seen classes (cross-entropy) and the semantic
head f(x), an MLP into the label embedder's space, trained with
``L_SE = ||f(x) - (phi(s_v) + phi(s_t))||^2``; a masked-language-model head on the text stream's
word outputs. ``L = L_task + lambda * L_SE + sigma * L_MLM`` with the paper's schedule for lambda
and sigma. Zero-shot: the nearest class embedding to f(x) (head ``"semantic_embedding"``).

Registered as ``mzst`` (the paper's sizes) and ``mzst_tiny`` (a small MViT and AST for CPU tests
and the demo). :class:`MZST` documents every choice the paper leaves open.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops as fused_ops
from ..config import from_dict as config_from_dict
from ..text.embedders import _quiet_model_loading
from ..text.vocab import WordVocab, mask_words
from .base import AudioSpec, ModelInputs, TrainingStage, ZeroShotModel
from .layers import Mlp, init_transformer_weights
from .registry import register_model

__all__ = ["MZST", "MZSTConfig", "VIDEO_BACKBONES", "AUDIO_BACKBONES", "bottleneck_attention"]

MODALITIES = ("video", "audio")
LOSSES = ("task", "se", "mlm")
FUSIONS = ("bottleneck", "concat")
FUSION_ORDERS = ("sequential", "parallel")
HEADS_FROM = ("av_pass", "joint_pass")


# ---- attention -----------------------------------------------------------------------------------


def bottleneck_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_valid: torch.Tensor,
                         n_fusion: int) -> torch.Tensor:
    """Attention of every fusion layer: the fused op :func:`zsar.ops.bottleneck_attention`.

    ``q, k, v``: ``(B, H, L, Dh)``. The valid positions of sample b are ``[0, n_valid[b])`` and the
    last ``n_fusion``; every valid query attends every valid key, padding rows are 0 and are never
    attended. The model builds ``n_valid`` itself, so its range is not read back (no device sync per
    layer); the kernels clamp it either way.
    """
    return fused_ops.bottleneck_attention(q, k, v, n_valid.to(torch.int32), n_fusion, check_n_valid=False)


# ---- backbones -----------------------------------------------------------------------------------


def _conv_out(size: Sequence[int], conv: nn.Module) -> list[int]:
    return [(s + 2 * p - k) // st + 1 for s, k, st, p in zip(size, conv.kernel_size, conv.stride, conv.padding)]


class MViTTokens(nn.Module):
    """A torchvision MViT without its classifier: clips ``(B, T, 3, H, W)`` -> the final stage's
    tokens ``(B, T' H' W', C)`` after the final norm (its class token dropped)."""

    def __init__(self, net: nn.Module, frames: int, image_size: int):
        super().__init__()
        net.head = nn.Identity()  # the Kinetics classifier is not used
        self.net = net
        thw = _conv_out((frames, image_size, image_size), net.conv_proj)
        for block in net.blocks:
            if block.attn.pool_q is not None:
                thw = _conv_out(thw, block.attn.pool_q.pool)
        self.grid = tuple(thw)
        self.num_tokens = math.prod(thw)
        self.dim = net.norm.normalized_shape[0]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.conv_proj(clips.transpose(1, 2))  # (B, C, T', H', W')
        x = net.pos_encoding(x.flatten(2).transpose(1, 2))
        thw = (net.pos_encoding.temporal_size,) + tuple(net.pos_encoding.spatial_size)
        for block in net.blocks:
            x, thw = block(x, thw)
        return net.norm(x)[:, 1:]


def _mvit_v2_s(frames: int, image_size: int) -> MViTTokens:
    from torchvision.models.video import mvit_v2_s

    # torchvision builds MViTv2-S for 16 x 224^2 only (its relative position tables are sized for it).
    if (frames, image_size) != (16, 224):
        raise ValueError(f"mvit_v2_s takes 16 frames of 224 x 224 (torchvision's fixed input), got frames={frames}, "
                         f"image_size={image_size}")
    return MViTTokens(mvit_v2_s(weights=None), frames, image_size)


def _mvit_tiny(frames: int, image_size: int) -> MViTTokens:
    """Two MViTv2 blocks (widths 32 -> 64, one query pooling) over 2x8x8 patches: 64 tokens from 8x64x64."""
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    def block(heads, c_in, c_out, stride_q, stride_kv):
        return MSBlockConfig(num_heads=heads, input_channels=c_in, output_channels=c_out, kernel_q=[3, 3, 3],
                             kernel_kv=[3, 3, 3], stride_q=stride_q, stride_kv=stride_kv)

    net = MViT(spatial_size=(image_size, image_size), temporal_size=frames,
               block_setting=[block(1, 32, 64, [1, 2, 2], [1, 2, 2]), block(2, 64, 64, [1, 1, 1], [1, 1, 1])],
               residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
               dropout=0.0, num_classes=1, patch_embed_stride=(2, 8, 8))
    return MViTTokens(net, frames, image_size)


class ASTTokens(nn.Module):
    """Hugging Face's ``ASTModel``: log-mel ``(B, frames, mel_bins)`` -> its patch tokens after the
    final norm ``(B, F' x T', hidden)`` (the CLS and distillation tokens dropped)."""

    def __init__(self, config):
        super().__init__()
        from transformers import ASTModel

        self.net = ASTModel(config)
        f, t = self.net.embeddings.get_shape(config)
        self.grid = (f, t)
        self.num_tokens = f * t
        self.dim = config.hidden_size

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio).last_hidden_state[:, 2:]


def _ast(audio_length: int, mel_bins: int, **sizes) -> ASTTokens:
    from transformers import ASTConfig

    return ASTTokens(ASTConfig(max_length=audio_length, num_mel_bins=mel_bins, **sizes))


#: Video backbones: name -> builder ``(frames, image_size) -> MViTTokens``.
VIDEO_BACKBONES: dict[str, Callable[[int, int], MViTTokens]] = {
    "mvit_v2_s": _mvit_v2_s,  # 34.5 M parameters; 16 x 224^2 -> 8 x 7 x 7 = 392 tokens of 768
    "mvit_tiny": _mvit_tiny,
}
#: Audio backbones: name -> builder ``(audio_length, mel_bins) -> ASTTokens``.
AUDIO_BACKBONES: dict[str, Callable[[int, int], ASTTokens]] = {
    # ViT-B/16, 16 x 16 patches with stride 10: 128 x 1024 -> 12 x 101 = 1,212 tokens of 768
    "ast_base": lambda length, mel: _ast(length, mel),
    "ast_tiny": lambda length, mel: _ast(length, mel, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, frequency_stride=16, time_stride=16),
}


def _read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a PyTorch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise ValueError(f"{what}: cannot read {path} as PyTorch weights ({e})") from e
    for key in ("state_dict", "model"):  # training checkpoints often wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: {path} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_video_weights(encoder: MViTTokens, path: str | Path) -> None:
    """Loads a torchvision MViT state dict (e.g. ``MViT_V2_S_Weights.KINETICS400_V1``, saved locally)
    into ``encoder``; the classifier (``head.*``) is ignored.

    Raises:
        ValueError: names or shapes differ from the encoder's (the message lists the first few).
    """
    state = {k: v for k, v in _read_state_dict(path, "video_weights").items() if not k.startswith("head.")}
    own = encoder.net.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise ValueError(f"video_weights: {path} does not match the MViT built for these frames and image size: "
                         f"shape mismatches {bad[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]}")
    encoder.net.load_state_dict(state)


def load_audio_weights(encoder: ASTTokens, source) -> None:
    """Loads AST weights into ``encoder``: a local Hugging Face folder (``config.json`` +
    ``model.safetensors``, e.g. a saved ``MIT/ast-finetuned-audioset-10-10-0.4593``), a weights file,
    or a state dict. Names of older transformers versions and an ``ASTForAudioClassification``
    prefix are converted by transformers; the classifier is ignored. Nothing is downloaded.

    Raises:
        ValueError: the weights do not fit the encoder's configuration.
    """
    from transformers import ASTModel

    own_cfg = encoder.net.config
    with _quiet_model_loading():
        if isinstance(source, dict):
            state, name = source, "the given state dict"
        elif Path(source).is_dir():
            state, name = None, str(source)
        else:
            state, name = _read_state_dict(source, "audio_weights"), str(source)
        try:
            if state is None:
                loaded, info = ASTModel.from_pretrained(str(source), local_files_only=True, use_safetensors=True,
                                                        output_loading_info=True)
            else:
                loaded, info = ASTModel.from_pretrained(None, config=own_cfg, state_dict=state,
                                                        output_loading_info=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"audio_weights: cannot load AST weights from {name}: {e}") from e
    keys = ("hidden_size", "num_hidden_layers", "patch_size", "frequency_stride", "time_stride", "max_length",
            "num_mel_bins")
    differ = {k: (getattr(loaded.config, k), getattr(own_cfg, k)) for k in keys
              if getattr(loaded.config, k) != getattr(own_cfg, k)}
    if differ or info.get("missing_keys") or info.get("mismatched_keys"):
        raise ValueError(f"audio_weights: {name} does not fit this AST: config (theirs, ours) {differ}, "
                         f"missing {sorted(info.get('missing_keys', []))[:3]}, "
                         f"mismatched {list(info.get('mismatched_keys', []))[:3]}")
    encoder.net.load_state_dict(loaded.state_dict())


# ---- fusion --------------------------------------------------------------------------------------


class FusionLayer(nn.Module):
    """Pre-norm transformer layer (the paper's Eq. 2) whose attention is :func:`bottleneck_attention`."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, n_valid: torch.Tensor, n_fusion: int) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (t.contiguous() for t in qkv)
        out = bottleneck_attention(q, k, v, n_valid, n_fusion)
        x = x + self.drop(self.proj(out.transpose(1, 2).reshape(B, L, D)))
        return x + self.mlp(self.norm2(x))


class TextStream(nn.Module):
    """The text stream's own parts, used in training only: CLS_T, word and position embeddings, one
    layer per fusion block (run by :class:`AVTFusion`) and a final norm."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, mlp_dim: int, max_words: int,
                 dropout: float = 0.0):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.word_embed = nn.Embedding(vocab_size, dim, padding_idx=WordVocab.pad_id)
        self.word_pos = nn.Parameter(torch.zeros(1, max_words, dim))
        self.layers = nn.ModuleList(FusionLayer(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, word_ids: torch.Tensor) -> torch.Tensor:
        """``[CLS_T, words]`` ``(B, 1 + W, D)`` for word ids ``(B, W)``."""
        words = self.word_embed(word_ids) + self.word_pos[:, :word_ids.shape[1]]
        return torch.cat([self.cls_token.expand(words.shape[0], -1, -1), words], 1)


class AVTFusion(nn.Module):
    """The AVT fusion network: K blocks of (AV layer, text layer) sharing ``n_fusion`` fusion tokens.

    ``forward(av, av_valid, text=None, text_valid=None, text_stream=None, text_free_av=False)``
    takes each stream's tokens without the fusion slots (``av``: ``(B, L_av, D)`` with ``av_valid``
    valid tokens per sample; ``text`` likewise, run through ``text_stream``'s layers) and returns
    the normalised outputs ``(av_out, text_out)`` of the same shapes (``text_out`` None without
    text). With text and ``text_free_av``, ``av_out`` is instead the AV stream run without text
    (what inference computes), next to the joint pass that gives ``text_out``; the two share their
    first AV layer, which text has not reached yet.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, n_fusion: int, order: str,
                 dropout: float = 0.0):
        super().__init__()
        self.n_fusion, self.order = n_fusion, order
        self.fusion_tokens = nn.Parameter(torch.randn(1, n_fusion, dim) * 0.02)  # N(0, 0.02), as in the paper
        self.av_layers = nn.ModuleList(FusionLayer(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.av_norm = nn.LayerNorm(dim)

    def _av_step(self, layer: FusionLayer, av, f, av_valid):
        out = layer(torch.cat([av, f], 1), av_valid, self.n_fusion)
        return out[:, :-self.n_fusion], out[:, -self.n_fusion:]

    def forward(self, av, av_valid, text=None, text_valid=None, text_stream: TextStream | None = None,
                text_free_av: bool = False):
        n_f = self.n_fusion
        f = self.fusion_tokens.expand(av.shape[0], -1, -1).to(av.dtype)
        alone = None  # (tokens, fusion tokens) of the text-free AV pass, when asked for
        for k, av_layer in enumerate(self.av_layers):
            av, f_av = self._av_step(av_layer, av, f, av_valid)
            if text is None:  # inference: the AV stream alone
                f = f_av
                continue
            if text_free_av:
                alone = (av, f_av) if k == 0 else self._av_step(av_layer, *alone, av_valid)
            text_layer = text_stream.layers[k]
            out = text_layer(torch.cat([text, f_av if self.order == "sequential" else f], 1), text_valid, n_f)
            text, f_text = out[:, :-n_f], out[:, -n_f:]
            f = 0.5 * (f_av + f_text)
        av_out = self.av_norm(alone[0] if alone is not None else av)
        return av_out, (text_stream.norm(text) if text is not None else None)


class StreamEncoder(nn.Module):
    """One modality's own transformer over ``[CLS, tokens]`` (no fusion tokens); returns its
    normalised CLS output."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, n_valid, 0)
        return self.norm(x[:, 0])


class LateFusion(nn.Module):
    """Feature concatenation (the paper's Table 7 ablation): a :class:`StreamEncoder` per modality
    with its own CLS token, and the CLS outputs concatenated ``(B, M x D)``."""

    def __init__(self, modalities: Sequence[str], dim: int, depth: int, heads: int, mlp_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        self.cls_tokens = nn.Parameter(torch.zeros(1, len(modalities), dim))
        self.streams = nn.ModuleDict({m: StreamEncoder(dim, depth, heads, mlp_dim, dropout) for m in modalities})

    def forward(self, tokens: dict[str, torch.Tensor], n_valid: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = []
        for i, (modality, stream) in enumerate(self.streams.items()):
            x = tokens[modality]
            x = torch.cat([self.cls_tokens[:, i:i + 1].expand(x.shape[0], -1, -1), x], 1)
            outs.append(stream(x, n_valid[modality]))
        return torch.cat(outs, -1)


# ---- the model -----------------------------------------------------------------------------------


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
    dim: int = 768
    fusion_blocks: int = 4
    heads: int = 12
    mlp_dim: int = 3072
    fusion_tokens: int = 4
    dropout: float = 0.1
    fusion: str = "bottleneck"
    fusion_order: str = "sequential"
    heads_from: str = "av_pass"
    losses: tuple[str, ...] = ("task", "se", "mlm")
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
        for name in ("modalities", "losses", "loss_milestones", "se_weights", "mlm_weights"):
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
        if self.fusion == "concat" and "mlm" in self.losses:
            raise ValueError("fusion='concat' has no fusion tokens through which words could meet the video and "
                             "audio, so the MLM loss would learn nothing about them; use losses=('task', 'se')")
        for name in ("frames", "image_size", "audio_length", "mel_bins", "dim", "fusion_blocks", "heads", "mlp_dim",
                     "fusion_tokens", "num_classes", "embed_dim", "max_words", "epochs"):
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


class MZST(ZeroShotModel):
    """The multimodal zero-shot transformer (see the module docstring for the architecture).

    Built by :func:`zsar.models.create_model` (``"mzst"``, ``"mzst_tiny"``) with ``class_names`` (the
    seen classes) and ``class_embeddings`` (their label embeddings phi, ``(C, embed_dim)``: the
    targets of the semantic loss, kept as the buffer ``class_embeddings`` and saved with the
    weights; or set later with :meth:`set_class_embeddings`). Options (fields of
    :class:`MZSTConfig`) cover the paper's ablations: ``modalities=("video",)`` or ``("audio",)``
    (Table 4's MViT-v2 and AST rows), ``fusion="concat"`` (Table 7's feature concatenation),
    ``losses`` (Table 7: ``("task",)``, ``("task", "se")``, all three), ``normalize_targets``
    (Table 8).

    Choices the paper leaves open (each configurable where it matters):

    * Backbone tokens: MViTv2-S's final-stage tokens after its final norm (its class token and
      classifier dropped), AST's patch tokens after its final norm (its CLS and distillation tokens
      dropped); each projected by a linear layer to ``dim`` plus a learned modality embedding (no
      extra position embedding: both backbones already encode position). CLS_V, CLS_T and the word
      position embeddings are learned. Backbones are randomly initialised unless user weights are
      given (``video_weights``, ``audio_weights``), as the zero-shot rule asks.
    * Each fusion block has separate AV and text layers (MBT's per-stream weights); a final
      LayerNorm per stream. Missing audio (``audio_present`` False, or no ``audio`` in the batch)
      is padding: the audio slots follow the valid prefix, so no token attends them and CLS_V is
      exactly what a stream without audio slots gives. When no sample of a batch has audio, AST
      is not run.
    * ``heads_from="av_pass"`` (default): the task and semantic heads read CLS_V from the AV stream
      run without text, exactly the inference computation, and the MLM reads the text stream of a
      second, joint pass (AV + text with the fusion-token exchange above). Read literally, the
      paper takes CLS_V from the joint pass (``heads_from="joint_pass"``), where the label words
      reach CLS_V through the averaged fusion tokens during training but never at inference, so
      the heads can learn to read the label instead of the video. The default costs a second run
      of the AV fusion layers after the first (which both passes share) per training step.
    * Semantic head f(x): Linear(dim, dim), GELU, Linear(dim, embed_dim). Task head: one Linear.
      MLM head: Linear, GELU, LayerNorm, Linear(vocab) (as ResT's). Concatenation fusion runs a
      transformer per modality over ``[CLS, tokens]`` and the heads read the concatenated CLS outputs.
    * ``L_SE``: the squared L2 distance summed over dimensions, averaged over the batch. Targets are
      phi(s_t), plus phi(s_v) where the batch carries a video classifier's label embedding
      (``batch.video_label_embedding`` ``(B, embed_dim)`` with ``batch.video_label_present``).
      ``normalize_targets`` L2-normalises each embedding. :meth:`class_embedding_targets` maps
      label embeddings to where f(x) should land (normalised when trained so, scaled by
      1 + the fraction of training samples that had phi(s_v)): zero-shot heads compare f(x) with
      those.
    * Without ``"se"`` in ``losses`` there is no semantic head, and :meth:`encode` gives the
      task head's softmax-weighted average of the seen-class targets (ConSE), so the task-only
      ablation still has a zero-shot prediction; without ``"task"``, :meth:`seen_logits` are the
      negative squared distances of f(x) to the seen-class targets.
    * Loss weights: ``lambda = se_weights[i]`` and ``sigma = mlm_weights[i]`` for the period ``i``
      of the current epoch (0-based; periods end at ``loss_milestones``): 0.25 for epochs 0-19
      (the paper's 1-20), 0.1 for 20-39, 0.05 after. The trainer reports the epoch through
      :meth:`set_epoch`. MLM: p = 0.15 per valid word, at least one per sample
      (:func:`zsar.text.vocab.mask_words`).
    * Training stage: AdamW, lr 1e-4, 100 epochs (paper), weight decay 0.05 (paper silent);
      ``freeze_backbones`` trains only the projections, fusion network and heads (the backbones
      then run without gradients, in eval mode).
    * N clips per video (``clips`` ``(B, N, T, 3, H, W)``): f(x) and the task logits are averaged
      over clips; audio ``(B, frames, mel)`` is shared by a video's clips (AST runs once per
      video) and ``(B, N, frames, mel)`` gives each clip its own.
    """

    zero_shot_head = "semantic_embedding"
    flop_convention = "macs"  # torchvision's and fvcore's figures (MViTv2-S: 64.2 GFLOPs)

    def __init__(self, config: MZSTConfig, class_embeddings=None):
        super().__init__()
        self.config = c = config
        self.vocab = WordVocab.from_list(c.vocab) if c.vocab else WordVocab([])
        self.use_video, self.use_audio = "video" in c.modalities, "audio" in c.modalities
        self.with_text = "mlm" in c.losses
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
            self.fusion = AVTFusion(D, c.fusion_blocks, c.heads, c.mlp_dim, c.fusion_tokens, c.fusion_order, c.dropout)
            head_in = D
        else:
            self.cls_token = None
            self.fusion = LateFusion(c.modalities, D, c.fusion_blocks, c.heads, c.mlp_dim, c.dropout)
            head_in = D * len(c.modalities)
        self.text_stream = self.mlm_head = None
        if self.with_text:
            self.text_stream = TextStream(len(self.vocab), D, c.fusion_blocks, c.heads, c.mlp_dim, c.max_words, c.dropout)
            self.mlm_head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D), nn.Linear(D, len(self.vocab)))
        self.task_head = nn.Linear(head_in, c.num_classes) if "task" in c.losses else None
        self.semantic_head = nn.Sequential(nn.Linear(head_in, D), nn.GELU(), nn.Linear(D, c.embed_dim)) \
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
        audio = AUDIO_BACKBONES[c.audio_backbone](c.audio_length, c.mel_bins) if self.use_audio else None
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
        audio = AudioSpec(target_length=c.audio_length, mel_bins=c.mel_bins) if self.use_audio else None
        return ModelInputs(frames=c.frames, image_size=c.image_size, audio=audio, label_words=self.with_text)

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
        also held a video classifier's label embedding. Zero-shot compares f(x) with these."""
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
        if self.semantic_head is not None:
            return self.semantic_head(h)
        # ConSE: the task head's belief over the seen classes, as a mix of their targets.
        return self.task_head(h).softmax(-1) @ self.class_embedding_targets(self.class_embeddings).to(h.dtype)

    def _seen_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.task_head is not None:
            return self.task_head(h)
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
        text = masked = None
        if self.with_text:
            if batch.word_ids is None or batch.n_words is None:
                raise ValueError("the MLM loss needs batch.word_ids and batch.n_words (model.tokenize_labels of "
                                 "each sample's label)")
            word_ids = batch.word_ids.to(self.device)
            if word_ids.shape[1] > c.max_words:
                raise ValueError(f"at most max_words={c.max_words} word slots, got {word_ids.shape[1]}")
            masked, targets = mask_words(word_ids, batch.n_words, c.mask_prob, generator)
            text = (masked, batch.n_words)
        h, text_out, _, _ = self._representations(batch, text)
        se_weight, mlm_weight = self.loss_weights()
        out: dict[str, torch.Tensor] = {}
        loss = h.new_zeros(())
        if self.task_head is not None:
            logits = self.task_head(h)
            out["loss_task"] = F.cross_entropy(logits.float(), labels)
            out["logits"] = logits.detach()
            loss = loss + out["loss_task"]
        if self.semantic_head is not None:
            out["loss_se"] = self._se_loss(self.semantic_head(h).float(), labels, batch)
            loss = loss + se_weight * out["loss_se"]
        if self.with_text:
            word_logits = self.mlm_head(text_out).flatten(0, 1).float()
            # A sum over a count clamped at 1: finite without words, and no host sync.
            total = F.cross_entropy(word_logits, targets.flatten(), ignore_index=-100, reduction="sum")
            out["loss_mlm"] = total / (targets >= 0).sum().clamp(min=1)
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
        return (f - target).pow(2).sum(-1).mean()


# ---- registry ------------------------------------------------------------------------------------

#: name -> MZSTConfig defaults. ``mzst_tiny``: small MViT/AST (8 x 64^2 video -> 64 tokens, 128 x 256
#: log-mel -> 128 tokens), width 64, 2 fusion blocks: a CPU training step at batch 4 in well under a second.
MZST_VARIANTS: dict[str, dict] = {
    "mzst": dict(),
    "mzst_tiny": dict(video_backbone="mvit_tiny", audio_backbone="ast_tiny", frames=8, image_size=64,
                      audio_length=256, dim=64, fusion_blocks=2, heads=4, mlp_dim=128, dropout=0.0),
}


def build_mzst(defaults: dict, class_names: Sequence[str] | None = None, class_embeddings=None,
               video_weights: str | Path | None = None, audio_weights=None, *, model_cls: type[MZST] | None = None,
               config_cls: type[MZSTConfig] = MZSTConfig, **overrides) -> MZST:
    """An :class:`MZST` from a variant's defaults and ``overrides`` (fields of :class:`MZSTConfig`).

    Args:
        class_names: the seen classes; sets ``num_classes`` and, unless ``vocab`` is given, the word
            vocabulary of the MLM. None when rebuilding from :meth:`MZST.model_args`.
        class_embeddings: their label embeddings ``(C, embed_dim)`` (tensor, array or nested lists);
            ``embed_dim`` is taken from them. May be set later with :meth:`MZST.set_class_embeddings`.
        video_weights: a local MViT weights file (torchvision state dict; safetensors or PyTorch).
        audio_weights: a local Hugging Face AST folder, weights file or state dict.
        model_cls, config_cls: the model class and its config class (subclasses such as the feature-input
            models of :mod:`zsar.models.feature_input`; default :class:`MZST`, :class:`MZSTConfig`).
    Weights files are read once at construction and not recorded in :meth:`MZST.model_args`.
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
        load_video_weights(model.video_encoder, video_weights)
    if audio_weights is not None:
        if model.audio_encoder is None:
            raise ValueError("audio_weights given to a model without the audio modality")
        load_audio_weights(model.audio_encoder, audio_weights)
    return model


def _register(name: str, defaults: dict):
    @register_model(name, label_embeddings=True)
    def build(class_names=None, **kwargs):
        return build_mzst(defaults, class_names, **kwargs)

    build.__doc__ = f"MZST variant {name}: {defaults or 'the paper sizes'} (arguments: see build_mzst)."


for _name, _defaults in MZST_VARIANTS.items():
    _register(_name, _defaults)
