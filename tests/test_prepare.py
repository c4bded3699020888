"""``zsar prepare`` (zsar.data.prepare and its CLI) on folders of real H.264 files."""

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from zsar.cli import main
from zsar.data.audio import load_audio
from zsar.data.prepare import find_videos, output_size, prepare_dataset
from zsar.data.video import VideoError, probe_video, write_video

from videos import make_video

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


# ---------------------------------------------------------------- kills, links, truncation, long names

def _processes_with(marker: str) -> list[int]:
    """Pids of the processes whose environment holds ``marker`` (a killed command's workers,
    fork server and resource tracker inherit it, whoever their parent is now): /proc, no psutil."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:  # gone meanwhile, or not ours
            pass
    return found


def _listing(folder: Path) -> dict[str, int]:
    """Relative path -> size (-1 for a folder) of everything under ``folder``. Entries that vanish
    during the walk are left out: a killed command's workers may still be removing their temporary
    folders (rglob raised FileNotFoundError on one in a CI run)."""
    found = {}
    for root, dirs, files in os.walk(folder):  # os.walk skips folders it can no longer list
        for name in (*dirs, *files):
            path = Path(root) / name
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            found[str(path.relative_to(folder))] = info.st_size if stat.S_ISREG(info.st_mode) else -1
    return found


@pytest.fixture(scope="module")
def long_sources(tmp_path_factory):
    """Videos that take a while to transcode, so a kill lands while workers are writing."""
    src = tmp_path_factory.mktemp("long") / "src"
    for i in range(6):
        make_video(src / f"v{i}.mp4", t=120, h=96, w=128, seed=i)
    return src


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGKILL", "SIGTERM"])
def test_a_killed_prepare_leaves_no_process_and_writes_nothing_after(long_sources, tmp_path, sig):
    dst = tmp_path / "dst"
    marker = f"ZSAR_TEST_PREPARE_RUN={uuid.uuid4().hex}"
    env = dict(os.environ, **dict([marker.split("=")]))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "zsar.cli", "prepare", str(long_sources), str(dst),
                                 "--workers", "2", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # Kill once one output is finished and a worker is writing another.
        while not (dst.is_dir() and any(p.suffix == ".mp4" for p in dst.iterdir())
                   and any(p.name.startswith(".zsar-prepare-tmp.") for p in dst.iterdir())):
            assert proc.poll() is None, "prepare finished before it could be killed: make the videos longer"
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.02)
        assert len(_processes_with(marker)) >= 3  # the command, the fork server, its workers
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        at_exit = _listing(dst)
        deadline = time.monotonic() + 60
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(marker) == []
        time.sleep(1)
        after = _listing(dst)
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM)
    if sig == signal.SIGTERM:
        assert "stopped by SIGTERM" in (tmp_path / "stderr.txt").read_text()
    assert after.keys() <= at_exit.keys() and all(after[k] == at_exit[k] for k in after)  # nothing written after
    assert all(name.endswith(".mp4") for name in after)  # no temporary folder or file is left
    for name in after:  # what is there is whole
        assert probe_video(dst / name).num_frames == 120
    summary = prepare_dataset(long_sources, dst, workers=1, progress=False)  # and the next run finishes the rest
    assert sorted(summary.skipped) == sorted(after) and len(summary.converted) == 6 - len(after)


def test_symlinked_folders_are_noted_or_followed(tmp_path, capsys):
    src, outside = tmp_path / "src", tmp_path / "elsewhere"
    make_video(src / "own" / "a.mp4", t=4)
    make_video(outside / "b.mp4", t=4)
    (src / "linked").symlink_to(outside, target_is_directory=True)
    (src / "own" / "loop").symlink_to(src, target_is_directory=True)
    summary = prepare_dataset(src, tmp_path / "out", workers=1, progress=False)
    assert summary.converted == ["own/a.mp4"]
    assert [folder for folder, _ in summary.skipped_folders] == ["linked", "own/loop"]
    assert all("--follow-symlinks" in why for _, why in summary.skipped_folders)
    assert "2 folders not searched" in str(summary)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--workers", "1", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert f"note: {src / 'linked'}: not searched: symbolic link" in cap.err and "2 folders not searched" in cap.out
    assert cap.err.count(str(src / "linked")) == 1  # said once

    followed = prepare_dataset(src, tmp_path / "out", workers=1, progress=False, follow_symlinks=True)
    assert followed.converted == ["linked/b.mp4"] and followed.skipped == ["own/a.mp4"]
    assert followed.skipped_folders == [
        ("own/loop", f"symbolic link to {src.resolve()}, a folder it is inside (a loop)")]
    assert probe_video(tmp_path / "out" / "linked" / "b.mp4").num_frames == 4
    assert main(["prepare", str(src), str(tmp_path / "out2"), "--workers", "1", "--no-progress",
                 "--follow-symlinks"]) == 0
    assert (tmp_path / "out2" / "linked" / "b.mp4").is_file()


def test_a_truncated_source_is_converted_once_and_recorded(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_video(src / "cut.avi", t=30)  # AVI's header keeps the frame count when the file is cut short
    make_video(src / "whole.avi", t=10, seed=1)
    data = (src / "cut.avi").read_bytes()
    (src / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    declared = probe_video(src / "cut.avi").stated_frames
    assert declared == 30
    first = prepare_dataset(src, dst, workers=1, progress=False)
    assert first.converted == ["cut.avi", "whole.avi"] and len(first.truncated) == 1
    rel, kept, header = first.truncated[0]
    assert (rel, header) == ("cut.avi", 30) and 0 < kept < 30 and probe_video(dst / "cut.mp4").num_frames == kept
    assert "1 from truncated sources" in str(first)
    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob("*")}
    again = prepare_dataset(src, dst, workers=1, progress=False)
    assert again.skipped == ["cut.avi", "whole.avi"] and not again.converted and not again.truncated
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*")} == stamps  # nothing was written
    assert main(["prepare", str(src), str(dst), "--workers", "1", "--no-progress"]) == 0
    assert "2 already prepared" in capsys.readouterr().out
    # A new source under the same name is converted again, and its record goes when it is whole.
    make_video(src / "cut.avi", t=12, seed=2)
    fixed = prepare_dataset(src, dst, workers=1, progress=False)
    assert fixed.converted == ["cut.avi"] and not fixed.truncated and probe_video(dst / "cut.mp4").num_frames == 12
    assert not (dst / ".zsar-prepare.json").exists()


def test_cli_notes_a_truncated_source(tmp_path, capsys):
    src = tmp_path / "src"
    make_video(src / "cut.avi", t=30)
    data = (src / "cut.avi").read_bytes()
    (src / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    assert main(["prepare", str(src), str(tmp_path / "dst"), "--workers", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"note: {src / 'cut.avi'}: truncated source:" in err and "of the 30 frames its header declares" in err


def test_a_name_as_long_as_the_file_system_allows(tmp_path):
    """A 245-character name fits (the limit is 255 bytes); the temporary names must fit too."""
    src = tmp_path / "src"
    name = "v" * 241 + ".avi"
    make_video(src / "sub" / "short.avi", t=5)
    (src / "sub" / "short.avi").rename(src / "sub" / name)  # write_video's own temporary name would not fit
    summary = prepare_dataset(src, tmp_path / "dst", workers=1, progress=False)
    out = tmp_path / "dst" / "sub" / ("v" * 241 + ".mp4")
    assert summary.converted == [f"sub/{name}"] and probe_video(out).num_frames == 5
    assert sorted(p.name for p in (tmp_path / "dst" / "sub").iterdir()) == [out.name]
    webm = prepare_dataset(src, tmp_path / "dst", codec="vp9", workers=2, progress=False)  # a longer suffix, in a pool
    assert webm.converted == [f"sub/{name}"] and len(out.with_suffix(".webm").name) == 246


def test_temporary_folders_of_dead_workers_are_removed(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_video(src / "sub" / "a.mp4", t=3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    other_run = subprocess.Popen(["sleep", "60"])  # stands for a worker of another run into the same folder
    try:
        stale = dst / "sub" / f".zsar-prepare-tmp.{int(dead.stdout)}"
        live = dst / "sub" / f".zsar-prepare-tmp.{other_run.pid}"
        for folder in (stale, live):
            folder.mkdir(parents=True)
            (folder / "video.mp4").write_bytes(b"half a video")
        assert prepare_dataset(src, dst, workers=1, progress=False).converted == ["sub/a.mp4"]
        assert not stale.exists() and (live / "video.mp4").exists()
    finally:
        other_run.kill()
        other_run.wait()


@pytest.mark.parametrize("dst", ["a_file", "a_file/out"])
def test_cli_refuses_a_dst_that_is_or_lies_under_a_file_before_converting(src, tmp_path, capsys, dst):
    """A DST that cannot be a folder is one line naming DST, before any video is converted (not an error
    against the first source video)."""
    (tmp_path / "a_file").write_text("")
    target = tmp_path / dst
    assert main(["prepare", str(src), str(target), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zsar prepare: error: DST {target}: ") and "\n" not in err, err
    assert "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_refuses_a_src_without_videos(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    assert main(["prepare", str(empty), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zsar prepare: error: no videos found in SRC {empty} (extensions: .mp4, ") and "\n" not in err
    assert not (tmp_path / "out").exists()
