"""s_v: the action a pretrained video classifier names for each video (the MZST paper, Eq. 4 and
§4.2: its semantic loss regresses f(x) onto phi(s_v) + phi(s_t)).

:class:`VideoLabeler` runs a torchvision video classifier (by default Kinetics-400 MViTv2-S, the
paper's video backbone) and names each video by its top-1 class, averaged over the clip's views;
class names come from the weights' metadata (``weights.meta["categories"]``). :func:`label_videos`
labels a dataset once and caches the result as a ``video_id,video_label`` CSV
(:mod:`zsar.data.video_labels`), which later runs read instead of classifying again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..data.batch import collate
from ..data.loader import VideoClipDataset
from ..data.records import VideoList
from ..data.transforms import ClipSpec
from ..data.video_labels import read_video_labels, write_video_labels
from .weights import is_torchvision_weights_name, read_state_dict, torchvision_weights

__all__ = ["VideoLabeler", "label_videos"]


def _arch_of(weights_name: str) -> str:
    """The torchvision model builder whose weights enum ``weights_name`` belongs to."""
    # deferred: torchvision.models takes ~5 s to import
    from torchvision.models import get_model_weights, get_weight, list_models

    enum = type(get_weight(weights_name))
    for name in list_models():
        try:
            if get_model_weights(name) is enum:
                return name
        except (ValueError, KeyError):
            continue
    raise ValueError(f"video classifier: no torchvision model takes {weights_name}")


class VideoLabeler:
    """A pretrained torchvision video classifier that names each video's action.

    Args:
        weights: a torchvision weights enum name (default ``"MViT_V2_S_Weights.KINETICS400_V1"``;
            read from the hub cache, downloaded when online, see
            :func:`zsar.models.weights.torchvision_weights`) or a state-dict file (then ``arch`` and
            ``categories`` are needed).
        arch: the torchvision model name (e.g. ``"mvit_v2_s"``); default: the enum's model.
        categories: its class names; default: the enum's ``meta["categories"]``.
        frames, size, short_side, mean, std: how clips are read (default: the weights' transforms;
            16 frames at stride 2).
        device: where the classifier runs.
    """

    def __init__(self, weights: str | Path = "MViT_V2_S_Weights.KINETICS400_V1", arch: str | None = None,
                 categories: Sequence[str] | None = None, frames: int = 16, stride: int = 2,
                 size: int | None = None, short_side: int | None = None, mean=None, std=None,
                 device: str | torch.device = "cpu"):
        # deferred: torchvision.models takes ~5 s to import
        from torchvision.models import get_model, get_weight

        meta, crop, resize = {}, None, None
        if is_torchvision_weights_name(weights):
            state, meta = torchvision_weights(str(weights), "video classifier weights")
            transforms = get_weight(str(weights)).transforms()
            crop, resize = transforms.crop_size[0], transforms.resize_size[0]
            arch = arch or _arch_of(str(weights))
        else:
            state = read_state_dict(weights, "video classifier weights")
        categories = list(categories if categories is not None else meta.get("categories", []))
        if arch is None or not categories:
            raise ValueError(f"video classifier: {weights} is a file; pass arch= (a torchvision video model name) "
                             f"and categories= (its class names)")
        self.categories = categories
        self.model = get_model(arch, weights=None, num_classes=len(categories))
        self.model.load_state_dict(state)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.spec = ClipSpec(frames=frames, stride=stride, size=size or crop or 224,
                             short_side=short_side or resize, train=False, num_clips=1, crop="center",
                             mean=tuple(mean or meta.get("mean", (0.45, 0.45, 0.45))),
                             std=tuple(std or meta.get("std", (0.225, 0.225, 0.225))))

    @torch.no_grad()
    def classify(self, clips: torch.Tensor) -> list[str]:
        """Top-1 class names for clips ``(B, T, 3, H, W)`` (or ``(B, N, T, 3, H, W)``, views averaged)."""
        n = clips.shape[1] if clips.dim() == 6 else 1
        x = clips.flatten(0, 1) if clips.dim() == 6 else clips
        probs = self.model(x.to(self.device).transpose(1, 2)).softmax(-1)
        top = probs.view(-1, n, probs.shape[-1]).mean(1).argmax(-1)
        return [self.categories[i] for i in top.tolist()]

    def label(self, videos: VideoList, batch_size: int = 4, backend: str | None = None,
              progress: bool = True) -> dict[str, str]:
        """``{video_id: top-1 class name}`` for every readable video of ``videos`` (bad files are skipped);
        ``backend`` as in :class:`~zsar.data.VideoClipDataset` (default: the registry's fallback decoder)."""
        data = VideoClipDataset(videos, self.spec, backend=backend, on_error="skip")
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
        out: dict[str, str] = {}
        for batch in tqdm(loader, desc="video labels (s_v)", disable=not progress):
            if batch is not None:
                out.update(zip(batch.video_ids, self.classify(batch.clips)))
        return out


def label_videos(videos: VideoList, cache: str | Path, labeler: VideoLabeler | None = None,
                 **label_args) -> dict[str, str]:
    """s_v of every video of ``videos``, computed once: videos already in the ``cache`` CSV
    (``video_id,video_label``) are read from it, the others classified by ``labeler`` (default
    :class:`VideoLabeler`'s Kinetics-400 MViTv2-S) and added to the cache."""
    cache = Path(cache)
    known = read_video_labels(cache) if cache.is_file() else {}
    todo = VideoList([r for r in videos if r.video_id not in known], videos.classes)
    if len(todo):
        known.update((labeler or VideoLabeler()).label(todo, **label_args))
        write_video_labels(cache, known)
    return {r.video_id: known[r.video_id] for r in videos if r.video_id in known}
