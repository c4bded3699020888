"""Zero-shot heads: strategies that turn label text into a class matrix in a model's representation
space, and score representations against it (in the spirit of open_clip's zero-shot classifier
builder).

* :class:`PrototypeTransferHead` (ResT): seen-class visual prototypes (mean representation of each
  seen class) are composed into one prototype per target label by semantic transfer (the HiGHS
  integer program, ResT Eq. 1-6); cosine similarity scores.
* :class:`SemanticEmbeddingHead` (MZST): the model's representation already lives in the label
  embedder's space, so the class matrix is the label embeddings themselves; nearest by L2 distance
  (AVCA's choice) or cosine.

A model names its head (:attr:`zsar.models.ZeroShotModel.zero_shot_head`); :data:`HEADS` maps the
name to the class. :class:`~zsar.zeroshot.ZeroShotClassifier` serves every head.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .encoding import EncodedSet
from .selection import HeadSelection, select_transfer_params
from .transfer import check_transfer_params, composite_prototypes, cosine_similarity_matrix, transfer_assignment

__all__ = ["ZeroShotHead", "PrototypeTransferHead", "SemanticEmbeddingHead", "HEADS", "class_means"]

PROTOTYPES_FILE = "seen_prototypes.safetensors"
METRICS = ("cosine", "l2")


class ZeroShotHead:
    """Base class of the heads: build a class matrix from labels, score representations against it."""

    #: Registry name (what a model's ``zero_shot_head`` and ``zeroshot.json`` say).
    name: ClassVar[str] = ""
    #: Whether :meth:`from_seen` needs representations of the seen classes' training videos.
    needs_seen_representations: ClassVar[bool] = False
    metric: str = "cosine"

    def class_matrix(self, labels: Sequence[str], embedder, model=None) -> torch.Tensor:
        """``(C, D)`` one row per label, in the representation space of ``model``."""
        raise NotImplementedError

    def scores(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` scores of representations ``x`` ``(N, D)`` (higher is better): cosine
        similarity, or the negated L2 distance."""
        if x.shape[1] != matrix.shape[1]:
            raise ValueError(f"representations have width {x.shape[1]} but the class matrix has {matrix.shape[1]} "
                             f"({self.name} head): the checkpoint's files do not belong together")
        x, matrix = x.double(), matrix.double()
        if self.metric == "l2":
            return -torch.cdist(x, matrix)
        return torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(matrix, dim=1).T

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (saved in ``zeroshot.json``)."""
        return {"metric": self.metric}

    def holding_out(self, seen_classes: Sequence[int]) -> "ZeroShotHead":
        """The head as if the seen classes ``seen_classes`` (indices) had not been trained on, for
        calibrating on them as unseen labels (:mod:`zsar.zeroshot.open_set`); heads that keep nothing
        per seen class return themselves."""
        return self

    def save_state(self, directory: Path) -> None:
        """Writes the head's tensors beside a checkpoint (none by default)."""

    @classmethod
    def check_settings(cls, settings: dict[str, Any], where: str) -> dict[str, Any]:
        """``settings`` if the head takes them (known names, valid values), so that a run's
        ``head_settings`` fail before its training rather than after it. The base class takes them
        as they are (a head without this check fails when it is built).

        Raises:
            ValueError: naming ``where`` (e.g. the config key or file) and the setting.
        """
        return dict(settings)

    @classmethod
    def from_seen(cls, x: torch.Tensor | None, labels: torch.Tensor | None, seen_labels: Sequence[str],
                  **settings: Any) -> "ZeroShotHead":
        """The head for a model trained on ``seen_labels``; ``x``/``labels``: representations of the
        seen classes' videos (only when :attr:`needs_seen_representations`)."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> "ZeroShotHead":
        """The head saved by :meth:`save_state` and :meth:`settings`."""
        raise NotImplementedError

    @classmethod
    def select_settings(cls, seen: EncodedSet, validation: EncodedSet, seen_labels: Sequence[str], embedder,
                        settings: dict[str, Any], selection: HeadSelection,
                        progress: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(settings, record)``: ``settings`` with the parameters cross-validation chooses on
        ``validation`` (videos of the seen classes; ``seen``: the videos the head is built from),
        and what the choice found (recorded in ``zeroshot.json``). Heads without parameters to
        choose return ``settings`` unchanged."""
        return dict(settings), {"method": "fixed", "reason": f"the {cls.name} head has no parameters to select"}


class PrototypeTransferHead(ZeroShotHead):
    """ResT's head: semantic transfer of seen-class visual prototypes (ResT §3.3).

    Args:
        seen_prototypes: ``(S, D)`` mean representation of each seen class.
        seen_labels: the seen classes' label text, in the order of ``seen_prototypes``.
        k, theta, rho: the transfer program's K nearest seen labels, relative-distance threshold and
            edges per target label (choose them by cross-validation over the seen classes,
            :func:`zsar.zeroshot.select_transfer_params`).
    """

    name = "prototype_transfer"
    needs_seen_representations = True

    def __init__(self, seen_prototypes: torch.Tensor, seen_labels: Sequence[str], k: int = 5, theta: float = 0.5,
                 rho: int = 3):
        seen_prototypes = torch.as_tensor(seen_prototypes).float().cpu()
        if seen_prototypes.dim() != 2 or len(seen_labels) != seen_prototypes.shape[0]:
            raise ValueError(f"{len(seen_labels)} seen labels but seen prototypes of shape "
                             f"{tuple(seen_prototypes.shape)} (expected ({len(seen_labels)}, D))")
        if not torch.isfinite(seen_prototypes).all():
            raise ValueError("seen prototypes contain NaN or infinite values")
        self.seen_prototypes = seen_prototypes
        self.seen_labels = list(seen_labels)
        self.k, self.theta, self.rho = check_transfer_params(k, theta, rho)
        self.assignment: np.ndarray | None = None  # of the last class_matrix call (ResT Fig. 3)

    def class_matrix(self, labels: Sequence[str], embedder, model=None) -> torch.Tensor:
        target = embedder.embed(list(labels))
        seen = embedder.embed(self.seen_labels)
        relatedness = cosine_similarity_matrix(target, seen)
        assignment = transfer_assignment(relatedness, self.k, self.theta, self.rho)
        weight = (assignment * relatedness).sum(1)
        unrelated = [f"{labels[j]!r} (max cosine {relatedness[j].max():.2f})" for j in np.flatnonzero(weight <= 0)]
        if unrelated:
            raise ValueError(f"labels unrelated to every seen class, no prototype can be composed: {', '.join(unrelated)}")
        self.assignment = assignment
        return torch.as_tensor(composite_prototypes(self.seen_prototypes.numpy(), relatedness, assignment),
                               dtype=torch.float32)

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "theta": self.theta, "rho": self.rho}

    @classmethod
    def check_settings(cls, settings: dict[str, Any], where: str) -> dict[str, Any]:
        settings = _known(settings, ("k", "theta", "rho"), where)
        try:  # (valid stand-ins for the settings not given: only the given ones are checked)
            check_transfer_params(settings.get("k", 0), settings.get("theta", 0.0), settings.get("rho", 0))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        return settings

    def holding_out(self, seen_classes: Sequence[int]) -> "PrototypeTransferHead":
        keep = [i for i in range(len(self.seen_labels)) if i not in set(seen_classes)]
        return PrototypeTransferHead(self.seen_prototypes[keep], [self.seen_labels[i] for i in keep], k=self.k,
                                     theta=self.theta, rho=self.rho)

    def save_state(self, directory: Path) -> None:
        save_file({"prototypes": self.seen_prototypes.contiguous()}, Path(directory) / PROTOTYPES_FILE,
                  metadata={"labels": "\n".join(self.seen_labels)})

    @classmethod
    def from_seen(cls, x, labels, seen_labels, **settings) -> "PrototypeTransferHead":
        return cls(class_means(x, labels, len(seen_labels)), seen_labels, **settings)

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> "PrototypeTransferHead":
        prototypes, labels = load_prototypes(directory)
        return cls(prototypes, labels, **cls.check_settings(settings, str(directory)))

    @classmethod
    def select_settings(cls, seen, validation, seen_labels, embedder, settings, selection, progress=False):
        """(ϑ, K, ρ) by k-fold cross-validation over the seen classes (ResT §4.1,
        :func:`~zsar.zeroshot.select_transfer_params`): prototypes from ``seen``, folds scored on
        ``validation``. When the classes are too few for the folds, ``settings`` stay as given
        and the record says why."""
        prototypes = class_means(seen.x, torch.as_tensor(seen.labels), len(seen_labels))
        try:
            result = select_transfer_params(validation.x, validation.labels, embedder.embed(list(seen_labels)),
                                            prototypes, thetas=selection.thetas, ks=selection.ks, rhos=selection.rhos,
                                            n_folds=selection.n_folds, seed=selection.seed, progress=progress)
        except ValueError as e:  # e.g. too few seen classes for the folds in a tiny run
            return dict(settings), {"method": "fixed", "reason": str(e)}
        chosen = {"theta": float(result.theta), "k": int(result.k), "rho": int(result.rho)}
        return {**settings, **chosen}, {"method": f"{selection.n_folds}-fold cross-validation over the seen classes",
                                        "cv_top1": float(result.score), **chosen}


class SemanticEmbeddingHead(ZeroShotHead):
    """MZST's head: the class matrix is the label embeddings; the model's representation is its
    prediction in the label embedder's space, classified by the nearest class embedding.

    Args:
        metric: ``"l2"`` (AVCA's evaluation; the default) or ``"cosine"``.
    """

    name = "semantic_embedding"

    def __init__(self, metric: str = "l2"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric

    @classmethod
    def check_settings(cls, settings: dict[str, Any], where: str) -> dict[str, Any]:
        settings = _known(settings, ("metric",), where)
        try:
            cls(**settings)  # (the constructor's check: nothing to build)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return settings

    def class_matrix(self, labels: Sequence[str], embedder, model=None) -> torch.Tensor:
        embeddings = torch.as_tensor(np.asarray(embedder.embed(list(labels))), dtype=torch.float32)
        # The model may place its classes at transformed embeddings (normalised or scaled targets).
        return embeddings if model is None else model.class_embedding_targets(embeddings).float().cpu()

    @classmethod
    def from_seen(cls, x, labels, seen_labels, **settings) -> "SemanticEmbeddingHead":
        return cls(**settings)

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> "SemanticEmbeddingHead":
        return cls(**cls.check_settings(settings, str(directory)))


#: Head name -> class (what :attr:`zsar.models.ZeroShotModel.zero_shot_head` names).
HEADS: dict[str, type[ZeroShotHead]] = {h.name: h for h in (PrototypeTransferHead, SemanticEmbeddingHead)}


def _known(settings: dict[str, Any], keys: tuple[str, ...], directory) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise ValueError(f"{directory}: unknown head settings {unknown}; expected {list(keys)}")
    return dict(settings)


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, D)`` mean of the rows of ``x`` per class (float64 sums).

    Raises:
        ValueError: a class has no row.
    """
    x = torch.as_tensor(x).double().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=num_classes).double()
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"seen classes {empty[:10]} have no videos in the loader")
    return (sums / counts[:, None]).float()


def load_prototypes(directory: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The seen prototypes and labels saved beside a checkpoint.

    Raises:
        FileNotFoundError: no prototypes file.
        ValueError: unreadable file, a label count that differs from the rows, non-finite values.
    """
    path = Path(directory) / PROTOTYPES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no seen prototypes at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            labels = (f.metadata() or {}).get("labels")
            prototypes = f.get_tensor("prototypes")
    except (SafetensorError, OSError, RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: not a readable prototypes file ({str(e).splitlines()[0] if str(e) else e!r})") from None
    if labels is None:
        raise ValueError(f"{path}: no 'labels' in the file's metadata")
    labels = labels.split("\n")
    if prototypes.dim() != 2 or prototypes.shape[0] != len(labels) or not prototypes.is_floating_point():
        raise ValueError(f"{path}: prototypes of shape {tuple(prototypes.shape)} do not match its {len(labels)} labels")
    if not torch.isfinite(prototypes).all():
        raise ValueError(f"{path}: prototypes contain NaN or infinite values")
    return prototypes, labels


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
