"""``zsar prepare`` (zsar.data.prepare and its CLI) on folders of real H.264 files."""

import hashlib
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from zsar.cli import main
from zsar.data.audio import load_audio
from zsar.data.prepare import find_videos, output_size, prepare_dataset
from zsar.data.video import VideoError, probe_video, write_video

# name -> (frames, height, width, with audio)
SOURCES = {"a.mp4": (10, 48, 64, False), "talk.mp4": (8, 40, 56, True), "sub/deep/c.mp4": (6, 64, 48, False)}


def _frames(t, h, w, seed=0):
    # Smooth, moving content: lossy codecs keep it close, so a transcode can be checked by eye and by number.
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        for c in range(3):
            out[i, ..., c] = (base[c] + 2 * x + 3 * y + 5 * i * (c + 1)) % 200 + 20
    return out


def _make_sources(root: Path) -> Path:
    src = root / "src"
    for i, (name, (t, h, w, with_audio)) in enumerate(SOURCES.items()):
        audio = 0.3 * np.sin(2 * np.pi * 330 * np.arange(8000) / 16000) if with_audio else None
        write_video(src / name, _frames(t, h, w, seed=i), audio=audio, sample_rate=16000)
    (src / "notes.txt").write_text("not a video\n")
    return src


def _digest(folder: Path) -> dict:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return _make_sources(tmp_path_factory.mktemp("prep"))


@pytest.mark.parametrize("codec,ext,decoder", [("vp9", ".webm", "vp9"), ("h264", ".mp4", "h264")])
def test_prepare_converts_tree_and_resumes(src, tmp_path, codec, ext, decoder):
    before = _digest(src)
    dst = tmp_path / "out"
    summary = prepare_dataset(src, dst, codec=codec, workers=1, progress=False)
    assert sorted(summary.converted) == sorted(SOURCES) and not summary.skipped and not summary.failed
    assert summary.total == 3 and "3 converted" in str(summary)
    outputs = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert outputs == sorted(str(Path(n).with_suffix(ext)) for n in SOURCES)
    for name, (t, h, w, with_audio) in SOURCES.items():
        out = dst / Path(name).with_suffix(ext)
        info = probe_video(out)
        assert (info.codec, info.num_frames, info.width, info.height) == (decoder, t, w, h)
        assert info.has_audio == with_audio
        if with_audio:  # the tone survives the trip through AAC (and Opus for vp9)
            wav = load_audio(out)
            assert abs(len(wav) - 8000) < 2048
            assert abs(np.abs(np.fft.rfft(wav)).argmax() * 16000 / len(wav) - 330) < 10
        got = _decode(out).astype(float)  # every frame decodes, close to its source
        assert got.shape == (t, h, w, 3)
        assert np.abs(got - _decode(src / name)).mean() < 8
    assert _digest(src) == before  # the sources are untouched and nothing was added
    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob("*")}
    again = prepare_dataset(src, dst, codec=codec, workers=1, progress=False)
    assert sorted(again.skipped) == sorted(SOURCES) and not again.converted and not again.failed
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*")} == stamps


def test_pool_resize_and_damaged_output(src, tmp_path):
    dst = tmp_path / "out"
    summary = prepare_dataset(src, dst, codec="vp9", workers=2, size=32, progress=False)
    assert sorted(summary.converted) == sorted(SOURCES)
    for name, (t, h, w, _) in SOURCES.items():
        info = probe_video(dst / Path(name).with_suffix(".webm"))
        assert (info.width, info.height) == output_size(w, h, 32) and min(info.width, info.height) == 32
        assert info.num_frames == t and _decode(info.path).shape[0] == t
    # A damaged output is converted again, the others are skipped; a different size redoes all.
    victim = dst / "sub/deep/c.webm"
    victim.write_bytes(victim.read_bytes()[:200])
    again = prepare_dataset(src, dst, codec="vp9", workers=1, size=32, progress=False)
    assert again.converted == ["sub/deep/c.mp4"] and len(again.skipped) == 2
    assert probe_video(victim).num_frames == 6
    assert len(prepare_dataset(src, dst, codec="vp9", workers=1, progress=False).converted) == 3


def test_output_size():
    assert output_size(320, 240, None) == (320, 240)
    assert output_size(321, 241, None) == (320, 240)
    assert output_size(320, 240, 128) == (170, 128)
    assert output_size(240, 320, 128) == (128, 170)


def test_bad_sources_under_both_policies(src, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "garbage.mp4").write_bytes(np.random.default_rng(3).bytes(4000))
    whole = (bad / "a.mp4").read_bytes()
    (bad / "sub" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (bad / "empty.avi").write_bytes(b"")
    (bad / ".a.123.partial.mp4").write_bytes(b"leftover of an interrupted write: hidden, ignored")
    assert [str(p) for p in find_videos(bad)] == ["a.mp4", "empty.avi", "garbage.mp4", "sub/deep/c.mp4",
                                                  "sub/truncated.mp4", "talk.mp4"]
    before = _digest(bad)
    with pytest.raises(VideoError, match="empty.avi"):
        prepare_dataset(bad, tmp_path / "out", workers=1, progress=False)
    summary = prepare_dataset(bad, tmp_path / "out", workers=1, progress=False, skip_errors=True)
    assert [rel for rel, _ in summary.failed] == ["empty.avi", "garbage.mp4", "sub/truncated.mp4"]
    for rel, reason in summary.failed:
        assert rel in reason  # each reason names its file
    assert len(summary.converted) + len(summary.skipped) == 3 and "3 failed" in str(summary)
    assert not (tmp_path / "out" / "garbage.mp4").exists()
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no temporary files left
    assert _digest(bad) == before


def test_refuses_layouts_that_could_touch_the_sources(tmp_path):
    src = tmp_path / "data"
    write_video(src / "x.mp4", _frames(3, 16, 16))
    with pytest.raises(ValueError, match="is the source folder"):
        prepare_dataset(src, src, progress=False)
    with pytest.raises(ValueError, match="is the source folder"):
        prepare_dataset(src, tmp_path / "data" / ".." / "data", progress=False)
    with pytest.raises(ValueError, match="inside the source folder"):
        prepare_dataset(src, src / "prepared", progress=False)
    # DST containing SRC: data/x.mp4 -> <dst>/x.mp4 is fine, but data/data/y.mp4 -> <dst>/data/y.mp4 is a source.
    write_video(src / "data" / "y.mp4", _frames(3, 16, 16))
    before = _digest(tmp_path)
    with pytest.raises(ValueError, match="inside the source folder"):
        prepare_dataset(src, tmp_path, codec="h264", progress=False)
    assert _digest(tmp_path) == before
    # Two sources that map onto one output.
    write_video(src / "x.avi", _frames(3, 16, 16))
    with pytest.raises(ValueError, match="x.avi.*x.mp4|x.mp4.*x.avi"):
        prepare_dataset(src, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="codec"):
        prepare_dataset(src, tmp_path / "out", codec="av1")
    with pytest.raises(ValueError, match="size"):
        prepare_dataset(src, tmp_path / "out", size=33)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_dataset(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dst_containing_src_and_odd_sizes(tmp_path):
    src = tmp_path / "raw"
    write_video(src / "x.avi", _frames(4, 31, 45))  # MJPEG allows odd sizes; 4:2:0 H.264/VP9 do not
    summary = prepare_dataset(src, tmp_path, codec="vp9", workers=1, progress=False)
    info = probe_video(tmp_path / "x.webm")
    assert summary.converted == ["x.avi"] and (info.num_frames, info.width, info.height) == (4, 44, 30)
    assert np.abs(_decode(info.path).astype(float) - _decode(src / "x.avi")[:, :30, :44]).mean() < 8


def test_cli(src, tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["prepare", str(src), str(dst), "--codec", "vp9", "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 converted" in out and probe_video(dst / "a.webm").codec == "vp9"
    assert main(["prepare", str(src), str(dst), "--codec", "vp9", "--no-progress"]) == 0
    assert "3 already prepared" in capsys.readouterr().out
    assert main(["prepare", str(src), str(src), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zsar prepare: error:") and "source folder" in err and "\n" not in err
    assert main(["prepare", str(src), str(dst), "--size", "31"]) == 2
    assert "--size" in capsys.readouterr().err
    bad = tmp_path / "bad"
    write_video(bad / "ok.mp4", _frames(3, 16, 16))
    (bad / "broken.avi").write_bytes(b"RIFF" + bytes(100))
    assert main(["prepare", str(bad), str(tmp_path / "o2"), "--workers", "1", "--no-progress"]) == 2
    assert "broken.avi" in capsys.readouterr().err
    assert main(["prepare", str(bad), str(tmp_path / "o2"), "--workers", "1", "--no-progress",
                 "--skip-errors"]) == 1
    cap = capsys.readouterr()
    assert "1 failed" in cap.out and f"failed: {bad / 'broken.avi'}" in cap.err
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "resumable" in help_text and "--skip-errors" in help_text and "exit status" in help_text
    assert os.listdir(src / "sub") == ["deep"]


def test_write_video_streams_an_iterable_of_frames(tmp_path):
    """A generator of frames gives the same video as the stacked array (same encoder input)."""
    frames = _frames(9, 48, 64, seed=3)
    from_array = write_video(tmp_path / "array.avi", frames)
    from_gen = write_video(tmp_path / "gen.avi", (f for f in frames))
    assert probe_video(from_gen).num_frames == 9
    np.testing.assert_array_equal(_decode(from_gen), _decode(from_array))


@pytest.mark.parametrize("bad,match", [
    (lambda f: f.astype(np.float32), "frame 4 .* uint8"),
    (lambda f: f[:-2], r"frame 4 .*\(48, 64, 3\)"),
])
def test_write_video_rejects_a_bad_frame_mid_stream_and_leaves_nothing(tmp_path, bad, match):
    frames = list(_frames(8, 48, 64))
    frames[4] = bad(frames[4])
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "x.mp4", iter(frames))
    assert list(tmp_path.iterdir()) == []


def test_write_video_leaves_nothing_when_the_frame_source_fails(tmp_path):
    def frames():
        yield from _frames(3, 48, 64)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        write_video(tmp_path / "x.webm", frames())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "y.webm", iter([]))


def test_transcode_memory_does_not_grow_with_video_length(tmp_path):
    """transcode_video decodes and encodes frame by frame: its peak Python/NumPy allocation stays
    far below the decoded size of the video (120 frames of 320x240 RGB: 27.6 MB)."""
    import tracemalloc

    from zsar.data.prepare import transcode_video

    src = tmp_path / "long.mp4"
    write_video(src, (_frames(1, 240, 320, seed=i % 7)[0] for i in range(120)))
    tracemalloc.start()
    try:
        transcode_video(src, tmp_path / "out.webm", codec="vp9")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert probe_video(tmp_path / "out.webm").num_frames == 120
    assert peak < 120 * 240 * 320 * 3 / 8, f"peak {peak / 1e6:.1f} MB"
