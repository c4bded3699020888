"""Former home of the dataset-format readers, now one module per format in :mod:`zsar.data.formats`;
kept so that ``from zsar.data.datasets import read_ucf101`` and the like still work."""

from .formats import (  # noqa: F401
    AVCA_STAGES,
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
    read_video_list,
    write_class_list,
)
from .video import VIDEO_EXTENSIONS  # noqa: F401

__all__ = ["AVCA_STAGES", "VIDEO_EXTENSIONS", "AnnotationError", "match_class_names", "normalize_class_name",
           "read_activitynet", "read_avca_classes", "read_avca_split", "read_avca_word_names", "read_class_list",
           "read_hmdb51", "read_kinetics", "read_ucf101", "read_vggsound", "read_video_list", "write_class_list"]
