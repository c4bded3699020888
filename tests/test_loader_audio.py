"""Audio in the loaders: every path yields zsar.data.Batch with the AST features of the window centred
on each clip, on real files with and without audio tracks, and the missing-audio policy."""

import os

import pytest
import torch

from zsar.data import (
    Batch,
    ClipSpec,
    MissingAudioError,
    Sample,
    VideoClipDataset,
    VideoList,
    VideoLoader,
    VideoRecord,
    audio_features,
    load_audio,
    sample_rng,
    waveform_features,
)
from zsar.data.audio import window_samples
from zsar.data.decoders import unavailable_reason
from zsar.data.transforms import plan_clip
from zsar.data import AudioSpec

from videos import make_video, make_video_with_tones, tone_of

needs_dali = pytest.mark.skipif(unavailable_reason("dali-cpu") is not None, reason="NVIDIA DALI is not installed")
CPU_BACKENDS = ["pyav", pytest.param("dali-cpu", marks=needs_dali)]
needs_dali_gpu = pytest.mark.skipif(unavailable_reason("dali-gpu") is not None, reason="no CUDA device or no DALI")

FPS, SECONDS = 4, 5
# A 0.105 s window: clip centres at 4 fps lie >= 0.125 s from a second boundary, so the window
# hears one tone only, the tone of the second the clip is centred in.
AUDIO = AudioSpec(target_length=10, mel_bins=64)
SPEC_TRAIN = ClipSpec(frames=3, stride=1, size=32, short_side=40, train=True)
SPEC_TEST = ClipSpec(frames=3, stride=2, size=32, short_side=40)


@pytest.fixture(scope="module")
def av_videos(tmp_path_factory):
    """MJPEG + PCM AVIs (DALI on the CPU decodes MJPEG) with one tone per second, and one silent file."""
    root = tmp_path_factory.mktemp("av")
    recs = []
    for i in range(7):
        path = root / f"a{i}.avi"
        make_video_with_tones(path, seconds=SECONDS, fps=FPS, seed=i)
        recs.append(VideoRecord(str(path), i % 2, f"a{i}"))
    silent = root / "silent.avi"
    make_video(silent, t=SECONDS * FPS, fps=FPS)
    recs.insert(3, VideoRecord(str(silent), 1, "silent"))
    return VideoList(recs, ["x", "y"])


def _expected_tone(videos, position, spec, seed, epoch):
    """The tone of the second the clip of ``position`` is centred in, from the public sampling API."""
    from zsar.data import probe_video

    info = probe_video(videos[position].path)
    plan = plan_clip(spec, info, sample_rng(seed, epoch, position))
    centre = (plan.indices.min() + plan.indices.max() + 1) / 2 / info.fps
    return int(centre)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, pytest.param("dali-gpu", marks=needs_dali_gpu)])
@pytest.mark.parametrize("spec", [SPEC_TRAIN, SPEC_TEST], ids=["train", "test"])
def test_loader_audio_is_the_window_around_each_clip(av_videos, backend, spec):
    loader = VideoLoader(av_videos, spec, batch_size=3, backend=backend, num_workers=2, seed=4, audio=AUDIO)
    for epoch in range(2):
        batches = list(loader)
        assert all(isinstance(b, Batch) for b in batches)
        seen = []
        for b in batches:
            assert b.audio.shape == (len(b), 10, 64) and b.audio.dtype == torch.float32
            assert b.audio_present.dtype == torch.bool and b.positions.dtype == torch.int64
            for j, p in enumerate(b.positions.tolist()):
                seen.append(b.video_ids[j])
                if b.video_ids[j] == "silent":
                    assert not b.audio_present[j] and not b.audio[j].any()  # missing_audio="zeros"
                else:
                    assert b.audio_present[j]
                    assert tone_of(b.audio[j]) == _expected_tone(av_videos, p, spec, 4, epoch)
        assert sorted(seen) == sorted(r.video_id for r in av_videos)


def test_audio_window_is_exactly_the_slice_of_the_track(av_videos):
    """Independent of the loader: the features equal the fbank of the waveform slice centred on the clip."""
    ds = VideoClipDataset(av_videos, SPEC_TRAIN, audio=AudioSpec(target_length=120), seed=2)
    n = window_samples(120)
    wav = load_audio(av_videos[0].path)
    for epoch in range(3):
        sample = ds.sample(0, epoch)
        plan = ds.plan(0, epoch)
        centre = (plan.indices.min() + plan.indices.max() + 1) / 2 / FPS
        start = int(round(min(max(0.0, centre - n / 32000), SECONDS - n / 16000) * 16000))
        torch.testing.assert_close(sample.audio, waveform_features(wav[start:start + n], target_length=120),
                                   rtol=0, atol=0)


def test_pyav_and_dali_paths_give_the_same_audio(av_videos):
    if unavailable_reason("dali-cpu"):
        pytest.skip("NVIDIA DALI is not installed")
    out = {}
    for backend in ("pyav", "dali-cpu"):
        batches = list(VideoLoader(av_videos, SPEC_TRAIN, batch_size=4, backend=backend, num_workers=1, seed=9,
                                   audio=AUDIO))
        out[backend] = (torch.cat([b.audio for b in batches]), torch.cat([b.positions for b in batches]))
    assert torch.equal(out["pyav"][1], out["dali-cpu"][1])
    torch.testing.assert_close(out["pyav"][0], out["dali-cpu"][0], rtol=0, atol=1e-6)  # FFT threads round apart


def test_dataset_samples_carry_audio_and_collate(av_videos):
    ds = VideoClipDataset(av_videos, SPEC_TEST, audio=AUDIO)
    sample = ds[3]
    assert isinstance(sample, Sample) and sample.video_id == "silent" and sample.position == 3
    assert sample.audio.shape == (10, 64) and not sample.audio_present and not sample.audio.any()
    batch = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn, num_workers=2,
                                        multiprocessing_context=ds.worker_context())
    first = next(iter(batch))
    assert isinstance(first, Batch) and first.audio_present.tolist() == [True, True, True, False]
    assert first.clips.shape == (4, *SPEC_TEST.output_shape()) and first.labels.tolist() == [0, 1, 0, 1]
    assert first.video_ids == ["a0", "a1", "a2", "silent"] and first.positions.tolist() == [0, 1, 2, 3]


def test_without_audio_the_batch_has_none(av_videos):
    b = next(iter(VideoLoader(av_videos, SPEC_TEST, batch_size=4, backend="pyav", num_workers=0)))
    assert b.audio is None and b.audio_present is None and len(b) == 4


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_missing_audio_skip_counts_it_like_a_bad_file(av_videos, backend):
    loader = VideoLoader(av_videos, SPEC_TEST, batch_size=3, backend=backend, num_workers=0, audio=AUDIO,
                         missing_audio="skip")  # on_error stays "raise": skipping audio is its own choice
    batches = list(loader)
    ids = [v for b in batches for v in b.video_ids]
    assert "silent" not in ids and len(ids) == len(av_videos) - 1
    assert all(bool(b.audio_present.all()) for b in batches)
    assert loader.skipped.count == 1 and os.path.basename(loader.skipped.examples[0][0]) == "silent.avi"
    assert "no audio stream" in loader.skipped.examples[0][1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_missing_audio_error_raises_naming_the_file(av_videos, backend, on_error):
    loader = VideoLoader(av_videos, SPEC_TEST, batch_size=3, backend=backend, num_workers=0, audio=AUDIO,
                         missing_audio="error", on_error=on_error)
    with pytest.raises(MissingAudioError, match="silent.avi.*no audio stream"):
        list(loader)
    ds = VideoClipDataset(av_videos, SPEC_TEST, audio=AUDIO, missing_audio="error", on_error=on_error)
    with pytest.raises(MissingAudioError, match="silent.avi"):
        ds[3]


def test_lossy_tracks_in_webm_and_mp4(tmp_path):
    """Opus (48 kHz, seeking by millisecond timestamps) and AAC tracks: the window hears the right tone."""
    recs = []
    for ext in ("webm", "mp4"):
        path = tmp_path / f"t.{ext}"
        make_video_with_tones(path, seconds=SECONDS, fps=FPS)
        recs.append(VideoRecord(str(path), 0, ext))
    videos = VideoList(recs, ["x"])
    for centre in (0.3, 1.6, 2.4, 3.7, 4.9):
        for r in recs:
            feats, present = audio_features(r.path, AUDIO.target_length, num_mel_bins=64, centre=centre)
            assert present and tone_of(feats) == int(centre)
    batches = list(VideoLoader(videos, SPEC_TRAIN, batch_size=2, backend="pyav", num_workers=0, audio=AUDIO))
    for j, p in enumerate(batches[0].positions.tolist()):
        assert tone_of(batches[0].audio[j]) == _expected_tone(videos, p, SPEC_TRAIN, 0, 0)


def test_audio_argument_errors(av_videos):
    with pytest.raises(TypeError, match="AudioSpec"):
        VideoLoader(av_videos, SPEC_TEST, batch_size=2, audio=1024)
    with pytest.raises(ValueError, match="missing_audio"):
        VideoLoader(av_videos, SPEC_TEST, batch_size=2, audio=AUDIO, missing_audio="silence")
    with pytest.raises(ValueError, match="missing_audio"):
        VideoClipDataset(av_videos, SPEC_TEST, missing_audio="ignore")
