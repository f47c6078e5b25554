"""A named registry: the one shape behind labkit's methods, datasets and transformation sets.

    METHODS = Registry("method", [sla, mt, ...])      # keyed by each item's .name
    METHODS.lookup("sla")                            # or the one-line error listing the allowed names
    METHODS.add(Method("sla-sum", ...))              # now a choice of the config, the CLI and the notebooks
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from .errors import LabkitError, check_choice

__all__ = ["Registry"]


class _Named(Protocol):
    name: str


T = TypeVar("T", bound=_Named)


class Registry(dict[str, T], Generic[T]):
    """A dict of items by name, whose lookups and additions explain themselves in one line."""

    def __init__(self, kind: str, items: Iterable[T] = ()) -> None:
        super().__init__((item.name, item) for item in items)
        self.kind = kind

    def available(self) -> list[str]:
        return list(self)

    def lookup(self, name: str) -> T:
        """The item called `name`; an unknown name gets the one-line error listing the allowed ones."""
        check_choice(self.kind, name, self)
        return self[name]

    def add(self, item: T, overwrite: bool = False) -> T:
        if item.name in self and not overwrite:
            raise LabkitError(f"{self.kind} {item.name!r} is already registered; pass overwrite=True to replace it")
        self[item.name] = item
        return item
