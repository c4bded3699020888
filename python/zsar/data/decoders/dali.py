"""NVIDIA DALI decoders: ``dali-gpu`` (NVDEC through DALI's ``mixed`` video decoder) and ``dali-cpu``
(DALI's FFmpeg build, which only has VP8, VP9 and MJPEG).

Two uses: :meth:`DaliDecoder.read_frames` decodes one file through a small cached pipeline, and
:meth:`DaliDecoder.clip_pipeline` builds the loader's pipeline that decodes, resizes, crops and
normalises whole batches inside DALI, fed by a Python callback that hands it encoded bytes and
the :class:`~zsar.data.transforms.ClipPlan` of every sample.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..video import VideoError, VideoInfo
from .base import Decoder, register_decoder

_lock = threading.Lock()
_readers: dict[tuple[str, int | None], object] = {}
_threads_started = False


def threads_started() -> bool:
    """Whether this process has built a DALI pipeline (whose worker threads make fork unsafe)."""
    return _threads_started


def _started() -> None:
    global _threads_started
    _threads_started = True


def dali_reason(error: BaseException) -> str:
    """DALI's own reason in one line, from the multi-line error of a failed pipeline run (the line
    after "encountered:", e.g. "Failed to send packet to decoder: Invalid data found when
    processing input")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "encountered:" in lines:
        after = lines[lines.index("encountered:") + 1:]
        if after:
            reason = after[0]
            if reason.startswith("Assert on") and "failed: " in reason:
                reason = reason.split("failed: ", 1)[1]
            return reason
    generic = ("Critical error in pipeline:", "Current pipeline object is no longer valid.")
    return next((line for line in lines if line not in generic), lines[0] if lines else type(error).__name__)


class DaliDecoder(Decoder):
    """DALI's ``fn.decoders.video`` on one device, per file or in the loader's batch pipeline."""

    priority = 10
    has_clip_pipeline = True

    @property
    def dali_device(self) -> str:
        return "gpu" if self.device_type == "cuda" else "cpu"

    def unavailable(self) -> str | None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as e:
            return f"NVIDIA DALI is not installed ({e.name}); pip install 'zsar[dali]'"
        return None

    def _reader(self, device_id: int | None):
        """A batch-1 pipeline (encoded bytes, frame indices) → frames, built once per device."""
        key = (self.dali_device, device_id)
        if key not in _readers:
            from nvidia.dali import fn, pipeline_def, types

            @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1,
                          exec_dynamic=True)
            def reader():
                enc = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
                idx = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
                return fn.decoders.video(enc, frames=idx, device="mixed" if self.device_type == "cuda" else "cpu")

            pipe = _build(reader)
            pipe.build()
            _readers[key] = pipe
        return _readers[key]

    def read_frames(self, path, indices: np.ndarray, device: torch.device, info: VideoInfo) -> torch.Tensor:
        out_device = self.output_device(device)
        device_id = out_device.index if out_device.type == "cuda" else None
        encoded = np.fromfile(str(path), dtype=np.uint8)
        with _lock:  # a pipeline runs one batch at a time
            pipe = self._reader(device_id)
            pipe.feed_input("encoded", [encoded])
            pipe.feed_input("frames", [np.ascontiguousarray(indices, dtype=np.int32)])
            try:
                (out,) = pipe.run()
            except RuntimeError as e:
                # A failed run leaves the pipeline unusable: drop it so the next call builds afresh.
                _readers.pop((self.dali_device, device_id), None)
                raise VideoError(f"{path}: {self.name} could not decode {info.codec} video: {dali_reason(e)}") from e
            if out_device.type == "cuda":
                from nvidia.dali.plugin.pytorch import feed_ndarray

                t = out[0]
                dst = torch.empty(tuple(t.shape()), dtype=torch.uint8, device=out_device)
                feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream(out_device))
                return dst
            return torch.from_numpy(np.array(out[0]))

    def clip_pipeline(self, source, spec, batch_size: int, num_threads: int, device: torch.device, seed: int):
        out_device = self.output_device(device)
        return build_clip_pipeline(source, spec, batch_size, self.dali_device, num_threads,
                                   out_device.index if out_device.type == "cuda" else None, seed)


@register_decoder
class DaliGpuDecoder(DaliDecoder):
    """DALI's ``mixed`` decoder: NVDEC on the GPU, frames land on that GPU."""

    name = "dali-gpu"
    device_type = "cuda"
    codecs = frozenset({"h264", "hevc", "av1", "mpeg4", "vp8", "vp9", "mjpeg"})
    priority = 10


@register_decoder
class DaliCpuDecoder(DaliDecoder):
    """DALI on the CPU; its FFmpeg build has no software H.264/HEVC."""

    name = "dali-cpu"
    device_type = "cpu"
    codecs = frozenset({"vp8", "vp9", "mjpeg"})
    priority = 20


def build_clip_pipeline(source, spec, batch_size: int, device: str, num_threads: int,
                        device_id: int | None, seed: int):
    """The loader's DALI pipeline: decode → short-side resize → crop(s) → normalise, in DALI.

    ``source`` is a callable returning one batch as a tuple of lists: encoded bytes (uint8),
    frame indices (int32, clips*T), resized size (int32 [H, W]), one crop anchor per view
    (float32 [y, x] in [0, 1], DALI's ``crop_pos``), and the sample's position in the dataset
    (int64). It raises ``StopIteration`` at the end of an epoch. Outputs ``clips`` (per sample
    ``spec.output_shape()``) and ``position``.
    """
    from nvidia.dali import fn, pipeline_def, types

    n_crops = 3 if spec.crop_mode == "three" else 1
    n_clips = 1 if spec.train else spec.num_clips

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  exec_dynamic=True)
    def clip_pipeline():
        enc, idx, size, *anchors, position = fn.external_source(
            source=source, num_outputs=4 + n_crops, batch=True,
            dtype=[types.UINT8, types.INT32, types.INT32] + [types.FLOAT] * n_crops + [types.INT64])
        frames = fn.decoders.video(enc, frames=idx, device="mixed" if device == "gpu" else "cpu")
        return _views(frames, size, anchors, spec, n_clips), position

    return _build(clip_pipeline)


def _views(frames, size, anchors, spec, n_clips: int):
    """decoded ``(n_clips*T, H, W, 3)`` → resized to ``size`` → one crop per anchor → normalised, as
    ``(n_clips*crops views, T, 3, S, S)`` clip-major like the torch path (``(T, 3, S, S)`` for one
    view). One implementation for both pipelines."""
    from nvidia.dali import fn, types

    n_crops = len(anchors)
    mean = [255 * m for m in spec.mean] if spec.output_dtype == "float32" else [0.0, 0.0, 0.0]
    std = [255 * s for s in spec.std] if spec.output_dtype == "float32" else [1.0, 1.0, 1.0]
    dtype = types.FLOAT if spec.output_dtype == "float32" else types.UINT8
    frames = fn.resize(frames, size=fn.cast(size, dtype=types.FLOAT), interp_type=types.INTERP_LINEAR, antialias=True)
    views = [fn.crop_mirror_normalize(frames, crop=(spec.size, spec.size), crop_pos_y=a[0], crop_pos_x=a[1],
                                      mean=mean, std=std, dtype=dtype, output_layout="FCHW") for a in anchors]
    # (crops, clips*T, 3, S, S) → (clips*crops views, T, 3, S, S)
    clips = fn.stack(*views, axis=1) if n_crops > 1 else views[0]
    shape = [n_clips * n_crops, spec.frames, 3, spec.size, spec.size] if n_clips * n_crops > 1 else \
        [spec.frames, 3, spec.size, spec.size]
    if n_crops > 1:
        by_crop = fn.reshape(clips, shape=[n_clips, spec.frames, n_crops, 3, spec.size, spec.size])
        return fn.reshape(fn.transpose(by_crop, perm=[0, 2, 1, 3, 4, 5]), shape=shape, layout="")
    return fn.reshape(clips, shape=shape, layout="")


_pipelines_built = 0


def pipelines_built() -> int:
    """How many DALI pipelines this process has built (the per-file reader, loader pipelines): a
    loader builds one per epoch at most, never one per file or clip."""
    return _pipelines_built


def _build(pipeline_fn):
    global _pipelines_built
    _started()
    pipe = pipeline_fn()
    _pipelines_built += 1
    return pipe


def write_clip_list(path, lines) -> None:
    """The video reader's ``file_list``: one ``path line_id start end`` row per clip (frame numbers,
    end exclusive), written to a new file and renamed into place."""
    import os

    bad = next((file for file, *_ in lines if not list_safe(file)), None)
    if bad is not None:
        raise ValueError(f"{bad!r}: a path with a space or a line break cannot go into DALI's file list")
    tmp = f"{path}.{os.getpid()}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for file, line_id, start, end in lines:
            f.write(f"{file} {int(line_id)} {int(start)} {int(end)}\n")
    os.replace(tmp, path)


def list_safe(path) -> bool:
    """Whether ``path`` can be a row of DALI's file list (its fields are separated by white space)."""
    return not any(c.isspace() for c in str(path))


def build_reader_pipeline(list_file: str, geometry, spec, batch_size: int, device: str, num_threads: int,
                          device_id: int | None, seed: int, n_crops: int, short_videos: bool = True):
    """The loader's clip pipeline over DALI's video reader: ``list_file`` (:func:`write_clip_list`)
    names each clip's file and frame range, the reader opens the files itself and decodes
    ``batch_size`` clips per run (NVDEC for ``device="gpu"``), and the rows' order is kept.

    Each row spans ``clip_span(T, stride)`` frames, read at the clip's stride. With
    ``short_videos`` (some video is shorter than that span) they are read at stride 1 with the last
    frame repeated past the end, and every ``stride``-th frame is kept: exactly the edge padding of
    :func:`zsar.data.sampling.random_clip_indices` (a reader stride repeats the last frame *of the
    stride* instead), at the cost of converting the frames in between (about 2x slower on DALI's
    CPU decoder). ``geometry(info)`` returns, for the run
    ``info.iteration``, the rows' resized sizes (int32 ``[H, W]``) and crop anchors (one float32
    ``[y, x]`` list per crop), in row order. Outputs ``clips`` (per row ``(crops, T, 3, S, S)``, or
    ``(T, 3, S, S)`` for one crop) and ``line`` (the row's id).
    """
    from nvidia.dali import fn, pipeline_def, types

    span = (spec.frames - 1) * spec.stride + 1

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  exec_dynamic=True, prefetch_queue_depth=2)
    def reader_pipeline():
        exact_edge = short_videos and spec.stride > 1
        frames, line = fn.experimental.readers.video(
            device="gpu" if device == "gpu" else "cpu", file_list=list_file, file_list_format="frames",
            file_list_include_end=False, sequence_length=span if exact_edge else spec.frames,
            stride=1 if exact_edge else spec.stride, step=span, pad_mode="edge", random_shuffle=False, name="clips")
        if exact_edge:
            frames = fn.sequence_rearrange(frames, new_order=list(range(0, span, spec.stride)))
        size, *anchors = fn.external_source(source=geometry, num_outputs=1 + n_crops, batch=True, batch_info=True,
                                            dtype=[types.INT32] + [types.FLOAT] * n_crops)
        return _views(frames, size, anchors, spec, 1), line

    return _build(reader_pipeline)


def to_torch(tensors, device: torch.device) -> torch.Tensor:
    """One DALI output batch (uniform shape) as a torch tensor on ``device`` (a GPU batch is copied
    on the current stream, without a host round trip)."""
    t = tensors.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        dst = torch.empty(tuple(t.shape()), dtype=to_torch_type[t.dtype], device=device)
        feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream(device))
        return dst
    return torch.from_numpy(np.array(t))


def crop_anchor(box, resized: tuple[int, int], size: int) -> np.ndarray:
    """DALI's normalised crop position (y, x) for a crop box inside a ``resized`` frame."""
    h, w = resized
    y = box.top / (h - size) if h > size else 0.5
    x = box.left / (w - size) if w > size else 0.5
    return np.array([y, x], dtype=np.float32)
