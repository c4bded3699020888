"""Model registry (in the style of timm): each model's file registers its builders, one per variant,
from a table of :class:`Variant` s (:func:`register_variants`) or one at a time
(:func:`register_model`); :func:`create_model` builds any of them by name (checkpoints rebuild theirs
through it: :func:`zsar.models.load_model`). :data:`MODELS` is the registry itself
(:class:`zsar._registry.Registry`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .._limits import check_model_args
from .._registry import Registry
from .base import ZeroShotModel

#: Name -> builder of every registered model, in registration order (add one with :func:`register_model`).
MODELS: Registry[Callable[..., ZeroShotModel]] = Registry("model", "model")
_LABEL_EMBEDDINGS: set[str] = set()
_EMBEDDERS: dict[str, dict[str, Any]] = {}
#: The label embedder a model gets when its config names none (:func:`zsar.text.embedder_from_spec`).
DEFAULT_EMBEDDER: dict[str, Any] = {"type": "sentence"}


def register_model(name: str, label_embeddings: bool = False, embedder: dict[str, Any] | None = None):
    """Decorator: registers ``fn(class_names=None, **overrides) -> ZeroShotModel`` under ``name``.

    Args:
        name: the registry name.
        label_embeddings: the builder also takes ``class_embeddings`` ``(C, E)``, the seen labels'
            embeddings (models that train towards the label space, e.g. MZST).
        embedder: the spec of the label embedder the model uses when a config names none
            (:func:`default_embedder_spec`); default :data:`DEFAULT_EMBEDDER`.

    The builder takes the seen classes' label text as ``class_names`` (None when every argument,
    e.g. from a checkpoint's ``config.json``, is given explicitly) and keyword overrides of its
    defaults; the model it returns implements :class:`~zsar.models.base.ZeroShotModel`.
    """

    def wrap(fn):
        MODELS.register(name, fn)
        _LABEL_EMBEDDINGS.discard(name)  # left from an unregistered model of that name
        _EMBEDDERS.pop(name, None)
        if label_embeddings:
            _LABEL_EMBEDDINGS.add(name)
        if embedder is not None:
            _EMBEDDERS[name] = dict(embedder)
        return fn

    return wrap


@dataclass(frozen=True)
class Variant:
    """One registered size of a model: a line for ``help(builder)`` and the defaults its builder
    starts from (fields of the model's config; the caller's overrides win)."""

    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


def register_variants(build: Callable[..., ZeroShotModel], variants: Mapping[str, Variant], **registration) -> None:
    """Registers one builder per row of a variant table (timm's one ``@register_model`` function per
    variant, written once): ``create_model(name, class_names=..., **overrides)`` calls
    ``build(variants[name].defaults, class_names, **overrides)``.

    Args:
        build: ``build(defaults, class_names=None, **overrides) -> ZeroShotModel``.
        variants: name -> :class:`Variant`.
        **registration: :func:`register_model`'s options (``label_embeddings``, ``embedder``).
    """
    for name, variant in variants.items():
        register_model(name, **registration)(_variant_builder(build, name, variant))


def _variant_builder(build, name: str, variant: Variant):
    def builder(class_names=None, **overrides) -> ZeroShotModel:
        return build(dict(variant.defaults), class_names, **overrides)

    target = getattr(build, "func", build)  # a functools.partial names its function
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{variant.description} (arguments: {target.__module__}.{target.__name__})"
    return builder


def needs_label_embeddings(name: str) -> bool:
    """Whether the model ``name`` trains towards its classes' label embeddings (see :func:`register_model`)."""
    return name in _LABEL_EMBEDDINGS


def default_embedder_spec(name: str) -> dict[str, Any]:
    """The label-embedder spec model ``name`` uses when a config names none (e.g. MZST: the sentence
    model's mean-pooled output without its final normalisation, the paper's unnormalised targets)."""
    return dict(_EMBEDDERS.get(name, DEFAULT_EMBEDDER))


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(MODELS)


def create_model(name: str, label_embedder=None, **overrides: Any) -> ZeroShotModel:
    """Builds the registered model ``name`` with fresh weights (a saved one: :func:`zsar.models.load_model`).

    Args:
        name: a name from :func:`list_models`.
        label_embedder: for models registered with ``label_embeddings=True``: embeds ``class_names``
            into their ``class_embeddings`` (ignored by other models).
        **overrides: builder arguments, e.g. ``class_names=[...]`` and fields of the model's config.

    Raises:
        ValueError: unknown name.
    """
    build = MODELS.get(name)
    if label_embedder is not None and name in _LABEL_EMBEDDINGS and overrides.get("class_names") is not None:
        overrides.setdefault("class_embeddings", label_embedder.embed(list(overrides["class_names"])))
    check_model_args(overrides, f"model {name}")
    model = build(**overrides)
    if not isinstance(model, ZeroShotModel):
        raise TypeError(f"the builder of {name!r} returned a {type(model).__name__}, not a ZeroShotModel")
    model.registry_name = name
    return model
