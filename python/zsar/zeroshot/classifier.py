"""A small zero-shot classifier API over any registered model (in the spirit of open_clip's).

    clf = ZeroShotClassifier.from_loader(model, train_loader, seen_labels, embedder)  # or .fit(model, encoded, ...)
    clf.set_labels(["juggling balls", "playing harp"])
    probs = clf.predict_proba(clips)            # (N, 2); clips, a Batch, or video file paths
    top = clf.predict(["a.mp4", "b.webm"], top_k=1)
    clf.save("runs/exp/checkpoints/best")       # beside the model's checkpoint
    clf = ZeroShotClassifier.load("runs/exp/checkpoints/best")  # or zsar demo's runs/demo/checkpoint

The model gives representations (:meth:`zsar.models.ZeroShotModel.encode`); its zero-shot head
(:mod:`zsar.zeroshot.heads`: ResT's prototype transfer, MZST's semantic embedding) turns the labels
of :meth:`~ZeroShotClassifier.set_labels` into a class matrix in that space; videos are scored
against its rows (softmax with a temperature for probabilities).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from .._utils import read_json_object
from ..data import ClipSpec, VideoClipDataset, VideoList, VideoRecord, collate
from ..data.batch import Batch
from ..models.checkpoint import load_model, resolve, update_checkpoint
from ..text import embedder_from_spec
from ..text.labels import check_label_texts, check_labels
from ..text.vocab import split_label
from .encoding import EncodedSet, NonFiniteError, encode_loader, require_finite
from .heads import HEADS, PrototypeTransferHead, ZeroShotHead
from .open_set import OpenSetCalibration, calibrate_open_set
from .selection import HeadSelection

log = logging.getLogger(__name__)

SETTINGS_FILE = "zeroshot.json"
_SETTINGS_KEYS = {"head", "head_settings", "temperature", "clip_spec", "embedder", "seen_labels", "selection",
                  "open_set", "open_set_missing"}
_LEGACY_KEYS = {"k", "theta", "rho", "temperature", "clip_spec", "embedder"}


class ZeroShotClassifier:
    """Zero-shot classification with a model and its zero-shot head.

    Args:
        model: a registered model (:class:`zsar.models.ZeroShotModel`).
        head: the zero-shot head (e.g. :class:`~zsar.zeroshot.heads.PrototypeTransferHead`).
        embedder: a label embedder with ``embed(labels) -> (N, dim)`` (e.g. ``SentenceEmbedder``).
        temperature: softmax temperature of :meth:`predict_proba` over the head's scores.
        clip_spec: how video files given to ``predict``/``encode`` become clips (a
            :class:`zsar.data.ClipSpec`; default: the model's frames and image size, one centred clip).
        seen_labels: the classes the model was trained on, in the order of its seen-class scores
            (default: the head's, when it has them).
    """

    def __init__(self, model, head: ZeroShotHead, embedder, temperature: float = 0.05, clip_spec=None,
                 seen_labels: Sequence[str] | None = None):
        if not isinstance(head, ZeroShotHead):
            raise TypeError(f"head must be a zsar.zeroshot.heads.ZeroShotHead, got {type(head).__name__}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.model, self.head, self.embedder = model, head, embedder
        self.temperature = float(temperature)
        self.clip_spec = clip_spec if clip_spec is not None else model.inputs.clip_spec()
        seen_labels = seen_labels if seen_labels is not None else getattr(head, "seen_labels", None)
        self.seen_labels: list[str] | None = list(seen_labels) if seen_labels is not None else None
        self.labels: list[str] = []
        self.class_matrix: torch.Tensor | None = None
        #: How the head's settings were chosen (:meth:`fit`): ``{"method": "fixed"}``, or the
        #: cross-validation's method, chosen settings and fold top-1.
        self.selection: dict[str, Any] = {"method": "fixed"}
        #: Per-label probabilities and "none of these" (:mod:`zsar.zeroshot.open_set`); None: not calibrated.
        self.open_set: OpenSetCalibration | None = None
        #: Why :meth:`fit` could not calibrate :attr:`open_set` (saved, so that ``zsar predict`` can say it).
        self.open_set_missing: str | None = None

    # ---- construction ------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model, seen: EncodedSet | None, seen_labels: Sequence[str], embedder, *,
            head_settings: dict[str, Any] | None = None, selection: HeadSelection | None = None,
            validation: EncodedSet | None = None, progress: bool = False, open_set: bool = True,
            calibration: EncodedSet | None = None, **kwargs) -> "ZeroShotClassifier":
        """The classifier of a trained model: the one place where its head is built and the head's
        parameters are chosen.

        Args:
            model: the trained model; its :attr:`~zsar.models.ZeroShotModel.zero_shot_head` names the head.
            seen: the seen classes' videos encoded with ``model`` (:func:`encode_loader`); only heads
                that need seen-class representations use it (None is fine for the others).
            seen_labels: the seen classes, which ``seen.labels`` index.
            embedder: the label embedder.
            head_settings: the head's settings (ResT's ``k``, ``theta``, ``rho``).
            selection: choose the head's parameters by cross-validation over the seen classes on
                this grid (:class:`~zsar.zeroshot.selection.HeadSelection`), overriding
                ``head_settings``; None keeps them fixed. What the choice found is :attr:`selection`,
                saved in ``zeroshot.json``.
            validation: held-out videos of the seen classes the folds are scored on (default ``seen``).
            open_set: also fit the open-set calibration, seen classes held out fold by fold
                (:meth:`calibrate_open_set`; a warning instead when it cannot be fitted), on
                ``calibration``, else on ``seen``; skipped when neither is given.
            calibration: videos of the seen classes encoded with ``model`` (``labels`` index
                ``seen_labels``) to fit the open-set calibration on, e.g. videos held out from
                training (default ``seen``). Heads that need no seen representations (MZST's)
                are calibrated only when one of the two is given.
            **kwargs: ``temperature``, ``clip_spec`` (see the class).
        """
        head_cls = HEADS[model.zero_shot_head]
        if head_cls.needs_seen_representations and seen is None:
            raise ValueError(f"the {head_cls.name} head of {model.registry_name or type(model).__name__} is built "
                             "from representations of the seen classes' videos; pass seen=")
        settings, record = head_cls.check_settings(dict(head_settings or {}), "head_settings"), {"method": "fixed"}
        if selection is not None:
            settings, record = head_cls.select_settings(seen, validation if validation is not None else seen,
                                                        seen_labels, embedder, settings, selection, progress)
        x, labels = (seen.x, torch.as_tensor(seen.labels)) if seen is not None else (None, None)
        head = head_cls.from_seen(x, labels, list(seen_labels), **settings)
        clf = cls(model, head, embedder, seen_labels=seen_labels, **kwargs)
        clf.selection = record
        calibration = calibration if calibration is not None else seen
        if open_set and calibration is not None:
            try:
                clf.calibrate_open_set(calibration.x, torch.as_tensor(calibration.labels))
            except ValueError as e:  # too few classes, or a representation that does not separate them
                log.warning("no open-set calibration (no 'none of these' answers): %s", e)
                clf.open_set_missing = str(e)
        return clf

    def calibrate_open_set(self, x: torch.Tensor, labels: torch.Tensor, folds: int = 5,
                           seed: int = 0) -> OpenSetCalibration:
        """Fit the open-set calibration on representations ``x`` ``(N, D)`` of videos of the seen
        classes (``labels`` index :attr:`seen_labels`), holding classes out fold by fold; kept in
        :attr:`open_set` and saved with the checkpoint. See :mod:`zsar.zeroshot.open_set`."""
        if not self.seen_labels:
            raise ValueError("open-set calibration needs the seen labels")
        with torch.no_grad():
            self.open_set = calibrate_open_set(self.head, self.embedder, self.model, x, labels, self.seen_labels,
                                               folds=folds, seed=seed)
            self.open_set_missing = None
        return self.open_set

    @classmethod
    def from_loader(cls, model, loader, seen_labels: Sequence[str], embedder, progress: bool = True,
                    **kwargs) -> "ZeroShotClassifier":
        """:meth:`fit` on a loader of the seen classes' videos (encoded only when the head needs them)."""
        needed = HEADS[model.zero_shot_head].needs_seen_representations or kwargs.get("selection") is not None
        seen = encode_loader(model, loader, progress, desc="seen-class representations") if needed else None
        return cls.fit(model, seen, seen_labels, embedder, progress=progress, **kwargs)

    def save(self, directory: str | Path) -> Path:
        """Stores everything but the model beside its checkpoint: the head's state and settings, the
        temperature, the clip spec and how to rebuild the embedder (``zeroshot.json``). The folder
        changes at once (:func:`~zsar.models.checkpoint.update_checkpoint`): a kill mid-way leaves the
        earlier classifier whole, never new prototypes beside old settings."""
        return update_checkpoint(directory, self.write_files)

    def write_files(self, directory: str | Path) -> Path:
        """Writes the files of :meth:`save` into ``directory`` as they are (no atomic swap: for a
        folder about to become a checkpoint, e.g. through ``save_checkpoint(..., add_files=...)``)."""
        directory = Path(directory)
        self.head.save_state(directory)
        spec = getattr(self.embedder, "spec", lambda: None)()
        settings = {"head": self.head.name, "head_settings": self.head.settings(), "temperature": self.temperature,
                    "clip_spec": asdict(self.clip_spec), "embedder": spec, "seen_labels": self.seen_labels,
                    "selection": self.selection}
        if self.open_set is not None:
            settings["open_set"] = self.open_set.to_dict()
        elif self.open_set_missing:
            settings["open_set_missing"] = self.open_set_missing
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, embedder=None, device: str | torch.device | None = None,
             trust_pickle: bool = False, verify: bool = True, **overrides) -> "ZeroShotClassifier":
        """The classifier saved with :meth:`save` in a checkpoint folder (model included).

        Args:
            directory: the checkpoint folder.
            embedder: replaces the recorded one (needed when it was built from in-memory vectors).
            device: where the model goes (default: CUDA when available).
            trust_pickle: let the recorded embedder be a gensim pickle (``.kv``), which can run code
                when loaded; only for checkpoints you trust.
            verify: refuse weights whose hash the checkpoint does not record (False: load them
                unchecked, see :func:`zsar.models.checkpoint.load_weights`).
            **overrides: ``temperature`` or ``clip_spec``, or the head's settings (e.g. ``k``).

        Raises:
            FileNotFoundError: no checkpoint or no ``zeroshot.json`` there.
            ValueError: an unreadable or inconsistent ``zeroshot.json`` or head state (one line, naming
                the file).
        """
        directory = resolve(directory)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = directory / SETTINGS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {SETTINGS_FILE}: not a zero-shot checkpoint "
                                    f"(save one with ZeroShotClassifier.save)")
        settings = _read_settings(path)
        head_cls = HEADS[settings["head"]]
        head_settings = dict(settings["head_settings"])
        for key in list(overrides):
            if key not in ("temperature", "clip_spec"):
                head_settings[key] = overrides.pop(key)
        if embedder is None:
            if settings.get("embedder") is None:
                raise ValueError(f"{path} records no embedder (it was built from in-memory vectors); pass embedder=")
            embedder = embedder_from_spec(settings["embedder"], trust_pickle=trust_pickle, where=f"{path} embedder")
        _check_clip_spec(settings["clip_spec"], path)
        try:
            head = head_cls.load(directory, head_settings)
            clip_spec = ClipSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings["clip_spec"].items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
        model = load_model(directory, device, verify=verify)
        if model.zero_shot_head != head.name:
            raise ValueError(f"{path}: head {head.name!r} does not fit model {model.registry_name!r}, whose head is "
                             f"{model.zero_shot_head!r}")
        kwargs = {"temperature": settings["temperature"], "clip_spec": clip_spec,
                  "seen_labels": settings.get("seen_labels"), **overrides}
        clf = cls(model, head, embedder, **kwargs)
        clf.selection = settings.get("selection") or {"method": "fixed"}
        if settings.get("open_set") is not None:
            clf.open_set = OpenSetCalibration.from_dict(settings["open_set"], where=f"{path} open_set")
        missing = settings.get("open_set_missing")
        clf.open_set_missing = missing if isinstance(missing, str) and clf.open_set is None else None
        return clf

    # ---- classification ----------------------------------------------------------------------------

    def set_labels(self, labels: Sequence[str]) -> "ZeroShotClassifier":
        """Builds the class matrix of ``labels`` (one row per label) with the head."""
        labels = check_labels(labels, what="set_labels")
        check_label_texts(labels, self._label_text, what="set_labels")
        with torch.no_grad():
            matrix = self.head.class_matrix(labels, self.embedder, self.model)
        bad = ~torch.isfinite(matrix.reshape(matrix.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            raise NonFiniteError(f"set_labels: the class matrix of label {labels[int(bad.nonzero()[0])]!r} holds NaN "
                                 f"or Inf ({int(bad.sum())} of {len(labels)} labels); the embedder's vectors or the "
                                 "head's state are not finite")
        self.class_matrix = matrix
        self.labels = labels
        return self

    def _label_text(self, label: str) -> str:
        """The text of ``label`` its embedder embeds (its words, as the embedder splits them)."""
        if hasattr(self.embedder, "text"):
            return self.embedder.text(label)
        if hasattr(self.embedder, "words"):
            return " ".join(self.embedder.words(label))
        return " ".join(split_label(label))

    @property
    def prototypes(self) -> torch.Tensor | None:
        """The class matrix of the current labels (ResT: composite visual prototypes)."""
        return self.class_matrix

    @property
    def assignment(self):
        """The transfer edges of the last :meth:`set_labels` (prototype-transfer head only)."""
        return getattr(self.head, "assignment", None)

    def _require_labels(self) -> None:
        if self.class_matrix is None:
            raise RuntimeError("call set_labels(labels) before predicting")

    @torch.no_grad()
    def encode(self, videos, batch_size: int = 8, progress: bool = False) -> torch.Tensor:
        """Representations ``(N, D)`` (what the model's ``encode`` gives, clips averaged).

        Args:
            videos: clips ``(N[, clips], T, 3, H, W)``, a :class:`~zsar.data.Batch`, or one or more
                video file paths (read with :attr:`clip_spec`, with audio when the model takes it).
            batch_size: videos per forward pass.
            progress: show a progress bar over file batches.
        """
        if isinstance(videos, Batch):
            return self._encode_batches([videos], progress=False)
        if isinstance(videos, torch.Tensor):
            if self.model.inputs.audio is not None:
                raise TypeError("this model also takes audio: pass a zsar.data.Batch or video file paths, not clips")
            labels = torch.full((videos.shape[0],), -1, dtype=torch.int64)
            chunks = [Batch(clips=c, labels=l) for c, l in zip(videos.split(batch_size), labels.split(batch_size))]
            return self._encode_batches(chunks, progress=False)
        paths = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise TypeError("videos must be clips, a zsar.data.Batch or video file path(s)")
        return self._encode_batches((self._load(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)),
                                    progress)

    def _load(self, paths) -> Batch:
        """Video files as a batch: clips by :attr:`clip_spec`, audio when the model takes it (the
        dataset code the loaders use, so files read here and in training agree)."""
        videos = VideoList([VideoRecord(str(p), -1, str(p)) for p in paths])
        dataset = VideoClipDataset(videos, self.clip_spec, backend="auto", audio=self.model.inputs.audio)
        return collate([dataset.sample(i) for i in range(len(videos))])

    def _encode_batches(self, batches, progress: bool) -> torch.Tensor:
        return encode_loader(self.model, batches, progress).x

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_labels)`` head scores (higher is better) of representations ``x`` ``(N, D)``."""
        self._require_labels()
        return require_finite(self.head.scores(torch.as_tensor(x), self.class_matrix).float(), None, "scores")

    @torch.no_grad()
    def similarities(self, videos) -> torch.Tensor:
        """``(N, num_labels)`` scores of videos (see :meth:`encode`) against the labels: cosine
        similarity, or negated L2 distance for an L2 head."""
        self._require_labels()
        return self.scores(self.encode(videos))

    def predict_proba(self, videos) -> torch.Tensor:
        """Softmax over the scores / temperature, ``(N, num_labels)``."""
        return require_finite(torch.softmax(self.similarities(videos) / self.temperature, dim=1), None,
                              f"probabilities (temperature {self.temperature})")

    def _require_open_set(self) -> OpenSetCalibration:
        if self.open_set is None:
            raise ValueError("this classifier has no open-set calibration (calibrate_open_set on held-out seen-class "
                             "videos, or a checkpoint saved with one)")
        return self.open_set

    def match_proba(self, videos) -> torch.Tensor:
        """``(N, num_labels)`` open-set probability that each video shows each label, each from that
        label's similarity alone (unchanged when other labels are added); needs :attr:`open_set`."""
        return self._require_open_set().probability(self.similarities(videos))

    def predict_open(self, videos) -> torch.Tensor:
        """``(N,)`` indices into the labels, -1 where no label's :meth:`match_proba` reaches 0.5 ("none of these")."""
        return self._require_open_set().answer(self.similarities(videos))

    def predict(self, videos, top_k: int = 1) -> torch.Tensor:
        """Indices into the labels of :meth:`set_labels`: ``(N,)`` for top_k=1, else ``(N, top_k)``."""
        self._require_labels()
        if not 1 <= top_k <= len(self.labels):
            raise ValueError(f"top_k must be in [1, {len(self.labels)}], got {top_k}")
        top = self.similarities(videos).topk(top_k, dim=1).indices
        return top[:, 0] if top_k == 1 else top


#: Bounds on a recorded clip spec: a file must not make a reader allocate without limit.
_CLIP_LIMITS = {"frames": 4096, "size": 4096, "short_side": 8192, "num_clips": 1024, "stride": 4096}


def _check_clip_spec(spec: dict[str, Any], path: Path) -> None:
    for key, most in _CLIP_LIMITS.items():
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value > most):
            raise ValueError(f"{path}: clip_spec.{key} must be an int of at most {most}, got {value!r}")


def _read_settings(path: Path) -> dict[str, Any]:
    """``zeroshot.json``, validated, in the current layout (the first layout had k/theta/rho at the top)."""
    settings = read_json_object(path)
    if "head" not in settings:  # first layout: the prototype-transfer head's settings at the top level
        unknown = sorted(set(settings) - _LEGACY_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; expected {sorted(_LEGACY_KEYS)}")
        settings = {"head": PrototypeTransferHead.name,
                    "head_settings": {k: settings[k] for k in ("k", "theta", "rho") if k in settings},
                    **{k: v for k, v in settings.items() if k not in ("k", "theta", "rho")}}
        missing = sorted({"k", "theta", "rho"} - set(settings["head_settings"]))
        if missing:
            raise ValueError(f"{path}: missing {missing} (the transfer parameters)")
    unknown = sorted(set(settings) - _SETTINGS_KEYS)
    missing = sorted({"head", "head_settings", "temperature", "clip_spec"} - set(settings))
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])))
    if settings["head"] not in HEADS:
        raise ValueError(f"{path}: unknown head {settings['head']!r}; expected one of {sorted(HEADS)}")
    for key, kind in (("head_settings", dict), ("clip_spec", dict)):
        if not isinstance(settings[key], kind):
            raise ValueError(f"{path}: {key!r} must be an object, got {type(settings[key]).__name__}")
    seen = settings.get("seen_labels")
    if seen is not None and not (isinstance(seen, list) and all(isinstance(x, str) for x in seen)):
        raise ValueError(f"{path}: 'seen_labels' must be a list of strings or null")
    if not isinstance(settings.get("selection") or {}, dict):
        raise ValueError(f"{path}: 'selection' must be an object or null, got {type(settings['selection']).__name__}")
    embedder = settings.get("embedder")
    if embedder is not None and not isinstance(embedder, dict):
        raise ValueError(f"{path}: 'embedder' must be an object (an embedder spec) or null, got "
                         f"{type(embedder).__name__}")
    return settings
