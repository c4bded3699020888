"""Test parameters generated from what each op backend declares (``zsar.ops._backend.Support``).

A test parametrised with :func:`declared_backend_params` runs every ``(backend, device, dtype)``
that a backend claims. :func:`skip_unless_usable` skips only what this machine or build cannot
provide (a requirement of the declaration is unmet, and the requirement says why); a backend whose
requirements are met must then serve the call (a forced ``backend=`` raises otherwise).
"""

from __future__ import annotations

import pytest
import torch

from zsar.ops._backend import dtype_name


def _implements(backend, mask_kind: str | None) -> bool:
    kinds = getattr(backend, "mask_kinds", None)
    return mask_kind is None or kinds is None or mask_kind in kinds


def declared_backend_params(dispatcher, dtypes=None, mask_kind: str | None = None) -> list:
    """``pytest.param(backend, device, dtype)`` for every declared pair, optionally only ``dtypes``
    and only backends that implement ``mask_kind``."""
    return [
        pytest.param(backend.name, device, dtype, id=f"{backend.name}-{device}-{dtype_name(dtype)}")
        for backend in dispatcher.backends
        if _implements(backend, mask_kind)
        for device, dtype in backend.declared()
        if dtypes is None or dtype in dtypes
    ]


def skip_unless_usable(dispatcher, backend: str, device: str, dtype: torch.dtype) -> None:
    unmet = dispatcher.get(backend).unmet_requirements(device, dtype)
    if unmet:
        pytest.skip(f"{backend} on {device} ({dtype_name(dtype)}) not available here: {'; '.join(unmet)}")


def usable_device(dispatcher, backend: str, dtype: torch.dtype = torch.float32) -> torch.device:
    """The first device the backend declares for ``dtype`` that this machine can run (cuda before
    cpu for triton, so a GPU machine tests the compiled kernels); skips when there is none."""
    device = dispatcher.get(backend).usable_device(dtype)
    if device is None:
        pytest.skip(f"{backend} cannot run {dtype_name(dtype)} on this machine")
    return device


def backend_names(dispatcher, mask_kind: str | None = None) -> list[str]:
    """Names of the backends (that implement ``mask_kind``, when given)."""
    return [backend.name for backend in dispatcher.backends if _implements(backend, mask_kind)]
