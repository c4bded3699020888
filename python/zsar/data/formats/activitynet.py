"""ActivityNet v1.3 JSON, one record per untrimmed video (format name ``activitynet``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..records import VideoList
from .common import AnnotationError, ClassesArg, ClassLookup, PathLike, Pending, as_classes, norm_exts, resolve
from .registry import register_format


_ANET_SUBSETS = {"training": "training", "train": "training", "validation": "validation",
                 "val": "validation", "testing": "testing", "test": "testing"}


def _majority_label(annotations: list[str]) -> str:
    """The most frequent label; ties go to the one annotated first."""
    counts = Counter(annotations)
    first = {}
    for i, a in enumerate(annotations):
        first.setdefault(a, i)
    return max(counts, key=lambda a: (counts[a], -first[a]))


def read_activitynet(json_path: PathLike, root: PathLike, subset: str | None = "training", *,
                     classes: ClassesArg = None, check_files: bool = True,
                     on_missing: str = "error",
                     extensions: Iterable[str] | None = None) -> VideoList:
    """Read ActivityNet (v1.3 layout): ``{"database": {id: {"subset": "training" |
    "validation" | "testing", "annotations": [{"label": ..., "segment": [s, e]}, ...]}}}``.

    One record per (untrimmed) video. Its label is the **most frequent** annotation label,
    ties going to the label annotated first (ActivityNet videos nearly always carry one class
    only). ``subset``: ``"training"``, ``"validation"``, ``"testing"`` (also ``train`` /
    ``val`` / ``test``), or None for all; testing videos have no annotations and get label
    -1, while a training/validation video without annotations is an error. Classes:
    ``classes`` (names or a class-list file), else the sorted labels over the whole database
    (so all subsets share indices). Files are ``v_<id>.<ext>`` or ``<id>.<ext>`` anywhere
    under ``root``; ``video_id`` is the database key.
    """
    class_list = as_classes(classes)
    if subset is not None and subset not in _ANET_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(set(_ANET_SUBSETS.values()))} "
                         f"(or train/val/test, or None), got {subset!r}")
    want = _ANET_SUBSETS.get(subset) if subset is not None else None
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"ActivityNet JSON not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    except RecursionError:  # the other readers go through zsar._utils.parse_json
        raise AnnotationError(path, None, "invalid JSON: nested too deeply") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError(path, None, "expected an object with a 'database' mapping of "
                                          "video id → {subset, annotations}")
    videos: list[tuple[str, str, str | None]] = []
    for vid, entry in database.items():
        where = f"database[{vid!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("subset"), str):
            raise AnnotationError(path, None, f"{where}: expected an object with a 'subset'")
        vsubset = entry["subset"]
        if vsubset not in ("training", "validation", "testing"):
            raise AnnotationError(path, None, f"{where}: unknown subset {vsubset!r}")
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list):
            raise AnnotationError(path, None, f"{where}: 'annotations' must be a list")
        labels = []
        for k, a in enumerate(annotations):
            if not isinstance(a, dict) or not isinstance(a.get("label"), str) or not a["label"]:
                raise AnnotationError(path, None, f"{where}.annotations[{k}]: expected "
                                                  f"{{'label': str, 'segment': [s, e]}}")
            labels.append(a["label"])
        if not labels and vsubset != "testing":
            raise AnnotationError(path, None, f"{where}: a {vsubset} video without annotations")
        videos.append((vid, vsubset, _majority_label(labels) if labels else None))
    if class_list is None:
        class_list = sorted({v[2] for v in videos if v[2] is not None})
    lookup = ClassLookup(class_list)
    exts = norm_exts(extensions)
    guess_ext = exts[0] if exts else ".mp4"
    pending: list[Pending] = []
    for vid, vsubset, label in videos:
        if want is not None and vsubset != want:
            continue
        index = -1
        if label is not None:
            index = lookup.get(label)
            if index is None:
                raise AnnotationError(path, None, f"database[{vid!r}]: unknown class {label!r} "
                                                  f"(not among the {len(class_list)} classes)")
        bare = vid.removeprefix("v_")
        pending.append(Pending(index, vid, f"{path}: database[{vid!r}]",
                               stems=("v_" + bare, bare), prefer=(vsubset,),
                               guess=f"v_{bare}{guess_ext}"))
    return resolve(pending, root, class_list, source=str(path), check_files=check_files,
                   on_missing=on_missing, extensions=exts)


@register_format("activitynet", subsets=True, annotations="the ActivityNet JSON", needs_root=True)
def _read_config(annotations, root, *, split, subset, classes, on_missing) -> VideoList:
    return read_activitynet(annotations, root, subset, classes=classes, on_missing=on_missing)
