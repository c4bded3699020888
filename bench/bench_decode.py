"""Video loading throughput: decode + sample + transform, in clips/s, DALI vs PyAV side by side.

Files: UCF101-like, 320×240 at 25 fps, 120 frames each, generated here (moving textured
gradients, so the codecs have real work), in VP9 (.webm) and H.264 (.mp4). Each round is one
epoch of :class:`zsar.data.VideoLoader` over the files: 16-frame training clips at stride 6,
random 224×224 crops after a short-side resize to 256, normalised float output, batches of 4,
all CPU cores (PyAV: one DataLoader worker per core; DALI: one thread per core).

Contenders: ``dali-cpu`` on VP9 (ours), ``pyav`` on VP9 (the peer on the same files) and ``pyav``
on H.264 (for reference). With a GPU also ``dali-gpu`` on H.264 against ``pyav`` on H.264.
Targets: DALI-CPU ≥ PyAV on VP9 here; DALI-GPU ≥ 10× PyAV (all cores) on a GPU machine.
Run: ``pytest bench/bench_decode.py --benchmark-only``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from zsar.data import ClipSpec, VideoList, VideoLoader, VideoRecord, write_video
from zsar.data.decoders import unavailable_reason

N_VIDEOS, N_FRAMES, H, W = 12, 120, 240, 320
SPEC = ClipSpec(frames=16, stride=6, size=224, train=True)
CORES = os.cpu_count() or 1


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


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_bench")
    lists = {}
    for ext in ("webm", "mp4"):
        recs = []
        for i in range(N_VIDEOS):
            path = root / f"v{i:02d}.{ext}"
            write_video(path, _frames(i), fps=25)
            recs.append(VideoRecord(str(path), i % 4, path.stem))
        lists[ext] = VideoList(recs, ["a", "b", "c", "d"])
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
    workers = 16 if group.startswith("gpu") and backend == "pyav" else CORES
    loader = VideoLoader(files[ext], SPEC, batch_size=4, backend=backend, num_workers=workers, seed=0)
    fn = _epoch_fn(loader)
    record(f"decode {group} ({N_VIDEOS} clips)", f"{backend} {codec}", fn, ours=ours, rounds=5, warmup=1)
