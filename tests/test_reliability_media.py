"""Media files that used to crash or blow up memory: audio of any channel count, sample rate and
length; video headers stating absurd sizes. Every file is written here with PyAV."""

from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pytest
import torch

from zsar._limits import LimitError
from zsar.data import audio as zaudio
from zsar.data.prepare import transcode_video
from zsar.data.video import VideoError, probe_video, write_video

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


def _write_media(path, samples: np.ndarray, rate: int, *, frames: int = 2, size=(16, 16), acodec="pcm_s16le"):
    """A video (MJPEG, ``frames`` frames of ``size``) with one audio track of int16 ``samples``
    ``(channels, n)`` at ``rate`` Hz, in any channel layout."""
    channels = samples.shape[0]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mjpeg", rate=25)
        vs.width, vs.height = size[1], size[0]
        vs.pix_fmt = "yuvj420p"
        a = c.add_stream(acodec, rate=rate)
        a.layout = LAYOUTS.get(channels, f"{channels}c")
        for _ in range(frames):
            c.mux(vs.encode(av.VideoFrame.from_ndarray(np.zeros((*size, 3), np.uint8), format="rgb24")))
        c.mux(vs.encode())
        for start in range(0, samples.shape[1], 4096):
            part = samples[:, start:start + 4096]
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(part.T.reshape(1, -1)), format="s16", layout=a.layout)
            f.sample_rate, f.pts = rate, start
            c.mux(a.encode(f))
        c.mux(a.encode())
    return path


@pytest.mark.parametrize("channels", [3, 8, 16])
def test_audio_of_any_channel_count_is_downmixed_to_the_channel_mean(tmp_path, channels):
    """8 or more channels used to segfault (PyAV miscounts planar planes); the result is the
    plain mean of the channels, against a float64 reference of the samples written."""
    rate, n = 16000, 8000
    t = np.arange(n) / rate
    x = np.stack([0.05 * (c + 1) * np.sin(2 * np.pi * 200 * (c + 1) * t) for c in range(channels)])
    q = np.round(x * 32767).astype(np.int16)
    path = _write_media(tmp_path / f"a{channels}.mkv", q, rate)
    wav = zaudio.load_audio(path)
    expected = (q.astype(np.float64) / 32768).mean(axis=0)
    assert wav.shape == (n,)
    np.testing.assert_allclose(wav, expected, atol=1e-6)
    feats, has_audio = zaudio.audio_features(path)
    assert has_audio and feats.shape == (1024, 128) and torch.isfinite(feats).all()


@pytest.mark.parametrize("rate", [100, 384000])
def test_extreme_sample_rates_decode_and_prepare(tmp_path, rate):
    n = max(rate // 2, 50)
    q = (np.random.default_rng(0).standard_normal((2, n)) * 3000).astype(np.int16)
    src = _write_media(tmp_path / "src.avi", q, rate)
    assert np.isfinite(zaudio.load_audio(src)).all()
    out = transcode_video(src, tmp_path / "out.mp4", codec="h264")
    info = probe_video(out)
    assert info.has_audio and 7350 <= info.audio_sample_rate <= 96000


def test_prepare_streams_a_long_audio_track(tmp_path):
    """5 minutes of 8 kHz audio (9.6 MB as float32): transcoding it must not hold the track whole."""
    rate, seconds = 8000, 300
    q = np.zeros((1, rate * seconds), np.int16)
    src = _write_media(tmp_path / "long.avi", q, rate)
    tracemalloc.start()
    try:
        transcode_video(src, tmp_path / "out.mp4", codec="h264")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB traced while transcoding"
    assert probe_video(tmp_path / "out.mp4").has_audio


def test_eight_channel_audio_through_prepare(tmp_path):
    q = (np.random.default_rng(1).standard_normal((8, 4000)) * 3000).astype(np.int16)
    src = _write_media(tmp_path / "src8.avi", q, 16000)
    out = transcode_video(src, tmp_path / "out.webm", codec="vp9")
    assert probe_video(out).has_audio


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_audio_is_an_error_naming_the_file(tmp_path, bad):
    x = np.full(8000, 0.1, np.float32)
    x[100] = bad
    path = tmp_path / "bad.mkv"
    with av.open(str(path), "w") as c:
        a = c.add_stream("pcm_f32le", rate=16000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        c.mux(a.encode(f))
        c.mux(a.encode())
    with pytest.raises(VideoError, match=r"bad\.mkv.*non-finite"):
        zaudio.audio_features(path)


def test_over_loud_float_audio_is_an_error_not_nan_features(tmp_path):
    x = np.full(8000, 1e30, np.float32) * np.sign(np.sin(np.arange(8000)))
    path = tmp_path / "loud.mkv"
    with av.open(str(path), "w") as c:
        a = c.add_stream("pcm_f32le", rate=16000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(x[None].astype(np.float32), format="flt", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        c.mux(a.encode(f))
        c.mux(a.encode())
    with pytest.raises(VideoError, match=r"loud\.mkv.*not finite"):
        zaudio.audio_features(path)


def test_video_header_beyond_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """The limit is checked on the header; ZSAR_LIMIT_FRAME_PIXELS moves it (here down to 32×32,
    so the test stays small: the mechanism is the same at 8192×8192)."""
    path = write_video(tmp_path / "big.avi", np.zeros((2, 48, 64, 3), np.uint8))
    assert probe_video(path).width == 64
    monkeypatch.setenv("ZSAR_LIMIT_FRAME_PIXELS", str(32 * 32))
    with pytest.raises(VideoError, match=r"big\.avi: pixels per frame \(64×48\)=3072 is above the limit of 1,024"):
        probe_video(path)


def test_clip_spec_sizes_are_bounded_together():
    from zsar.data import ClipSpec

    with pytest.raises(LimitError, match="short_side=8192 is above"):
        ClipSpec(frames=16, size=4096, short_side=8192)
    with pytest.raises(LimitError, match="memory of one video's clips"):
        ClipSpec(frames=1000, size=1024, num_clips=10)
    with pytest.raises(LimitError, match="ClipSpec.num_clips=100000"):
        ClipSpec(num_clips=100000)
    ClipSpec(frames=32, size=224, num_clips=10, crop="three")  # the papers' largest evaluation


def test_clip_memory_of_a_large_video_is_checked_per_file(tmp_path, monkeypatch):
    from zsar.data import ClipSpec, plan_clip

    path = write_video(tmp_path / "v.avi", np.zeros((4, 64, 64, 3), np.uint8))
    spec = ClipSpec(frames=4, size=32)
    plan_clip(spec, probe_video(path), None)
    monkeypatch.setenv("ZSAR_LIMIT_CLIP_BYTES", str(spec.memory_bytes(32, 32)))
    with pytest.raises(VideoError, match=r"v\.avi: memory of the clips of this 64×64 video"):
        plan_clip(spec, probe_video(path), None)


def test_a_frame_size_change_mid_stream_is_an_error_naming_the_file(tmp_path):
    """The header states the first frame's size (checked against the pixel limit); a later frame
    of another size is refused by name, not stacked into a shape error or decoded at its size."""
    import io

    from PIL import Image

    from zsar.data.decoders import get_decoder

    path = tmp_path / "resized.mjpeg"  # a raw MJPEG stream: each frame a JPEG of its own size
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for i in range(8):
            h, w = (48, 64) if i < 5 else (80, 96)
            jpeg = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
            f.write(jpeg.getvalue())
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 8)
    pyav = get_decoder("pyav")
    assert pyav.read_frames(path, np.arange(5), torch.device("cpu"), info).shape == (5, 48, 64, 3)
    with pytest.raises(VideoError, match=r"resized\.mjpeg: frame 5 is 96×80 but the stream header says 64×48"):
        pyav.read_frames(path, np.arange(8), torch.device("cpu"), info)
