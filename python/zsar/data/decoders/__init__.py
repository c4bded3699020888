"""Video decoders behind one interface: ``read_frames(path, indices, backend=...)``.

Decoders are registered objects (:mod:`.base`: :class:`Decoder`, :func:`register_decoder`); the
built-in ones, in the order ``auto`` tries them:

* ``dali-gpu``: DALI's ``mixed`` decoder (NVDEC): H.264, HEVC, AV1, MPEG-4, VP8/9, MJPEG; needs a
  CUDA device and the ``dali`` extra.
* ``dali-cpu``: DALI on the CPU; its FFmpeg has only VP8, VP9 and MJPEG.
* ``pyav``: PyAV (FFmpeg); any codec, always installed.

``auto`` takes the first decoder that can decode the file's codec on the requested device and
logs why the earlier ones were passed over.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..video import VideoError, VideoInfo, probe_video
from . import dali, pyav  # noqa: F401  (registers the built-in decoders)
from .base import (
    DECODERS,
    DecodeRequest,
    Decoder,
    DecoderUnavailableError,
    decoder_dispatcher,
    decoder_names,
    fallback_decoder,
    get_decoder,
    register_decoder,
    select_decoder,
)

#: The built-in decoders, in dispatch order (:func:`decoder_names` also lists decoders registered later).
BACKENDS = decoder_names()


def unavailable_reason(backend: str, codec: str | None = None, device: str | torch.device | None = None) -> str | None:
    """Why the decoder ``backend`` cannot decode ``codec`` on ``device`` here (None: it can);
    ``codec=None`` asks about the decoder alone."""
    why = get_decoder(backend).not_supported_reasons(DecodeRequest(codec, DecodeRequest.of(None, device).device))
    return "; ".join(why) or None


def choose_backend(info: VideoInfo, device: str | torch.device | None = None) -> str:
    """The decoder name ``auto`` uses for the video ``info``; ``device`` "cpu" keeps decoding off
    the GPU (None: the GPU when there is one)."""
    return select_decoder(info, "auto", device).name


def read_frames(path: str | os.PathLike, indices, backend: str = "auto", *,
                device: str | torch.device | None = None, info: VideoInfo | None = None) -> torch.Tensor:
    """Decode frames ``indices`` of the video file ``path`` as uint8 (T, H, W, 3) RGB.

    Args:
        path: the video file.
        indices: frame indices, any order, repeats allowed; indices past the last frame read the
            last frame (edge padding, so short videos yield full clips).
        backend: ``"auto"`` or a registered decoder name (``"pyav"``, ``"dali-cpu"``, ``"dali-gpu"``).
        device: where decoding may run (``"cpu"`` keeps it off the GPU; None: the GPU when there
            is one). Frames come back where the decoder ran (``dali-gpu``: a CUDA tensor).
        info: the file's :func:`probe_video` result, when already known.

    Raises:
        ValueError: bad ``indices`` or an unknown ``backend``; :class:`DecoderUnavailableError` (a
            ``ValueError``) when the named decoder cannot decode the file, naming file, codec and decoder.
        VideoError: the file cannot be read, is truncated (fewer frames than its container states)
            or fails to decode; the message names the file.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"read_frames: indices must be a non-empty 1-D integer sequence, got "
                         f"{indices.dtype} with shape {indices.shape}")
    if indices.min() < 0:
        raise ValueError(f"read_frames: indices must be >= 0, got {int(indices.min())}")
    if backend != "auto":
        get_decoder(backend)  # an unknown name is an argument error before any file is read
    info = (info or probe_video(path)).require_complete()
    decoder = select_decoder(info, backend, device)
    indices = np.minimum(indices, info.num_frames - 1).astype(np.int64)
    return decoder.read_frames(info.path, indices, DecodeRequest.of(info, device).device, info)


__all__ = ["DECODERS", "BACKENDS", "DecodeRequest", "Decoder", "DecoderUnavailableError", "VideoError", "choose_backend",
           "decoder_dispatcher", "decoder_names", "fallback_decoder", "get_decoder", "read_frames", "register_decoder",
           "select_decoder", "unavailable_reason"]
