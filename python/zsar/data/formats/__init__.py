"""Dataset formats: the annotation files users already have, plus a video root, to a
:class:`~zsar.data.records.VideoList`.

Every reader returns a ``VideoList`` whose records carry a root-joined absolute ``path``, an
integer ``label`` indexing ``classes`` (-1 when the annotation has no label, e.g. test sets) and
a ``video_id`` unique within the list. One module per format, each registering itself
(:func:`~zsar.data.formats.registry.register_format`) under the name configs use:

* ``list`` (:mod:`.video_list`): generic ``relative/path label`` lists, :func:`read_video_list`.
* ``ucf101`` (:mod:`.ucf101`): ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``.
* ``hmdb51`` (:mod:`.hmdb51`): ``<class>_test_splitN.txt`` (1 = train, 2 = test, 0 = unused).
* ``kinetics`` (:mod:`.kinetics`): Kinetics CSVs (``label,youtube_id,time_start,time_end,split``).
* ``activitynet`` (:mod:`.activitynet`): ActivityNet v1.3 JSON (one record per video).
* ``vggsound`` (:mod:`.vggsound`): VGGSound CSV (``youtube_id,start_seconds,label,split``).
* ``folder`` (:mod:`.folder`): ``<folder>/<class>/<video>``, split by ``train/ val/ test/``
  sub-folders or a seeded fraction, :func:`read_video_folder`.
* ``avca_features`` (:mod:`.avca_features`): the released AVCA-GZSL features (one HDF5 file per class
  and stage), :func:`read_avca_features`; records name feature files, not videos.

:mod:`.avca` applies the AVCA-GZSL benchmark's class (and, where present, video) splits to one of
these lists; :mod:`.common` holds what the formats share (class lists, the file finder, the
missing-file policy). How to add a format: write a module with its reader and a function of the
registry's one signature decorated with ``@register_format("name", ...)``, and import it here.
"""

from . import video_list, ucf101, hmdb51, kinetics, activitynet, vggsound, folder  # noqa: F401,I001  (registers, in this order)
from . import avca_features  # noqa: F401,I001  (registers the released AVCA-GZSL features)
from .activitynet import read_activitynet
from .avca_features import avca_class_vectors, avca_feature_layout, avca_feature_stages, read_avca_features
from .avca import AVCA_STAGES, read_avca_classes, read_avca_split, read_avca_word_names
from .common import (
    AnnotationError,
    match_class_names,
    normalize_class_name,
    read_class_list,
    write_class_list,
)
from .folder import read_video_folder
from .hmdb51 import read_hmdb51
from .kinetics import read_kinetics
from .registry import FORMATS, DatasetFormat, get_format, register_format, video_format
from .ucf101 import read_ucf101
from .vggsound import read_vggsound
from .video_list import read_video_list

__all__ = [
    "AVCA_STAGES",
    "FORMATS",
    "AnnotationError",
    "avca_class_vectors",
    "avca_feature_layout",
    "avca_feature_stages",
    "read_avca_features",
    "DatasetFormat",
    "get_format",
    "match_class_names",
    "normalize_class_name",
    "read_activitynet",
    "read_avca_classes",
    "read_avca_split",
    "read_avca_word_names",
    "read_class_list",
    "read_hmdb51",
    "read_kinetics",
    "read_ucf101",
    "read_vggsound",
    "read_video_folder",
    "read_video_list",
    "register_format",
    "video_format",
    "write_class_list",
]
