"""Encoding a loader of videos once: the one loop every consumer of representations runs.

A model's representations (and, when asked, its seen-class scores from the same pass,
:meth:`zsar.models.ZeroShotModel.encode_and_score`) of every batch of a loader, gathered on the CPU
in loader order. Heads build from them (seen-class prototypes), head parameters are selected on
them, and the evaluation protocols score them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.batch import as_batch
from ..runtime import RuntimeSettings

__all__ = ["EncodedSet", "NonFiniteError", "encode_loader", "require_finite"]


@dataclass
class EncodedSet:
    """A dataset encoded once: representations ``x`` ``(N, D)``, seen-class scores ``seen_logits``
    ``(N, S)`` (None unless asked for), true ``labels`` ``(N,)`` (indices into the dataset's classes),
    video ids and how many unreadable files the loader skipped."""

    x: torch.Tensor
    seen_logits: torch.Tensor | None
    labels: np.ndarray
    video_ids: list[str] = field(default_factory=list)
    skipped: int = 0

    def select(self, video_ids) -> "EncodedSet":
        """The rows of ``video_ids``, in that order."""
        row = {v: i for i, v in enumerate(self.video_ids)}
        rows = [row[v] for v in video_ids]
        logits = None if self.seen_logits is None else self.seen_logits[rows]
        return EncodedSet(self.x[rows], logits, self.labels[rows], list(video_ids))


class NonFiniteError(ValueError):
    """A model gave NaN or Inf for a video (its input or the weights are not finite)."""


def require_finite(x: torch.Tensor, video_ids, what: str = "representation") -> torch.Tensor:
    """``x`` ``(N, ...)`` when every row is finite; else :class:`NonFiniteError` naming the first
    video (``video_ids[i]``) whose row is not: a NaN representation or score never becomes an answer."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        name = video_ids[i] if video_ids is not None and i < len(video_ids) else f"video {i}"
        raise NonFiniteError(f"{name}: the model's {what} holds NaN or Inf ({int(bad.sum())} of {len(bad)} videos "
                             "of its batch); its frames, audio or the checkpoint's weights are not finite")
    return x


@torch.no_grad()
def encode_loader(model, loader, progress: bool = True, desc: str = "encoding videos",
                  with_seen_logits: bool = False, runtime: RuntimeSettings | None = None) -> EncodedSet:
    """Runs a model's :meth:`~zsar.models.ZeroShotModel.encode` over a loader of batches (with
    ``with_seen_logits``, :meth:`~zsar.models.ZeroShotModel.encode_and_score`: both from one pass).

    ``runtime``: how the model runs (default: :meth:`zsar.runtime.RuntimeSettings.for_device` of the
    model's device: on a GPU bf16 autocast, channels_last frame encoders and non-blocking copies; on
    the CPU float32 as before).

    Returns:
        An :class:`EncodedSet`: ``x`` float32, ``labels`` int64, ``seen_logits`` float32 or None, on
        the CPU in loader order; batches of skipped files are left out.

    Raises:
        ValueError: the loader yielded no batch.
    """
    runtime = runtime or RuntimeSettings.for_device(model.device)
    model = runtime.prepare_model(model).eval()
    xs, ys, logits, ids = [], [], [], []
    for item in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        batch = as_batch(item)
        if batch is None:  # a batch of skipped bad files
            continue
        batch = runtime.to_device(batch)
        with runtime.autocast():
            if with_seen_logits:
                x, scores = model.encode_and_score(batch)
            else:
                x = model.encode(batch)
        if with_seen_logits:
            logits.append(require_finite(scores.float().cpu(), batch.video_ids, "seen-class scores"))
        xs.append(require_finite(x.float().cpu(), batch.video_ids))
        ys.append(batch.labels.cpu())
        ids.extend(batch.video_ids)
    if not xs:
        raise ValueError("the loader yielded no batches")
    skipped = getattr(getattr(loader, "skipped", None), "count", 0)
    return EncodedSet(torch.cat(xs), torch.cat(logits) if with_seen_logits else None, torch.cat(ys).numpy(), ids,
                      skipped)
