"""The features that the AVCA-GZSL authors released (Mercea et al., CVPR 2022; github
ExplainableML/AVCA-GZSL, README "Dataset structure"), read without the raw videos.

One dataset folder ``<DS>`` (``UCF``, ``ActivityNet``, ``VGGSound``) holds::

    <DS>/class-split/                     (or class_split/)
        all_class.txt, <ds>_w2v_class_names.csv   (original,manual: class name -> word2vec words)
        main_split/ | cls_split/          stage_*.txt (classes), stage_*.csv (filename,label,label_code)
    <DS>/features/
        main_features/ | cls_features/    SeLaVi (512-d audio and video) | C3D 4096-d video, VGGish 128-d audio
            audio/<stage>/<ClassName>.h5   datasets "data" (N, F) or (N, T, F), "video_urls" (N,) S80
            video/<stage>/<ClassName>.h5
            text/word_embeddings_<ds>_normed.npy   a pickled dict {manual class name: 300-d vector}

:func:`read_avca_features` gives a stage's videos as a :class:`~zsar.data.records.VideoList` whose
records name the ``.h5`` file of their class (``path``) and the video (``video_id``, its ``video_urls``
entry); only the ``video_urls`` are read here, the features themselves are read row by row when a
:class:`~zsar.data.features.AVCAFeatureDataset` asks for them, so a corpus of VGGSound-GZSL size is
never loaded whole. The ``video_urls`` of the audio and video files must agree row by row and with
the stage CSV's videos of that class; every disagreement is named. :func:`avca_feature_stages` reads
all six stages (:data:`AVCA_STAGES`), and :func:`avca_class_vectors` the word2vec table (read without
running pickle code, :func:`zsar.text.read_class_vectors`) keyed by the dataset's class names.

Registered as the dataset format ``avca_features``: ``annotations`` is the ``<DS>`` folder, ``root``
the features folder (default ``features/main_features`` for ``split: main``, ``features/cls_features``
for ``cls``), ``subset`` a stage (or ``train`` = ``stage_2_train``, ``test`` = both stage-2 test stages).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...text.class_vectors import ClassVectorEmbedder
from ...text.embedders import load_name_map
from ..records import VideoList, VideoRecord
from ..video import VIDEO_EXTENSIONS
from .avca import AVCA_STAGES, read_avca_classes
from .common import AnnotationError, PathLike, check_on_missing, normalize_class_name, open_csv
from .registry import register_format

logger = logging.getLogger(__name__)

__all__ = ["AVCAFeatureLayout", "FEATURE_MODALITIES", "avca_feature_layout", "check_feature_data", "read_avca_features",
           "avca_feature_stages", "avca_class_vectors", "decode_video_urls"]

#: Split -> the features folder the AVCA release pairs with it (SeLaVi with main, C3D/VGGish with cls).
DEFAULT_FEATURES = {"main_split": "main_features", "cls_split": "cls_features"}
FEATURE_MODALITIES = ("video", "audio")
_CLASS_SPLIT_DIRS = ("class-split", "class_split")  # the repository's spelling, then the README's
_SUBSET_ALIASES = {"train": ("stage_2_train",), "test": ("stage_2_test_seen", "stage_2_test_unseen")}
MAX_LISTED = 50  # mismatches named per message before "... and N more" (the count is always exact)


def check_feature_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """``modalities`` as a tuple: a non-empty subset of :data:`FEATURE_MODALITIES`, else a ValueError."""
    mods = tuple(modalities)
    if not mods or any(m not in FEATURE_MODALITIES for m in mods) or len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be a non-empty subset of {FEATURE_MODALITIES}, got {list(modalities)}")
    return mods


def _split_name(split) -> str:
    name = "main" if split is None else str(split)
    name = name if name.endswith("_split") else f"{name}_split"
    if name not in DEFAULT_FEATURES:
        raise ValueError(f"split must be main or cls (main_split/cls_split), got {split!r}")
    return name


@dataclass(frozen=True)
class AVCAFeatureLayout:
    """Where the parts of one released AVCA-GZSL dataset folder are.

    Attributes:
        root: the dataset folder ``<DS>``.
        split: ``main_split`` or ``cls_split``.
        class_dir: ``<DS>/class-split`` (``all_class.txt``, the word2vec name map, the split folders).
        split_dir: ``class_dir/<split>`` (``stage_*.txt`` and ``stage_*.csv``).
        features: the features folder (``<DS>/features/<name>``: ``audio/``, ``video/``, ``text/``).
    """

    root: Path
    split: str
    class_dir: Path
    split_dir: Path
    features: Path

    def h5(self, modality: str, stage: str, class_name: str) -> Path:
        """``features/<modality>/<stage>/<class_name>.h5``.

        Raises:
            AnnotationError: the class name (read from ``<stage>.txt``) would name a file elsewhere.
        """
        if "/" in class_name or "\\" in class_name or class_name in ("", ".", ".."):
            raise AnnotationError(self.split_dir / f"{stage}.txt", None,
                                  f"class name {class_name!r} cannot name a feature file in {self.features / modality / stage} "
                                  f"(no '/', '\\', '.' or '..')")
        return self.features / modality / stage / f"{class_name}.h5"

    def word_vectors_file(self) -> Path:
        """The one ``.npy``/``.npz`` in ``features/text/``."""
        text = self.features / "text"
        found = sorted(p for p in text.glob("*") if p.suffix in (".npy", ".npz")) if text.is_dir() else []
        if len(found) != 1:
            raise FileNotFoundError(f"expected one word-vector file (.npy or .npz) in {text}, found "
                                    f"{[p.name for p in found] or 'none'}")
        return found[0]

    def name_map_file(self) -> Path | None:
        """``class_dir/*_w2v_class_names.csv``, or None."""
        found = sorted(self.class_dir.glob("*_w2v_class_names.csv"))
        return found[0] if found else None


def avca_feature_layout(root: PathLike, split: str = "main", features: PathLike | None = None) -> AVCAFeatureLayout:
    """The parts of a released AVCA-GZSL dataset folder, checked to exist.

    Args:
        root: the dataset folder (``.../avgzsl_benchmark_datasets/UCF``).
        split: ``main`` or ``cls`` (``main_split``/``cls_split`` too).
        features: the features folder: a path, or a name under ``root/features`` (default: ``main_features``
            for the main split, ``cls_features`` for cls, as the release pairs them).

    Raises:
        FileNotFoundError: a missing folder, named with what was expected there.
    """
    root = Path(root)
    split = _split_name(split)
    if not root.is_dir():
        raise FileNotFoundError(f"AVCA-GZSL dataset folder not found: {root}")
    class_dir = next((root / d for d in _CLASS_SPLIT_DIRS if (root / d).is_dir()), None)
    if class_dir is None:
        raise FileNotFoundError(f"{root} has no class-split/ (or class_split/) folder: is it an AVCA-GZSL dataset "
                                f"folder such as avgzsl_benchmark_datasets/UCF?")
    split_dir = class_dir / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"AVCA split folder not found: {split_dir}")
    feats = Path(features) if features is not None else Path(DEFAULT_FEATURES[split])
    if not feats.is_absolute() and not feats.is_dir():
        feats = root / "features" / feats
    if not feats.is_dir():
        raise FileNotFoundError(f"AVCA features folder not found: {feats} (expected audio/, video/ and text/ in it)")
    return AVCAFeatureLayout(root, split, class_dir, split_dir, feats)


def decode_video_urls(values, path: PathLike) -> list[str]:
    """The ``video_urls`` entries (fixed-length ``S80`` bytes) as stripped strings."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise AnnotationError(path, None, f"video_urls[{i}] is not UTF-8: {v!r:.90}") from None
        out.append(str(v).rstrip("\x00").strip())
    return out


def check_feature_data(data, path) -> None:
    """Raises :class:`AnnotationError` unless the h5py dataset ``data`` holds plain numbers (float, int).

    Why: the rows are read through a memory map of the file's bytes when ``data`` is contiguous, and
    an object dtype (h5py variable-length arrays, references) or a compound one would then turn bytes
    of the file into Python object pointers (a crafted file crashed the process that way)."""
    dtype = data.dtype
    if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
        raise AnnotationError(path, None, f"'data' has dtype {dtype}; expected a plain numeric array (the release "
                                          f"stores float32 features)")


def _read_urls(path: Path) -> tuple[list[str], tuple[int, ...]]:
    """``video_urls`` and the shape of ``data`` of one class file (the features are not read)."""
    # deferred: h5py (~0.1 s) is needed only for HDF5 feature files
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "video_urls") if k not in f]
            if missing:
                raise AnnotationError(path, None, f"missing HDF5 dataset(s) {missing}; the AVCA release has 'data' "
                                                  f"and 'video_urls'")
            urls = decode_video_urls(f["video_urls"][()], path)
            check_feature_data(f["data"], path)
            shape = tuple(f["data"].shape)
    except OSError as e:
        raise AnnotationError(path, None, f"not a readable HDF5 file ({e})") from None
    if len(shape) not in (2, 3) or shape[0] != len(urls):
        raise AnnotationError(path, None, f"'data' has shape {shape}, expected ({len(urls)}, F) or ({len(urls)}, T, F) "
                                          f"(one row per video_urls entry)")
    return urls, shape


def _stage_csv(split_dir: Path, stage: str) -> dict[str, list[str]] | None:
    """{class name: video names} of ``<stage>.csv`` (``filename,label,label_code``; the README calls the
    columns ``video_name,class_name,label_code``), or None without the file."""
    path = split_dir / f"{stage}.csv"
    if not path.is_file():
        return None
    out: dict[str, list[str]] = {}
    with open_csv(path, "AVCA stage CSV") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        video = next((header.index(k) for k in ("filename", "video_name") if k in header), None)
        label = next((header.index(k) for k in ("label", "class_name") if k in header), None)
        if video is None or label is None:
            raise AnnotationError(path, 1, f"expected a header with the columns filename (or video_name) and label "
                                           f"(or class_name), got {header}")
        for fields in reader:
            if not any(x.strip() for x in fields):
                continue
            if len(fields) <= max(video, label):
                raise AnnotationError(path, reader.line_num, f"too few fields: {fields}")
            out.setdefault(fields[label].strip(), []).append(fields[video].strip())
    return out


def _video_key(name: str) -> str:
    """A video name without its folders and video extension."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in VIDEO_EXTENSIONS else base


def _class_file(layout: AVCAFeatureLayout, modality: str, stage: str, name: str) -> Path | None:
    path = layout.h5(modality, stage, name)
    if path.is_file():
        return path
    folder = path.parent
    key = normalize_class_name(name)  # e.g. "Apply Eye Makeup" for ApplyEyeMakeup.h5
    hits = [p for p in folder.glob("*.h5") if normalize_class_name(p.stem) == key] if folder.is_dir() else []
    return hits[0] if len(hits) == 1 else None


def _describe(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _stage_videos(layout: AVCAFeatureLayout, stage: str, modalities: Sequence[str], problems: list[str]) -> VideoList:
    """The videos of one stage present in every modality's file (and its CSV); disagreements go to ``problems``."""
    classes = read_avca_classes(layout.split_dir, stage)
    listed = _stage_csv(layout.split_dir, stage)
    listed_by_key = None if listed is None else {normalize_class_name(c): v for c, v in listed.items()}
    records: list[VideoRecord] = []
    for label, name in enumerate(classes):
        urls: dict[str, list[str]] = {}
        files: dict[str, Path] = {}
        for m in modalities:
            path = _class_file(layout, m, stage, name)
            if path is None:
                problems.append(f"{layout.h5(m, stage, name)}: missing (class {name!r} of {stage})")
                continue
            files[m], urls[m] = path, _read_urls(path)[0]
        if len(files) != len(modalities):
            continue
        first = urls[modalities[0]]
        keep = set(first)
        for m in modalities[1:]:
            if urls[m] != first:
                only_a = [u for u in first if u not in set(urls[m])]
                only_b = [u for u in urls[m] if u not in set(first)]
                order = not only_a and not only_b
                problems.append(f"{files[m]} and {files[modalities[0]]}: video_urls differ"
                                + (" in order" if order else "")
                                + (f"; only in {modalities[0]}: {_describe(only_a)}" if only_a else "")
                                + (f"; only in {m}: {_describe(only_b)}" if only_b else ""))
                keep &= set(urls[m])
        if listed_by_key is not None:
            want = listed_by_key.get(normalize_class_name(name), [])
            # Names compare without folders and video extensions (a CSV "v_X_g01_c01", a file "v_X_g01_c01.avi").
            have_keys, want_keys = {_video_key(u) for u in first}, {_video_key(v) for v in want}
            absent = [v for v in want if _video_key(v) not in have_keys]
            extra = [u for u in first if _video_key(u) not in want_keys]
            csv_path = layout.split_dir / f"{stage}.csv"
            if absent:
                problems.append(f"{csv_path}: {len(absent)} video(s) of {name!r} without features in "
                                f"{files[modalities[0]]}: {_describe(absent)}")
            if extra:
                problems.append(f"{files[modalities[0]]}: {len(extra)} video(s) not listed for {name!r} in {csv_path}: "
                                f"{_describe(extra)}")
            keep -= set(extra)
        path = str(files[modalities[0]])
        records.extend(VideoRecord(path, label, u) for u in first if u in keep)
    return VideoList(records, classes)


def _check_problems(layout: AVCAFeatureLayout, stages: Sequence[str], problems: list[str], on_missing: str) -> None:
    """Every disagreement of ``stages`` in one error (``on_missing="error"``) or one warning (``skip``)."""
    if not problems:
        return
    what = f"AVCA features in {layout.features} disagree with the split {layout.split_dir} ({'+'.join(stages)})"
    if on_missing == "error":
        raise ValueError(f"{what}: {len(problems)} problem(s): " + " | ".join(problems) + ". Pass on_missing='skip' "
                         "to use only the videos present in every file and list.")
    logger.warning("%s: %d problem(s); kept only the videos present everywhere: %s", what, len(problems),
                   " | ".join(problems))


def read_avca_features(root: PathLike, split: str = "main", stage: str | Sequence[str] = "stage_1_train", *,
                       features: PathLike | None = None, modalities: Sequence[str] = FEATURE_MODALITIES,
                       on_missing: str = "error") -> VideoList:
    """The videos of one or more AVCA stages in the released feature layout.

    Args:
        root: the dataset folder (see :func:`avca_feature_layout`).
        split: ``main`` or ``cls``.
        stage: one of :data:`AVCA_STAGES` or several (their classes concatenated in order, e.g. the two
            stage-2 test stages).
        features: the features folder (default: the split's, see :func:`avca_feature_layout`).
        modalities: the modalities whose files must exist and agree (``("video",)`` for video-only models).
        on_missing: ``error``: any disagreement between the audio and video ``video_urls`` and the stage CSV,
            or a missing class file, is one ``ValueError`` naming every one; ``skip``: they are logged and
            only the videos present everywhere are kept.

    Returns:
        A :class:`VideoList`: ``classes`` the stage's classes (file order of ``<stage>.txt``), each record's
        ``path`` the ``.h5`` file of its class in the first modality and ``video_id`` its ``video_urls`` entry.
    """
    check_on_missing(on_missing)
    mods = check_feature_modalities(modalities)
    layout = avca_feature_layout(root, split, features)
    stages = [stage] if isinstance(stage, str) else list(stage)
    bad = [s for s in stages if s not in AVCA_STAGES]
    if not stages or bad:
        raise ValueError(f"stage must be one or more of {AVCA_STAGES}, got {stage!r}")
    problems: list[str] = []
    parts = [_stage_videos(layout, s, mods, problems) for s in stages]
    _check_problems(layout, stages, problems, on_missing)
    records: list[VideoRecord] = []
    classes: list[str] = []
    for part in parts:
        offset = {i: len(classes) + i for i in range(len(part.classes))}
        twice = sorted(set(classes) & set(part.classes))
        if twice:
            raise ValueError(f"stages {stages} share the classes {twice[:5]}; give stages of disjoint classes")
        classes += part.classes
        records += [VideoRecord(r.path, offset[r.label], r.video_id) for r in part.records]
    return VideoList(records, classes)


def avca_feature_stages(root: PathLike, split: str = "main", *, features: PathLike | None = None,
                        modalities: Sequence[str] = FEATURE_MODALITIES,
                        on_missing: str = "error") -> dict[str, VideoList]:
    """All six stages (:data:`AVCA_STAGES`) of :func:`read_avca_features`, each labelled over its own classes;
    with ``on_missing="error"`` one error names the disagreements of all six."""
    check_on_missing(on_missing)
    mods = check_feature_modalities(modalities)
    layout = avca_feature_layout(root, split, features)
    problems: list[str] = []
    stages = {s: _stage_videos(layout, s, mods, problems) for s in AVCA_STAGES}
    _check_problems(layout, AVCA_STAGES, problems, on_missing)  # every stage's problems at once
    return stages


def avca_class_vectors(root: PathLike, split: str = "main", *, features: PathLike | None = None):
    """The released word2vec class embeddings as a label embedder keyed by the dataset's class names.

    Reads ``features/text/*.npy`` with :func:`zsar.text.read_class_vectors` (no pickle code runs) and maps
    each class name through ``class-split/*_w2v_class_names.csv`` (``original -> manual``, the table's keys).

    Returns:
        A :class:`zsar.text.ClassVectorEmbedder`; vectors as stored (the release's are L2-normalised).
    """
    layout = avca_feature_layout(root, split, features)
    csv_file = layout.name_map_file()
    name_map = load_name_map(csv_file) if csv_file is not None else {}
    return ClassVectorEmbedder(layout.word_vectors_file(), name_map)


@register_format("avca_features", splits=True, subsets=True, needs_root=False,
                 annotations="the AVCA-GZSL dataset folder (class-split/ and features/); root: the features folder",
                 features="run the AVCA GZSL protocol on them with `zsar gzsl` and a feature-input model "
                          "(model: mzst_features or rest_features; see `zsar gzsl --help`)")
def _read(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    if classes is not None:
        raise ValueError("data.classes is not used by format 'avca_features' (the stage files fix the classes)")
    stages = _SUBSET_ALIASES.get(subset, (subset,))
    return read_avca_features(annotations, split or "main", stages, features=root, on_missing=on_missing)
