"""zsar inside a Ray Data pipeline: :class:`VideoClassifier` is a callable class for
``Dataset.map_batches``, so each Ray actor loads the checkpoint once and classifies (and embeds) the
batches of video paths it is given::

    import ray
    from zsar.eval.ray_data import VideoClassifier

    ds = ray.data.from_items([{"path": p} for p in video_paths])
    out = ds.map_batches(VideoClassifier, batch_size=16, concurrency=4,       # 4 actors
                         fn_constructor_kwargs={"checkpoint": "runs/demo/checkpoint",
                                                "labels": ["jumping", "running", "swimming"]})
    out.write_parquet("predictions/")            # path, label, score, probabilities, embedding

(``num_gpus=1`` in ``map_batches`` gives each actor a GPU; ``device`` defaults to CUDA when the actor
sees one.) The scores are the same as :meth:`zsar.zeroshot.ZeroShotClassifier.predict_proba` of the
same files; unreadable files get the label None instead of failing the whole batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..data import media_file_problem
from ..zeroshot import ZeroShotClassifier

__all__ = ["VideoClassifier"]


class VideoClassifier:
    """A Ray Data ``map_batches`` callable: ``{"path": [...]} -> {"path", "label", "score",
    "probabilities", "embedding"}`` (numpy columns; other input columns pass through).

    Args:
        checkpoint: a zero-shot checkpoint directory (``zsar train``/``zsar demo``).
        labels: the candidate labels.
        device: ``cpu`` or ``cuda`` (default: CUDA when the actor sees a GPU).
        batch_size: videos per forward pass inside a batch.
        path_column: the column holding the video paths.
    """

    def __init__(self, checkpoint: str, labels: Sequence[str], device: str | None = None, batch_size: int = 8,
                 path_column: str = "path"):
        self.clf = ZeroShotClassifier.load(checkpoint, device=device)
        self.clf.set_labels(list(labels))
        self.batch_size = batch_size
        self.path_column = path_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        paths = [str(p) for p in batch[self.path_column]]
        ok = [i for i, p in enumerate(paths) if media_file_problem(p) is None]
        n, labels = len(paths), self.clf.labels
        dim = None
        probs = np.full((n, len(labels)), np.nan, np.float32)
        emb = None
        if ok:
            x = self.clf.encode([paths[i] for i in ok], batch_size=self.batch_size)
            p = torch.softmax(self.clf.scores(x) / self.clf.temperature, dim=1).numpy()
            dim = x.shape[1]
            emb = np.full((n, dim), np.nan, np.float32)
            emb[ok] = x.numpy()
            probs[ok] = p
        best = np.where(np.isnan(probs).all(1), -1, np.nan_to_num(probs, nan=-1).argmax(1))
        out = dict(batch)
        out["label"] = np.array([labels[j] if j >= 0 else None for j in best], dtype=object)
        out["score"] = np.array([probs[i, j] if j >= 0 else np.nan for i, j in enumerate(best)], np.float32)
        out["probabilities"] = probs
        out["embedding"] = emb if emb is not None else np.full((n, 1), np.nan, np.float32)
        return out
