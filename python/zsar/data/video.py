"""Writing and probing video files with PyAV (FFmpeg).

One place that knows how to put frames (and optionally an audio track) into a container: the
synthetic benchmark, ``zsar prepare`` and the tests all write their videos through
:func:`write_video`, and every decoder asks :func:`probe_video` what a file holds.
"""

from __future__ import annotations

import itertools
import os
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._limits import LimitError, check_limit
from .._utils import as_numpy

#: Video file extensions (lower case), in order of preference when one stem has several.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ogv", ".3gp",
                    ".wmv", ".asf", ".ts", ".mts", ".m2ts", ".vob")
#: Default video codec per container extension (FFmpeg encoder names).
VIDEO_CODECS = {".webm": "libvpx-vp9", ".mkv": "libvpx-vp9", ".mp4": "libx264", ".avi": "mjpeg"}
#: Default audio codec per container extension.
AUDIO_CODECS = {".webm": "libopus", ".mkv": "libopus", ".mp4": "aac", ".avi": "pcm_s16le"}
#: Short names users may give instead of FFmpeg encoder names.
CODEC_ALIASES = {"vp9": "libvpx-vp9", "vp8": "libvpx", "h264": "libx264", "hevc": "libx265",
                 "h265": "libx265"}


class VideoError(ValueError):
    """A video file cannot be read: missing, empty, truncated, not a video, or without frames.

    The message always names the file. Subclasses ``ValueError`` so callers that validate
    input generically catch it too.
    """


def _require_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise ImportError("reading and writing video needs PyAV: pip install av") from e
    return av


#: How many frames a container's stated frame count may exceed the frames it holds before the file
#: counts as truncated: edit lists and dropped-frame chunks make honest files over-state by one or two.
FRAME_COUNT_SLACK = 2


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file without decoding any frame.

    Attributes:
        path: the file.
        codec: FFmpeg decoder name of the first video stream: "vp9", "h264", "mjpeg", ...
        num_frames: the frames the file holds (its video packets, counted without decoding), at most
            the container's stated count.
        fps: average frame rate (0 when the container gives none).
        width, height: frame size in pixels.
        has_audio: whether the file has an audio stream.
        audio_sample_rate: that stream's sample rate, or None.
        stated_frames: the frame count the container's header states, or None when it states none
            (WebM, MKV).
    """

    path: str
    codec: str
    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    audio_sample_rate: int | None = None
    stated_frames: int | None = None

    @property
    def truncated(self) -> bool:
        """Whether the file holds fewer frames than its container states (beyond
        :data:`FRAME_COUNT_SLACK`): a cut-off download or copy."""
        return self.stated_frames is not None and self.num_frames < self.stated_frames - FRAME_COUNT_SLACK

    def require_complete(self) -> "VideoInfo":
        """``self``; raises :class:`VideoError` naming the file when it is :attr:`truncated` (decoders
        would otherwise repeat or blank the frames past the cut)."""
        if self.truncated:
            raise VideoError(f"{self.path}: truncated: the container states {self.stated_frames} frames but the "
                             f"file holds {self.num_frames}")
        return self


def _frame_source(frames, path: Path):
    """``(first frame, iterator over all frames)`` for an array or an iterable of frames."""
    if hasattr(frames, "shape") and hasattr(frames, "dtype"):  # one array / tensor for the whole video
        arr = as_numpy(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"write_video: frames must be uint8 (T, H, W, 3); got {arr.dtype} {tuple(arr.shape)}")
        if arr.shape[0] == 0:
            raise ValueError(f"write_video: no frames to write to {path}")
        return arr[0], iter(arr)
    if isinstance(frames, (str, bytes)) or not hasattr(frames, "__iter__"):
        raise TypeError(f"write_video: frames must be a (T, H, W, 3) uint8 array or an iterable of (H, W, 3) "
                        f"uint8 frames, got {type(frames).__name__}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"write_video: no frames to write to {path}")
    first = as_numpy(first)
    return first, itertools.chain([first], it)


def write_video(path, frames, fps: float = 25, codec: str | None = None, *, audio=None,
                sample_rate: int = 16000, crf: int | None = None, gop: int | None = None,
                comment: str | None = None) -> Path:
    """Encode ``frames`` (uint8 RGB) into the video file ``path``.

    ``frames`` is one ``(T, H, W, 3)`` array or tensor, or any iterable of ``(H, W, 3)`` frames
    (e.g. a generator), which is encoded as it is consumed, so memory stays at one frame whatever
    the video's length. ``gop``: a keyframe exactly every ``gop`` frames (H.264/VP9: no scene-cut
    keyframes in between), so that a seek decodes at most ``gop - 1`` frames before the one it
    wants; default: the encoder's. ``comment``: text stored in the container's ``comment`` tag.
    ``codec`` defaults by extension (``.webm``/``.mkv`` → VP9, ``.mp4`` →
    H.264, ``.avi`` → MJPEG) and accepts short names (``"vp9"``, ``"h264"``, ...). Odd
    widths/heights are not allowed by the 4:2:0 codecs, so ask for even sizes. ``audio``: optional
    float waveform in [-1, 1], shape (samples,) or (channels, samples), at ``sample_rate`` Hz. The
    file is written to a temporary name and renamed, so a failure (a bad frame, an exception from
    the frame iterable, the encoder) never leaves a file under the final name, nor the temporary one.
    """
    av = _require_av()
    path = Path(path)
    first, frame_iter = _frame_source(frames, path)
    if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"write_video: frames must be uint8 (H, W, 3) each; got {first.dtype} {tuple(first.shape)}")
    ext = path.suffix.lower()
    codec = CODEC_ALIASES.get(codec, codec) or VIDEO_CODECS.get(ext)
    if codec is None:
        raise ValueError(f"write_video: no default codec for extension {ext!r} of {path}; "
                         f"pass codec= or use one of {sorted(VIDEO_CODECS)}")
    h, w = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        with av.open(str(tmp), "w") as container:
            fps_q = Fraction(fps).limit_denominator(1001)
            stream = container.add_stream(codec, rate=fps_q)
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if crf is not None:
                stream.options = {"crf": str(crf)}
            elif codec == "libvpx-vp9":  # constant quality; libvpx's default bitrate is very low
                stream.options = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
            elif codec == "mjpeg":  # FFmpeg's default quantiser range leaves visible blocks
                stream.codec_context.qmin, stream.codec_context.qmax = 1, 4
            elif codec in ("libx264", "libx265"):
                stream.options = {"preset": "veryfast"}
            if gop is not None:
                stream.codec_context.gop_size = gop
                if codec in ("libx264", "libx265"):
                    key = "x264-params" if codec == "libx264" else "x265-params"
                    stream.options = {**dict(stream.options or {}), key: f"keyint={gop}:min-keyint={gop}:scenecut=0"}
                else:
                    stream.options = {**dict(stream.options or {}), "keyint_min": str(gop)}
            if comment is not None:
                container.metadata["comment"] = comment
            astream = None
            if audio is not None:
                acodec = AUDIO_CODECS.get(ext, "aac")
                rate = audio_encoder_rate(acodec, sample_rate)
                audio, channels = _audio_chunks(audio, sample_rate, rate)
                astream = container.add_stream(acodec, rate=rate)
                astream.layout = "mono" if channels == 1 else "stereo"
            for i, image in enumerate(frame_iter):
                image = as_numpy(image)
                if image.shape != first.shape or image.dtype != np.uint8:
                    raise ValueError(f"write_video: frame {i} for {path} is {image.dtype} {tuple(image.shape)}; "
                                     f"every frame must be uint8 {tuple(first.shape)} like the first")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
            if astream is not None:
                _encode_audio(av, container, astream, audio)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def audio_encoder_rate(codec: str, sample_rate: int) -> int:
    """The sample rate :func:`write_video` encodes ``sample_rate`` Hz audio at with the FFmpeg
    encoder ``codec``: the same rate when the encoder takes it, else the nearest it takes (Opus
    only 48 kHz, as its decoders expect; AAC 7.35-96 kHz)."""
    if codec == "libopus":
        return 48000
    rates = _require_av().Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    return min(rates, key=lambda r: (abs(r - sample_rate), -r))


def _audio_chunks(audio, sample_rate: int, rate: int):
    """``(chunks, channels)``: ``audio`` as an iterator of float32 ``(channels, samples)`` arrays at
    ``rate`` Hz. ``audio`` is one array (``(samples,)`` or ``(channels, samples)``, resampled here
    when ``rate`` differs), or an iterable of ``(channels, samples)`` chunks already at ``rate``
    (streamed: a long track is never held whole)."""
    if hasattr(audio, "shape") and hasattr(audio, "dtype"):
        audio = np.asarray(as_numpy(audio), dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if rate != sample_rate:
            audio = _resample_linear(audio, sample_rate, rate)
        return iter([audio]), audio.shape[0]
    if rate != sample_rate:
        raise ValueError(f"write_video: streamed audio must come at a rate the encoder takes ({rate} Hz, "
                         f"see audio_encoder_rate); got {sample_rate} Hz")
    it = iter(audio)
    first = next(it, None)
    if first is None:
        return iter(()), 1
    return itertools.chain([first], it), np.asarray(first).shape[0]


def _resample_linear(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    n = int(round(x.shape[-1] * dst / src))
    t = np.arange(n) * (src / dst)
    return np.stack([np.interp(t, np.arange(x.shape[-1]), c) for c in x]).astype(np.float32)


def _encode_audio(av, container, stream, chunks) -> None:
    """Encodes the ``(channels, samples)`` float arrays of ``chunks`` in frames of the encoder's size."""
    ctx = stream.codec_context
    fmt = ctx.format.name if ctx.format is not None else "fltp"
    chunk = ctx.frame_size or 1024
    pts = 0
    pending = None
    for audio in itertools.chain(chunks, [None]):
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            pending = audio if pending is None else np.concatenate([pending, audio], axis=1)
            if pending.shape[1] < chunk:
                continue
            end = pending.shape[1] - pending.shape[1] % chunk
        elif pending is None:
            break
        else:
            end = pending.shape[1]  # the last, short frame
        pts = _encode_audio_frames(av, container, stream, pending[:, :end], fmt, chunk, pts)
        pending = pending[:, end:]
    container.mux(stream.encode())


def _encode_audio_frames(av, container, stream, audio: np.ndarray, fmt: str, chunk: int, pts: int) -> int:
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    for start in range(0, audio.shape[1], chunk):
        part = audio[:, start:start + chunk]
        if fmt == "s16":  # interleaved 16-bit (pcm_s16le)
            data = (np.clip(part.T, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        elif fmt == "flt":
            data = np.ascontiguousarray(part.T.reshape(1, -1))
        else:  # planar float
            data = np.ascontiguousarray(part)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = pts
        pts += part.shape[1]
        container.mux(stream.encode(frame))
    return pts


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def media_file_problem(path) -> str | None:
    """Why ``path`` cannot be a media file, in a few words ("no such file", "is a directory", "not a
    regular file (a FIFO)", "empty file (0 bytes)", ...), or None when it is a non-empty regular file.

    Checked before opening: FFmpeg would block forever reading a FIFO, and reports a directory as
    invalid data.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a component of the path is not a directory)"
    except PermissionError:
        return "permission denied"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
        return f"not a regular file ({kind})"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def open_media(path):
    """An open PyAV container for ``path``; :class:`VideoError` naming the file when it is
    missing, not a regular file, empty or not a media container FFmpeg can read."""
    av = _require_av()
    path = str(path)
    problem = media_file_problem(path)
    if problem is not None:
        raise VideoError(f"{path}: {problem}")
    try:
        return av.open(path)
    except Exception as e:  # FFmpeg raises several InvalidDataError flavours
        raise VideoError(f"{path}: not a readable media container ({e})") from e


def probe_video(path) -> VideoInfo:
    """Codec, frame count, fps, size and audio presence of the video file ``path``.

    The video packets are counted without decoding (a demux pass over the file: 5-14 ms for 1500
    frames of 320x240 H.264 in ``bench/bench_decode.py``), so :attr:`VideoInfo.num_frames` is what
    the file holds even when a truncated container states more (see :attr:`VideoInfo.truncated`).
    Raises :class:`VideoError` naming the file when it is missing, not a regular file, empty, not a
    video or has no frames.
    """
    path = str(path)
    with open_media(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: contains no video stream")
        vs = container.streams.video[0]
        stated = int(vs.frames) if vs.frames > 0 else None
        width, height = vs.codec_context.width, vs.codec_context.height
        try:  # before any frame is decoded: a few bytes of header can state gigapixel frames
            check_limit("frame_pixels", width * height, f"pixels per frame ({width}×{height})", path)
        except LimitError as e:
            raise VideoError(str(e)) from None
        try:  # PyAV ends the demux with an empty flush packet per stream: count real packets only
            held = sum(1 for p in container.demux(vs) if p.size > 0)
        except Exception as e:  # FFmpeg's demuxer errors on damaged containers
            raise VideoError(f"{path}: cannot read the video packets ({e})") from e
        audio = container.streams.audio
        fps = float(vs.average_rate or vs.guessed_rate or 0.0)
        info = VideoInfo(path=path, codec=vs.codec_context.name,
                         num_frames=held if stated is None else min(held, stated), fps=fps,
                         width=width, height=height,
                         has_audio=bool(audio),
                         audio_sample_rate=audio[0].rate if audio else None, stated_frames=stated)
    if info.num_frames <= 0:
        raise VideoError(f"{path}: the video stream has no frames")
    return info
