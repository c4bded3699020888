"""Video loading throughput: decode + sample + transform, in clips/s, DALI vs PyAV side by side.

Files: UCF101-like, 320×240 at 25 fps, 120 frames each, generated here (moving textured
gradients, so the codecs have real work), in VP9 (.webm) and H.264 (.mp4). Each round is one
epoch of :class:`zsar.data.VideoLoader` over the files: 16-frame training clips at stride 6,
random 224×224 crops after a short-side resize to 256, normalised float output, batches of 4,
all CPU cores (PyAV: one DataLoader worker per core; DALI: one thread per core).

Contenders: ``dali-cpu`` on VP9 (ours), ``pyav`` on VP9 (the peer on the same files) and ``pyav``
on H.264 (for reference). With a GPU also ``dali-gpu`` on H.264 against ``pyav`` on H.264.
Targets: DALI-CPU ≥ PyAV on VP9 here; DALI-GPU ≥ 10× PyAV (all cores) on a GPU machine.

With audio (``audio=AudioSpec()``, MZST's AST input: the 10.24 s log-mel window around each clip,
decoded with PyAV next to the video): the same files with a 5 s Opus track, ``dali-cpu`` (audio in
the pipeline's feed threads) against ``pyav`` (audio in the DataLoader workers); the no-audio epoch
of the same backend is the reference for what audio costs.

Probe: :func:`zsar.data.probe_video` of a 60 s (1500-frame) 320x240 file, which counts the video
packets (a demux pass without decoding) to catch truncated files.

Run: ``pytest bench/bench_decode.py --benchmark-only``; without ``--benchmark-only`` one epoch of
2 short 64x48 files per contender and a 30-frame probe (see ``benchmode.py``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from benchmode import pick

from zsar.data import ClipSpec, VideoList, VideoLoader, VideoRecord, probe_video, write_video
from zsar.data.decoders import unavailable_reason
from zsar.data import AudioSpec

N_VIDEOS, N_FRAMES, H, W = pick((12, 120, 240, 320), (2, 20, 48, 64))
SPEC = pick(ClipSpec(frames=16, stride=6, size=224, train=True), ClipSpec(frames=4, stride=2, size=32, train=True))
PROBE_FRAMES = pick(1500, 30)
CORES = os.cpu_count() or 1


def _workers(backend: str) -> int:
    """All cores; the quick run loads PyAV in the main process (starting workers costs seconds)."""
    return CORES if backend.startswith("dali") else pick(CORES, 0)


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    texture = rng.uniform(0, 40, (H // 8, W // 8)).repeat(8, 0).repeat(8, 1)
    out = np.empty((N_FRAMES, H, W, 3), np.uint8)
    for t in range(N_FRAMES):
        out[t, ..., 0] = (x + 2 * t) % 200 + np.roll(texture, t, axis=1)
        out[t, ..., 1] = (y + t) % 200 + np.roll(texture, -t, axis=0)
        out[t, ..., 2] = (x + y + 3 * t) % 200
    return out


def _tone(seed: int) -> np.ndarray:
    t = np.arange(int(N_FRAMES / 25 * 16000)) / 16000
    return (0.4 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_bench")
    lists = {}
    for ext, audio in (("webm", False), ("mp4", False), ("webm", True)):
        recs = []
        for i in range(N_VIDEOS):
            path = root / f"v{i:02d}{'-audio' if audio else ''}.{ext}"
            write_video(path, _frames(i), fps=25, audio=_tone(i) if audio else None)
            recs.append(VideoRecord(str(path), i % 4, path.stem))
        lists[ext + ("+audio" if audio else "")] = VideoList(recs, ["a", "b", "c", "d"])
    return lists


def _epoch_fn(loader):
    def run():
        n = 0
        for batch in loader:
            n += batch.clips.shape[0]
        if batch.clips.is_cuda:
            torch.cuda.synchronize()
        assert n == N_VIDEOS
    return run


CONTENDERS = [
    ("vp9", "dali-cpu", "webm", True),
    ("vp9", "pyav", "webm", False),
    ("h264", "pyav", "mp4", False),
    ("gpu h264", "dali-gpu", "mp4", True),
    ("gpu h264", "pyav", "mp4", False),
]


@pytest.mark.parametrize("group,backend,ext,ours", CONTENDERS, ids=[f"{c[0]}-{c[1]}" for c in CONTENDERS])
def test_clips_per_second(record, files, group, backend, ext, ours):
    codec = "h264" if ext == "mp4" else "vp9"
    why = unavailable_reason(backend, codec)
    if why:
        pytest.skip(why)
    if group.startswith("gpu") and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    workers = 16 if group.startswith("gpu") and backend == "pyav" else _workers(backend)
    loader = VideoLoader(files[ext], SPEC, batch_size=4, backend=backend, num_workers=workers, seed=0)
    fn = _epoch_fn(loader)
    record(f"decode {group} ({N_VIDEOS} clips)", f"{backend} {codec}", fn, ours=ours, rounds=5, warmup=1)


AUDIO_CONTENDERS = [("dali-cpu", True, True), ("dali-cpu", False, False), ("pyav", True, False), ("pyav", False, False)]


@pytest.mark.parametrize("backend,audio,ours", AUDIO_CONTENDERS,
                         ids=[f"{b}-{'audio' if a else 'video'}" for b, a, _ in AUDIO_CONTENDERS])
def test_clips_per_second_with_audio(record, files, backend, audio, ours):
    why = unavailable_reason(backend, "vp9")
    if why:
        pytest.skip(why)
    loader = VideoLoader(files["webm+audio"], SPEC, batch_size=4, backend=backend, num_workers=_workers(backend), seed=0,
                         audio=AudioSpec() if audio else None)

    def run():
        n = 0
        for batch in loader:
            n += batch.clips.shape[0]
            assert (batch.audio is not None) == audio
        assert n == N_VIDEOS

    record(f"decode vp9 + opus, with and without audio ({N_VIDEOS} clips)", f"{backend} {'+ audio' if audio else 'video only'}",
           run, ours=ours, rounds=5, warmup=1)


def test_probe_counts_packets(record, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_bench")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    path = write_video(root / "long.mp4", (np.roll(base, 2 * t, axis=1) for t in range(PROBE_FRAMES)), fps=25)

    def run():
        assert probe_video(path).num_frames == PROBE_FRAMES

    record(f"probe a {PROBE_FRAMES}-frame H.264 file", "probe_video", run, ours=True, rounds=30, warmup=3)
