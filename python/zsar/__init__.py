"""zsar: zero-shot action recognition in video (ResT, MZST) with fused C++/CUDA/Triton kernels."""

import sys as _sys

from ._version import __version__

__all__ = ["__version__", "create_model", "list_models", "load_model", "ops"]

# The package's own attributes are loaded on first use (PEP 562), so that `import zsar.cli` (the
# `zsar` command, whose --help must answer at once) does not import torch.
_LAZY = {"ops": ("zsar.ops", None), "create_model": ("zsar.models", "create_model"),
         "list_models": ("zsar.models", "list_models"), "load_model": ("zsar.models", "load_model")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'zsar' has no attribute {name!r}")
    import importlib  # deferred: only for the lazy attributes

    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if "torch" in _sys.modules:  # torch already paid for: register torch.ops.zsar.* now, as before
    from . import ops  # noqa: F401
