"""Clip sampling, transforms and the loaders, on real video files encoded here."""

import os

import numpy as np
import pytest
import torch

from zsar.data import (
    Batch,
    ClipSpec,
    Sample,
    VideoClipDataset,
    VideoError,
    VideoList,
    VideoLoader,
    VideoRecord,
    probe_video,
    random_clip_indices,
    sample_rng,
    shard_positions,
    uniform_clip_indices,
)
from zsar.data.decoders import unavailable_reason
from zsar.data.sampling import crop_boxes, resized_shape

from videos import corrupt_packets, cut_after_packet, make_video

needs_dali = pytest.mark.skipif(unavailable_reason("dali-cpu") is not None, reason="NVIDIA DALI is not installed")
CPU_BACKENDS = ["pyav", pytest.param("dali-cpu", marks=needs_dali)]
needs_dali_gpu = pytest.mark.skipif(unavailable_reason("dali-gpu") is not None, reason="no CUDA device or no DALI")
ALL_BACKENDS = [*CPU_BACKENDS, pytest.param("dali-gpu", marks=needs_dali_gpu)]


# ---- sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_frames,frames,stride", [(100, 16, 6), (7, 16, 2), (1, 4, 1), (31, 8, 4), (16, 16, 1)])
def test_random_clip_indices(num_frames, frames, stride, seed):
    idx = random_clip_indices(num_frames, frames, stride, np.random.default_rng(seed))
    assert idx.shape == (frames,) and idx.min() >= 0 and idx.max() <= num_frames - 1
    steps = np.diff(idx)
    assert np.all((steps == stride) | ((steps == 0) & (idx[1:] == num_frames - 1)))  # edge padding only at the end
    again = random_clip_indices(num_frames, frames, stride, np.random.default_rng(seed))
    np.testing.assert_array_equal(idx, again)


def test_random_starts_cover_every_possible_start():
    starts = {int(random_clip_indices(20, 4, 2, sample_rng(0, 0, i))[0]) for i in range(400)}
    assert starts == set(range(20 - 7 + 1))


@pytest.mark.parametrize("num_frames,frames,stride,clips", [(100, 16, 2, 5), (10, 8, 2, 3), (50, 8, 1, 1), (3, 4, 1, 2)])
def test_uniform_clip_indices(num_frames, frames, stride, clips):
    idx = uniform_clip_indices(num_frames, frames, stride, clips)
    assert idx.shape == (clips, frames) and idx.max() <= num_frames - 1
    last_start = max(num_frames - (frames - 1) * stride - 1, 0)
    if clips > 1:
        assert idx[0, 0] == 0 and idx[-1, 0] == last_start
        assert np.all(np.diff(idx[:, 0]) >= 0)
    else:
        assert idx[0, 0] == last_start // 2


def test_sampling_rejects_bad_arguments():
    for args in [(0, 4, 1), (10, 0, 1), (10, 4, 0)]:
        with pytest.raises(ValueError):
            uniform_clip_indices(*args)
    with pytest.raises(ValueError, match="larger than"):
        crop_boxes(100, 100, 112, "center")
    with pytest.raises(ValueError, match="crop must be"):
        crop_boxes(200, 300, 112, "corner")


def test_resize_and_crops():
    assert resized_shape(240, 320, 128) == (128, 171)
    assert resized_shape(320, 240, 128) == (171, 128)
    three = crop_boxes(128, 171, 112, "three")
    assert [b.left for b in three] == [0, 29, 59] and {b.top for b in three} == {8}
    box = crop_boxes(128, 171, 112, "random", np.random.default_rng(0))[0]
    assert 0 <= box.top <= 16 and 0 <= box.left <= 59


def test_clip_spec_validates():
    with pytest.raises(ValueError, match="frames"):
        ClipSpec(frames=0)
    with pytest.raises(ValueError, match="crop"):
        ClipSpec(crop="corners")
    with pytest.raises(ValueError, match="short_side"):
        ClipSpec(size=112, short_side=100)
    assert ClipSpec(frames=8, size=32, num_clips=2, crop="three").output_shape() == (6, 8, 3, 32, 32)
    assert ClipSpec(frames=8, size=32, train=True, num_clips=5).output_shape() == (8, 3, 32, 32)


# ---- loaders -------------------------------------------------------------------------------------

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    recs = []
    for i in range(11):  # odd count: the last batch is partial and shards differ in size
        t = [5, 20, 33][i % 3]  # one video shorter than the clip
        path = root / f"v{i:02d}.webm"
        make_video(path, t=t, h=48, w=64, seed=i)
        recs.append(VideoRecord(str(path), i % 3, f"v{i:02d}"))
    return VideoList(recs, CLASSES)


SPEC_TRAIN = ClipSpec(frames=6, stride=2, size=32, short_side=40, train=True)
SPEC_TEST = ClipSpec(frames=6, stride=2, size=32, short_side=40, num_clips=2, crop="three")


def _epoch(loader):
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    return (torch.cat([b.clips for b in batches]), torch.cat([b.labels for b in batches]),
            [v for b in batches for v in b.video_ids], [len(b.video_ids) for b in batches])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("spec", [SPEC_TRAIN, SPEC_TEST], ids=["train", "test"])
def test_loader_batches(videos, backend, spec):
    loader = VideoLoader(videos, spec, batch_size=4, backend=backend, num_workers=0, seed=1)
    assert loader.backend == backend and len(loader) == 3
    clips, labels, ids, sizes = _epoch(loader)
    assert sizes == [4, 4, 3] and clips.shape == (11, *spec.output_shape()) and clips.dtype == torch.float32
    assert sorted(ids) == sorted(r.video_id for r in videos)
    assert labels.tolist() == [int(i[1:]) % 3 for i in ids]
    assert torch.isfinite(clips).all() and clips.std() > 0.1
    for b in loader:
        assert b.positions.dtype == torch.int64 and b.audio is None
        assert [videos[p].video_id for p in b.positions.tolist()] == b.video_ids


@pytest.mark.parametrize("backend", [pytest.param("dali-cpu", marks=needs_dali),
                                     pytest.param("dali-gpu", marks=needs_dali_gpu)])
@pytest.mark.parametrize("spec", [SPEC_TRAIN, SPEC_TEST], ids=["train", "test"])
def test_dali_and_pyav_loaders_take_the_same_frames_and_crops(videos, spec, backend):
    pyav = _epoch(VideoLoader(videos, spec, batch_size=4, backend="pyav", num_workers=0, seed=5))
    dali = _epoch(VideoLoader(videos, spec, batch_size=4, backend=backend, num_workers=1, seed=5))
    assert pyav[2] == dali[2]  # same order
    # Same frames and crop windows: only decoder colour rounding and resize filters differ.
    diff = (pyav[0] - dali[0].cpu()).abs().mean().item() * 0.226 * 255
    assert diff < 4, diff


def test_epochs_reshuffle_reproducibly(videos):
    loader = VideoLoader(videos, SPEC_TRAIN, batch_size=4, backend="pyav", num_workers=0, seed=3)
    e0, e1 = _epoch(loader), _epoch(loader)
    assert e0[2] != e1[2]
    again = VideoLoader(videos, SPEC_TRAIN, batch_size=4, backend="pyav", num_workers=0, seed=3)
    r0 = _epoch(again)
    assert r0[2] == e0[2] and torch.equal(r0[0], e0[0])
    again.set_epoch(1)
    assert _epoch(again)[2] == e1[2]


def test_evaluation_order_is_stable_and_uint8_output(videos):
    spec = ClipSpec(frames=4, stride=3, size=32, short_side=40, output_dtype="uint8")
    loader = VideoLoader(videos, spec, batch_size=5, backend="pyav", num_workers=2)
    clips, _, ids, _ = _epoch(loader)
    assert ids == [r.video_id for r in videos] and clips.dtype == torch.uint8
    assert _epoch(loader)[2] == ids


def test_evaluation_loader_reads_each_video_once_in_order(videos):
    # The one evaluation-loader builder: a video list through VideoLoader (no shuffling, no
    # sharding, bad files skipped and counted), a dataset of samples through a DataLoader.
    from zsar.data import VideoClipDataset, evaluation_loader

    spec = ClipSpec(frames=4, stride=3, size=32, short_side=40, output_dtype="uint8")
    loader = evaluation_loader(videos, spec, 4, backend="pyav", num_workers=0)
    assert isinstance(loader, VideoLoader) and not loader.shuffle and loader.num_shards == 1
    assert loader.on_error == "skip"
    clips, _, ids, _ = _epoch(loader)
    assert ids == [r.video_id for r in videos]
    from_dataset = _epoch(evaluation_loader(VideoClipDataset(videos, spec), batch_size=3))
    assert from_dataset[2] == ids and torch.equal(from_dataset[0], clips)
    with pytest.raises(ValueError, match="needs a clip spec"):
        evaluation_loader(videos)


@pytest.mark.parametrize("n,shards", [(11, 2), (10, 3), (2, 4)])
def test_shards_are_disjoint_and_cover(n, shards):
    for epoch in range(2):
        parts = [shard_positions(n, epoch, 0, True, s, shards) for s in range(shards)]
        flat = np.concatenate(parts)
        assert sorted(flat.tolist()) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dataset_for_the_trainer(videos):
    ds = VideoClipDataset(videos, SPEC_TRAIN)
    sample = ds[4]
    assert isinstance(sample, Sample) and sample.clip.shape == SPEC_TRAIN.output_shape()
    assert (sample.label, sample.video_id, sample.position, sample.audio) == (1, "v04", 4, None)
    a = ds[0].clip
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0].clip)  # new random clip next epoch
    assert torch.equal(ds[(0, 0)].clip, a)  # (index, epoch) keys, as VideoLoader's workers ask
    batch = ds.collate_fn([ds[1], None, ds[2]])
    assert isinstance(batch, Batch) and batch.labels.tolist() == [1, 2] and batch.video_ids == ["v01", "v02"]


class _FlippedDataset(VideoClipDataset):
    """A subclass overriding the clip-only hook, as zsar demo's cached dataset does."""

    def load(self, i, epoch=None):
        return super().load(i, epoch).flip(-1)


def test_load_is_the_clip_hook_of_every_path(videos):
    plain = VideoClipDataset(videos, SPEC_TEST)
    flipped = _FlippedDataset(videos, SPEC_TEST)
    assert torch.equal(flipped[2].clip, plain[2].clip.flip(-1))


def test_loader_argument_errors(videos):
    with pytest.raises(TypeError, match="VideoList"):
        VideoLoader(list(videos), SPEC_TRAIN, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        VideoLoader(videos, SPEC_TRAIN, batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        VideoLoader(videos, SPEC_TRAIN, batch_size=2, on_error="ignore")
    with pytest.raises(ValueError, match="shard_id"):
        VideoLoader(videos, SPEC_TRAIN, batch_size=2, shard_id=2, num_shards=2)
    with pytest.raises(ValueError, match="empty"):
        VideoLoader(VideoList([], CLASSES), SPEC_TRAIN, batch_size=2)


# ---- bad files -----------------------------------------------------------------------------------

@pytest.fixture
def folder_with_bad_files(tmp_path, videos):
    good = [VideoRecord(r.path, r.label, r.video_id) for r in list(videos)[:5]]
    data = open(good[1].path, "rb").read()
    bad = {"empty.webm": b"", "text.webm": b"not a video\n" * 40, "trunc.webm": data[:150]}
    recs = list(good)
    for i, (name, content) in enumerate(bad.items()):
        (tmp_path / name).write_bytes(content)
        recs.insert(2 * i, VideoRecord(str(tmp_path / name), 0, name))
    make_video(tmp_path / "h264.mp4", t=8)  # a codec DALI on the CPU cannot decode
    recs.append(VideoRecord(str(tmp_path / "h264.mp4"), 1, "h264"))
    recs.append(VideoRecord(str(tmp_path / "missing.webm"), 2, "missing"))
    return VideoList(recs, CLASSES)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_skip_policy_completes_the_epoch(folder_with_bad_files, backend):
    loader = VideoLoader(folder_with_bad_files, SPEC_TRAIN, batch_size=3, backend=backend, num_workers=0,
                         on_error="skip")
    _, _, ids, _ = _epoch(loader)
    bad = {"empty.webm", "text.webm", "trunc.webm", "missing"} | ({"h264"} if backend == "dali-cpu" else set())
    assert set(ids) == {r.video_id for r in folder_with_bad_files} - bad
    assert loader.skipped.count == len(bad)
    assert {os.path.basename(p) for p, _ in loader.skipped.examples} >= {"empty.webm", "missing.webm"}


def test_skip_policy_with_worker_processes(folder_with_bad_files):
    loader = VideoLoader(folder_with_bad_files, SPEC_TRAIN, batch_size=3, backend="pyav", num_workers=2,
                         on_error="skip")
    _epoch(loader)
    assert loader.skipped.count == 4  # counted in the parent although found in workers


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_raise_policy_names_the_file(folder_with_bad_files, backend):
    loader = VideoLoader(folder_with_bad_files, SPEC_TEST, batch_size=3, backend=backend, num_workers=0)
    with pytest.raises(VideoError, match="empty.webm"):
        _epoch(loader)


def test_trainer_skips_bad_files(folder_with_bad_files, tmp_path):
    from zsar.train import Trainer, TrainConfig
    from zsar.train.config import StageConfig

    ds = VideoClipDataset(folder_with_bad_files, ClipSpec(frames=4, size=32, short_side=40, train=True),
                          on_error="skip")
    cfg = TrainConfig(model="rest_tiny", model_args=dict(frames=4, image_size=32), batch_size=4,
                      stages={"warmup": StageConfig(1, "sgd", 0.01, 0.0), "joint": StageConfig(1, "adamw", 1e-3, 0.0)},
                      out_dir=str(tmp_path / "run"), progress=False, device="cpu")
    summary = Trainer(cfg, ds, CLASSES).fit()
    assert summary["epochs"] == 2 and np.isfinite(summary["history"][-1]["loss"])


# A file that probes fine and fails inside DALI's decoder, and files cut short after their container
# header states more frames.

@pytest.fixture
def folder_with_undecodable_files(tmp_path, videos):
    recs = [VideoRecord(r.path, r.label, r.video_id) for r in list(videos)[:7]]
    for k, at in enumerate((1, 5)):  # one in the first batch, one later
        bad = tmp_path / f"corrupt{k}.webm"
        corrupt_packets(videos[k + 1].path, bad, seed=k)
        recs.insert(at, VideoRecord(str(bad), 0, f"corrupt{k}"))
    return VideoList(recs, CLASSES)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spec", [SPEC_TRAIN, SPEC_TEST], ids=["train", "test"])
def test_skip_policy_skips_files_that_fail_inside_the_decoder(folder_with_undecodable_files, backend, spec):
    videos = folder_with_undecodable_files
    assert probe_video(videos[1].path).num_frames == 20  # probes fine
    loader = VideoLoader(videos, spec, batch_size=3, backend=backend, num_workers=1, on_error="skip", seed=2)
    good = {r.video_id for r in videos} - {"corrupt0", "corrupt1"}
    for epoch in range(2):  # the pipeline is rebuilt after a failure and serves the next epoch
        clips, _, ids, sizes = _epoch(loader)
        assert sorted(ids) == sorted(good) and clips.shape[0] == len(good)
        if backend == "dali-cpu":
            assert sizes == [3, 3, 1]  # batches refilled after a skip
        assert loader.skipped.count == 2 * (epoch + 1)
    reasons = dict(loader.skipped.examples)
    assert {os.path.basename(p) for p in reasons} == {"corrupt0.webm", "corrupt1.webm"}
    if backend == "dali-cpu":
        assert all("dali-cpu" in why and "Failed to send packet to decoder" in why for why in reasons.values())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_raise_policy_names_the_file_the_backend_and_the_reason(folder_with_undecodable_files, backend):
    loader = VideoLoader(folder_with_undecodable_files, SPEC_TEST, batch_size=3, backend=backend, num_workers=1)
    with pytest.raises(VideoError) as err:
        _epoch(loader)
    msg = str(err.value)
    assert "corrupt0.webm" in msg and "corrupt1" not in msg and "\n" not in msg
    if backend == "dali-cpu":
        assert "dali-cpu" in msg and "Failed to send packet to decoder" in msg
    else:
        assert "PyAV" in msg
    assert _epoch(VideoLoader(folder_with_undecodable_files, SPEC_TEST, batch_size=3, backend=backend,
                              num_workers=1, on_error="skip"))[0].shape[0] == 7  # a fresh epoch recovers


def _truncated_avi(tmp_path, name="cut.avi"):
    """An MJPEG AVI whose header states 30 frames, cut after its 11th."""
    make_video(tmp_path / "whole.avi", t=30, seed=4)
    cut_after_packet(tmp_path / "whole.avi", tmp_path / name, 11)
    return tmp_path / name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_truncated_files_follow_the_policy(tmp_path, videos, backend):
    cut = _truncated_avi(tmp_path)
    info = probe_video(cut)
    assert info.truncated and info.stated_frames == 30 and info.num_frames == 11
    recs = [VideoRecord(r.path, r.label, r.video_id) for r in list(videos)[:4]]
    recs.insert(2, VideoRecord(str(cut), 0, "cut"))
    vl = VideoList(recs, CLASSES)
    loader = VideoLoader(vl, SPEC_TEST, batch_size=2, backend=backend, num_workers=0, on_error="skip")
    assert "cut" not in _epoch(loader)[2] and loader.skipped.count == 1
    assert "truncated: the container states 30 frames" in loader.skipped.examples[0][1]
    with pytest.raises(VideoError, match="cut.avi: truncated"):
        _epoch(VideoLoader(vl, SPEC_TEST, batch_size=2, backend=backend, num_workers=0))
    ds = VideoClipDataset(vl, SPEC_TEST, backend=backend, on_error="skip")
    assert ds[2] is None and ds.skipped.count == 1


def test_special_files_are_named_for_what_they_are(tmp_path, videos):
    os.mkfifo(tmp_path / "pipe.webm")
    (tmp_path / "folder.webm").mkdir()
    recs = [VideoRecord(videos[0].path, 0, "good"), VideoRecord(str(tmp_path / "pipe.webm"), 1, "pipe"),
            VideoRecord(str(tmp_path / "folder.webm"), 2, "folder")]
    loader = VideoLoader(VideoList(recs, CLASSES), SPEC_TEST, batch_size=3, backend="pyav", num_workers=0,
                         on_error="skip")
    assert _epoch(loader)[2] == ["good"]
    reasons = {os.path.basename(p): why for p, why in loader.skipped.examples}
    assert "not a regular file (a FIFO)" in reasons["pipe.webm"]
    assert "is a directory" in reasons["folder.webm"]


@needs_dali_gpu
def test_dali_gpu_completes_an_epoch_over_corrupt_files(folder_with_undecodable_files):
    """NVDEC may conceal damage where DALI's CPU decoder fails: each corrupt file is either skipped
    (and counted) or decoded, and every good file arrives."""
    videos = folder_with_undecodable_files
    loader = VideoLoader(videos, SPEC_TEST, batch_size=3, backend="dali-gpu", num_workers=1, on_error="skip")
    clips, _, ids, _ = _epoch(loader)
    good = {r.video_id for r in videos} - {"corrupt0", "corrupt1"}
    assert good <= set(ids) and clips.is_cuda
    assert loader.skipped.count + len(set(ids) - good) == 2


# ---- distributed sharding ------------------------------------------------------------------------

def _shard_worker(rank, world, init_file, paths, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        vl = VideoList([VideoRecord(p, 0, os.path.basename(p)) for p in paths], ["x"])
        loader = VideoLoader(vl, SPEC_TRAIN, batch_size=2, backend="pyav", num_workers=0)
        assert (loader.shard_id, loader.num_shards) == (rank, world)
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            for epoch in range(2):
                f.write(" ".join(v for b in loader for v in b.video_ids) + "\n")
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_distributed_shards(videos, tmp_path):
    import torch.multiprocessing as mp

    paths = [r.path for r in videos]
    mp.start_processes(_shard_worker, args=(2, str(tmp_path / "init"), paths, str(tmp_path)), nprocs=2,
                       start_method="spawn")  # fork is unsafe once DALI threads run
    per_rank = [open(tmp_path / f"rank{r}.txt").read().splitlines() for r in range(2)]
    for epoch in range(2):
        a, b = (set(per_rank[r][epoch].split()) for r in range(2))
        assert not a & b and a | b == {os.path.basename(p) for p in paths}
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled across epochs


def test_probe_reports_frames(videos):
    info = probe_video(videos[1].path)
    assert (info.num_frames, info.width, info.height, info.codec) == (20, 64, 48, "vp9")


def test_worker_context_avoids_fork_once_dali_threads_run(monkeypatch):
    # The start method VideoLoader and VideoClipDataset users give their DataLoader workers.
    from zsar.data import VideoClipDataset, worker_context
    from zsar.data.decoders import dali

    monkeypatch.setattr(dali, "_threads_started", False)
    assert worker_context() == ("fork" if os.name == "posix" else "forkserver")
    monkeypatch.setattr(dali, "_threads_started", True)
    assert worker_context() == VideoClipDataset.worker_context() == "forkserver"
