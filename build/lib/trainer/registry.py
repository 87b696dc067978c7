"""Registries of names: the whitelist of everything a config may name.

A config (or a checkpoint) names a schedule, optimizer, model or dataset by a
plain string; the registry maps it to an object the project (or the user's own
module) registered. A name that is not registered is refused with the list of
known names, so nothing read from a file ever picks arbitrary code to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trainer.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with a decorator to fill it.

    >>> COLORS = Registry("color")
    >>> @COLORS.register("red")
    ... def red(): return "#f00"
    >>> COLORS.get("red")()
    '#f00'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` and returns it unchanged."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as ``name``; a UserError listing the known names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "none yet (register one in a module of `imports`)"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
