"""Class lists shipped with zsar as package data.

* ``classes/<name>.txt``: the action classes of UCF101, HMDB51, Kinetics-400/600/700 and
  ActivityNet-200 (v1.3), one per line, in the datasets' own spelling.
* ``avgzsl_splits/<dataset>/``: the AVCA (audio-visual GZSL) class splits of UCF, ActivityNet and
  VGGSound (``main_split`` and ``cls_split``, each with six stage files), ``all_class.txt``, and the
  manual word2vec name maps (``*_w2v_class_names.csv``, columns ``original,manual``).

Files are read through :mod:`importlib.resources`, so they work from an installed wheel or a zip.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

__all__ = ["CLASS_LISTS", "AVCA_DATASETS", "AVCA_STAGES", "class_list", "avca_split", "avca_name_map_file"]

CLASS_LISTS = ("ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "activitynet200")
# Lower-case key -> directory name under avgzsl_splits/, and the name map file in it.
AVCA_DATASETS = {
    "ucf": ("UCF", "ucf_w2v_class_names.csv"),
    "activitynet": ("ActivityNet", "activitynet_w2v_class_names.csv"),
    "vggsound": ("VGGSound", "vggsound_w2v_class_names.csv"),
}
AVCA_STAGES = (
    "stage_1_train",
    "stage_1_val_seen",
    "stage_1_val_unseen",
    "stage_2_train",
    "stage_2_test_seen",
    "stage_2_test_unseen",
)
_AVCA_SPLITS = ("main_split", "cls_split")


def _read_lines(*parts: str) -> list[str]:
    node = resources.files(__name__).joinpath(*parts)
    return [line.strip() for line in node.read_text(encoding="utf-8").splitlines() if line.strip()]


def class_list(name: str) -> list[str]:
    """The class names of a target/training dataset, in file order.

    Args:
        name: one of ``ucf101``, ``hmdb51``, ``kinetics400``, ``kinetics600``, ``kinetics700``,
            ``activitynet200`` (case-insensitive; ``-`` and ``_`` ignored, so ``Kinetics-700``
            works).

    Returns:
        The 101, 51, 400, 600, 700 or 200 names.

    Raises:
        ValueError: an unknown list name.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in CLASS_LISTS:
        raise ValueError(f"unknown class list {name!r}; expected one of {', '.join(CLASS_LISTS)}")
    return _read_lines("classes", f"{key}.txt")


def _avca_dir(dataset: str) -> tuple[str, str]:
    key = str(dataset).lower()
    if key not in AVCA_DATASETS:
        raise ValueError(f"unknown AVCA dataset {dataset!r}; expected one of {', '.join(AVCA_DATASETS)}")
    return AVCA_DATASETS[key]


def avca_split(dataset: str, stage: str, split: str = "main_split") -> list[str]:
    """Class names of one stage of an AVCA split (Mercea et al.; the MZST protocol).

    Args:
        dataset: ``ucf``, ``activitynet`` or ``vggsound`` (case-insensitive).
        stage: one of :data:`AVCA_STAGES` (e.g. ``stage_2_test_unseen``), or ``all`` for every
            class of the dataset (``all_class.txt``, independent of ``split``).
        split: ``main_split`` (default) or ``cls_split``.

    Returns:
        The class names as spelled in the split files (e.g. ``BandMarching``).

    Raises:
        ValueError: an unknown dataset, stage or split.
    """
    directory, _ = _avca_dir(dataset)
    if stage == "all":
        return _read_lines("avgzsl_splits", directory, "all_class.txt")
    if stage not in AVCA_STAGES:
        raise ValueError(f"unknown AVCA stage {stage!r}; expected 'all' or one of {', '.join(AVCA_STAGES)}")
    if split not in _AVCA_SPLITS:
        raise ValueError(f"unknown AVCA split {split!r}; expected one of {', '.join(_AVCA_SPLITS)}")
    return _read_lines("avgzsl_splits", directory, split, f"{stage}.txt")


@contextmanager
def avca_name_map_file(dataset: str) -> Iterator[Path]:
    """The path, while the block runs, of the manual word2vec name map of an AVCA dataset: an
    ``original,manual`` CSV (``{original class name: words to embed}``; read it with
    :func:`zsar.text.load_name_map`).

    Args:
        dataset: ``ucf``, ``activitynet`` or ``vggsound`` (case-insensitive).

    Raises:
        ValueError: an unknown dataset.
    """
    directory, filename = _avca_dir(dataset)
    with resources.as_file(resources.files(__name__).joinpath("avgzsl_splits", directory, filename)) as path:
        yield Path(path)
