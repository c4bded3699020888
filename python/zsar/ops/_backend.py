"""Op backends that declare what they serve as data; the base class derives why one cannot serve a call.

In the style of xFormers' fmha operators (``SUPPORTED_DEVICES``, ``SUPPORTED_DTYPES``,
``SUPPORTED_MAX_K``, ``not_supported_reasons``): a backend lists its :class:`Support` entries (a
device type, the dtypes served there, and the :class:`Requirement` s of the build or machine that
this needs), its size limits and the mask kinds it implements. :meth:`Backend.not_supported_reasons`
turns any mismatch into a reason worded the same way for every backend, and the tests are generated
from the same declarations (:meth:`Backend.declared`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Protocol

import torch

from .. import _ext


@dataclass(frozen=True)
class Requirement:
    """Something a backend needs from the build or the machine.

    Attributes:
        name: short identifier, e.g. ``"compiled core"``.
        check: ``check(device)`` returns why the requirement is unmet for tensors on ``device``
            (a ``torch.device``), or None when it is met. Checks that cannot change while the
            process runs should cache their answer: dispatch asks on every call.
    """

    name: str
    check: Callable[[torch.device], "str | None"]

    def unmet(self, device: torch.device) -> str | None:
        """Why this requirement is unmet for tensors on ``device``; None when it is met."""
        return self.check(device)


@dataclass(frozen=True)
class Support:
    """One device type a backend runs on, the dtypes it serves there, and what that needs.

    Attributes:
        device: a ``torch.device`` type, e.g. ``"cpu"`` or ``"cuda"``.
        dtypes: the dtypes served on that device type.
        requires: requirements checked (in order) before the backend is used there.
        note: how the backend runs there, added to dtype reasons (e.g. ``"the Triton interpreter"``).
    """

    device: str
    dtypes: tuple[torch.dtype, ...]
    requires: tuple[Requirement, ...] = ()
    note: str = ""


class BackendInputs(Protocol):
    """What :meth:`Backend.not_supported_reasons` reads from an op's inputs."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def mask_kind(self) -> str: ...


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Backend:
    """Base class of an op backend: capabilities as class attributes, reasons derived from them.

    Subclasses set :attr:`name` and :attr:`supports` and, where they have them, :attr:`max_head_dim`,
    :attr:`max_seq_len` and :attr:`mask_kinds`; each op adds its compute methods (``forward``,
    ``backward``). A limit left at None is not checked. Each ``(device, dtype)`` pair may appear in
    one :class:`Support` entry only.
    """

    name: ClassVar[str]
    supports: ClassVar[tuple[Support, ...]]
    max_head_dim: ClassVar[int | None] = None
    max_seq_len: ClassVar[int | None] = None
    mask_kinds: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "supports" in cls.__dict__:
            by_pair = {}
            for support in cls.supports:
                for dtype in support.dtypes:
                    if (support.device, dtype) in by_pair:
                        raise TypeError(f"backend {cls.__name__}: {support.device}/{dtype_name(dtype)} "
                                        "appears in two Support entries")
                    by_pair[support.device, dtype] = support
            cls._support_by_pair = by_pair
            cls.devices = tuple(dict.fromkeys(s.device for s in cls.supports))

    #: Device types served, in declaration order (the first is the preferred one).
    devices: ClassVar[tuple[str, ...]] = ()
    _support_by_pair: ClassVar[dict[tuple[str, torch.dtype], Support]] = {}

    def declared(self) -> list[tuple[str, torch.dtype]]:
        """Every ``(device type, dtype)`` pair this backend declares, for generated tests."""
        return list(self._support_by_pair)

    def unmet_requirements(self, device: torch.device | str, dtype: torch.dtype) -> list[str]:
        """Why the build or this machine cannot serve a declared ``(device, dtype)`` pair (empty: it can).

        Raises:
            ValueError: if the pair is not declared.
        """
        device = torch.device(device)
        support = self._support_by_pair.get((device.type, dtype))
        if support is None:
            raise ValueError(f"backend {self.name!r} does not declare {dtype_name(dtype)} on {device.type}")
        return [why for why in (r.unmet(device) for r in support.requires) if why is not None]

    def can_serve(self, inputs: BackendInputs) -> bool:
        """Whether this backend can serve ``inputs`` (what dispatch asks; builds no message)."""
        return next(self._reasons(inputs), None) is None

    def not_supported_reasons(self, inputs: BackendInputs) -> list[str]:
        """Why this backend cannot serve ``inputs``; an empty list when it can."""
        return list(self._reasons(inputs))

    def _reasons(self, inputs: BackendInputs) -> Iterator[str]:
        device, dtype = inputs.device, inputs.dtype
        support = self._support_by_pair.get((device.type, dtype))
        if support is None:
            if device.type not in self.devices:
                yield f"runs on {' or '.join(self.devices)} tensors, got {device.type}"
                return
            here = [s for s in self.supports if s.device == device.type]
            notes = sorted({s.note for s in here if s.note})
            where = device.type + (f" ({', '.join(notes)})" if notes else "")
            served = ", ".join(dtype_name(d) for s in here for d in s.dtypes)
            yield f"{dtype_name(dtype)} is not supported on {where}; supported: {served}"
        else:
            for requirement in support.requires:
                why = requirement.unmet(device)
                if why is not None:
                    yield why
        if self.max_head_dim is not None and inputs.head_dim > self.max_head_dim:
            yield f"head dim {inputs.head_dim} is over the maximum {self.max_head_dim}"
        if self.max_seq_len is not None and inputs.seq_len > self.max_seq_len:
            yield f"sequence length {inputs.seq_len} is over the maximum {self.max_seq_len}"
        if self.mask_kinds is not None and inputs.mask_kind not in self.mask_kinds:
            yield f"mask kind {inputs.mask_kind!r} is not implemented; implemented: {', '.join(self.mask_kinds)}"

    def usable_device(self, dtype: torch.dtype | None = None) -> torch.device | None:
        """The first declared device whose requirements this machine meets (for ``dtype``, or for
        the first dtype declared there); None if there is none."""
        for support in self.supports:
            if dtype is not None and dtype not in support.dtypes:
                continue
            if not self.unmet_requirements(support.device, dtype or support.dtypes[0]):
                return torch.device(support.device)
        return None


# ---- requirements shared by the backends of every op ---------------------------------------------


@functools.cache
def _compiled_core_error() -> str | None:
    return None if _ext.compiled() is not None else (_ext.LOAD_ERROR or "zsar._C is not available")


@functools.cache
def _cuda_kernels_error() -> str | None:
    info = _ext.build_info()
    if not info["available"]:
        return info["error"]
    if not info["cuda"]:
        return "zsar._C was built without CUDA kernels (no nvcc at build time, or ZSAR_CUDA=OFF)"
    return None


def _cuda_device_error(device: torch.device) -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device is available to torch"


COMPILED_CORE = Requirement("compiled core", lambda device: _compiled_core_error())
CUDA_KERNELS = Requirement("CUDA kernels in the compiled core", lambda device: _cuda_kernels_error())
CUDA_DEVICE = Requirement("a CUDA device", _cuda_device_error)
