"""read_frames on every decoder backend that runs here, on real files the tests encode."""

import logging

import numpy as np
import pytest
import torch

from zsar.data import VideoError, choose_backend, probe_video, read_frames, write_video
from zsar.data.decoders import (
    DecodeRequest,
    DecoderUnavailableError,
    decoder_dispatcher,
    decoder_names,
    get_decoder,
    register_decoder,
    unavailable_reason,
)
from zsar.data.decoders.pyav import PyAVDecoder

from videos import cut_after_packet, make_video, nearest_frames

HAS_DALI = unavailable_reason("dali-cpu") is None
needs_dali = pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI is not installed")
CPU_BACKENDS = ["pyav", pytest.param("dali-cpu", marks=needs_dali)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    out = {}
    for ext in ("webm", "avi", "mp4"):
        path = root / f"g.{ext}"
        out[ext] = (path, make_video(path, t=30, seed=7))
    return out


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("ext", ["webm", "avi"])
def test_frames_match_the_source_at_the_indices(clips, backend, ext, seed):
    path, source = clips[ext]
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, 30, size=9)
    out = read_frames(path, indices, backend)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (9, 48, 64, 3)
    np.testing.assert_array_equal(nearest_frames(out.numpy(), source), indices)
    assert np.abs(out.numpy().astype(float) - source[indices]).mean() < 5  # lossy codecs


def test_pyav_reads_h264(clips):
    path, source = clips["mp4"]
    out = read_frames(path, [0, 29, 3], "pyav").numpy()
    np.testing.assert_array_equal(nearest_frames(out, source), [0, 29, 3])


@needs_dali
def test_dali_cpu_and_pyav_agree_on_vp9(clips, seed):
    path, _ = clips["webm"]
    indices = np.random.default_rng(seed).permutation(30)[:12]
    a = read_frames(path, indices, "pyav").numpy().astype(float)
    b = read_frames(path, indices, "dali-cpu").numpy().astype(float)
    assert np.abs(a - b).mean() < 2.0  # colour conversion rounding only


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_indices_past_the_end_repeat_the_last_frame(clips, backend):
    path, source = clips["webm"]
    out = read_frames(path, [28, 29, 30, 45], backend).numpy()
    np.testing.assert_array_equal(nearest_frames(out, source), [28, 29, 29, 29])


def test_seeking_into_a_long_video(tmp_path):
    path = tmp_path / "long.webm"
    source = make_video(path, t=260, h=32, w=48, seed=3)
    indices = np.array([250, 120, 200, 259, 130])
    out = read_frames(path, indices, "pyav").numpy()  # first index past the seek threshold
    np.testing.assert_array_equal(nearest_frames(out, source), indices)


def test_one_frame_video(tmp_path):
    path = tmp_path / "one.webm"
    source = make_video(path, t=1)
    assert probe_video(path).num_frames == 1
    out = read_frames(path, [0, 0, 5], "pyav").numpy()
    assert out.shape == (3, 48, 64, 3) and np.abs(out.astype(float) - source[0]).mean() < 4


@pytest.mark.parametrize("bad", [[], [[0, 1]], [-1, 2], [0.5]])
def test_bad_indices(clips, bad):
    with pytest.raises(ValueError, match="indices"):
        read_frames(clips["webm"][0], bad)


@needs_dali
def test_explicit_backend_that_cannot_decode_names_file_codec_and_backend(clips):
    path, _ = clips["mp4"]
    with pytest.raises(ValueError) as err:
        read_frames(path, [0], "dali-cpu")
    msg = str(err.value)
    assert str(path) in msg and "h264" in msg and "dali-cpu" in msg


def test_dali_gpu_without_a_gpu_is_refused_clearly(clips):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="dali-gpu"):
        read_frames(clips["webm"][0], [0], "dali-gpu")


def test_unknown_backend(clips):
    with pytest.raises(ValueError, match="backend: unknown decoder"):
        read_frames(clips["webm"][0], [0], "opencv")


def test_auto_chooses_by_codec_and_logs_why(clips, caplog):
    caplog.set_level(logging.DEBUG, logger="zsar.data.decoders")
    h264 = probe_video(clips["mp4"][0])
    assert choose_backend(h264, "cpu") == "pyav"
    vp9 = probe_video(clips["webm"][0])
    assert choose_backend(vp9, "cpu") == ("dali-cpu" if HAS_DALI else "pyav")
    if HAS_DALI:
        assert "dali-cpu: does not decode h264 (it decodes mjpeg, vp8, vp9)" in caplog.text
    out = read_frames(clips["mp4"][0], [1, 2], "auto", device="cpu")
    assert out.shape == (2, 48, 64, 3)


# ---- bad files ------------------------------------------------------------------------------------

def _bad_files(root, good):
    """Name → path of a corpus of broken inputs."""
    root.mkdir(exist_ok=True)
    files = {"missing": root / "missing.webm"}
    (root / "empty.webm").write_bytes(b"")
    files["empty"] = root / "empty.webm"
    (root / "text.webm").write_text("this is not a video\n" * 50)
    files["not-a-video"] = root / "text.webm"
    data = good.read_bytes()
    (root / "truncated.webm").write_bytes(data[: len(data) // 3])
    files["truncated"] = root / "truncated.webm"
    (root / "header.webm").write_bytes(data[:200])  # a container header and no frames
    files["zero-frame"] = root / "header.webm"
    return files


def _zero_frame_video(path):
    import av

    with av.open(str(path), "w") as c:  # a video stream that never receives a frame
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuvj420p"
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "not-a-video", "zero-frame", "no-stream-frames"])
def test_unreadable_files_raise_video_error_naming_the_file(tmp_path, clips, kind):
    files = _bad_files(tmp_path / "bad", clips["webm"][0])
    files["no-stream-frames"] = _zero_frame_video(tmp_path / "bad" / "zero.avi")
    with pytest.raises(VideoError) as err:
        read_frames(files[kind], [0, 1])
    assert str(files[kind]) in str(err.value)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_truncated_file_never_crashes(tmp_path, clips, backend):
    """A truncated file either decodes its surviving frames or raises VideoError naming it."""
    path = _bad_files(tmp_path / "bad", clips["webm"][0])["truncated"]
    try:
        out = read_frames(path, [0, 1, 2], backend)
    except VideoError as e:
        assert str(path) in str(e)
    else:
        assert out.shape[0] == 3


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.webm", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no default codec"):
        write_video(tmp_path / "x.xyz", np.zeros((2, 8, 8, 3), np.uint8))


def test_truncated_file_is_an_error_not_repeated_frames(tmp_path, clips):
    """A file cut short after a header stating 30 frames was once padded with copies of its last frame."""
    make_video(tmp_path / "whole.avi", t=30, seed=4)
    cut_after_packet(tmp_path / "whole.avi", tmp_path / "cut.avi", 11)
    info = probe_video(tmp_path / "cut.avi")
    assert info.truncated and info.stated_frames == 30 and info.num_frames == 11
    for backend in ["pyav"] + (["dali-cpu"] if HAS_DALI else []):
        with pytest.raises(VideoError, match=r"cut.avi: truncated: the container states 30 frames but the file "
                                             rf"holds {info.num_frames}"):
            read_frames(tmp_path / "cut.avi", [0, 29], backend)
    complete = probe_video(tmp_path / "whole.avi")
    assert not complete.truncated and complete.num_frames == complete.stated_frames == 30


def test_pyav_does_not_pad_frames_that_do_not_decode(tmp_path):
    """A probe that over-states the frames (a file cut after probing) no longer gives copies of the
    last frame: beyond the slack of a frame or two (edit lists) it is a VideoError."""
    import dataclasses

    make_video(tmp_path / "whole.avi", t=30, seed=4)
    cut_after_packet(tmp_path / "whole.avi", tmp_path / "cut.avi", 11)
    real = probe_video(tmp_path / "cut.avi")
    stale = dataclasses.replace(real, num_frames=30, stated_frames=None)
    decoder = get_decoder("pyav")
    with pytest.raises(VideoError, match=rf"cut.avi: only frames 0-{real.num_frames - 1} of 30 decode"):
        decoder.read_frames(real.path, np.arange(0, 30, 3), torch.device("cpu"), stale)
    slack = dataclasses.replace(real, num_frames=real.num_frames + 2, stated_frames=None)
    out = decoder.read_frames(real.path, np.array([0, real.num_frames - 1, real.num_frames + 1]),
                              torch.device("cpu"), slack)
    assert torch.equal(out[2], out[1])  # within the slack: the real last frame stands in


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_special_files_are_reported_as_what_they_are(tmp_path, kind):
    import os
    import threading

    from zsar.data import audio_features

    path = tmp_path / "x.webm"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    want = "not a regular file (a FIFO)" if kind == "fifo" else "is a directory"
    for call in (lambda: probe_video(path), lambda: read_frames(path, [0]), lambda: audio_features(path)):
        result = {}

        def run(call=call):
            try:
                call()
            except Exception as e:  # noqa: BLE001 - the test inspects it
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(20)
        if t.is_alive() and kind == "fifo":
            open(path, "wb").close()  # a reader blocked on the FIFO: release it, then fail
        assert not t.is_alive(), "blocked reading a FIFO"
        err = result.get("error")
        assert isinstance(err, VideoError) and str(err) == f"{path}: {want}" + (", not a video file" if kind ==
                                                                               "directory" else "")


# ---- the decoder registry -------------------------------------------------------------------------

def test_builtin_decoders_declare_their_capabilities():
    assert decoder_names()[-1] == "pyav" and set(decoder_names()) >= {"pyav", "dali-cpu", "dali-gpu"}
    cpu = torch.device("cpu")
    assert get_decoder("pyav").not_supported_reasons(DecodeRequest("h264", cpu)) == []
    assert get_decoder("pyav").not_supported_reasons(DecodeRequest("anything", cpu)) == []
    reasons = get_decoder("dali-cpu").not_supported_reasons(DecodeRequest("h264", cpu))
    assert "does not decode h264 (it decodes mjpeg, vp8, vp9)" in reasons
    if HAS_DALI:
        assert get_decoder("dali-cpu").not_supported_reasons(DecodeRequest("vp9", cpu)) == []
    gpu = get_decoder("dali-gpu").not_supported_reasons(DecodeRequest("vp9", cpu))
    assert ("no CUDA device" in gpu) != torch.cuda.is_available() or "decodes on a CUDA device, cpu requested" in gpu
    with pytest.raises(ValueError, match="backend: unknown decoder"):
        get_decoder("opencv")


@pytest.fixture
def own_registry():
    """The registry as it is now, restored after the test."""
    from zsar.data.decoders import DECODERS

    before = set(DECODERS)
    yield
    for name in set(DECODERS) - before:
        DECODERS.unregister(name)


def test_a_registered_decoder_serves_read_frames_and_the_loaders(own_registry, clips):
    from zsar.data import ClipSpec, VideoClipDataset, VideoList, VideoLoader, VideoRecord

    @register_decoder
    class GreyDecoder(PyAVDecoder):
        """A toy decoder of VP9 only: PyAV's frames in grey."""

        name = "grey"
        codecs = frozenset({"vp9"})
        priority = 200  # after every built-in decoder: auto never reaches it

        def read_frames(self, path, indices, device, info):
            rgb = super().read_frames(path, indices, device, info)
            return rgb.float().mean(-1, keepdim=True).expand_as(rgb).round().to(torch.uint8)

    assert decoder_names()[-1] == "grey" and decoder_dispatcher().get("grey").name == "grey"
    path, _ = clips["webm"]
    grey = read_frames(path, [3, 7], "grey")
    rgb = read_frames(path, [3, 7], "pyav")
    assert torch.equal(grey, rgb.float().mean(-1, keepdim=True).expand_as(rgb).round().to(torch.uint8))
    with pytest.raises(DecoderUnavailableError) as err:
        read_frames(clips["mp4"][0], [0], "grey")
    assert str(err.value) == (f"{clips['mp4'][0]}: backend 'grey' cannot decode this h264 video: does not decode "
                              f"h264 (it decodes vp9)")
    videos = VideoList([VideoRecord(str(path), 0, "g"), VideoRecord(str(clips["mp4"][0]), 0, "h")], ["x"])
    spec = ClipSpec(frames=4, size=32, short_side=40, output_dtype="uint8")
    loader = VideoLoader(videos, spec, batch_size=2, backend="grey", num_workers=0, on_error="skip")
    (batch,) = list(loader)
    assert batch.video_ids == ["g"] and loader.skipped.count == 1  # the H.264 file is a bad file for it
    assert torch.equal(batch.clips[0, :, 0], batch.clips[0, :, 1])  # (T, 3, H, W): grey channels
    assert VideoClipDataset(videos, spec, backend="grey")[0].clip.shape == spec.output_shape()


def test_the_fallback_decoder_comes_from_the_registry(tmp_path):
    # Readers that cannot choose per codec take the first registered decoder, in dispatch order,
    # that decodes every codec on the CPU: pyav among the built-ins; a faster catch-all registered
    # later takes its place, with nothing else changed.
    from zsar.data import ClipSpec, VideoClipDataset, VideoList, VideoRecord
    from zsar.data.decoders import DECODERS, fallback_decoder, register_decoder

    spec = ClipSpec(frames=2, size=16)

    assert fallback_decoder() == "pyav" and fallback_decoder("pyav") == "pyav"
    with pytest.raises(ValueError, match="backend: unknown decoder"):
        fallback_decoder("nope")
    make_video(tmp_path / "a.avi", t=4, seed=1)
    videos = VideoList([VideoRecord(str(tmp_path / "a.avi"), 0, "a")], ["a"])

    class CatchAll(PyAVDecoder):
        name = "catch-all"
        priority = 50

    register_decoder(CatchAll)
    try:
        assert fallback_decoder() == "catch-all"
        assert VideoClipDataset(videos, spec).backend == "catch-all"
    finally:
        DECODERS.unregister("catch-all")
    assert fallback_decoder() == "pyav" and VideoClipDataset(videos, spec).backend == "pyav"
