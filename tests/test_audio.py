"""Audio features for MZST (zsar.data.audio) against an independent NumPy fbank, and on real files."""

import math

import numpy as np
import pytest
import torch

from zsar.data.audio import (AST_MEAN, AST_STD, audio_features, fbank, load_audio, normalize_fbank,
                             waveform_features)
from zsar.data.video import VideoError, write_video


def reference_fbank(x, sample_rate=16000, num_mel_bins=128, frame_length_ms=25.0, frame_shift_ms=10.0,
                    low_freq=20.0, high_freq=0.0, eps=np.finfo(np.float64).eps):
    """Kaldi's fbank written out frame by frame in float64, straight from its definition."""
    x = np.asarray(x, dtype=np.float64)
    win = int(sample_rate * 0.001 * frame_length_ms)
    hop = int(sample_rate * 0.001 * frame_shift_ms)
    nfft = 1
    while nfft < win:
        nfft *= 2
    num_frames = 1 + (len(x) - win) // hop if len(x) >= win else 0

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    high = high_freq if high_freq > 0 else sample_rate / 2 + high_freq
    mlo, mhi = mel(low_freq), mel(high)
    step = (mhi - mlo) / (num_mel_bins + 1)
    weights = np.zeros((num_mel_bins, nfft // 2 + 1))
    for m in range(num_mel_bins):
        left, center, right = mlo + m * step, mlo + (m + 1) * step, mlo + (m + 2) * step
        for k in range(nfft // 2):  # Kaldi leaves the Nyquist bin out of every filter
            mk = mel(k * sample_rate / nfft)
            if left < mk <= center:
                weights[m, k] = (mk - left) / (center - left)
            elif center < mk < right:
                weights[m, k] = (right - mk) / (right - center)
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / (win - 1)) for n in range(win)])
    out = np.zeros((num_frames, num_mel_bins))
    for i in range(num_frames):
        frame = x[i * hop:i * hop + win].copy()
        frame -= frame.mean()
        emph = np.empty_like(frame)
        emph[0] = frame[0] - 0.97 * frame[0]
        for n in range(1, win):
            emph[n] = frame[n] - 0.97 * frame[n - 1]
        padded = np.zeros(nfft)
        padded[:win] = emph * window
        power = np.abs(np.fft.fft(padded)[:nfft // 2 + 1]) ** 2
        out[i] = np.log(np.maximum(weights @ power, eps))
    return out


def _waveform(rng, n):
    # Speech-like: a few tones plus noise, with a DC offset, within [-1, 1].
    t = np.arange(n) / 16000
    x = 0.05 * rng.standard_normal(n) + 0.1
    for f in rng.uniform(60, 7000, size=3):
        x += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return x


def _frames(n=4, size=32):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("n", [400, 401, 16000 + 137])
def test_fbank_matches_numpy_reference_float64(seed, n):
    rng = np.random.default_rng(seed)
    n = n + 2 * int(rng.integers(0, 200))  # keeps the parity of n: odd lengths stay odd
    x = _waveform(rng, n)
    got = fbank(torch.from_numpy(x))
    want = reference_fbank(x)
    assert got.dtype == torch.float64 and got.shape == (1 + (n - 400) // 160, 128)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-8)


def test_fbank_float32_close_to_reference(seed):
    rng = np.random.default_rng(seed)
    x = _waveform(rng, 8001)
    got = fbank(x.astype(np.float32))
    assert got.dtype == torch.float32 and got.shape == (48, 128)
    # The floor is float32's epsilon: at 128 bins a few low filters hold no FFT bin at all.
    want = reference_fbank(x.astype(np.float32), eps=np.finfo(np.float32).eps)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=5e-3)  # quiet bins: float32 FFT roundoff
    assert np.abs(got.numpy() - want).mean() < 1e-4


@pytest.mark.parametrize("kw", [dict(sample_rate=8000, num_mel_bins=23),
                                dict(sample_rate=22050, num_mel_bins=40, frame_length_ms=20.0),
                                dict(num_mel_bins=64, frame_shift_ms=12.5, low_freq=100.0, high_freq=-400.0)])
def test_fbank_other_settings_match_reference(seed, kw):
    rng = np.random.default_rng(seed)
    x = _waveform(rng, 6000 + int(rng.integers(0, 999)))
    np.testing.assert_allclose(fbank(torch.from_numpy(x), **kw).numpy(), reference_fbank(x, **kw),
                               rtol=0, atol=1e-8)


def test_fbank_short_input_gives_zero_frames():
    # snip_edges: a frame must lie wholly inside the signal, so < 400 samples give no frames.
    for n in (0, 1, 399):
        out = fbank(np.zeros(n, dtype=np.float32))
        assert out.shape == (0, 128) and out.dtype == torch.float32
    assert fbank(np.ones(400, dtype=np.float32)).shape == (1, 128)
    assert fbank(np.ones(559, dtype=np.float32)).shape == (1, 128)
    assert fbank(np.ones(560, dtype=np.float32)).shape == (2, 128)
    feats = waveform_features(np.zeros(100, dtype=np.float32))
    assert feats.shape == (1024, 128) and torch.allclose(feats, torch.tensor(4.2677393 / (4.5689974 * 2)))


def test_fbank_log_floor_and_dc_invariance(seed):
    # Silence sits on the epsilon floor of the dtype (Kaldi: log(max(e, eps))).
    torch.testing.assert_close(fbank(np.zeros(1600, dtype=np.float32)),
                               torch.full((8, 128), math.log(np.finfo(np.float32).eps)))
    torch.testing.assert_close(fbank(np.zeros(1600)), torch.full((8, 128), math.log(np.finfo(np.float64).eps),
                                                                 dtype=torch.float64))
    # Each frame loses its mean first, so a constant offset changes nothing (AST's mean removal).
    x = _waveform(np.random.default_rng(seed), 3000)
    torch.testing.assert_close(fbank(torch.from_numpy(x + 0.25)), fbank(torch.from_numpy(x)),
                               rtol=0, atol=1e-9)


def test_fbank_tone_peaks_in_the_right_bin():
    x = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    peak = fbank(x).mean(0).argmax().item()
    mel = lambda f: 1127 * math.log1p(f / 700)  # noqa: E731
    step = (mel(8000) - mel(20)) / 129
    centers = [mel(20) + (m + 1) * step for m in range(128)]
    assert abs(centers[peak] - mel(1000)) <= step


def test_fbank_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(ValueError, match="low_freq"):
        fbank(np.zeros(1000, dtype=np.float32), low_freq=9000.0)
    assert fbank(np.zeros((1, 1000), dtype=np.float32)).shape == (4, 128)
    assert fbank(np.zeros(1000, dtype=np.int16)).dtype == torch.float32


def test_waveform_features_normalise_pad_and_cut(seed):
    rng = np.random.default_rng(seed)
    x = _waveform(rng, 4000 + 2 * int(rng.integers(0, 100)) + 1)
    feats = waveform_features(x)
    ref = reference_fbank(x)
    assert feats.shape == (1024, 128) and feats.dtype == torch.float32
    n = ref.shape[0]
    # Computed in float32 whatever the input's dtype: the log floor is float32's epsilon.
    ref = reference_fbank(x.astype(np.float32), eps=np.finfo(np.float32).eps)
    np.testing.assert_allclose(feats[:n].numpy(), (ref + 4.2677393) / (4.5689974 * 2), atol=3e-4)
    # AST's recipe pads before normalising: padded frames read (0 - AST_MEAN) / (2 AST_STD) = 0.467.
    torch.testing.assert_close(feats[n:], torch.full_like(feats[n:], 4.2677393 / (4.5689974 * 2)))
    long = fbank(torch.from_numpy(_waveform(rng, 400 + 1030 * 160)))
    assert long.shape[0] == 1031
    cut = normalize_fbank(long)
    assert cut.shape == (1024, 128)
    torch.testing.assert_close(cut, (long[:1024] - AST_MEAN) / (2 * AST_STD))
    assert normalize_fbank(long, target_length=10).shape == (10, 128)


def test_load_audio_pcm_is_exact_and_features_follow(tmp_path, seed):
    # MJPEG + 16-bit PCM in AVI: lossless audio up to 16-bit quantisation.
    rng = np.random.default_rng(seed)
    x = np.clip(_waveform(rng, 16000), -1, 1) * 0.8
    path = write_video(tmp_path / "clip.avi", _frames(), audio=x, sample_rate=16000)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.shape == (16000,)
    np.testing.assert_allclose(wav, x, atol=1e-4)
    feats, has_audio = audio_features(path)
    assert has_audio and feats.shape == (1024, 128) and feats.dtype == torch.float32
    np.testing.assert_allclose(feats.numpy(), waveform_features(wav).numpy(), atol=1e-6)
    direct = waveform_features(x)
    # Only quantisation noise between them: no more than noise of one 16-bit step does to the
    # features (quiet mel bins amplify it in the log, by how much depends on the seed's tones).
    step = np.random.default_rng(seed + 1).uniform(-1, 1, x.shape) / 32768
    noise = (waveform_features((x + step).astype(np.float32))[:98] - direct[:98]).abs().max()
    assert (feats[:98] - direct[:98]).abs().max() <= 2 * noise + 1e-3
    torch.testing.assert_close(feats[98:], torch.full_like(feats[98:], 4.2677393 / (4.5689974 * 2)))


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm"])
def test_lossy_audio_tracks(tmp_path, name):
    # AAC (mp4) and Opus at 48 kHz (webm): lossy, so sanity rather than exactness.
    t = np.arange(16000) / 16000
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = write_video(tmp_path / name, _frames(), audio=x, sample_rate=16000)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 16000) <= 2048  # codec priming / final frame padding
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(spectrum.argmax() * 16000 / len(wav) - 440) < 5
    assert 0.3 < np.abs(wav).max() < 0.7
    feats, has_audio = audio_features(path)
    assert has_audio and feats.shape == (1024, 128) and torch.isfinite(feats).all()
    frames = 1 + (len(wav) - 400) // 160
    assert feats[:frames].abs().sum(1).min() > 0
    torch.testing.assert_close(feats[frames:], torch.full_like(feats[frames:], AST_MEAN / (-2 * AST_STD)))  # AST's padding
    # The loudest band is the one holding 440 Hz, as for the original waveform.
    assert feats[5:frames - 5].mean(0).argmax() == waveform_features(x)[5:90].mean(0).argmax()


def test_resampling_from_48k_and_channel_mean(tmp_path):
    t48 = np.arange(48000) / 48000
    tone = 0.4 * np.sin(2 * np.pi * 440 * t48)
    path = write_video(tmp_path / "hi.avi", _frames(), audio=np.stack([tone, 0.5 * tone]),
                       sample_rate=48000)
    wav = load_audio(path)  # FFmpeg resamples 48 kHz -> 16 kHz; channels averaged
    assert wav.shape == (16000,)
    want = 0.75 * 0.4 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(wav[100:-100], want[100:-100], atol=1e-3)
    assert load_audio(path, sample_rate=8000).shape == (8000,)


def test_video_without_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4", _frames())
    feats, has_audio = audio_features(path, missing="zeros")
    assert not has_audio and feats.shape == (1024, 128) and feats.dtype == torch.float32
    assert not feats.any()
    assert audio_features(path, target_length=50)[0].shape == (50, 128)
    with pytest.raises(VideoError, match="silent.mp4.*no audio stream"):
        audio_features(path, missing="error")
    with pytest.raises(VideoError, match="silent.mp4"):
        load_audio(path)
    assert load_audio(path, missing="empty").shape == (0,)


def test_bad_files_and_options(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4.*no such file"):
        audio_features(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4"):
        load_audio(tmp_path / "empty.mp4")
    (tmp_path / "junk.webm").write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(VideoError, match="junk.webm"):
        audio_features(tmp_path / "junk.webm", missing="zeros")
    with pytest.raises(ValueError, match="missing"):
        audio_features(tmp_path / "junk.webm", missing="skip")
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(tmp_path / "junk.webm", sample_rate=0)
