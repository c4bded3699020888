"""Backbones: ResT's frame encoders F and MZST's video and audio token encoders.

ResT (:class:`FrameEncoder`, :data:`BACKBONES`): torchvision CNNs, randomly initialised (the paper's
zero-shot rule). A 2D backbone encodes every frame separately: ``(B, T, 3, H, W) -> (B, T, p)``.
The 3D R(2+1)D-18 encodes the clip and its temporal feature positions become the tokens:
``(B, T, 3, H, W) -> (B, T', p)``.

MZST (:data:`VIDEO_BACKBONES`, :data:`AUDIO_BACKBONES`): torchvision's MViTv2 without its classifier
(:class:`MViTTokens`) and Hugging Face transformers' ``ASTModel`` (:class:`ASTTokens`), each giving
its final tokens. Pretrained weights: :mod:`zsar.models.weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """A ResT frame-encoder trunk in :data:`BACKBONES`: how to build it and the tokens it gives.

    Attributes:
        name: its key in :data:`BACKBONES`.
        feature_dim: p, the size of each token.
        kind: ``"2d"`` (each frame encoded alone: one token per frame) or ``"3d"`` (the clip at
            once: one token per ``temporal_stride`` frames).
        build: makes the trunk, randomly initialised and without its classifier.
        temporal_stride: 3D only: input frames per output token (see :meth:`FrameEncoder.num_tokens`).
    """

    name: str
    feature_dim: int  # p
    kind: str  # "2d" (per frame) or "3d" (per clip)
    build: Callable[[], nn.Module]  # returns the trunk without its classifier
    temporal_stride: int = 1  # 3D only: input frames per output token


def _torchvision(name: str) -> nn.Module:
    # deferred: torchvision.models takes ~5 s to import
    import torchvision.models as tvm

    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(tvm, name)(weights=None, **kwargs)


def _resnet(name: str) -> nn.Module:
    model = _torchvision(name)
    model.fc = nn.Identity()
    return model


def _vgg16() -> nn.Module:
    model = _torchvision("vgg16")
    model.classifier = model.classifier[:-1]  # keep fc6/fc7 (4096-d), drop the 1000-way layer
    return model


def _mobilenet_v2() -> nn.Module:
    model = _torchvision("mobilenet_v2")
    model.classifier = nn.Identity()
    return model


def _googlenet() -> nn.Module:
    model = _torchvision("googlenet")
    model.fc = nn.Identity()
    return model


class _R2Plus1DTrunk(nn.Module):
    """R(2+1)D-18 up to layer4, pooled over space only: ``(B, 3, T, H, W) -> (B, T/8, 512)``."""

    def __init__(self):
        super().__init__()
        # deferred: torchvision.models takes ~5 s to import
        from torchvision.models.video import r2plus1d_18

        net = r2plus1d_18(weights=None)
        self.body = nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(3, 4)).transpose(1, 2)


class TinyCNN(nn.Module):
    """A few-layer CNN for tests and the CPU demo (same interface as the torchvision trunks)."""

    def __init__(self, width: int = 32, feature_dim: int = 64):
        super().__init__()
        layers, c = [], 3
        for w in (width // 2, width, width * 2):
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(c, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x))


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", 512, "2d", lambda: _resnet("resnet18")),
    "resnet34": BackboneSpec("resnet34", 512, "2d", lambda: _resnet("resnet34")),
    "resnet101": BackboneSpec("resnet101", 2048, "2d", lambda: _resnet("resnet101")),
    "vgg16": BackboneSpec("vgg16", 4096, "2d", _vgg16),
    "mobilenet_v2": BackboneSpec("mobilenet_v2", 1280, "2d", _mobilenet_v2),
    "googlenet": BackboneSpec("googlenet", 1024, "2d", _googlenet),
    "r2plus1d_18": BackboneSpec("r2plus1d_18", 512, "3d", _R2Plus1DTrunk, temporal_stride=8),
    "tiny": BackboneSpec("tiny", 64, "2d", TinyCNN),
}


class FrameEncoder(nn.Module):
    """F: clips ``(B, T, 3, H, W)`` -> visual tokens ``(B, T_tokens, p)``."""

    def __init__(self, backbone: str):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")
        self.spec = BACKBONES[backbone]
        self.trunk = self.spec.build()
        self.channels_last = False

    def configure_runtime(self, settings) -> None:
        """Apply a :class:`zsar.runtime.RuntimeSettings` to a 2D trunk: NHWC weights and inputs when
        ``settings.channels_last`` (cuDNN's fast layout for per-frame CNNs), and the trunk run
        through ``torch.compile`` when ``settings.compile``. The compiled trunk is kept outside the
        module tree, so parameter names and checkpoints are the same either way."""
        if self.spec.kind != "2d":
            return
        self.channels_last = bool(settings.channels_last)
        self.trunk.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        compiled = torch.compile(self.trunk, backend=settings.compile_backend, dynamic=False) \
            if settings.compile else None
        self.__dict__["_compiled_trunk"] = compiled  # not a submodule: state_dict keys stay unprefixed

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def num_tokens(self, frames: int) -> int:
        if self.spec.kind == "3d":
            return max(1, -(-frames // self.spec.temporal_stride))
        return frames

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dim() != 5 or clips.shape[2] != 3:
            raise ValueError(f"clips must have shape (B, T, 3, H, W), got {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        if self.spec.kind == "3d":
            return self.trunk(clips.transpose(1, 2))
        frames = clips.flatten(0, 1)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__.get("_compiled_trunk")
        trunk = self.trunk if compiled is None else compiled
        return trunk(frames).reshape(B, T, -1)



# ---- MZST: video and audio token encoders ------------------------------------------------------


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
    # deferred: torchvision.models takes ~5 s to import
    from torchvision.models.video import mvit_v2_s

    # torchvision builds MViTv2-S for 16 x 224^2 only (its relative position tables are sized for it).
    if (frames, image_size) != (16, 224):
        raise ValueError(f"mvit_v2_s takes 16 frames of 224 x 224 (torchvision's fixed input), got frames={frames}, "
                         f"image_size={image_size}")
    return MViTTokens(mvit_v2_s(weights=None), frames, image_size)


def _mvit_tiny(frames: int, image_size: int) -> MViTTokens:
    """Two MViTv2 blocks (widths 32 -> 64, one query pooling) over 2x8x8 patches: 64 tokens from 8x64x64."""
    # deferred: torchvision.models takes ~5 s to import
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    # 2x8x8 patches, then a 2x spatial query pooling: the grid must divide and keep a token.
    if frames < 2 or frames % 2 or image_size < 16 or image_size % 8:
        raise ValueError(f"mvit_tiny takes an even number of frames >= 2 and an image_size that is a multiple of 8, "
                         f">= 16 (its 2x8x8 patches); got frames={frames}, image_size={image_size}")

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
        # deferred: transformers takes ~2 s to import
        from transformers import ASTModel

        self.net = ASTModel(config)
        f, t = self.net.embeddings.get_shape(config)
        self.grid = (f, t)
        self.num_tokens = f * t
        self.dim = config.hidden_size

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio).last_hidden_state[:, 2:]


def _ast(audio_length: int, mel_bins: int, patch_stride: int, **sizes) -> ASTTokens:
    """Hugging Face's AST over ``(audio_length, mel_bins)`` log-mel input with 16 x 16 patches at
    ``patch_stride`` in both axes; its position embeddings are sized from the resulting grid."""
    # deferred: transformers takes ~2 s to import
    from transformers import ASTConfig

    if audio_length < 16 or mel_bins < 16:  # AST's 16x16 patches
        raise ValueError(f"the AST audio backbone takes audio_length >= 16 and mel_bins >= 16 (its 16x16 patches); "
                         f"got audio_length={audio_length}, mel_bins={mel_bins}")
    return ASTTokens(ASTConfig(max_length=audio_length, num_mel_bins=mel_bins, frequency_stride=patch_stride,
                               time_stride=patch_stride, **sizes))


#: Video backbones: name -> builder ``(frames, image_size) -> MViTTokens``.
VIDEO_BACKBONES: dict[str, Callable[[int, int], MViTTokens]] = {
    "mvit_v2_s": _mvit_v2_s,  # 34.5 M parameters; 16 x 224^2 -> 8 x 7 x 7 = 392 tokens of 768
    "mvit_tiny": _mvit_tiny,
}
#: Audio backbones: name -> builder ``(audio_length, mel_bins, patch_stride) -> ASTTokens``. ViT-B/16 over
#: 128 x 1024 log-mel: stride 16 (the MZST paper's non-overlapping patches) gives 8 x 64 = 512 tokens of
#: 768, stride 10 (AST's overlapping patches) 12 x 101 = 1,212.
AUDIO_BACKBONES: dict[str, Callable[[int, int, int], ASTTokens]] = {
    "ast_base": lambda length, mel, stride: _ast(length, mel, stride),
    "ast_tiny": lambda length, mel, stride: _ast(length, mel, stride, hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=128),
}
