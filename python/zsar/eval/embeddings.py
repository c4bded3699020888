"""Embeddings out: one row per video (or per clip) with its path, label and representation, in a
Parquet file other tools read (search, clustering, a vector database, pandas, Ray, DuckDB).

Columns: ``path`` (string), ``video_id`` (string), ``label`` (int64, -1 when unknown), ``class``
(string or null), ``clip`` (int32; -1 for the video's clips averaged), ``embedding``
(``fixed_size_list<float32>[D]``: the model's zero-shot representation, what
:meth:`zsar.models.ZeroShotModel.encode` gives) and, when asked, ``seen_logits``
(``fixed_size_list<float32>[S]``: the scores over the training classes, for evaluation). The file's
schema metadata records the model, the dimension and how many unreadable videos were skipped.

Large collections are split into chunks of ``chunk_size`` videos in list order; each chunk is
written as its own Parquet part (new file, then rename) under ``OUT.parts-<fingerprint>/`` and
the parts are merged into ``OUT`` at the end. A killed run resumes: chunks whose part exists are
not encoded again. Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` of ``W`` encodes chunks
``r, r + W, r + 2W, ...`` (a deterministic split that does not depend on timing), and rank 0
merges after a barrier, so every rank/node count gives the same single file (rows in list order).
The fingerprint covers the video paths with each file's size and modification time, the model's
weights (a digest of its parameters and buffers, so the same checkpoint path retrained, or another
model of the same architecture, counts as another model), the clip settings and the options, so a
changed run never reuses another run's parts or file.

``ZSAR_HOLD_AFTER_PARTS=N`` (for testing the resume): after writing its N-th part a process stops
and waits to be killed, so that a kill lands at a known point whatever the machine's speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .._utils import write_atomic
from ..data import VideoList, VideoLoader
from ..data.batch import as_batch
from ..train.distributed import barrier, init_from_env
from ..zeroshot.encoding import EncodedSet

__all__ = ["EMBEDDING_COLUMNS", "encode_videos", "encoded_set_from_table", "read_embeddings"]

log = logging.getLogger(__name__)

#: The environment variable that makes a run stop after writing that many parts (see the module docstring).
HOLD_ENV = "ZSAR_HOLD_AFTER_PARTS"

#: The columns every embeddings file has (``seen_logits`` is added when asked for).
EMBEDDING_COLUMNS = ("path", "video_id", "label", "class", "clip", "embedding")


@dataclass
class _Work:
    """What one run encodes: the videos, the model and its clip settings, the options."""

    videos: Any  # VideoList
    model: Any
    spec: Any  # ClipSpec
    per_clip: bool
    seen_logits: bool
    batch_size: int
    backend: str
    on_error: str = "skip"


def _file_state(path: str) -> list[int] | None:
    """``[size, mtime_ns]`` of a video file (None if it cannot be read): a video fixed or replaced
    since an interrupted run is encoded again, not taken from that run's parts."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _weights_digest(model) -> str:
    """SHA-256 of the model's parameters and buffers (names, shapes, dtypes, values): a model trained
    further, or another of the same architecture, never reuses an earlier model's file."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):  # a module's extra state
            digest.update(f"{name}={tensor!r};".encode())
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fingerprint(work: _Work, chunk_size: int, model_id: str) -> str:
    spec = asdict(work.spec) if is_dataclass(work.spec) else repr(work.spec)
    records = work.videos.records
    blob = json.dumps({"paths": [r.path for r in records], "labels": [r.label for r in records],
                       "files": [_file_state(r.path) for r in records],
                       "model": model_id, "weights": _weights_digest(work.model), "spec": spec,
                       "per_clip": work.per_clip, "seen_logits": work.seen_logits, "chunk_size": chunk_size},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fixed_list(values: np.ndarray):

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _encode_chunk(work: _Work, start: int, stop: int):
    """The Parquet table of videos ``start:stop`` in list order, each video's average (``clip`` -1)
    before its clips; unreadable files are skipped and counted (``work.on_error`` "skip") or raise.
    Returns ``(table or None, skipped)``."""


    records = work.videos.records[start:stop]
    position = {r.video_id: i for i, r in enumerate(records)}
    loader = VideoLoader(VideoList(list(records), list(work.videos.classes)), work.spec, work.batch_size,
                         backend=work.backend, shuffle=False, num_shards=1, shard_id=0, num_workers=0,
                         on_error=work.on_error, device=work.model.device, audio=work.model.inputs.audio)
    rows = []  # (position, clip, embedding, seen logits or None)
    work.model.eval()
    with torch.no_grad():
        for item in loader:
            batch = as_batch(item)
            if batch is None:
                continue
            batch = batch.to(work.model.device)
            if work.seen_logits:
                x, scores = work.model.encode_and_score(batch)
                scores = scores.float().cpu().numpy()
            else:
                x, scores = work.model.encode(batch), None
            views = [(-1, x)]
            if work.per_clip and work.spec.num_clips > 1:  # clips (B, N, ...): each clip alone
                views += [(k, work.model.encode(batch.replace(clips=batch.clips[:, k])))
                          for k in range(batch.clips.shape[1])]
            for clip, emb in views:
                emb = emb.float().cpu().numpy()
                for i, vid in enumerate(batch.video_ids):
                    rows.append((position[vid], clip, emb[i], scores[i] if scores is not None else None))
    skipped = loader.skipped.count
    if not rows:
        return None, skipped
    rows.sort(key=lambda row: (row[0], row[1]))
    classes = work.videos.classes
    picked = [records[row[0]] for row in rows]
    columns = {
        "path": pa.array([r.path for r in picked], pa.string()),
        "video_id": pa.array([r.video_id for r in picked], pa.string()),
        "label": pa.array([int(r.label) for r in picked], pa.int64()),
        "class": pa.array([classes[r.label] if 0 <= r.label < len(classes) else None for r in picked], pa.string()),
        "clip": pa.array([row[1] for row in rows], pa.int32()),
        "embedding": _fixed_list(np.stack([row[2] for row in rows])),
    }
    if work.seen_logits:
        columns["seen_logits"] = _fixed_list(np.stack([row[3] for row in rows]))
    return pa.table(columns), skipped


def _write_table(table, path: Path, metadata: dict[str, str]) -> None:
    """``table`` with ``metadata`` added, written to ``path`` atomically (a Parquet part or the file)."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k.encode(): v.encode()
                                                                              for k, v in metadata.items()}})
    write_atomic(path, lambda f: pq.write_table(table, f))


def _model_id(model) -> str:
    name = getattr(model, "name", None) or type(model).__name__
    return str(name)


def encode_videos(model_or_classifier, videos, out: str | os.PathLike | None = None, *, per_clip: bool = False,
                  seen_logits: bool = False, batch_size: int = 8, chunk_size: int = 64, backend: str = "auto",
                  clip_spec=None, checkpoint: str | None = None, progress: bool = True, distributed: bool | None = None,
                  on_error: str = "skip"):
    """Encode every video of a list and return (and, with ``out``, write) the embeddings table.

    Args:
        model_or_classifier: a :class:`~zsar.zeroshot.ZeroShotClassifier` (its model and clip spec) or a
            registered model (:class:`~zsar.models.ZeroShotModel`).
        videos: a :class:`~zsar.data.VideoList` (labels index its classes; -1 for unlabelled files).
        out: the Parquet file to write (resumable, see the module docstring); None: in memory only.
        per_clip: also one row per clip (``clip`` 0..N-1) beside the average (``clip`` -1).
        seen_logits: add the ``seen_logits`` column (scores over the training classes).
        batch_size: videos per forward pass.
        chunk_size: videos per part file (the unit of resuming and of the split across ranks).
        backend: the decoder (``auto`` or a registered one).
        clip_spec: how files become clips (default: the classifier's, else the model's).
        checkpoint: the checkpoint the model came from (recorded, and part of the resume fingerprint).
        progress: a progress bar over chunks.
        distributed: split chunks across ``torchrun`` ranks (default: when ``WORLD_SIZE`` > 1).
        on_error: an unreadable video is skipped and counted (``"skip"``, recorded as ``zsar.skipped``)
            or stops the run naming the file (``"raise"``).

    Returns:
        The merged ``pyarrow.Table`` (every rank gets it, after the merge).
    """


    model = getattr(model_or_classifier, "model", model_or_classifier)
    spec = clip_spec or getattr(model_or_classifier, "clip_spec", None) or model.inputs.clip_spec()
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size} and {batch_size}")
    if not len(videos):
        raise ValueError("encode_videos: the video list is empty")
    if per_clip and spec.num_clips < 2:
        log.warning("per-clip rows need several clips per video; the clip spec takes %d (e.g. --clips 4)",
                    spec.num_clips)
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    work = _Work(videos, model, spec, per_clip, seen_logits, batch_size, backend, on_error)
    use_dist = int(os.environ.get("WORLD_SIZE", "1")) > 1 if distributed is None else distributed
    info = init_from_env(torch.device(model.device)) if use_dist else None
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    n_chunks = -(-len(videos) // chunk_size)
    metadata = {"zsar.model": _model_id(model), "zsar.checkpoint": str(checkpoint or ""),
                "zsar.per_clip": str(per_clip)}

    if out is None:
        if world > 1:
            raise ValueError("encode_videos across ranks needs out= (the file the ranks' parts merge into)")
        tables, skipped = [], 0
        for c in tqdm(range(n_chunks), desc="encoding videos", unit="chunk", disable=not progress):
            table, n = _encode_chunk(work, c * chunk_size, (c + 1) * chunk_size)
            skipped += n
            if table is not None:
                tables.append(table)
        if not tables:
            raise ValueError(f"encode_videos: none of the {len(videos)} videos could be read")
        merged = pa.concat_tables(tables)
        metadata["zsar.skipped"] = str(skipped)
        return merged.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})

    out = Path(out)
    # Rank 0's, for every rank: the files' times may differ between nodes' copies of a dataset (and
    # one rank's stat calls over a network file system are enough).
    fingerprint = [_fingerprint(work, chunk_size, metadata["zsar.checkpoint"] or metadata["zsar.model"])
                   if rank == 0 else None]
    if info is not None:
        torch.distributed.broadcast_object_list(fingerprint, src=0)
    fingerprint = fingerprint[0]
    metadata["zsar.fingerprint"] = fingerprint
    if out.is_file():
        done = pq.read_table(out)
        if (done.schema.metadata or {}).get(b"zsar.fingerprint") == fingerprint.encode():
            log.info("%s: already encoded (same videos, checkpoint and options): reused", out)
            return done
    parts = out.with_name(f"{out.name}.parts-{fingerprint}")
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    parts.mkdir(parents=True, exist_ok=True)
    mine = [c for c in range(n_chunks) if c % world == rank]
    todo = [c for c in mine if not (parts / f"part-{c:06d}.parquet").is_file()]
    if len(todo) < len(mine):
        log.info("%s: resuming, %d of %d chunks already encoded", out, len(mine) - len(todo), len(mine))
    written, hold = 0, _hold_after_parts()
    for c in tqdm(todo, desc=f"encoding videos (rank {rank})" if world > 1 else "encoding videos", unit="chunk",
                  disable=not progress):
        table, skipped = _encode_chunk(work, c * chunk_size, (c + 1) * chunk_size)
        if table is None:  # every video of the chunk unreadable: an empty part keeps the count
            schema_src, _ = _empty_schema(seen_logits)
            table = schema_src
        _write_table(table, parts / f"part-{c:06d}.parquet", {"zsar.skipped": str(skipped)})
        written += 1
        if written == hold:
            _wait_to_be_killed(parts, written)
    if info is not None:
        barrier(info)
    if rank == 0:
        tables, skipped = [], 0
        for c in range(n_chunks):
            part = pq.read_table(parts / f"part-{c:06d}.parquet")
            skipped += int((part.schema.metadata or {}).get(b"zsar.skipped", b"0"))
            if part.num_rows:
                tables.append(part.replace_schema_metadata(None))
        if not tables:
            raise ValueError(f"encode_videos: none of the {len(videos)} videos could be read")
        merged = pa.concat_tables(tables)
        metadata["zsar.skipped"] = str(skipped)
        metadata["zsar.dim"] = str(merged.schema.field("embedding").type.list_size)
        _write_table(merged, out, metadata)
        shutil.rmtree(parts, ignore_errors=True)
        if skipped:
            log.warning("%s: skipped %d unreadable video(s)", out, skipped)
    if info is not None:
        barrier(info)
    return pq.read_table(out)


def _hold_after_parts() -> int:
    """``ZSAR_HOLD_AFTER_PARTS`` (0: unset), checked here rather than deep in the loop."""
    value = os.environ.get(HOLD_ENV, "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{HOLD_ENV}={value!r}: expected a number of parts") from None


def _wait_to_be_killed(parts: Path, written: int) -> None:
    log.warning("%s: %s: holding after %d part(s) until killed", parts, HOLD_ENV, written)
    while True:
        time.sleep(60)


def _empty_schema(seen_logits: bool):

    fields = [("path", pa.string()), ("video_id", pa.string()), ("label", pa.int64()), ("class", pa.string()),
              ("clip", pa.int32()), ("embedding", pa.list_(pa.float32(), 1))]
    if seen_logits:
        fields.append(("seen_logits", pa.list_(pa.float32(), 1)))
    schema = pa.schema(fields)
    return schema.empty_table(), schema


def read_embeddings(path: str | os.PathLike) -> dict[str, Any]:
    """An embeddings file as numpy arrays: ``{"path", "video_id", "label", "class", "clip"}`` lists/arrays,
    ``embedding`` ``(N, D)`` float32 (and ``seen_logits`` ``(N, S)`` when present), ``metadata`` dict."""

    table = pq.read_table(path)
    return _as_arrays(table)


def _as_arrays(table) -> dict[str, Any]:
    out: dict[str, Any] = {k: table.column(k).to_pylist() for k in ("path", "video_id", "class")}
    out["label"] = table.column("label").to_numpy()
    out["clip"] = table.column("clip").to_numpy()
    for name in ("embedding", "seen_logits"):
        if name in table.column_names:
            col = table.column(name).combine_chunks()
            out[name] = col.values.to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    out["metadata"] = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return out


def encoded_set_from_table(table):
    """The video-level rows (``clip == -1``) of an embeddings table with ``seen_logits`` as an
    :class:`~zsar.eval.runner.EncodedSet` (for :func:`~zsar.eval.runner.zero_shot_report`)."""


    data = _as_arrays(table)
    keep = np.flatnonzero(data["clip"] == -1)
    if "seen_logits" not in data:
        raise ValueError("the embeddings have no seen_logits column (encode with seen_logits=True)")
    return EncodedSet(torch.from_numpy(data["embedding"][keep].copy()), torch.from_numpy(data["seen_logits"][keep].copy()),
                      data["label"][keep], [data["video_id"][i] for i in keep],
                      int(data["metadata"].get("zsar.skipped", 0)))
