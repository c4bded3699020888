"""Frame encoders F of ResT: torchvision CNNs, randomly initialised (the paper's zero-shot rule).

A 2D backbone encodes every frame separately: ``(B, T, 3, H, W) -> (B, T, p)``. The 3D R(2+1)D-18
encodes the clip and its temporal feature positions become the tokens: ``(B, T, 3, H, W) ->
(B, T', p)``. User weights can be loaded with :func:`load_backbone_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int  # p
    kind: str  # "2d" (per frame) or "3d" (per clip)
    build: Callable[[], nn.Module]  # returns the trunk without its classifier
    temporal_stride: int = 1  # 3D only: input frames per output token


def _torchvision(name: str) -> nn.Module:
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
        return self.trunk(clips.flatten(0, 1)).view(B, T, -1)


def load_backbone_weights(encoder: FrameEncoder, state_dict: dict, strict: bool = False) -> list[str]:
    """Loads user weights (e.g. a torchvision checkpoint) into the trunk; returns the missing keys.

    Classifier weights in ``state_dict`` (``fc.*``, ``classifier.*``) are ignored where the trunk
    has none. A tensor whose shape differs from the trunk's is always an error; with
    ``strict=True`` missing or unexpected keys are errors too.
    """
    own = encoder.trunk.state_dict()
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(k for k in set(state_dict) - set(own) if k.split(".")[0] not in ("fc", "classifier"))
    if shapes or (strict and (missing or unexpected)):
        raise ValueError(f"backbone weights do not match the {encoder.spec.name} trunk: shape mismatches "
                         f"{shapes[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]}")
    encoder.trunk.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return missing
