"""Video data: decoding, clip sampling, transforms, loaders, dataset formats, audio features.

The pipeline, in order: a dataset format parser gives a :class:`VideoList`; a :class:`ClipSpec`
says which frames and crops a clip takes; :class:`VideoLoader` (or the map-style
:class:`VideoClipDataset`) decodes with DALI or PyAV (:func:`read_frames`) and yields batches.
"""

from .decoders import BACKENDS as DECODER_BACKENDS
from .decoders import choose_backend, read_frames
from .loader import ClipBatch, VideoClipDataset, VideoLoader, shard_positions
from .records import VideoList, VideoRecord
from .sampling import random_clip_indices, sample_rng, uniform_clip_indices
from .transforms import ClipPlan, ClipSpec, apply_plan, plan_clip
from .video import VideoError, VideoInfo, probe_video, write_video

__all__ = [
    "DECODER_BACKENDS", "ClipBatch", "ClipPlan", "ClipSpec", "VideoClipDataset", "VideoError", "VideoInfo",
    "VideoList", "VideoLoader", "VideoRecord", "apply_plan", "choose_backend", "plan_clip", "probe_video",
    "random_clip_indices", "read_frames", "sample_rng", "shard_positions", "uniform_clip_indices", "write_video",
]
