"""The one registry helper behind every "name -> item" registry of zsar: models, dataset formats,
protocols, video decoders and attention ops.

Each registry names its kind (``"dataset format"``) and the argument users name items with
(``"data.format"``), so that every registry refuses a second registration of a name, and rejects
an unknown name, in the same words::

    data.format: unknown dataset format 'ucf'; expected one of list, ucf101, hmdb51, ...

It is a read-only mapping (name -> item, in registration order), which ``zsar list`` reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Mapping[str, T], Generic[T]):
    """Name -> item of one kind, in registration order.

    Args:
        kind: what an item is, for messages (``"model"``, ``"dataset format"``).
        argument: how users name an item (``"data.format"``, ``"--protocol"``), for messages.
    """

    def __init__(self, kind: str, argument: str):
        self.kind = kind
        self.argument = argument
        self._items: dict[str, T] = {}
        #: Incremented on every change, so that views derived from the items (a decoder dispatch
        #: order) know when to rebuild.
        self.version = 0

    def register(self, name: str, item: T) -> T:
        """Adds ``item`` under ``name``; returns ``item``.

        Raises:
            ValueError: ``name`` is not a non-empty string, or is already registered (unregister the
                earlier item first to replace it).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r}); "
                             f"unregister it first to replace it")
        self._items[name] = item
        self.version += 1
        return item

    def unregister(self, name: str) -> T:
        """Removes ``name`` and returns its item (plugins and tests that register temporarily).

        Raises:
            ValueError: ``name`` is not registered.
        """
        item = self.get(name)
        del self._items[name]
        self.version += 1
        return item

    def get(self, name: str, extra: Iterable[str] = ()) -> T:  # type: ignore[override]
        """The item registered as ``name``.

        Args:
            extra: names the caller accepts besides the registered ones (``"auto"``), listed first in
                the message.

        Raises:
            ValueError: ``name`` is not registered, naming :attr:`argument`, the value and every
                accepted name.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(self.unknown(name, extra)) from None

    def unknown(self, name, extra: Iterable[str] = (), argument: str | None = None) -> str:
        """The message for an unknown ``name`` (for callers that check names themselves, e.g. a
        command-line option: ``argument="--protocol"``)."""
        expected = ", ".join((*extra, *self._items))
        return f"{argument or self.argument}: unknown {self.kind} {name!r}; expected one of {expected}"

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"<{self.kind} registry: {', '.join(self._items)}>"
