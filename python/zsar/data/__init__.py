"""Video data: decoding, clip sampling, transforms, loaders, dataset formats, audio features.

The pipeline, in order: a registered dataset format (:mod:`zsar.data.formats`) gives a
:class:`VideoList`; a :class:`ClipSpec` says which frames and crops a clip takes; :class:`VideoLoader`
(or the map-style :class:`VideoClipDataset`) decodes with a registered decoder
(:mod:`zsar.data.decoders`: DALI or PyAV, :func:`read_frames`) and yields :class:`Batch` es, with
audio features when asked.
"""

from .audio import (AST_MEAN, AST_STD, AudioSpec, MissingAudioError, audio_features, fbank, load_audio, normalize_fbank,
                    waveform_features)
from .batch import Batch, Sample, as_batch, collate
from .formats import (
    AVCA_STAGES,
    FORMATS,
    DatasetFormat,
    register_format,
    AnnotationError,
    match_class_names,
    normalize_class_name,
    read_activitynet,
    read_avca_classes,
    read_avca_split,
    read_avca_word_names,
    read_class_list,
    read_hmdb51,
    read_kinetics,
    read_ucf101,
    read_vggsound,
    read_video_folder,
    read_video_list,
    write_class_list,
)
from .features import AVCAFeatureDataset
from .formats import avca_class_vectors, avca_feature_stages, read_avca_features
from .decoders import BACKENDS as DECODER_BACKENDS
from .decoders import Decoder, choose_backend, decoder_names, read_frames, register_decoder
from .loader import (FilePolicy, VideoClipDataset, VideoLoader, clip_audio, evaluation_loader, load_clip,
                     shard_positions, worker_context)
from .cache import CachedClipDataset, MediaCache
from .records import VideoList, VideoRecord
from .sampling import random_clip_indices, sample_rng, uniform_clip_indices
from .transforms import ClipPlan, ClipSpec, apply_plan, plan_clip
from .prepare import PrepareSummary, find_videos, prepare_dataset, transcode_video
from .video import VIDEO_EXTENSIONS, VideoError, VideoInfo, media_file_problem, probe_video, write_video

__all__ = [
    "AVCAFeatureDataset", "avca_class_vectors", "avca_feature_stages", "read_avca_features",
    "AST_MEAN", "AST_STD", "AVCA_STAGES", "FORMATS", "DatasetFormat", "register_format", "AnnotationError", "PrepareSummary", "VIDEO_EXTENSIONS",
    "audio_features", "fbank", "find_videos", "load_audio", "match_class_names", "normalize_class_name",
    "normalize_fbank", "prepare_dataset", "read_activitynet", "read_avca_classes", "read_avca_split",
    "read_avca_word_names", "read_class_list", "read_hmdb51", "read_kinetics", "read_ucf101", "read_vggsound",
    "read_video_folder", "read_video_list", "transcode_video", "waveform_features", "write_class_list",
    "Batch", "CachedClipDataset", "Decoder", "MediaCache", "evaluation_loader",
    "FilePolicy", "MissingAudioError", "Sample", "as_batch", "clip_audio", "collate",
    "decoder_names", "media_file_problem", "register_decoder",
    "DECODER_BACKENDS", "AudioSpec", "ClipPlan", "ClipSpec", "VideoClipDataset", "VideoError", "VideoInfo",
    "VideoList", "VideoLoader", "VideoRecord", "apply_plan", "choose_backend", "plan_clip", "probe_video",
    "load_clip", "random_clip_indices", "read_frames", "sample_rng", "shard_positions", "uniform_clip_indices", "worker_context", "write_video",
]
