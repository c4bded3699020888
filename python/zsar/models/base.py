"""The model contract: what every registered model offers, and all that the rest of zsar uses.

The trainer, checkpoints, loaders, zero-shot classifier, evaluation runner, FLOP counter, benchmarks
and CLI talk to a model only through :class:`ZeroShotModel`:

* :attr:`~ZeroShotModel.inputs` (:class:`ModelInputs`): the clip it takes (frames, image size, or
  precomputed features), the audio it takes (:class:`AudioSpec` or None), whether training needs
  the label words of each sample;
* :meth:`~ZeroShotModel.encode`: a :class:`~zsar.data.Batch` to the ``(N, D)`` representation
  that zero-shot classification uses; :attr:`~ZeroShotModel.zero_shot_head` names the head
  (:mod:`zsar.zeroshot.heads`) that turns label text into a class matrix in that space;
* :meth:`~ZeroShotModel.seen_logits`: scores over the seen (training) classes, for validation and
  the semantic-space baseline;
* :meth:`~ZeroShotModel.training_stages` and :meth:`~ZeroShotModel.forward_train`: the stages the
  trainer runs (parameters, default optimiser and schedule) and one training forward per batch that
  returns ``{"loss": ..., "loss_<part>": ...}``;
* :meth:`~ZeroShotModel.model_args`: JSON-able keyword arguments that, given to
  :func:`~zsar.models.create_model` with the model's registry name, rebuild the same architecture
  (what a checkpoint's ``config.json`` records).

Every registered builder takes ``class_names`` (the seen classes, or None for a model built from a
checkpoint's recorded arguments); builders registered with ``label_embeddings=True`` also take
``class_embeddings`` (the seen labels' embeddings, which :func:`~zsar.models.create_model` computes
from a ``label_embedder``). How to add a model: ``docs/architecture.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.audio import AudioSpec
from ..data.transforms import ClipSpec

__all__ = ["ModelInputs", "TrainingStage", "ZeroShotModel"]


@dataclass(frozen=True)
class ModelInputs:
    """What a model consumes.

    Attributes:
        frames: frames per clip.
        image_size: square crop size in pixels.
        feature_dim: when set, clips are precomputed per-frame features ``(frames, feature_dim)``
            instead of pixels.
        audio: the audio features it takes, or None (video only).
        label_words: whether :meth:`ZeroShotModel.forward_train` needs ``batch.word_ids`` (the
            trainer fills them from :meth:`ZeroShotModel.tokenize_labels`).
        mean, std: the pixel normalisation its (pretrained) weights expect, as fractions of 255
            (ImageNet's by default; torchvision's Kinetics video models: 0.45 / 0.225).
        eval_clips, eval_crop: the views evaluation takes of each video by default (clips, and
            ``"center"`` or ``"three"`` crops), over which :meth:`ZeroShotModel.encode` averages.
    """

    frames: int
    image_size: int
    feature_dim: int | None = None
    audio: AudioSpec | None = None
    label_words: bool = False
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    eval_clips: int = 1
    eval_crop: str = "center"

    def clip_spec(self, **overrides: Any):
        """A :class:`zsar.data.ClipSpec` matching these inputs: their frames, size and normalisation,
        and for evaluation (``train`` not set) their views; ``overrides``: stride, train, num_clips, ..."""
        views = {} if overrides.get("train") else {"num_clips": self.eval_clips, "crop": self.eval_crop}
        return ClipSpec(**{"frames": self.frames, "size": self.image_size, "mean": tuple(self.mean),
                           "std": tuple(self.std), **views, **overrides})


@dataclass(frozen=True)
class TrainingStage:
    """One training stage of a model, with its default optimiser and learning-rate schedule.

    Attributes:
        name: the stage's name (what configs override, e.g. ``stages.joint.lr=1e-4``).
        trains: predicate on parameter names: which parameters this stage trains (the others are
            frozen; DDP needs every trainable parameter to get a gradient).
        epochs, optimizer, lr, weight_decay, momentum, schedule: defaults of the stage's
            :class:`zsar.train.StageConfig` (``schedule``: ``"cosine"`` or ``"constant"``).
    """

    name: str
    trains: Callable[[str], bool]
    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float = 0.9
    schedule: str = "cosine"


class ZeroShotModel(nn.Module):
    """Base class of every registered model (see the module docstring for the contract).

    Subclasses implement the abstract members; :func:`~zsar.models.create_model` sets
    :attr:`registry_name`.
    """

    #: The name the model was created under (set by :func:`~zsar.models.create_model`).
    registry_name: str = ""
    #: The zero-shot head, a name in :data:`zsar.zeroshot.HEADS`: semantic transfer of seen-class
    #: visual prototypes (ResT) or the nearest label embedding of a projected representation (MZST).
    zero_shot_head: str = "prototype_transfer"
    #: How :func:`zsar.models.complexity.count_flops` counts by default (the convention the model's
    #: paper reports in: ``"thop"`` for ResT, ``"macs"`` for MZST's torchvision/fvcore figures).
    flop_convention: str = "thop"

    @property
    def inputs(self) -> ModelInputs:
        raise NotImplementedError

    def model_args(self) -> dict[str, Any]:
        """JSON-able builder arguments that rebuild this architecture (no weights)."""
        raise NotImplementedError

    def encode(self, batch) -> torch.Tensor:
        """The ``(N, D)`` zero-shot representation of a batch; N clips per video (``clips`` of
        shape ``(B, N, ...)``) are averaged."""
        raise NotImplementedError

    def encode_and_score(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(encode(batch), seen_logits(batch))`` of the final model; models that compute both
        from one pass override this (evaluation calls it once per batch)."""
        return self.encode(batch), self.seen_logits(batch)

    def seen_logits(self, batch, stage: str | None = None) -> torch.Tensor:
        """``(N, C_seen)`` scores over the training classes (``stage``: as trained in that stage;
        None: the final model)."""
        raise NotImplementedError

    def training_stages(self) -> list[TrainingStage]:
        """The stages the trainer runs, in order."""
        raise NotImplementedError

    def forward_train(self, batch, stage: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One training forward: ``{"loss": scalar, "loss_<part>": scalar, ...}`` (the trainer logs
        every ``loss_*`` part). ``generator`` seeds any random masking, so that resumed runs repeat."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch with the 0-based epoch of the current stage (for
        models whose losses follow a schedule); a no-op by default."""

    def class_embedding_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Where the representation of a class with label embeddings ``(C, E)`` should land, for models
        whose representation lives in the label space (``zero_shot_head="semantic_embedding"``); the
        embeddings themselves by default."""
        return embeddings

    def tokenize_labels(self, labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Label text to ``(word_ids (C, W) int64, n_words (C,) int32)``; needed when
        ``inputs.label_words`` is True."""
        raise NotImplementedError(f"{type(self).__name__} takes no label words")

    def parts(self) -> dict[str, nn.Module | None]:
        """Named parts used at inference, for FLOP and parameter breakdowns (parameters outside them
        and outside :meth:`training_parts` count as ``other``). Parts whose name starts with
        ``backbone`` do value-independent work, which the FLOP counter runs on the meta device."""
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the architecture for reports (e.g. backbone, token counts)."""
        return {}

    def training_parts(self) -> dict[str, nn.Module | None]:
        """Named parts used only in training (heads that zero-shot inference does not run)."""
        return {}

    def forward(self, batch, stage: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # DDP hooks fire on forward(), so the training forward is reachable through it.
        return self.forward_train(batch, stage, generator)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.parameters()).device
