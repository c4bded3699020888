"""Access to the compiled core ``zsar._C``, with the reason when it cannot be loaded."""

from __future__ import annotations

import functools
from types import ModuleType

try:
    from . import _C as _compiled

    LOAD_ERROR: str | None = None
except ImportError as exc:  # a source checkout that was never built, or a broken install
    _compiled = None
    LOAD_ERROR = f"zsar._C could not be imported ({exc}); reinstall zsar with `pip install .`"


def compiled() -> ModuleType | None:
    """The compiled module, or None when it is unavailable (see :data:`LOAD_ERROR`)."""
    return _compiled


@functools.lru_cache(maxsize=None)
def _build_info() -> dict:
    if _compiled is None:
        return {"available": False, "error": LOAD_ERROR, "cuda": False}
    return {"available": True, **_compiled.build_info()}


def build_info() -> dict:
    """How the compiled core was built; ``{"available": False, ...}`` when it is missing."""
    return dict(_build_info())
