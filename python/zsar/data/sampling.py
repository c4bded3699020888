"""Which frames a clip takes (temporal) and where it is cropped (spatial).

Sampling is pure index arithmetic done in Python before any decoding, so every decoder backend
reads exactly the same frames for the same seed. Randomness comes from
:func:`sample_rng`, keyed by (seed, epoch, video index): reproducible, different every epoch,
and independent of worker count or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROPS = ("random", "center", "three")


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator for one video in one epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def clip_span(frames: int, stride: int) -> int:
    """How many source frames a clip of ``frames`` frames at ``stride`` covers."""
    return (frames - 1) * stride + 1


def _check(num_frames: int, frames: int, stride: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")


def random_clip_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """``frames`` indices at ``stride`` from a random start (training), shape (frames,).

    A video shorter than the clip starts at 0 and repeats its last frame (edge padding).
    """
    _check(num_frames, frames, stride)
    start = int(rng.integers(0, max(num_frames - clip_span(frames, stride), 0) + 1))
    return np.minimum(start + stride * np.arange(frames), num_frames - 1)


def uniform_clip_indices(num_frames: int, frames: int, stride: int, num_clips: int = 1) -> np.ndarray:
    """``num_clips`` clips with uniformly spaced starts covering the video, shape (num_clips, frames).

    One clip is centred; several span first to last possible start. Short videos are edge padded.
    """
    _check(num_frames, frames, stride)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last_start = max(num_frames - clip_span(frames, stride), 0)
    if num_clips == 1:
        starts = np.array([last_start // 2])
    else:
        starts = np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)
    return np.minimum(starts[:, None] + stride * np.arange(frames)[None], num_frames - 1)


@dataclass(frozen=True)
class CropBox:
    """A crop of a resized frame: top-left corner and size, in pixels."""

    top: int
    left: int
    height: int
    width: int


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) after scaling the shorter side to ``short_side``, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(short_side, int(round(width * short_side / height)))
    return max(short_side, int(round(height * short_side / width))), short_side


def crop_boxes(height: int, width: int, size: int, crop: str, rng: np.random.Generator | None = None) -> list[CropBox]:
    """Crop boxes of ``size``×``size`` inside a ``height``×``width`` (already resized) frame.

    ``random``: one box anywhere (training; needs ``rng``); ``center``: one centred box;
    ``three``: three boxes along the longer side (start, centre, end), the common 3-crop test.
    """
    if size > min(height, width):
        raise ValueError(f"crop size {size} is larger than the resized frame {height}x{width}")
    if crop == "random":
        if rng is None:
            raise ValueError("crop='random' needs a random generator")
        return [CropBox(int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1)), size, size)]
    cy, cx = (height - size) // 2, (width - size) // 2
    if crop == "center":
        return [CropBox(cy, cx, size, size)]
    if crop == "three":
        if width >= height:
            return [CropBox(cy, x, size, size) for x in (0, cx, width - size)]
        return [CropBox(y, cx, size, size) for y in (0, cy, height - size)]
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
