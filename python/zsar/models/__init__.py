"""Models: backbones, transformer layers, ResT, and the registry (``create_model``)."""

from __future__ import annotations

from .registry import create_model, list_models, register_model
from .rest import ResT, ResTConfig
from . import mzst  # noqa: F401,E402  (registers mzst, mzst_tiny)

# name -> ResTConfig defaults (paper §4.1 and Table 4). `rest_tiny` is for tests and CPU demos.
REST_VARIANTS: dict[str, dict] = {
    "rest18": dict(backbone="resnet18", frames=16),
    "rest34": dict(backbone="resnet34", frames=8),
    "rest101": dict(backbone="resnet101", frames=4),
    "rest_vgg16": dict(backbone="vgg16", frames=16),
    "rest_mobilenet_v2": dict(backbone="mobilenet_v2", frames=16),
    "rest_googlenet": dict(backbone="googlenet", frames=16),
    "rest_r2plus1d": dict(backbone="r2plus1d_18", frames=16, image_size=112),
    "rest_tiny": dict(backbone="tiny", frames=8, image_size=64, dim=64, depth=2, heads=4, mlp_dim=128,
                      dropout=0.0),
}


def _register_rest(name: str, defaults: dict):
    @register_model(name)
    def build(**overrides):
        return ResT(ResTConfig(**{**defaults, **overrides}))

    build.__doc__ = f"ResT variant {name}: {defaults}"


for _name, _defaults in REST_VARIANTS.items():
    _register_rest(_name, _defaults)

__all__ = ["ResT", "ResTConfig", "REST_VARIANTS", "create_model", "list_models", "register_model"]
