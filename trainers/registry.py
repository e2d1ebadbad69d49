"""One name -> implementation table, shared by the trainer's seams.

Env backends (`creditgym.trainers.shards`), rollout strategies (`~.strategies`), task samplers
(`~.samplers`) and loss pieces (`~.losses`) are each chosen by name in the config. Each keeps a
`Registry`: a decorator registers an implementation (a class or a factory) under a name, and
looking up a name that is not there is an error listing the names that are.

Implementations that live in other modules (the remote env backends, the branching strategies, the
curricula, ...) are named as ``builtins``: module paths imported on the registry's first lookup.
They register themselves with the decorator when imported, so the seam module never imports them
at load time (no import cycle, and importing a seam starts nothing).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Implementations of one kind of seam by name.

    ``kind`` names the seam in messages ("rollout strategy"); with ``attr``, the registered
    object gets its name set on that attribute (e.g. a strategy class's ``name``).
    """

    def __init__(self, kind: str, attr: str | None = None, builtins: Sequence[str] = ()):
        self.kind = kind
        self.attr = attr
        self._items: dict[str, T] = {}
        self._pending = list(builtins)

    def _load(self) -> None:
        """Import the ``builtins`` modules once (each registers its implementations)."""
        while self._pending:
            importlib.import_module(self._pending.pop(0))

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or factory under ``name``."""

        def deco(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.attr is not None:
                setattr(item, self.attr, name)
            self._items[name] = item
            return item

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a temporary implementation clean up with it)."""
        self._items.pop(name, None)

    def available(self) -> list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name lists the known ones."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {self.available()}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items
