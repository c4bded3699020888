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
  unless the config names another ``embedder`` than the default sentence model (word vectors then get
  the folder's name map);
* a runner (:class:`zsar.eval.recipes.FeatureRunner`) that trains and encodes from
  :class:`zsar.data.AVCAFeatureDataset` (video and audio features for models that take audio, video
  features only for the others, e.g. ``rest_features``).
"""

from __future__ import annotations

from typing import Any

from ..data.formats.avca_features import avca_class_vectors, avca_feature_layout, avca_feature_stages
from ..data.records import VideoList
from ..models import create_model
from ..text import embedder_from_spec, load_name_map

__all__ = ["feature_stages", "feature_modalities"]



def feature_modalities(model) -> tuple[str, ...]:
    """The feature streams a model reads: video when it takes features as clips, audio when it takes audio."""
    inputs = model.inputs
    if inputs.feature_dim is None:
        raise ValueError(f"model {getattr(model, 'registry_name', type(model).__name__)!r} takes pixels, not "
                         f"precomputed features; use a feature-input model (mzst_features, mzst_features_cls, "
                         f"rest_features, rest_features_cls)")
    return ("video",) + (("audio",) if inputs.audio is not None else ())


def feature_stages(config) -> tuple[dict[str, VideoList], Any]:
    """The six stages and the label embedder of a ``zsar gzsl`` run (a :class:`zsar.eval.recipes.GZSLConfig`)
    on released features.

    Raises:
        FileNotFoundError: a missing folder or file of the layout (named).
        ValueError: features that disagree with the split files (every disagreement named), config keys that
            do not apply, or a model that takes pixels.
    """
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
    stages = avca_feature_stages(data.annotations, config.avca_split, features=data.root,
                                 modalities=feature_modalities(probe), on_missing=data.on_missing)
    if config.embedder is None:  # no embedder named: the release's own word2vec table, as AVCA embeds its labels
        return stages, avca_class_vectors(data.annotations, config.avca_split, features=data.root)
    spec = dict(config.embedder)
    name_map_file = avca_feature_layout(data.annotations, config.avca_split, data.root).name_map_file()
    if spec.get("type") == "word_vectors" and name_map_file is not None:
        spec["name_map"] = {**load_name_map(name_map_file), **(spec.get("name_map") or {})}
    return stages, embedder_from_spec(spec)
