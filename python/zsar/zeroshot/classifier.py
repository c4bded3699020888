"""A small zero-shot classifier API over a trained ResT (in the spirit of open_clip's).

    clf = ZeroShotClassifier.from_loader(model, train_loader, seen_labels, embedder)
    clf.set_labels(["juggling balls", "playing harp"])
    probs = clf.predict_proba(clips)            # (N, 2); clips or video file paths
    top = clf.predict(["a.mp4", "b.webm"], top_k=1)
    clf.save("runs/exp/checkpoints/best")       # beside the model weights
    clf = ZeroShotClassifier.load("runs/exp/checkpoints/best")  # or zsar demo's runs/demo/checkpoint

Seen prototypes are the mean CLS representation of each seen class (paper §3.3). ``set_labels``
embeds the target labels, relates them to the seen labels (cosine), solves the transfer program
(:func:`transfer_assignment`) and composes one visual prototype per target label (Eq. 6); videos
are then scored by cosine similarity to those prototypes (softmax with a temperature for
probabilities).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .transfer import composite_prototypes, cosine_similarity_matrix, transfer_assignment

PROTOTYPES_FILE = "seen_prototypes.safetensors"
SETTINGS_FILE = "zeroshot.json"


@torch.no_grad()
def seen_prototypes_from_loader(model, loader, num_classes: int, progress: bool = True) -> torch.Tensor:
    """Mean visual representation per seen class over a loader of ``(clips, labels)`` batches (or
    :class:`zsar.data.ClipBatch` es): ``(C, D)``."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    sums, counts = None, torch.zeros(num_classes, dtype=torch.float64)
    for batch in tqdm(loader, desc="seen prototypes", disable=not progress, leave=False):
        if batch is None:  # a batch of skipped bad files
            continue
        clips, labels = batch[0], batch[1]
        x = model.encode_video(clips.to(device)).double().cpu()
        if sums is None:
            sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
        sums.index_add_(0, labels.cpu(), x)
        counts += torch.bincount(labels.cpu(), minlength=num_classes).double()
    if sums is None:
        raise ValueError("the loader yielded no batches")
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"seen classes {empty[:10]} have no videos in the loader")
    return (sums / counts[:, None]).float()


class ZeroShotClassifier:
    """Zero-shot classification by semantic transfer of seen-class visual prototypes.

    Args:
        model: a trained ResT (its ``encode_video`` gives the visual representation).
        seen_prototypes: ``(num_seen, D)`` mean representations of the seen classes.
        seen_labels: the seen classes' label text, in the order of ``seen_prototypes``.
        embedder: a label embedder with ``embed(labels) -> (N, dim)`` (e.g. WordVectorEmbedder).
        k, theta, rho: the transfer program's K nearest seen labels, relative-distance threshold
            and edges per target label (choose them by cross-validation over the seen classes).
        temperature: softmax temperature of ``predict_proba`` over cosine similarities.
        clip_spec: how video files given to ``predict``/``encode`` become clips (a
            :class:`zsar.data.ClipSpec`; default: the model's frames and image size, one centred clip).
    """

    def __init__(self, model, seen_prototypes: torch.Tensor, seen_labels: Sequence[str], embedder,
                 k: int = 5, theta: float = 0.5, rho: int = 3, temperature: float = 0.05, clip_spec=None):
        if len(seen_labels) != seen_prototypes.shape[0]:
            raise ValueError(f"{len(seen_labels)} seen labels but {seen_prototypes.shape[0]} seen prototypes")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model, self.embedder = model, embedder
        self.seen_prototypes = seen_prototypes.float().cpu()
        self.seen_labels = list(seen_labels)
        self.k, self.theta, self.rho, self.temperature = k, theta, rho, temperature
        if clip_spec is None:
            from ..data import ClipSpec

            clip_spec = ClipSpec(frames=model.config.frames, size=model.config.image_size)
        self.clip_spec = clip_spec
        self.labels: list[str] = []
        self.prototypes: torch.Tensor | None = None
        self.assignment: np.ndarray | None = None

    @classmethod
    def from_loader(cls, model, loader, seen_labels: Sequence[str], embedder, progress: bool = True, **kwargs):
        """Computes the seen prototypes from a training loader of ``(clips, labels)`` first."""
        protos = seen_prototypes_from_loader(model, loader, len(seen_labels), progress)
        return cls(model, protos, seen_labels, embedder, **kwargs)

    def save_prototypes(self, directory: str | Path) -> Path:
        """Stores the seen prototypes and labels beside a checkpoint (``seen_prototypes.safetensors``)."""
        path = Path(directory) / PROTOTYPES_FILE
        save_file({"prototypes": self.seen_prototypes.contiguous()}, path,
                  metadata={"labels": "\n".join(self.seen_labels)})
        return path

    def save(self, directory: str | Path) -> Path:
        """Stores everything but the model beside a checkpoint: seen prototypes and labels, the
        transfer parameters, temperature, clip spec and how to rebuild the embedder."""
        directory = Path(directory)
        self.save_prototypes(directory)
        spec = getattr(self.embedder, "spec", lambda: None)()
        settings = {"k": self.k, "theta": self.theta, "rho": self.rho, "temperature": self.temperature,
                    "clip_spec": asdict(self.clip_spec), "embedder": spec}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, embedder=None, device: str | torch.device | None = None,
             **overrides) -> "ZeroShotClassifier":
        """The classifier saved with :meth:`save` in a checkpoint directory (model included).

        ``embedder`` replaces the recorded one (needed when it was built from in-memory vectors);
        ``overrides`` replace saved settings (``k``, ``theta``, ``rho``, ``temperature``, ``clip_spec``).
        """
        from ..data import ClipSpec
        from ..text import embedder_from_spec
        from ..train.checkpoint import load_model, resolve

        directory = resolve(directory)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = directory / SETTINGS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {SETTINGS_FILE}: not a zero-shot checkpoint "
                                    f"(save one with ZeroShotClassifier.save)")
        settings = json.loads(path.read_text())
        if embedder is None:
            if settings.get("embedder") is None:
                raise ValueError(f"{path} records no embedder (it was built from in-memory vectors); pass embedder=")
            embedder = embedder_from_spec(settings["embedder"])
        protos, labels = cls.load_prototypes(directory)
        kwargs = {key: settings[key] for key in ("k", "theta", "rho", "temperature")}
        kwargs["clip_spec"] = ClipSpec(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in settings["clip_spec"].items()})
        kwargs.update(overrides)
        return cls(load_model(directory, device), protos, labels, embedder, **kwargs)

    @staticmethod
    def load_prototypes(directory: str | Path) -> tuple[torch.Tensor, list[str]]:
        from safetensors import safe_open

        path = Path(directory) / PROTOTYPES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no seen prototypes at {path}")
        with safe_open(str(path), framework="pt") as f:
            labels = f.metadata()["labels"].split("\n")
        return load_file(path)["prototypes"], labels

    def set_labels(self, labels: Sequence[str]) -> "ZeroShotClassifier":
        """Builds one composite visual prototype per target label (the transfer program + Eq. 6)."""
        labels = list(labels)
        if len(labels) < 1:
            raise ValueError("set_labels needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError("set_labels: labels must be distinct")
        target = self.embedder.embed(labels)
        seen = self.embedder.embed(self.seen_labels)
        relatedness = cosine_similarity_matrix(target, seen)
        self.assignment = transfer_assignment(relatedness, self.k, self.theta, self.rho)
        weight = (self.assignment * relatedness).sum(1)
        unrelated = [f"{labels[j]!r} (max cosine {relatedness[j].max():.2f})" for j in np.flatnonzero(weight <= 0)]
        if unrelated:
            raise ValueError(f"labels unrelated to every seen class, no prototype can be composed: {', '.join(unrelated)}")
        self.prototypes = torch.as_tensor(
            composite_prototypes(self.seen_prototypes.numpy(), relatedness, self.assignment), dtype=torch.float32)
        self.labels = labels
        return self

    def _require_labels(self) -> None:
        if self.prototypes is None:
            raise RuntimeError("call set_labels(labels) before predicting")

    @torch.no_grad()
    def encode(self, videos, batch_size: int = 8, progress: bool = False) -> torch.Tensor:
        """Visual representations ``(N, D)`` (ResT's CLS output, clips averaged) for downstream use.

        ``videos``: clips ``(N[, clips], T, 3, H, W)``, or one or more video file paths, read
        with :attr:`clip_spec` (``batch_size`` files at a time).
        """
        device = next(self.model.parameters()).device
        self.model.eval()
        if isinstance(videos, torch.Tensor):
            return self.model.encode_video(videos.to(device), batch_size=batch_size).float().cpu()
        from ..data import load_clip

        paths = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise TypeError("videos must be a clip tensor or video file path(s)")
        chunks = range(0, len(paths), batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="encoding videos", unit="batch")
        out = []
        for i in chunks:
            clips = torch.stack([load_clip(p, self.clip_spec) for p in paths[i:i + batch_size]])
            out.append(self.model.encode_video(clips.to(device)).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def similarities(self, videos) -> torch.Tensor:
        """Cosine similarity ``(N, num_labels)`` of videos (clips or file paths) to the prototypes."""
        self._require_labels()
        x = self.encode(videos)
        return torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(self.prototypes, dim=1).T

    def predict_proba(self, videos) -> torch.Tensor:
        """Softmax over cosine similarities / temperature, ``(N, num_labels)``."""
        return torch.softmax(self.similarities(videos) / self.temperature, dim=1)

    def predict(self, videos, top_k: int = 1) -> torch.Tensor:
        """Indices into the labels of :meth:`set_labels`: ``(N,)`` for top_k=1, else ``(N, top_k)``."""
        self._require_labels()
        if not 1 <= top_k <= len(self.labels):
            raise ValueError(f"top_k must be in [1, {len(self.labels)}], got {top_k}")
        top = self.similarities(videos).topk(top_k, dim=1).indices
        return top[:, 0] if top_k == 1 else top
