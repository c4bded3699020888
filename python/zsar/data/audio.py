"""Audio features for MZST: a video's audio track as AST's normalised log-mel filterbank.

The pipeline (the AST input of the MZST paper): the first audio stream, decoded with PyAV,
resampled by FFmpeg to 16 kHz float and averaged over its channels; a Kaldi-compatible log-mel
filterbank (128 bins, 25 ms Hanning window, 10 ms shift, HTK mel scale, no energy, no dither;
Kaldi's defaults otherwise), the same definition as ``torchaudio.compliance.kaldi.fbank``
(torchaudio is not needed); zero-padded or cut to 1024 frames, then AST's normalisation ``(x + 4.2677393) / (4.5689974 * 2)``
(AST's recipe: padded frames read 0.467). Only the window
that gives those frames is decoded (:func:`window_samples`; ``audio_features(..., centre=t)``
centres it on a clip, as the loaders do).

Conventions worth knowing:

* ``snip_edges=True`` as in Kaldi: frames lie wholly inside the signal, so ``N`` samples give
  ``1 + (N - window) // shift`` frames and a waveform shorter than one window (400 samples at
  16 kHz) gives **zero frames** (an empty ``(0, num_mel_bins)`` tensor), not an error.
  :func:`audio_features` then returns all padding, with ``has_audio=True``.
* AST's loader subtracts the waveform's mean first; that is a no-op here because every frame has
  its own mean removed before anything else.
* Padding happens before normalisation, as in AST's reference loader and Hugging Face's
  ``ASTFeatureExtractor``: padded frames read ``(0 + 4.2677393) / (2 x 4.5689974) = 0.467``. A
  file without an audio stream gives all-zero features instead (it is padding for MZST anyway,
  flagged by ``has_audio=False``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .._limits import check_limit
from .._utils import as_numpy
from .video import VideoError, _require_av, open_media


@dataclass(frozen=True)
class AudioSpec:
    """The audio input a model takes: AST log-mel features ``(target_length, mel_bins)`` of a
    ``sample_rate`` waveform (:func:`audio_features`). A data description: models declare it in
    their :class:`~zsar.models.ModelInputs`, loaders read it."""

    target_length: int = 1024
    mel_bins: int = 128
    sample_rate: int = 16000
    #: The model takes nothing else (no video): a file without audio cannot be scored, whatever
    #: ``missing_audio`` says (zeros would give an answer from nothing), only skipped or refused.
    required: bool = False


class MissingAudioError(VideoError):
    """A media file has no audio stream where audio was required."""


#: AST's dataset statistics of the log-mel fbank (AudioSet), used to normalise.
AST_MEAN = -4.2677393
AST_STD = 4.5689974
#: Kaldi's preemphasis coefficient and default lowest mel frequency (Hz).
PREEMPHASIS = 0.97
LOW_FREQ = 20.0


def load_audio(path, sample_rate: int = 16000, *, missing: str = "error") -> np.ndarray:
    """The first audio stream of the media file ``path`` as float32 mono samples at ``sample_rate``.

    Decoded with PyAV; FFmpeg's resampler converts the sample rate and the sample format (float
    in [-1, 1]); the channels are averaged into one. ``missing``: what to do when the file has no audio stream:
    ``"error"`` (default) raises :class:`VideoError` naming the file; ``"empty"`` returns an
    empty array. A missing, empty or unreadable file always raises :class:`VideoError`.
    """
    if missing not in ("error", "empty"):
        raise ValueError(f"load_audio: missing must be 'error' or 'empty', got {missing!r}")
    wav = _decode_audio(path, sample_rate)
    if wav is None:
        if missing == "empty":
            return np.zeros(0, dtype=np.float32)
        raise MissingAudioError(f"{path}: has no audio stream")
    return wav


def window_samples(target_length: int, sample_rate: int = 16000) -> int:
    """Samples that give exactly ``target_length`` fbank frames (25 ms windows every 10 ms):
    164080 at 16 kHz for AST's 1024 frames, the "10.24 s window"."""
    return (target_length - 1) * int(sample_rate * 0.01) + int(sample_rate * 0.025)


def _decode_audio(path, sample_rate: int, length: int | None = None, centre: float | None = None) -> np.ndarray | None:
    """:func:`load_audio`'s work; ``None`` when the file has no audio stream.

    ``length``: decode only that many samples (None: the whole track): from the start, or, with
    ``centre`` (seconds from the start of the track), the window centred there and shifted to lie
    inside the track when the track is longer than the window. Decoding seeks to the window and
    stops after it, so long tracks cost what the window costs.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"load_audio: sample_rate must be a positive int, got {sample_rate!r}")
    with open_media(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        start = 0.0
        if length is not None and centre is not None:
            span = length / sample_rate
            duration = _track_seconds(container, stream)
            latest = max(0.0, duration - span) if duration is not None else float("inf")
            start = min(max(0.0, centre - span / 2), latest)
        try:
            wav = _decode_window(container, stream, sample_rate, start, length)
            if wav is None:  # no timestamps to seek by: count samples from the start instead
                container.seek(0)
                wav = _decode_window(container, stream, sample_rate, 0.0, None if length is None else
                                     int(round(start * sample_rate)) + length)
                wav = wav[int(round(start * sample_rate)):]
        except Exception as e:
            raise VideoError(f"{path}: cannot decode the audio stream "
                             f"({stream.codec_context.name}): {e}") from e
    wav = wav if length is None else wav[:length]
    if not np.isfinite(wav).all():
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        raise VideoError(f"{path}: the audio stream holds {bad} non-finite samples (NaN or Inf) of {wav.size}")
    return wav


def _track_seconds(container, stream) -> float | None:
    """The audio track's length in seconds from the container (None when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


_SEEK_PREROLL_S = 0.2


def _decode_window(container, stream, sample_rate: int, start: float, length: int | None) -> np.ndarray | None:
    """Mono float32 samples of ``stream`` from ``start`` seconds on (``length`` of them, or to the end);
    None when ``start > 0`` and the frames carry no timestamps to find it by."""
    av = _require_av()
    origin = stream.start_time or 0
    if start > 0:
        # Land a little early: lossy codecs (AAC, Opus) decode their first frame after a seek
        # without the previous frame's overlap, so that frame is pre-roll, not signal.
        container.seek(origin + int(max(0.0, start - _SEEK_PREROLL_S) / stream.time_base), stream=stream,
                       backward=True)
    # Resample but keep the channels: FFmpeg's own stereo-to-mono matrix adds L and R at 0.707
    # each (louder, can clip); the plain channel mean is what we want. Packed (interleaved) float,
    # not planar: PyAV miscounts the planes of planar audio with 8 or more channels and reads past
    # them (a segfault in to_ndarray); one packed plane holds any channel count.
    resampler = av.AudioResampler(format="flt", rate=sample_rate)
    chunks, have, skip = [], 0, None
    for frame in container.decode(stream):
        if skip is None:  # where the seek landed, in samples before the window's start
            if start > 0 and frame.pts is None:
                return None
            landed = float((frame.pts - origin) * stream.time_base) if frame.pts is not None else 0.0
            skip = max(0, int(round((start - landed) * sample_rate)))
        for f in resampler.resample(frame):
            chunks.append(_downmix(f))
            have += chunks[-1].shape[0]
        if length is not None and have >= skip + length:
            break
    else:
        chunks.extend(_downmix(f) for f in resampler.resample(None))  # flush
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    wav = np.concatenate(chunks).astype(np.float32, copy=False)[skip or 0:]
    return wav if length is None else wav[:length]


def _downmix(frame) -> np.ndarray:
    """The mean over the channels of a packed float audio frame: float32 ``(samples,)``."""
    channels = frame.layout.nb_channels or len(frame.layout.channels) or 1
    return frame.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _mel(f):
    """HTK mel scale (Kaldi's MelScale): 1127 ln(1 + f / 700)."""
    return 1127.0 * torch.log1p(f / 700.0) if isinstance(f, torch.Tensor) else 1127.0 * math.log1p(f / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(num_mel_bins: int, fft_size: int, sample_rate: float, low_freq: float = LOW_FREQ,
              high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters as a float64 ``(num_mel_bins, fft_size // 2 + 1)`` matrix.

    The triangles are linear in mel (not in Hz), spaced evenly in mel between ``low_freq`` and
    ``high_freq`` (``<= 0`` means that much below Nyquist); the Nyquist bin always has weight 0,
    as in Kaldi. Cached: do not modify the result in place.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and low_freq < high_freq <= nyquist):
        raise ValueError(f"mel_banks: need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); got "
                         f"low_freq={low_freq}, high_freq={high_freq}")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    b = torch.arange(num_mel_bins, dtype=torch.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    num_fft_bins = fft_size // 2
    mel = _mel(torch.arange(num_fft_bins, dtype=torch.float64) * (sample_rate / fft_size))[None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # Nyquist bin: weight 0 (Kaldi leaves it out)


def fbank(waveform, sample_rate: int = 16000, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
          frame_shift_ms: float = 10.0, *, low_freq: float = LOW_FREQ, high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank of a mono waveform: ``(num_frames, num_mel_bins)``.

    The definition of ``torchaudio.compliance.kaldi.fbank`` with ``window_type="hanning"``,
    ``use_energy=False``, ``dither=0``, ``htk_compat=True`` and Kaldi's defaults otherwise: frames
    of ``int(sample_rate * frame_length_ms / 1000)`` samples every ``int(sample_rate *
    frame_shift_ms / 1000)`` samples, wholly inside the signal (``snip_edges=True``); per frame the
    mean removed, preemphasis 0.97 (the first sample against itself), a Hanning window
    ``0.5 - 0.5 cos(2 pi n / (N - 1))``, zero-padded to the next power of two, power spectrum,
    HTK-mel triangular filters (:func:`mel_banks`, ``low_freq`` 20 Hz, ``high_freq`` 0 = Nyquist),
    natural log floored at the dtype's machine epsilon.

    ``waveform``: 1-D (or ``(1, samples)``) array or tensor, float in [-1, 1] (Kaldi's scale
    differs from 16-bit integers only by a constant offset of the log). Computed in the input's
    float dtype (float32 for integer or float32 input, float64 for float64), on its device. A
    waveform shorter than one window gives zero frames.
    """
    x = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(as_numpy(waveform)))
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"fbank: waveform must be mono, shape (samples,) or (1, samples); got "
                         f"{tuple(x.shape)} (downmix the channels first, e.g. with load_audio)")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if sample_rate <= 0 or num_mel_bins <= 0:
        raise ValueError(f"fbank: sample_rate and num_mel_bins must be positive; got {sample_rate}, "
                         f"{num_mel_bins}")
    # The same float expressions as Kaldi/torchaudio, so the sizes agree exactly (400 and 160).
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if window < 2 or shift < 1:
        raise ValueError(f"fbank: frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} "
                         f"give a window of {window} and a shift of {shift} samples at {sample_rate} Hz")
    fft_size = 1 << (window - 1).bit_length()
    dtype = x.dtype
    if x.shape[0] < window:
        return torch.zeros(0, num_mel_bins, dtype=dtype, device=x.device)
    frames = x.unfold(0, window, shift)  # (num_frames, window), a view
    frames = frames - frames.mean(dim=1, keepdim=True)
    # Preemphasis; Kaldi uses the frame's first sample as its own predecessor.
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - PREEMPHASIS * prev
    n = torch.arange(window, dtype=torch.float64, device=x.device)
    hann = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (window - 1))).to(dtype)
    spectrum = torch.fft.rfft(frames * hann, n=fft_size).abs().pow(2)  # (num_frames, fft/2 + 1)
    banks = mel_banks(num_mel_bins, fft_size, float(sample_rate), float(low_freq), float(high_freq))
    energies = spectrum @ banks.to(device=x.device, dtype=dtype).T
    return torch.clamp(energies, min=torch.finfo(dtype).eps).log()


def normalize_fbank(features: torch.Tensor, target_length: int = 1024) -> torch.Tensor:
    """Zero-padded or cut to ``target_length`` frames, then AST's normalisation ``(x - AST_MEAN) / (2 AST_STD)``
    (padding first, as AST's recipe does: padded frames read 0.467)."""
    if target_length <= 0:
        raise ValueError(f"target_length must be positive, got {target_length}")
    n = features.shape[0]
    fitted = features[:target_length] if n >= target_length else \
        torch.nn.functional.pad(features, (0, 0, 0, target_length - n))
    return (fitted - AST_MEAN) / (AST_STD * 2)


def waveform_features(waveform, sample_rate: int = 16000, target_length: int = 1024,
                      num_mel_bins: int = 128) -> torch.Tensor:
    """MZST's audio input from a 16 kHz mono waveform: :func:`fbank` + :func:`normalize_fbank`, float32
    ``(target_length, num_mel_bins)``.

    Always computed in float32, as AST was: at 128 bins a few low mel filters hold no FFT bin and
    sit on the log floor, which is the dtype's epsilon (-15.94 in float32, -36.04 in float64).
    """
    x = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(as_numpy(waveform)))
    feats = fbank(x.to(torch.float32), sample_rate=sample_rate, num_mel_bins=num_mel_bins)
    return normalize_fbank(feats, target_length)


def audio_features(path, target_length: int = 1024, missing: str = "zeros", *, sample_rate: int = 16000,
                   num_mel_bins: int = 128, centre: float | None = None) -> tuple[torch.Tensor, bool]:
    """MZST's audio input for the video file ``path``: ``(features, has_audio)``.

    Args:
        path: the media file.
        target_length: fbank frames (10 ms each); the window is :func:`window_samples` long (AST's
            1024 frames: 10.24 s plus the last 25 ms window).
        missing: for a file without an audio stream, ``"zeros"`` returns all-zero features and
            ``has_audio=False``; ``"error"`` raises :class:`MissingAudioError` naming the file.
        sample_rate: the waveform's rate after resampling (mono, channels averaged).
        num_mel_bins: mel bands.
        centre: None: the window starts at the start of the track (AST's own loader). Otherwise the
            time in seconds (from the start of the track) to centre the window on, e.g. a video
            clip's centre; the window is shifted to lie inside the track when the track is longer
            than the window. Either way a shorter track is zero-padded at the end.

    Returns:
        ``(features, has_audio)``: float32 ``(target_length, num_mel_bins)``, the normalised log-mel
        fbank (see :func:`waveform_features`), and whether the file has an audio stream. An audio
        stream shorter than one 25 ms window gives all-zero features with ``has_audio=True``.

    Raises:
        VideoError: the file cannot be read, or (``MissingAudioError``) has no audio under ``missing="error"``.
    """
    if missing not in ("zeros", "error"):
        raise ValueError(f"audio_features: missing must be 'zeros' or 'error', got {missing!r}")
    check_limit("audio_frames", target_length, "target_length")
    check_limit("mel_bins", num_mel_bins, "num_mel_bins")
    wav = _decode_audio(path, sample_rate, window_samples(target_length, sample_rate), centre)
    if wav is None:
        if missing == "error":
            raise MissingAudioError(f"{path}: has no audio stream (audio_features(..., missing='zeros') "
                                    "gives silent features and has_audio=False instead)")
        return torch.zeros(target_length, num_mel_bins, dtype=torch.float32), False
    features = waveform_features(wav, sample_rate, target_length, num_mel_bins)
    if not torch.isfinite(features).all():  # finite samples far outside [-1, 1] overflow the power spectrum
        raise VideoError(f"{path}: the audio's log-mel features are not finite (samples up to "
                         f"{float(np.abs(wav).max()):.3g}; float audio is expected in [-1, 1])")
    return features, True
