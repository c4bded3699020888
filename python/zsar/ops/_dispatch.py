"""Ordered backend dispatch shared by every zsar op (in the style of xFormers' fmha).

An op owns an ordered list of backends, fastest first. Each backend answers
``not_supported_reasons(inputs)`` with an empty list when it can serve the inputs (derived from its
declared capabilities, see ``_backend.py``). Automatic dispatch takes the first backend with no
reasons; a forced backend that has reasons raises :class:`BackendUnavailableError`, which names
every backend and why it was or was not usable. Automatic dispatch asks only the backends that
declare the inputs' device type (their ``devices``): the others' reasons are known without asking.
"""

from __future__ import annotations

from typing import Generic, Sequence, TypeVar

from ._backend import Backend


class BackendUnavailableError(RuntimeError):
    """No backend (or not the requested one) can run an op on the given inputs."""


B = TypeVar("B", bound=Backend)


class Dispatcher(Generic[B]):
    """Picks a backend for an op from an ordered list (first = preferred)."""

    def __init__(self, op_name: str, backends: Sequence[B]):
        self.op_name = op_name
        self.backends = tuple(backends)
        self._by_name = {b.name: b for b in self.backends}
        self._by_device: dict[str, tuple[B, ...]] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def get(self, name: str) -> B:
        """The backend called ``name`` (no support check)."""
        return self._by_name[name]

    def reasons(self, inputs) -> dict[str, list[str]]:
        """Every backend with the reasons it cannot serve ``inputs`` (empty list: usable)."""
        return {b.name: b.not_supported_reasons(inputs) for b in self.backends}

    def select(self, inputs, requested: str | None = None) -> B:
        """The requested backend, or the first usable one when ``requested`` is None.

        Raises:
            ValueError: if ``requested`` names no backend of this op.
            BackendUnavailableError: if the backend (or every backend) cannot serve ``inputs``.
        """
        if requested is not None:
            if requested not in self._by_name:
                raise ValueError(
                    f"{self.op_name}: backend={requested!r} is not a backend of this op; "
                    f"expected one of {list(self.names)} or None (automatic)"
                )
            backend = self._by_name[requested]
            if backend.can_serve(inputs):
                return backend
        else:
            for backend in self._candidates(inputs):
                if backend.can_serve(inputs):
                    return backend
        raise BackendUnavailableError(self._explain(inputs, requested))

    def _candidates(self, inputs) -> tuple[B, ...]:
        """The backends, in order, that declare the device type of ``inputs`` (all of them when the
        inputs or a backend name no device type). Skipping the rest saves asking each for its
        reasons: ~5-10 us of a short sequence's ~100 us forward on the CPU with the cuda backend
        first (bench/RESULTS.md, session 13)."""
        device = getattr(inputs, "device", None)
        if device is None:
            return self.backends
        candidates = self._by_device.get(device.type)
        if candidates is None:
            candidates = self._by_device[device.type] = tuple(
                b for b in self.backends if device.type in (getattr(b, "devices", None) or (device.type,))
            )
        return candidates

    def _explain(self, inputs, requested: str | None) -> str:
        head = (
            f"{self.op_name}: backend {requested!r} cannot run these inputs"
            if requested is not None
            else f"{self.op_name}: no backend can run these inputs"
        )
        lines = [head + ". Backends, in dispatch order:"]
        for name, why in self.reasons(inputs).items():
            lines.append(f"  {name}: " + ("usable" if not why else "; ".join(why)))
        return "\n".join(lines)
