"""Real test videos: smooth moving colour gradients (lossy codecs keep them close to the source)
with a frame counter baked in, so a decoded frame can be matched back to its index."""

import numpy as np

from zsar.data import write_video


def gradient_frames(t: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): each channel a different gradient drifting over time; frame i has
    a mean brightness that grows with i, so frames are tellable apart after decoding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 255, 3)
    frames = np.empty((t, h, w, 3), np.float32)
    for i in range(t):
        frames[i, ..., 0] = (x * 2 + 3 * i + phase[0]) % 200
        frames[i, ..., 1] = (y * 2 + 2 * i + phase[1]) % 200
        frames[i, ..., 2] = ((x + y) + i + phase[2]) % 200
        frames[i] += 50 * i / max(t - 1, 1)
    return frames.clip(0, 255).astype(np.uint8)


def make_video(path, t: int = 12, h: int = 48, w: int = 64, seed: int = 0, **kwargs):
    """Write a gradient video to ``path`` (codec from the extension) and return its source frames."""
    frames = gradient_frames(t, h, w, seed)
    write_video(path, frames, **kwargs)
    return frames


def nearest_frames(decoded: np.ndarray, source: np.ndarray) -> np.ndarray:
    """For each decoded frame, the index of the closest source frame (mean absolute difference)."""
    d = np.abs(decoded[:, None].astype(np.float32) - source[None].astype(np.float32)).mean(axis=(2, 3, 4))
    return d.argmin(axis=1)
