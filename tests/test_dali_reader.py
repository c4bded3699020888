"""The DALI clip path built for throughput: DALI's video reader fed a file list of frame ranges, a
batch of clips per run, one pipeline per epoch (never one per file or clip), with the frames PyAV
reads. DALI's CPU decoder reads VP9, so the logic is checked here; the GPU (H.264, NVDEC) cases
skip without a GPU and run in the device script."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from videos import gradient_frames, make_video, nearest_frames
from zsar.data import ClipSpec, VideoList, VideoLoader, VideoRecord, write_video
from zsar.data.decoders import read_frames, unavailable_reason
from zsar.data.transforms import plan_clip
from zsar.data.video import probe_video

needs_dali = pytest.mark.skipif(unavailable_reason("dali-cpu") is not None, reason="NVIDIA DALI is not installed")
needs_dali_gpu = pytest.mark.skipif(unavailable_reason("dali-gpu") is not None, reason="no CUDA device or no DALI")

FRAMES = {0: 7, 1: 30, 2: 41, 3: 18, 4: 26}  # video 0 is shorter than a clip's span (edge padding)


def _videos(root, ext: str) -> VideoList:
    recs = []
    for i, t in FRAMES.items():
        path = root / f"v{i}{ext}"
        make_video(path, t=t, h=40, w=56, seed=i)
        recs.append(VideoRecord(str(path), i % 2, f"v{i}"))
    return VideoList(recs, ["a", "b"])


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    return _videos(tmp_path_factory.mktemp("vp9"), ".webm")


# uint8 and no resize or crop beyond the frame: the decoded frames themselves come out
TRAIN = ClipSpec(frames=5, stride=3, size=40, short_side=40, train=True, output_dtype="uint8")
EVAL = ClipSpec(frames=4, stride=2, size=40, short_side=40, num_clips=3, crop="center", output_dtype="uint8")


def _epoch(loader):
    batches = list(loader)
    return torch.cat([b.clips.cpu() for b in batches]), [v for b in batches for v in b.video_ids], \
        [len(b) for b in batches]


@needs_dali
@pytest.mark.parametrize("spec", [TRAIN, EVAL], ids=["train", "eval"])
@pytest.mark.parametrize("short", [True, False], ids=["with-short-video", "long-videos"])
def test_reader_takes_the_planned_frames_in_order(vp9, spec, short):
    # with a video shorter than a clip the reader reads stride 1 and keeps every stride-th frame
    # (exact edge padding); without one it reads at the clip's stride
    vp9 = vp9 if short else VideoList(list(vp9)[1:], vp9.classes)
    reader = VideoLoader(vp9, spec, batch_size=2, backend="dali-cpu", num_workers=1, seed=3, dali_input="reader")
    clips, ids, sizes = _epoch(reader)
    assert sizes == ([2, 2, 1] if short else [2, 2]) and clips.shape == (len(vp9), *spec.output_shape())
    pyav_clips, pyav_ids, _ = _epoch(VideoLoader(vp9, spec, batch_size=2, backend="pyav", num_workers=0, seed=3))
    assert ids == pyav_ids
    # Frame by frame: each decoded frame is nearest to the source frame the clip plan asked for
    # (short videos: the last frame repeated), on the reader path as on PyAV's.
    dataset = reader.dataset
    position = {rec.video_id: p for p, rec in enumerate(vp9)}
    for row, video_id in enumerate(ids):
        i = int(video_id[1:])
        plan = dataset.plan(position[video_id], epoch=0)
        assert plan.resized == (40, 56)  # frames at their size: the crop is the only change
        box = plan.boxes[0]
        source = gradient_frames(FRAMES[i], 40, 56, seed=i)[:, box.top:box.top + 40, box.left:box.left + 40]
        views = clips[row].reshape(-1, spec.frames, 3, 40, 40).permute(0, 1, 3, 4, 2).numpy()
        for c, view in enumerate(views):
            assert nearest_frames(view, source).tolist() == plan.indices[c].tolist(), (video_id, c)
    diff = (clips.float() - pyav_clips.float()).abs().mean().item()
    assert diff < 4, diff


@needs_dali
def test_one_pipeline_per_epoch_not_per_file(vp9):
    from zsar.data.decoders import dali

    loader = VideoLoader(vp9, EVAL, batch_size=2, backend="dali-cpu", num_workers=1, dali_input="reader")
    assert loader.dali_input == "reader"
    before = dali.pipelines_built()
    _epoch(loader)
    _epoch(loader)
    assert dali.pipelines_built() - before == 2  # 5 videos x 3 clips, 3 runs per epoch
    # the per-file reader: one pipeline for every file it reads
    read_frames(vp9[0].path, [0, 1], backend="dali-cpu")
    built = dali.pipelines_built()
    for rec in vp9:
        read_frames(rec.path, [0, 2, 4], backend="dali-cpu")
    assert dali.pipelines_built() == built


@needs_dali
def test_reader_and_bytes_feed_agree_and_audio_rides_along(vp9):
    from zsar.data import AudioSpec

    spec = ClipSpec(frames=4, stride=2, size=32, short_side=36, num_clips=2, crop="three")
    audio = AudioSpec(target_length=64, mel_bins=16)
    reader = list(VideoLoader(vp9, spec, batch_size=3, backend="dali-cpu", num_workers=1, audio=audio,
                              dali_input="reader"))
    feed = list(VideoLoader(vp9, spec, batch_size=3, backend="dali-cpu", num_workers=1, audio=audio,
                            dali_input="bytes"))
    assert [b.video_ids for b in reader] == [b.video_ids for b in feed]
    for a, b in zip(reader, feed):
        torch.testing.assert_close(a.clips, b.clips, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.audio, b.audio)
        assert a.audio_present.tolist() == b.audio_present.tolist() == [False] * len(a)
        assert torch.equal(a.positions, b.positions) and torch.equal(a.labels, b.labels)


def test_dali_input_is_checked(vp9):
    with pytest.raises(ValueError, match=r"dali_input must be one of \('auto', 'reader', 'bytes'\), got 'files'"):
        VideoLoader(vp9, TRAIN, batch_size=2, backend="pyav", dali_input="files")
    loader = VideoLoader(vp9, TRAIN, batch_size=2, backend="pyav")
    assert loader.dali_input is None
    assert loader.pin_memory is torch.cuda.is_available()  # the runtime's default: pinned for a GPU


@needs_dali
def test_clip_list_refuses_a_path_with_a_line_break(tmp_path, vp9):
    from zsar.data.decoders.dali import write_clip_list

    for name in ("a\nb.mp4", "a b.mp4"):
        with pytest.raises(ValueError, match="a path with a space or a line break"):
            write_clip_list(tmp_path / "list.txt", [("ok.mp4", 0, 0, 4), (name, 1, 0, 4)])
    assert not list(tmp_path.iterdir())
    # a loader over such paths feeds encoded bytes instead, with the same clips
    spaced = tmp_path / "with space"
    spaced.mkdir()
    recs = []
    for rec in vp9:
        target = spaced / Path(rec.path).name
        target.write_bytes(Path(rec.path).read_bytes())
        recs.append(VideoRecord(str(target), rec.label, rec.video_id))
    moved = _epoch(VideoLoader(VideoList(recs, vp9.classes), EVAL, batch_size=2, backend="dali-cpu", num_workers=1,
                               dali_input="reader"))
    original = _epoch(VideoLoader(vp9, EVAL, batch_size=2, backend="dali-cpu", num_workers=1, dali_input="reader"))
    assert moved[1] == original[1] and torch.equal(moved[0], original[0])


@needs_dali_gpu
@pytest.mark.parametrize("spec", [TRAIN, EVAL], ids=["train", "eval"])
def test_gpu_reader_on_h264_matches_pyav(tmp_path, spec):
    videos = _videos(tmp_path, ".mp4")
    loader = VideoLoader(videos, spec, batch_size=2, backend="dali-gpu", num_workers=2, seed=1)
    assert loader.dali_input == "reader"
    gpu, ids, _ = _epoch(loader)
    cpu, cpu_ids, _ = _epoch(VideoLoader(videos, spec, batch_size=2, backend="pyav", num_workers=0, seed=1))
    assert ids == cpu_ids
    assert (gpu.float() - cpu.float()).abs().mean().item() < 4
    info = probe_video(videos[2].path)
    plan = plan_clip(spec, info, np.random.default_rng(0))
    frames = read_frames(info.path, plan.indices.ravel(), backend="dali-gpu")
    assert frames.is_cuda and frames.shape[0] == plan.indices.size


# ---- `zsar prepare` for files that seek fast ------------------------------------------------------


def _keyframes(path) -> list[int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        return [round(float(p.pts * p.time_base) * rate) for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None]


@pytest.mark.parametrize("codec, ext", [("h264", ".mp4"), ("vp9", ".webm")])
def test_prepare_gop_fps_and_short_side_are_applied_and_recorded(tmp_path, codec, ext, capsys):
    from zsar.cli import main
    from zsar.data.prepare import PrepareSettings, output_frames

    src = tmp_path / "src"
    # flat frames 8 grey levels apart: which source frame an output frame shows survives any codec
    source = np.repeat(np.arange(4, 244, 8, dtype=np.uint8)[:, None, None, None], 3, axis=3) * \
        np.ones((1, 40, 56, 1), np.uint8)
    write_video(src / "a" / "v.avi", source, fps=10)
    dst = tmp_path / "dst"
    argv = ["prepare", str(src), str(dst), "--codec", codec, "--gop", "6", "--fps", "25", "--short-side", "32",
            "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    out = dst / "a" / f"v{ext}"
    assert "gop 6" in capsys.readouterr().out
    info = probe_video(out)
    assert (info.codec, info.height, info.width, round(info.fps)) == (codec, 32, 44, 25)
    assert info.num_frames == output_frames(30, 10, 25) == 75
    assert _keyframes(out) == list(range(0, 75, 6))
    assert PrepareSettings.of_output(out) == PrepareSettings(codec, 32, 6, 25.0)
    # resampled by time: output frame j shows source frame floor(j * 10 / 25)
    decoded = read_frames(out, np.arange(75), backend="pyav").numpy().astype(np.float32)
    shown = np.round((decoded.mean(axis=(1, 2, 3)) - 4) / 8).astype(int)
    assert shown.tolist() == [j * 10 // 25 for j in range(75)]
    # the same settings again: prepared; another gop: converted again
    assert main(argv) == 0 and "1 already prepared" in capsys.readouterr().out
    assert main(argv[:6] + ["7"] + argv[7:]) == 0 and "1 converted" in capsys.readouterr().out
    assert _keyframes(out) == list(range(0, 75, 7))


def test_prepare_options_are_checked(tmp_path, capsys):
    from zsar.cli import main
    from zsar.data.prepare import PrepareSettings

    (tmp_path / "src").mkdir()
    for option, value, message in (("--gop", "0", "--gop must be a positive number of frames, got 0"),
                                   ("--fps", "-3", r"--fps must be a frame rate in \(0, 1000\], got -3"),
                                   ("--short-side", "31", r"--short-side \(--size\) must be an even number")):
        assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "dst"), option, value]) == 2
        assert re.search(message, capsys.readouterr().err)
    with pytest.raises(ValueError, match="prepare: gop must be a positive number of frames, got 2.5"):
        PrepareSettings(gop=2.5)


@needs_dali
def test_a_file_failing_inside_the_reader_goes_by_the_policy(vp9, tmp_path):
    from videos import corrupt_packets
    from zsar.data.video import VideoError

    bad = tmp_path / "corrupt.webm"
    corrupt_packets(vp9[2].path, bad, seed=0)
    records = list(vp9)
    records.insert(1, VideoRecord(str(bad), 0, "corrupt"))
    videos = VideoList(records, vp9.classes)
    loader = VideoLoader(videos, EVAL, batch_size=2, backend="dali-cpu", num_workers=1, on_error="skip",
                         dali_input="reader")
    clips, ids, _ = _epoch(loader)  # the reader fails; the bytes feed finds the file and skips it
    assert ids == [r.video_id for r in vp9] and clips.shape[0] == len(vp9)
    assert loader.skipped.count == 1 and "dali-cpu" in loader.skipped.examples[0][1]
    strict = VideoLoader(videos, EVAL, batch_size=2, backend="dali-cpu", num_workers=1, dali_input="reader")
    with pytest.raises(VideoError, match="corrupt.webm.*dali-cpu"):
        _epoch(strict)
