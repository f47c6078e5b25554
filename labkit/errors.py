"""One exception type for every input a user can get wrong.

The CLI prints a `LabkitError` as one line (`labkit: error: ...`) and exits with status 2; the Python API lets it
propagate. Every message names the bad value and, where there is a closed set, the allowed values.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LabkitError", "check_choice"]


class LabkitError(ValueError):
    """A problem with the user's input or files, explained in one line."""


def check_choice(field: str, value: object, allowed: Iterable[str]) -> None:
    """Raise a `LabkitError` naming `field` and the allowed values unless `value` is one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise LabkitError(f"unknown {field} {value!r}; allowed: {', '.join(allowed)}")
