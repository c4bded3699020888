"""Ordered backend dispatch shared by every zsar op (in the style of xFormers' fmha).

An op owns an ordered list of backends, fastest first. Each backend answers
``not_supported_reasons(inputs)`` with an empty list when it can serve the inputs (derived from its
declared capabilities, see ``_backend.py``). Automatic dispatch takes the first backend with no
reasons; a forced backend that has reasons raises :class:`BackendUnavailableError`, which names
every backend and why it was or was not usable.
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
            for backend in self.backends:
                if backend.can_serve(inputs):
                    return backend
        raise BackendUnavailableError(self._explain(inputs, requested))

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
