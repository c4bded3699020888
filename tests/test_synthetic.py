"""The synthetic compositional benchmark: determinism, real decodable files, split properties, audio."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from zsar.data.records import VideoList
from zsar.data.synthetic import (
    COLORS,
    MOTIONS,
    SHAPES,
    SyntheticConfig,
    render_video,
    generate_benchmark,
    label_of,
    load_benchmark,
    split_compositions,
)
from zsar.data.video import probe_video

# Small enough for a few seconds per benchmark, big enough for a meaningful split.
SMALL = dict(colors=("red", "green", "blue"), shapes=("circle", "square", "triangle"),
             motions=("moving left", "moving right", "growing"), train_per_class=2, test_per_class=1,
             unseen_per_class=1, frames=8, size=32)


def _decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_benchmark(SyntheticConfig(**SMALL, seed=3), tmp_path_factory.mktemp("bench"), workers=2,
                              progress=False)


def test_lists_classes_and_manifest(bench):
    cfg = bench.config
    assert isinstance(bench.seen_train, VideoList) and isinstance(bench.unseen_test, VideoList)
    assert len(bench.seen_classes) + len(bench.unseen_classes) == 27
    assert len(bench.unseen_classes) == round(0.25 * 27)
    assert bench.seen_train.classes == bench.seen_test.classes == bench.seen_classes
    assert bench.unseen_test.classes == bench.unseen_classes
    assert len(bench.seen_train) == cfg.train_per_class * len(bench.seen_classes)
    assert len(bench.seen_test) == cfg.test_per_class * len(bench.seen_classes)
    assert len(bench.unseen_test) == cfg.unseen_per_class * len(bench.unseen_classes)
    for vl in (bench.seen_train, bench.seen_test, bench.unseen_test):
        counts = np.bincount([r.label for r in vl], minlength=len(vl.classes))
        assert (counts == counts[0]).all()  # balanced
        assert len({r.video_id for r in vl}) == len(vl)
    meta = json.loads((bench.root / "split.json").read_text())
    assert meta["seen"] == bench.seen_classes and meta["unseen"] == bench.unseen_classes
    assert SyntheticConfig.from_dict(meta["config"]) == cfg
    assert (bench.root / "classes_unseen.txt").read_text().splitlines() == bench.unseen_classes
    first = (bench.root / "seen_train.txt").read_text().splitlines()[0]
    rel, label = first.rsplit(" ", 1)
    assert (bench.root / rel).is_file() and int(label) == 0
    # Labels are natural text made of the parts.
    assert all(len(c.split()) >= 3 for c in bench.seen_classes + bench.unseen_classes)


def test_files_are_real_videos_that_decode(bench):
    cfg = bench.config
    for record in (bench.seen_train[0], bench.unseen_test[-1]):
        info = probe_video(record.path)
        assert info.codec == "vp9" and (info.width, info.height) == (cfg.size, cfg.size)
        assert info.num_frames == cfg.frames and not info.has_audio
        frames = _decode(record.path)
        assert frames.shape == (cfg.frames, cfg.size, cfg.size, 3)
        assert frames.std() > 5  # not blank


def test_the_same_seed_writes_the_same_files_and_reuses_them(bench, tmp_path):
    again = generate_benchmark(SyntheticConfig(**SMALL, seed=3), tmp_path / "again", workers=1, progress=False)
    assert again.unseen_classes == bench.unseen_classes
    # Decoded pixels, not file bytes: the WebM muxer writes a random segment UID into every file.
    for a, b in zip(bench.seen_train, again.seen_train):
        assert np.array_equal(_decode(a.path), _decode(b.path)), a.path
    # A second call on a complete folder of the same config renders nothing.
    stamp = (tmp_path / "again" / "split.json").stat().st_mtime_ns
    generate_benchmark(SyntheticConfig(**SMALL, seed=3), tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "split.json").stat().st_mtime_ns == stamp


def test_another_seed_changes_videos_and_split(bench, tmp_path):
    other = generate_benchmark(SyntheticConfig(**SMALL, seed=4), tmp_path / "other", progress=False)
    assert _decode(other.seen_train[0].path).tobytes() != _decode(bench.seen_train[0].path).tobytes()
    splits = {tuple(split_compositions(SyntheticConfig(**SMALL, seed=s))[1]) for s in range(6)}
    assert len(splits) > 1


def test_split_seed_changes_only_the_split():
    a, b = SyntheticConfig(**SMALL, seed=0), SyntheticConfig(**SMALL, seed=0, split_seed=7)
    assert split_compositions(a) != split_compositions(b)
    assert split_compositions(b) == split_compositions(SyntheticConfig(**SMALL, seed=5, split_seed=7))


@pytest.mark.parametrize("split_seed", range(5))
def test_unseen_compositions_are_held_out_and_share_words(split_seed):
    cfg = SyntheticConfig(split_seed=split_seed)  # the default parts
    seen, unseen = split_compositions(cfg)
    all_labels = [label_of(c) for c in cfg.compositions]
    assert sorted(seen + unseen) == sorted(all_labels) and not set(seen) & set(unseen)
    parts = {label_of(c): c for c in cfg.compositions}
    seen_pairs = {(i, p[i], k, p[k]) for s in seen for p in [parts[s]] for i, k in itertools.combinations(range(3), 2)}
    seen_words = {w for s in seen for w in s.split()}
    for u in unseen:
        p = parts[u]
        # The compositional hypothesis: every word, and every pair of parts, was seen in training.
        assert set(u.split()) <= seen_words
        assert all((i, p[i], k, p[k]) in seen_pairs for i, k in itertools.combinations(range(3), 2)), u
        assert sum(len(set(u.split()) & set(s.split())) >= 2 for s in seen) >= 3


def test_explicit_unseen_labels_and_clear_errors():
    cfg = SyntheticConfig(**{**SMALL, "unseen": ("red circle growing", "blue square moving left")})
    seen, unseen = split_compositions(cfg)
    assert unseen == ["red circle growing", "blue square moving left"] and len(seen) == 25
    with pytest.raises(ValueError, match="not compositions"):
        split_compositions(SyntheticConfig(**{**SMALL, "unseen": ("pink circle growing",)}))
    with pytest.raises(ValueError, match="unknown colors"):
        SyntheticConfig(colors=("red", "mauve"))
    with pytest.raises(ValueError, match="looks still"):
        SyntheticConfig(shapes=("circle", "star"), motions=("spinning", "falling"))
    with pytest.raises(ValueError, match="even"):
        SyntheticConfig(size=33)
    with pytest.raises(ValueError, match="no split"):  # too many held out to cover every pair
        split_compositions(SyntheticConfig(**{**SMALL, "num_unseen": 20}))
    with pytest.raises(ValueError, match="unknown config key"):
        SyntheticConfig.from_dict({"colours": ["red"]})


def test_load_benchmark_reports_missing_pieces(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="no synthetic benchmark"):
        load_benchmark(tmp_path)
    assert load_benchmark(bench.root).seen_classes == bench.seen_classes


@pytest.mark.parametrize("ext,codec", [(".avi", "mjpeg"), (".mp4", "h264")])
def test_other_containers(tmp_path, ext, codec):
    cfg = SyntheticConfig(**{**SMALL, "train_per_class": 1, "ext": ext})
    b = generate_benchmark(cfg, tmp_path, workers=0, progress=False)
    info = probe_video(b.seen_train[0].path)
    assert b.seen_train[0].path.endswith(ext) and info.codec == codec and info.num_frames == cfg.frames


def test_audio_track_pitch_follows_the_part(tmp_path):
    import av

    cfg = SyntheticConfig(**{**SMALL, "train_per_class": 1, "audio": True, "audio_part": "shape",
                             "unseen": ("green triangle growing",)})
    b = generate_benchmark(cfg, tmp_path, workers=0, progress=False)

    def pitch(path):
        with av.open(path) as c:
            assert c.streams.audio
            wave = np.concatenate([f.to_ndarray().mean(0) for f in c.decode(audio=0)])
            rate = c.streams.audio[0].rate
        spectrum = np.abs(np.fft.rfft(wave))
        return np.argmax(spectrum) * rate / wave.size

    by_label = {b.seen_classes[r.label]: r.path for r in b.seen_train}
    assert probe_video(by_label["red circle moving left"]).has_audio
    f_circle = pitch(by_label["red circle moving left"])
    assert abs(pitch(by_label["blue circle growing"]) - f_circle) < 5  # same shape, same pitch
    assert pitch(by_label["red square moving left"]) > f_circle * 1.2  # another shape, higher


def test_every_part_renders_and_parts_change_the_pixels():
    """Each colour, shape and motion is drawn, and changing one part changes the video."""
    from zsar.data.synthetic import _sample_params

    cfg = SyntheticConfig(colors=tuple(COLORS), shapes=tuple(s for s in SHAPES if s not in ("circle", "ring")),
                          motions=MOTIONS, frames=8, size=32, noise=0.0, distractors=0)

    def video(color, shape, motion):
        return render_video(_sample_params(np.random.default_rng(0), (color, shape, motion), cfg), cfg).astype(int)

    base = video("red", "square", "falling")
    assert base.shape == (8, 32, 32, 3) and base.dtype == np.int64
    for color in COLORS:
        v = video(color, "square", "falling")
        assert color == "red" or np.abs(v - base).mean() > 1, color
    for shape in cfg.shapes:
        assert shape == "square" or np.abs(video("red", shape, "falling") - base).sum() > 0, shape
    still = video("red", "square", "growing")  # ("falling" and "moving down" are synonyms)
    for motion in MOTIONS:
        v = video("red", "square", motion)
        assert motion == "growing" or np.abs(v - still).sum() > 0, motion
        assert np.abs(np.diff(v, axis=0)).sum() > 0, f"{motion}: nothing moves"


# ---- the audio-visual variant ----------------------------------------------------------------------

AV_SMALL = dict(train_per_class=1, test_per_class=0, unseen_per_class=1, frames=12, size=32)


def _twins(unseen: list[str]) -> bool:
    """Every unseen class has an unseen twin with the same visible parts (another sound) and one with
    the same sound (other visible parts)."""
    parts = [u.split() for u in unseen]
    return all(any(q[:-1] == p[:-1] and q[-1] != p[-1] for q in parts)
               and any(q[-1] == p[-1] and q[:-1] != p[:-1] for q in parts) for p in parts)


@pytest.fixture(scope="module")
def av_bench(tmp_path_factory):
    return generate_benchmark(SyntheticConfig.audio_visual(**AV_SMALL, seed=1), tmp_path_factory.mktemp("av"),
                              workers=2, progress=False)


def test_audio_visual_labels_manifest_and_files(av_bench):
    import torch

    from zsar.data.audio import AST_MEAN, AST_STD, audio_features

    cfg = av_bench.config
    assert cfg.parts == {"shape": ("circle", "square", "triangle"), "motion": ("falling", "sliding", "growing"),
                         "sound": ("beeping", "humming", "buzzing")}
    labels = av_bench.seen_classes + av_bench.unseen_classes
    assert len(labels) == 27 and len(av_bench.unseen_classes) == 8
    assert all(len(label.split()) == 3 and label.split()[-1] in cfg.sounds for label in labels)
    assert av_bench.parts["circle falling beeping"] == ["circle", "falling", "beeping"]
    meta = json.loads((av_bench.root / "split.json").read_text())
    assert meta["modality"] == {"shape": "visible", "motion": "visible", "sound": "audible"}
    assert "shape, motion and sound" in meta["description"]
    assert load_benchmark(av_bench.root).config == cfg
    for record in (av_bench.seen_train[0], av_bench.unseen_test[-1]):
        info = probe_video(record.path)
        assert info.has_audio and info.num_frames == cfg.frames
        feats, has_audio = audio_features(record.path, target_length=256)
        duration_frames = int(cfg.frames / cfg.fps * 100)  # 10 ms log-mel frames
        padding = (0.0 - AST_MEAN) / (2 * AST_STD)  # AST's recipe pads the fbank before normalising
        assert has_audio and feats[: duration_frames - 10].std() > 0.1
        assert torch.allclose(feats[duration_frames + 5:], torch.full_like(feats[duration_frames + 5:], padding))


@pytest.mark.parametrize("seed", range(6))
def test_crossed_split_makes_both_modalities_necessary(seed):
    cfg = SyntheticConfig.audio_visual(seed=seed)
    seen, unseen = split_compositions(cfg)
    assert split_compositions(SyntheticConfig.audio_visual(seed=seed)) == (seen, unseen)  # deterministic
    assert len(unseen) == 8 and not set(seen) & set(unseen)
    assert _twins(unseen)
    # Pair coverage still holds: every pair of parts of an unseen class occurs in a seen class.
    seen_pairs = {(i, p[i], k, p[k]) for s in seen for p in [s.split()] for i, k in itertools.combinations(range(3), 2)}
    for u in unseen:
        p = u.split()
        assert all((i, p[i], k, p[k]) in seen_pairs for i, k in itertools.combinations(range(3), 2)), u
    # A random split of the same parts rarely has this property.
    random_splits = [split_compositions(SyntheticConfig.audio_visual(seed=s, split="random"))[1] for s in range(6)]
    assert sum(_twins(u) for u in random_splits) < 3


def test_the_sound_is_only_heard_and_the_shape_and_motion_only_seen():
    from zsar.data.synthetic import _sample_params, render_audio

    cfg = SyntheticConfig.audio_visual(frames=8, size=32)

    def render(comp):
        params = _sample_params(np.random.default_rng(5), comp, cfg)
        return render_video(params, cfg), render_audio(params, comp, cfg)

    frames, audio = render(("circle", "falling", "beeping"))
    other_sound_frames, other_sound_audio = render(("circle", "falling", "humming"))
    other_sight_frames, _ = render(("square", "growing", "beeping"))
    assert np.array_equal(frames, other_sound_frames) and not np.array_equal(audio, other_sound_audio)
    assert not np.array_equal(frames, other_sight_frames)
    # Given a video's random draws, its audio depends on the sound alone.
    params = _sample_params(np.random.default_rng(5), ("circle", "falling", "beeping"), cfg)
    assert np.array_equal(render_audio(params, ("square", "growing", "beeping"), cfg), audio)
    assert audio.dtype == np.float32 and audio.shape == (int(round(8 / cfg.fps * cfg.sample_rate)),)
    # The colour is a nuisance: it varies between videos of one class.
    colours = {tuple(_sample_params(np.random.default_rng(i), ("circle", "falling", "beeping"), cfg)["rgb"]) for i in range(8)}
    assert len(colours) > 2


def test_every_sound_is_told_apart_in_the_log_mel_spectrogram():
    """Nearest class mean of time-averaged AST log-mel features, on renders the means did not see."""
    from zsar.data.audio import waveform_features
    from zsar.data.synthetic import SOUNDS, render_sound

    def features(sound, i):
        wave = render_sound(sound, 24000, 16000, np.random.default_rng([i, list(SOUNDS).index(sound)]), jitter=1.0)
        assert wave.dtype == np.float32 and 0.2 < np.abs(wave).max() <= 1
        return waveform_features(wave, target_length=148).mean(0).numpy()

    names = list(SOUNDS)
    means = np.stack([np.mean([features(s, i) for i in range(5)], axis=0) for s in names])
    hits = [np.argmin(((means - features(s, i)) ** 2).sum(1)) == k for k, s in enumerate(names) for i in range(5, 9)]
    assert np.mean(hits) >= 0.9
    with pytest.raises(ValueError, match="unknown sound"):
        render_sound("meowing", 100)


def test_audio_visual_config_errors():
    with pytest.raises(ValueError, match="unknown sounds"):
        SyntheticConfig.audio_visual(sounds=("beeping", "meowing"))
    with pytest.raises(ValueError, match="only heard"):
        SyntheticConfig.audio_visual(audio=False)
    with pytest.raises(ValueError, match="only heard"):
        SyntheticConfig.audio_visual(audio_part="shape")
    with pytest.raises(ValueError, match="labelled parts"):
        SyntheticConfig(**SMALL, audio=True, audio_part="sound")
    with pytest.raises(ValueError, match="crossed"):
        SyntheticConfig(**SMALL, split="crossed")
    with pytest.raises(ValueError, match="at least 4"):
        split_compositions(SyntheticConfig.audio_visual(num_unseen=3))
    with pytest.raises(ValueError, match="split must be"):
        SyntheticConfig(split="diagonal")
    # Round trip through JSON, as split.json stores it.
    cfg = SyntheticConfig.audio_visual(seed=2)
    assert SyntheticConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
