"""What a clip looks like once sampled: :class:`ClipSpec`, the per-video :class:`ClipPlan`, and the
torch implementation of resize → crop → normalise used on the CPU path.

The DALI path (``decoders/dali.py``) executes the same plan inside its pipeline, so both backends
take the same frames and the same crop windows for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import CROPS, CropBox, crop_boxes, random_clip_indices, resized_shape, uniform_clip_indices
from .._limits import LimitError, check_limit
from .video import VideoError, VideoInfo

#: Frames resized at once by apply_plan (each is float at its decoded size only while resized).
_RESIZE_CHUNK = 4

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class ClipSpec:
    """How to turn one video into model input.

    Training (``train=True``): one clip of ``frames`` frames at ``stride`` from a random start and
    a random ``size``×``size`` crop. Evaluation: ``num_clips`` uniformly spaced clips, each cropped
    ``crop="center"`` or ``"three"`` (3 crops along the longer side). Frames are first resized so
    their shorter side is ``short_side`` (default ``size * 8 / 7``, 256 for 224). ``float32``
    output is normalised with ``mean``/``std`` (fractions of 255); ``uint8`` is left as pixels.
    """

    frames: int = 16
    stride: int = 1
    size: int = 112
    short_side: int | None = None
    train: bool = False
    num_clips: int = 1
    crop: str | None = None  # default: "random" when training, "center" otherwise
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output_dtype: str = "float32"

    def __post_init__(self):
        for name in ("frames", "stride", "size", "num_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClipSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"ClipSpec.crop must be one of {CROPS}, got {self.crop!r}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"ClipSpec.output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        if self.short_side is not None and self.short_side < self.size:
            raise ValueError(f"ClipSpec.short_side ({self.short_side}) must be >= size ({self.size})")
        check_limit("clip_frames", self.frames, "ClipSpec.frames")
        check_limit("clips", self.num_clips, "ClipSpec.num_clips")
        check_limit("image_size", self.size, "ClipSpec.size")
        check_limit("image_size", self.resize_to, "ClipSpec.short_side")
        # Together, for the smallest frames the short side allows (square ones).
        check_limit("clip_bytes", self.memory_bytes(self.resize_to, self.resize_to, decoded=False),
                    f"memory of one video's clips (frames={self.frames}, num_clips={self.num_clips}, "
                    f"size={self.size}, short_side={self.resize_to}) in bytes")

    @property
    def crop_mode(self) -> str:
        return self.crop or ("random" if self.train else "center")

    @property
    def resize_to(self) -> int:
        return self.short_side or int(round(self.size * 8 / 7))

    @property
    def views(self) -> int:
        """Clips × crops each video yields."""
        return (1 if self.train else self.num_clips) * (3 if self.crop_mode == "three" else 1)

    def memory_bytes(self, height: int, width: int, decoded: bool = True) -> int:
        """Bytes :func:`apply_plan` holds for one video of ``height`` × ``width`` frames, resized to
        those frames' size: the decoded uint8 frames (with ``decoded``), the resized float32
        frames and the float32 output."""
        n = (1 if self.train else self.num_clips) * self.frames
        h, w = resized_shape(height, width, self.resize_to)
        out = self.views * self.frames * 3 * self.size * self.size * 4
        return (n * height * width * 3 if decoded else 0) + n * 3 * h * w * 4 + out

    def output_shape(self) -> tuple[int, ...]:
        """Per-video output shape: (T, 3, S, S) for one view, else (views, T, 3, S, S)."""
        one = (self.frames, 3, self.size, self.size)
        return one if self.views == 1 else (self.views, *one)


@dataclass(frozen=True)
class ClipPlan:
    """The frames and crops one video contributes: ``indices`` (clips, T) into the video,
    ``resized`` (H, W) after the short-side resize, and the crop ``boxes`` inside it."""

    indices: np.ndarray
    resized: tuple[int, int]
    boxes: tuple[CropBox, ...]


def plan_clip(spec: ClipSpec, info: VideoInfo, rng: np.random.Generator | None) -> ClipPlan:
    """Decide the frames and crops for the video ``info`` (``rng`` is needed when training)."""
    if spec.train:
        if rng is None:
            raise ValueError("plan_clip: training clips need a random generator")
        indices = random_clip_indices(info.num_frames, spec.frames, spec.stride, rng)[None]
    else:
        indices = uniform_clip_indices(info.num_frames, spec.frames, spec.stride, spec.num_clips)
    try:
        check_limit("clip_bytes", spec.memory_bytes(info.height, info.width),
                    f"memory of the clips of this {info.width}×{info.height} video in bytes", info.path)
    except LimitError as e:
        raise VideoError(str(e)) from None
    h, w = resized_shape(info.height, info.width, spec.resize_to)
    return ClipPlan(indices, (h, w), tuple(crop_boxes(h, w, spec.size, spec.crop_mode, rng)))


def apply_plan(frames, plan: ClipPlan, spec: ClipSpec) -> torch.Tensor:
    """Resize, crop and normalise decoded frames with torch.

    ``frames``: uint8 (clips * T, H, W, 3) as decoded for ``plan.indices.ravel()``. Returns
    ``spec.output_shape()`` (float32 normalised, or uint8).
    """
    x = torch.as_tensor(frames).permute(0, 3, 1, 2)  # (N, 3, H, W)
    if tuple(x.shape[-2:]) != plan.resized:
        # Bilinear with antialiasing, as DALI's linear resize does when shrinking. A few frames
        # at a time: only those are ever float at their decoded size.
        x = torch.cat([F.interpolate(part.float(), size=plan.resized, mode="bilinear", antialias=True,
                                     align_corners=False).round_().clamp_(0, 255)
                       for part in x.split(_RESIZE_CHUNK)])
    else:
        x = x.float()
    crops = [x[:, :, b.top:b.top + b.height, b.left:b.left + b.width] for b in plan.boxes]
    n_clips, t = plan.indices.shape
    # (clips, crops, T, 3, S, S) → (views, T, 3, S, S)
    out = torch.stack([c.reshape(n_clips, t, *c.shape[1:]) for c in crops], dim=1).flatten(0, 1)
    if spec.output_dtype == "uint8":
        out = out.to(torch.uint8)
    else:
        mean = torch.tensor(spec.mean).view(3, 1, 1) * 255
        std = torch.tensor(spec.std).view(3, 1, 1) * 255
        out = (out - mean) / std
    return out[0] if out.shape[0] == 1 else out
