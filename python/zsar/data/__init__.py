"""Video data: decoding, clip sampling, transforms, loaders, dataset formats, audio features."""

from .records import VideoList, VideoRecord
from .video import VideoError, VideoInfo, probe_video, write_video

__all__ = ["VideoError", "VideoInfo", "VideoList", "VideoRecord", "probe_video", "write_video"]
