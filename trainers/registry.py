"""One name -> implementation table, shared by the trainer's seams.

Env backends (`creditgym.trainers.shards`), rollout strategies (`~.strategies`), task samplers
(`~.samplers`) and loss pieces (`~.losses`) are each chosen by name in the config. Each keeps a
`Registry`: a decorator registers an implementation (a class or a factory) under a name, and
looking up a name that is not there is an error listing the names that are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Implementations of one kind of seam by name.

    ``kind`` names the seam in messages ("rollout strategy"); with ``attr``, the registered
    object gets its name set on that attribute (e.g. a strategy class's ``name``).
    """

    def __init__(self, kind: str, attr: str | None = None):
        self.kind = kind
        self.attr = attr
        self._items: dict[str, T] = {}

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
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name lists the known ones."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {self.available()}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items
