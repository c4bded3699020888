"""``zsar gzsl`` on the released AVCA-GZSL features: the same two-stage protocol
(:func:`zsar.eval.run_avca_protocol`, driven by :func:`zsar.eval.recipes.run_gzsl_recipe`), fed from the
feature files instead of decoded videos.

A config with ``data: {format: avca_features, annotations: <DS folder>}`` (``root``: the features
folder, default the split's: ``features/main_features`` for ``split: main``, ``features/cls_features``
for ``cls``) gets:

* the six stages read from the dataset folder's own ``class-split/<split>/stage_*`` files and the
  ``.h5`` files (:func:`zsar.data.formats.avca_feature_stages`; ``data.on_missing: skip`` keeps only
  videos present in every file and list instead of stopping at the first disagreement);
* the labels embedded with the released word2vec table (``features/<name>/text/*.npy``, read without
  running pickle code, class names mapped through ``*_w2v_class_names.csv``), vectors as stored (the
  release normalises them; MZST's targets are not normalised again, ``normalize_targets: false``),
  unless the config names another ``embedder`` than the default sentence model;
* a runner that trains and encodes from :class:`zsar.data.AVCAFeatureDataset` (video and audio features
  for models that take audio, video features only for the others, e.g. ``rest_features``).
"""

from __future__ import annotations

from typing import Sequence

from .._utils import torch_threads
from ..data.records import VideoList
from .recipes import GZSLConfig, _RegisteredModelRunner, recipe_embedder

__all__ = ["feature_recipe_parts", "feature_modalities"]

_DEFAULT_EMBEDDER = {"type": "sentence"}


def feature_modalities(model) -> tuple[str, ...]:
    """The feature streams a model reads: video when it takes features as clips, audio when it takes audio."""
    inputs = model.inputs
    mods = (("video",) if inputs.feature_dim is not None else ()) + (("audio",) if inputs.audio is not None else ())
    if inputs.feature_dim is None:
        raise ValueError(f"model {getattr(model, 'registry_name', type(model).__name__)!r} takes pixels, not "
                         f"precomputed features; use a feature-input model (mzst_features, mzst_features_cls, "
                         f"rest_features, rest_features_cls)")
    return mods


class _FeatureRunner(_RegisteredModelRunner):
    """:class:`_RegisteredModelRunner` reading :class:`~zsar.data.AVCAFeatureDataset` s.

    Trains and encodes with one intra-op thread: a feature batch is a few tokens per video, so each op is
    tiny and thread hand-offs cost more than they save (``bench/bench_avca_features.py``: an
    ``mzst_features`` training step at batch 64 took 1.08 s with 1 thread and 11.7 s with 2 on the 2-core
    development machine at load 14-16, ratio 10.5x, min-max 7.2-12.6x over 4 interleaved rounds).
    """

    threads = 1

    def __init__(self, config: GZSLConfig, embedder):
        super().__init__(config, embedder)
        self._datasets: dict[tuple, tuple] = {}  # (id of a list, modalities) -> (the list, its dataset)

    def train(self, videos: VideoList, epochs: int, after_epoch) -> None:
        with torch_threads(self.threads):
            super().train(videos, epochs, after_epoch)

    def classifier(self):
        with torch_threads(self.threads):
            return super().classifier()

    def _dataset(self, model, videos: VideoList):
        """The dataset of ``videos``, kept for the run: the protocol evaluates the same lists every epoch,
        and a kept dataset keeps its open files and cached class files."""
        from ..data import AVCAFeatureDataset

        key = (id(videos), feature_modalities(model))
        if key not in self._datasets:  # the list is kept with it, so its id is never reused meanwhile
            self._datasets[key] = (videos, AVCAFeatureDataset(videos, key[1]))
        return self._datasets[key][1]

    def _train_dataset(self, videos: VideoList, spec):
        return self._dataset(self.pipeline.model, videos)

    def _loader(self, videos: VideoList):
        from torch.utils.data import DataLoader

        dataset = self._dataset(self.pipeline.model, videos)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False,
                          num_workers=self.config.num_workers, collate_fn=dataset.collate_fn)

    def encode(self, videos: VideoList):
        with torch_threads(self.threads):
            return super().encode(videos)


def feature_recipe_parts(config: GZSLConfig) -> tuple[dict[str, VideoList], object, _FeatureRunner]:
    """The stages, label embedder and runner of a ``zsar gzsl`` run on released features.

    Raises:
        FileNotFoundError: a missing folder or file of the layout (named).
        ValueError: features that disagree with the split files (every disagreement named), or a model that
            takes pixels.
    """
    from ..data.formats.avca_features import avca_class_vectors, avca_feature_stages
    from ..models import create_model

    data = config.data
    if data.split is not None and str(data.split) not in (config.split, config.avca_split):
        raise ValueError(f"config key 'data.split' ({data.split!r}) disagrees with 'split' ({config.split!r}); "
                         f"for avca_features the recipe's 'split' chooses the split (leave data.split out)")
    if config.split_dir is not None or config.test_data is not None:
        raise ValueError("config keys 'split_dir' and 'test_data' do not apply to data.format avca_features: the "
                         "dataset folder's class-split/ holds the stages")
    # The model decides which feature files must exist: build one (cheap without backbones) to ask.
    probe = create_model(config.model, class_names=["a", "b"], **{k: v for k, v in config.model_args.items()
                                                                if k not in ("num_classes", "vocab")})
    modalities = feature_modalities(probe)
    stages = avca_feature_stages(data.annotations, config.avca_split, features=data.root, modalities=modalities,
                                 on_missing=data.on_missing)
    if dict(config.embedder) == _DEFAULT_EMBEDDER:
        embedder = avca_class_vectors(data.annotations, config.avca_split, features=data.root)
    else:
        classes: Sequence[str] = list(dict.fromkeys(c for s in stages.values() for c in s.classes))
        embedder = recipe_embedder(config, classes)
    return stages, embedder, _FeatureRunner(config, embedder)
