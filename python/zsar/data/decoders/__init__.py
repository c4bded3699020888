"""Video decoders behind one interface: ``read_frames(path, indices, backend=...)``.

Backends, in the order ``auto`` tries them:

* ``dali-gpu``: DALI's ``mixed`` decoder (NVDEC): H.264, HEVC, AV1, MPEG-4, VP8/9, MJPEG; needs a
  CUDA device and the ``dali`` extra.
* ``dali-cpu``: DALI on the CPU; its FFmpeg has only VP8, VP9 and MJPEG.
* ``pyav``: PyAV (FFmpeg); any codec, always installed.

``auto`` takes the first backend that can decode the file's codec on the requested device and
logs why the earlier ones were passed over.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..video import VideoError, VideoInfo, probe_video
from . import dali, pyav

log = logging.getLogger(__name__)

BACKENDS = ("dali-gpu", "dali-cpu", "pyav")


def unavailable_reason(backend: str, codec: str | None = None) -> str | None:
    """Why ``backend`` cannot decode ``codec`` here (None: it can). ``codec=None`` asks about the
    backend alone."""
    if backend == "pyav":
        return None
    if backend not in ("dali-cpu", "dali-gpu"):
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {backend!r}")
    why = dali.import_error()
    if why:
        return why
    device = backend.split("-")[1]
    if device == "gpu" and not torch.cuda.is_available():
        return "no CUDA device"
    if codec is not None and codec not in dali.codecs(device):
        return f"DALI on {device.upper()} does not decode {codec} (it decodes {', '.join(sorted(dali.codecs(device)))})"
    return None


def choose_backend(info: VideoInfo, device: str | torch.device | None = None) -> str:
    """The backend ``auto`` uses for the video ``info``; ``device`` "cpu" keeps DALI off the GPU."""
    allow_gpu = device is None or torch.device(device).type == "cuda"
    reasons = []
    for backend in BACKENDS:
        why = "CPU requested" if backend == "dali-gpu" and not allow_gpu else unavailable_reason(backend, info.codec)
        if why is None:
            if reasons:
                log.debug("%s: decoding %s with %s (%s)", info.path, info.codec, backend, "; ".join(reasons))
            return backend
        reasons.append(f"{backend}: {why}")
    raise AssertionError("pyav is always available")  # pragma: no cover


def read_frames(path: str | os.PathLike, indices, backend: str = "auto", *,
                device: str | torch.device | None = None, info: VideoInfo | None = None) -> torch.Tensor:
    """Decode frames ``indices`` of the video file ``path`` as uint8 (T, H, W, 3) RGB.

    ``indices`` may repeat and come in any order; indices past the last frame read the last
    frame (edge padding, so short videos yield full clips). ``backend``: ``"auto"``, ``"pyav"``,
    ``"dali-cpu"`` or ``"dali-gpu"`` (``dali-gpu`` returns a CUDA tensor). A backend that cannot
    decode the file raises ``ValueError`` naming the file, codec and backend; an unreadable file
    raises :class:`~zsar.data.VideoError` naming it. ``info`` skips probing when already known.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"read_frames: indices must be a non-empty 1-D integer sequence, got "
                         f"{indices.dtype} with shape {indices.shape}")
    if indices.min() < 0:
        raise ValueError(f"read_frames: indices must be >= 0, got {int(indices.min())}")
    info = info or probe_video(path)
    indices = np.minimum(indices, info.num_frames - 1)
    if backend == "auto":
        backend = choose_backend(info, device)
    why = unavailable_reason(backend, info.codec)
    if why is not None:
        raise ValueError(f"{info.path}: backend {backend!r} cannot decode this {info.codec} video: {why}")
    if backend == "pyav":
        return torch.from_numpy(pyav.read_frames(info, indices))
    dev = backend.split("-")[1]
    device_id = torch.device(device).index if device is not None and torch.device(device).type == "cuda" else None
    out = dali.read_frames(info, indices, dev, device_id)
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)


__all__ = ["BACKENDS", "VideoError", "choose_backend", "read_frames", "unavailable_reason"]
