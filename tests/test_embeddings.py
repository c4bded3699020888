"""Embeddings out (`zsar encode`, zsar.eval.embeddings): Parquet rows per video and clip, the same through
the API, resumable after a kill, and split across torchrun ranks into one file (CPU, gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tiny_checkpoint import make_checkpoint, make_video_folder

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "python"), str(TESTS),
                                                     os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    ckpt = make_checkpoint(root)
    folder = make_video_folder(root / "videos", classes=("red", "blue", "green"), per_class=2)
    return root, ckpt, folder


def _videos(folder):
    from zsar.data.formats import read_video_folder

    return read_video_folder(folder)


def test_cli_file_matches_the_api_and_the_classifier(setup, tmp_path):
    from zsar.cli import main
    from zsar.eval.embeddings import encode_videos, read_embeddings
    from zsar.zeroshot import ZeroShotClassifier

    _, ckpt, folder = setup
    out = tmp_path / "e.parquet"
    assert main(["encode", "--checkpoint", str(ckpt), "--format", "folder", "--annotations", str(folder),
                 "--out", str(out), "--per-clip", "--chunk-size", "4", "--device", "cpu", "--no-progress"]) == 0
    data = read_embeddings(out)
    videos = _videos(folder)
    assert pq.read_schema(out).names[:6] == ["path", "video_id", "label", "class", "clip", "embedding"]
    assert data["path"][::3] == [r.path for r in videos.records]  # list order, average then clips 0, 1
    assert list(data["clip"]) == [-1, 0, 1] * len(videos)
    assert data["class"][::3] == [videos.classes[r.label] for r in videos.records]
    assert data["metadata"]["zsar.dim"] == "32" and not any(p.name.startswith("e.parquet.parts") for p in tmp_path.iterdir())

    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    direct = clf.encode([r.path for r in videos.records]).numpy()  # the same decoder (auto) as the file's
    np.testing.assert_allclose(data["embedding"][data["clip"] == -1], direct, rtol=1e-4, atol=1e-5)
    # The clips' mean is the video's representation for ResT (its encode averages clip features).
    clips = data["embedding"][data["clip"] >= 0].reshape(len(videos), 2, -1)
    assert np.isfinite(clips).all()

    table = encode_videos(clf, videos, per_clip=True, chunk_size=4, progress=False)  # in memory
    np.testing.assert_allclose(read_embeddings_table(table), data["embedding"], rtol=1e-5, atol=1e-6)


def read_embeddings_table(table):
    col = table.column("embedding").combine_chunks()
    return col.values.to_numpy().reshape(len(col), -1)


def _encode_cmd(ckpt, folder, out, chunk_size=1):
    return [sys.executable, "-m", "zsar.cli", "encode", "--checkpoint", str(ckpt), "--format", "folder",
            "--annotations", str(folder), "--out", str(out), "--chunk-size", str(chunk_size), "--device", "cpu",
            "--backend", "pyav", "--no-progress"]


def test_resumes_after_a_kill(setup, tmp_path):
    """SIGKILL of a real run after its second part (ZSAR_HOLD_AFTER_PARTS=2 holds it there, so the kill
    lands at the same point on any machine); the rerun encodes only the other 4 and writes the same file."""
    _, ckpt, folder = setup
    out = tmp_path / "e.parquet"
    proc = subprocess.Popen(_encode_cmd(ckpt, folder, out), env={**ENV, "ZSAR_HOLD_AFTER_PARTS": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the run says when it holds (after the second part's rename)
            if "holding after 2 part(s) until killed" in line:
                break
        else:
            pytest.fail(f"the run ended (exit {proc.wait()}) without holding after its second part")
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in tmp_path.glob("e.parquet.parts-*/part-*.parquet"))
    assert done == ["part-000000.parquet", "part-000001.parquet"] and not out.exists()
    assert not list(tmp_path.glob("e.parquet.parts-*/*.tmp*"))  # parts are written new, then renamed
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("e.parquet.parts-*/part-*.parquet")}
    resumed = subprocess.run(_encode_cmd(ckpt, folder, out), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming, 2 of 6 chunks already encoded" in resumed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists()) or not any(p.exists() for p in before)

    from zsar.eval.embeddings import encode_videos
    from zsar.zeroshot import ZeroShotClassifier

    fresh = encode_videos(ZeroShotClassifier.load(ckpt, device="cpu"), _videos(folder), backend="pyav",
                          progress=False)
    a = pq.read_table(out)
    assert a.column("path").to_pylist() == fresh.column("path").to_pylist()
    np.testing.assert_allclose(read_embeddings_table(a), read_embeddings_table(fresh), rtol=1e-5, atol=1e-6)


def _torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "zsar.cli", *args], env=ENV, capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_write_one_file(setup, tmp_path):
    """Two gloo ranks split the chunks (0, 2, 4 / 1, 3, 5) and rank 0 merges them in list order."""
    from zsar.eval.embeddings import encode_videos
    from zsar.zeroshot import ZeroShotClassifier

    _, ckpt, folder = setup
    out = tmp_path / "e.parquet"
    result = _torchrun(*_encode_cmd(ckpt, folder, out)[3:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" rows, ") == 1 and "6 rows" in result.stdout  # rank 0 alone reports
    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    single = encode_videos(clf, _videos(folder), backend="pyav", progress=False)
    merged = pq.read_table(out)
    assert merged.column("path").to_pylist() == single.column("path").to_pylist()
    np.testing.assert_allclose(read_embeddings_table(merged), read_embeddings_table(single), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_eval_and_predict(setup, tmp_path):
    """`zsar eval` and `zsar predict` under torchrun give what one process gives."""
    import json

    from zsar.cli import main

    _, ckpt, folder = setup
    base = ["eval", "--checkpoint", str(ckpt), "--format", "folder", "--annotations", str(folder), "--subset", "all",
            "--backend", "pyav", "--device", "cpu"]
    result = _torchrun(*base, "--embeddings", str(tmp_path / "ev.parquet"), "--report", str(tmp_path / "dist.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert main([*base, "--report", str(tmp_path / "one.json")]) == 0
    dist, one = (json.loads((tmp_path / f).read_text()) for f in ("dist.json", "one.json"))
    assert dist["videos"] == one["videos"] == 6
    for key in ("top1", "mean_class_accuracy"):
        assert dist["transfer"][key]["mean"] == pytest.approx(one["transfer"][key]["mean"])

    videos = [str(p) for p in sorted(folder.glob("*/*.webm"))]
    pred = ["predict", *videos, "--checkpoint", str(ckpt), "--labels", "red light,blue glow,dark room", "--json",
            "--device", "cpu"]
    result = _torchrun(*pred, "--embeddings", str(tmp_path / "pr.parquet"))
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "zsar.cli", *pred], env=ENV, capture_output=True, text=True,
                            check=True)
    a, b = json.loads(result.stdout), json.loads(single.stdout)
    assert [r["video"] for r in a] == videos and [[p["label"] for p in r["predictions"]] for r in a] == \
        [[p["label"] for p in r["predictions"]] for r in b]


def test_only_rank_0_says_info_under_torchrun():
    """The CLI's log lines (e.g. the decoder `auto` chose) come from rank 0 alone; other ranks say warnings,
    with their rank."""
    code = ("import logging; from zsar.cli import _log_to_stderr; _log_to_stderr(); "
            "log = logging.getLogger('zsar.data.decoders.base'); "
            "log.info('decoding vp9 videos with pyav'); log.warning('a warning')")
    said = {rank: subprocess.run([sys.executable, "-c", code], env={**ENV, "RANK": rank}, capture_output=True,
                                 text=True, timeout=120).stderr for rank in ("0", "1")}
    assert said["0"].splitlines() == ["zsar: decoding vp9 videos with pyav", "zsar: a warning"]
    assert said["1"].splitlines() == ["zsar (rank 1): a warning"]


@pytest.mark.parametrize("command", ["predict", "eval", "encode"])
@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_an_embeddings_path_that_cannot_be_written_is_refused_before_encoding(setup, tmp_path, capsys, command,
                                                                              where):
    """--embeddings (predict, eval) and --out (encode) naming a folder, or a path under a regular file, are
    one-line errors naming the option before any video is encoded, and leave no temporary file or parts."""
    from zsar.cli import main

    _, ckpt, folder = setup
    video = sorted(folder.glob("*/*.webm"))[0]
    if where == "folder":
        target = tmp_path / "e.parquet"
        target.mkdir()
    else:
        (tmp_path / "a.webm").write_bytes(b"")
        target = tmp_path / "a.webm" / "e.parquet"
    option = "--out" if command == "encode" else "--embeddings"
    argv = {"predict": ["predict", str(video), "--checkpoint", str(ckpt), "--labels", "red light,dark room"],
            "eval": ["eval", "--checkpoint", str(ckpt), "--format", "folder", "--annotations", str(folder),
                     "--subset", "all"],
            "encode": ["encode", str(video), "--checkpoint", str(ckpt), "--no-progress"]}[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*argv, option, str(target), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zsar {command}: error: {option} {target}") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .tmpNNN, no .parts-*/


def test_atomic_parquet_write_removes_its_temporary_file_when_it_fails(tmp_path):
    import pyarrow as pa

    from zsar.eval.embeddings import _write_table

    target = tmp_path / "e.parquet"
    target.mkdir()  # the rename over it fails
    with pytest.raises(OSError):
        _write_table(pa.table({"x": [1, 2]}), target, {"zsar.skipped": "0"})
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]
    _write_table(pa.table({"x": [1, 2]}), tmp_path / "ok.parquet", {"zsar.skipped": "0"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet", "ok.parquet"]
    assert pq.read_table(tmp_path / "ok.parquet").schema.metadata[b"zsar.skipped"] == b"0"


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    """A result renamed from a private temporary file (0600) is readable as a plain write would make it."""
    from zsar._utils import write_atomic
    from zsar.models import save_checkpoint
    from zsar.zeroshot import ZeroShotClassifier

    old = os.umask(0o022)
    try:
        for data in ("text", b"bytes", lambda f: f.write(b"callable")):
            path = write_atomic(tmp_path / "f", data)
            assert path.stat().st_mode & 0o777 == 0o644
        ckpt = make_checkpoint(tmp_path / "made")
        clf = ZeroShotClassifier.load(ckpt, device="cpu")
        saved = save_checkpoint(tmp_path / "ckpt", clf.model, add_files=clf.write_files)
        assert saved.stat().st_mode & 0o777 == 0o755
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in saved.iterdir()), [oct(p.stat().st_mode) for p in saved.iterdir()]
        assert clf.save(saved).stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


def test_a_file_is_reused_only_for_the_same_weights_and_the_same_video_files(setup, tmp_path):
    """A finished file stands for these videos as they are and this model's weights (the fingerprint
    that also names an interrupted run's parts): another model of the same architecture, or a video
    fixed since, is encoded again."""
    import shutil

    import torch

    from zsar.eval.embeddings import encode_videos, read_embeddings
    from zsar.zeroshot import ZeroShotClassifier

    _, ckpt, folder = setup
    videos = _videos(shutil.copytree(folder, tmp_path / "videos"))
    clf = ZeroShotClassifier.load(ckpt, device="cpu")
    out = tmp_path / "e.parquet"

    def encoded():
        encode_videos(clf, videos, out, chunk_size=2, progress=False)
        return read_embeddings(out)["embedding"]

    first = encoded()
    np.testing.assert_array_equal(encoded(), first)  # nothing changed: the file is reused
    with torch.no_grad():
        for p in clf.model.parameters():
            p.mul_(1.5)
    scaled = encoded()
    assert not np.allclose(scaled, first)  # the same architecture with other weights: encoded again
    target = Path(videos.records[0].path)  # a video replaced by another under the same name
    shutil.copyfile(videos.records[-1].path, target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    again = encoded()
    np.testing.assert_allclose(again[0], again[-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again[0], scaled[0])
