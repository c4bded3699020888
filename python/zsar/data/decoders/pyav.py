"""PyAV (FFmpeg) decoder: any codec FFmpeg knows, on the CPU, one video at a time."""

from __future__ import annotations

import numpy as np
import torch

from ..video import FRAME_COUNT_SLACK, VideoError, VideoInfo
from .base import Decoder, register_decoder

# Decoding from the start costs about as much as a seek once the first wanted frame is this
# far in; past it we seek to the nearest keyframe before it.
_SEEK_AFTER = 96


@register_decoder
class PyAVDecoder(Decoder):
    """FFmpeg through PyAV: every codec, frame and slice threads inside FFmpeg, always installed."""

    name = "pyav"
    device_type = "cpu"
    codecs = None
    priority = 100

    def read_frames(self, path, indices: np.ndarray, device: torch.device, info: VideoInfo) -> torch.Tensor:
        import av

        wanted = np.unique(indices)
        frames: dict[int, np.ndarray] = {}
        decoded, last = 0, None
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg
                rgb = _RGB(path, info)
                if int(wanted[0]) >= _SEEK_AFTER and info.fps > 0:
                    frames = _decode_after_seek(container, stream, info, wanted, rgb)
                if not frames:
                    frames, decoded, last = _decode_from_start(container, stream, wanted, rgb)
        except VideoError:
            raise
        except Exception as e:  # FFmpeg errors on truncated or corrupt data
            raise VideoError(f"{path}: PyAV could not decode {info.codec} video: {e}") from e
        missing = [int(i) for i in wanted if int(i) not in frames]
        if missing:
            if decoded == 0:
                raise VideoError(f"{path}: PyAV decoded no frames ({info.codec}); the file may be truncated or corrupt")
            if info.num_frames - decoded > FRAME_COUNT_SLACK:
                raise VideoError(f"{path}: only frames 0-{decoded - 1} of {info.num_frames} decode ({info.codec}); "
                                 f"the file is truncated or corrupt")
            # The container over-stated its frame count by a frame or two (edit lists, codec
            # delay): the real last frame stands in, as edge padding does for short videos.
            for i in missing:
                frames[i] = last
        return torch.from_numpy(np.stack([frames[int(i)] for i in indices]))


class _RGB:
    """A decoded frame as an RGB array, after checking its size against the stream header's, which
    probe_video checked against the pixel limit: a stream can change size mid-file (a few header
    bytes of a later frame can state gigapixels), and frames of another size would otherwise end in
    a shape error far from the file, or in an allocation of that size."""

    def __init__(self, path, info: VideoInfo):
        self.path, self.size = path, (info.width, info.height)

    def __call__(self, frame, n: int) -> np.ndarray:
        if (frame.width, frame.height) != self.size:
            raise VideoError(f"{self.path}: frame {n} is {frame.width}×{frame.height} but the stream header says "
                             f"{self.size[0]}×{self.size[1]}; videos whose frame size changes are not supported "
                             f"(re-encode them at one size, e.g. with `zsar prepare`)")
        return frame.to_ndarray(format="rgb24")


def _decode_from_start(container, stream, wanted: np.ndarray,
                       rgb: _RGB) -> tuple[dict[int, np.ndarray], int, np.ndarray | None]:
    """The wanted frames, counting from the first; also how many frames decoded up to the last
    wanted one and, when the video ended before it, its real last frame."""
    want, stop = set(int(i) for i in wanted), int(wanted[-1])
    out, decoded, frame = {}, 0, None
    for n, frame in enumerate(container.decode(stream)):
        decoded = n + 1
        if n in want:
            out[n] = rgb(frame, n)
        if n >= stop:
            return out, decoded, None
    return out, decoded, None if frame is None else rgb(frame, decoded - 1)


def _decode_after_seek(container, stream, info: VideoInfo, wanted: np.ndarray, rgb: _RGB) -> dict[int, np.ndarray]:
    """Seek near the first wanted frame and number frames by timestamp. Returns {} when the
    timestamps cannot be trusted (then the caller decodes from the start, counting frames)."""
    tb = float(stream.time_base)
    t0 = stream.start_time or 0
    first = int(wanted[0])
    container.seek(int(t0 + (first / info.fps) / tb), stream=stream, backward=True, any_frame=False)
    want, stop = set(int(i) for i in wanted), int(wanted[-1])
    out = {}
    for frame in container.decode(stream):
        if frame.pts is None:
            return {}
        n = int(round((frame.pts - t0) * tb * info.fps))
        if not out and n > first:  # landed after the first wanted frame: timestamps are off
            return {}
        if n in want:
            out[n] = rgb(frame, n)
        if n >= stop:
            break
    # A gap (variable frame rate, odd timestamps) is not evidence of a damaged file: count instead.
    return out if len(out) == len(want) else {}
