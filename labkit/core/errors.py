"""One exception type for every input a user can get wrong.

The CLI prints a `LabkitError` as one line (`labkit: error: ...`) and exits with status 2; the Python API lets it
propagate. Every message names the bad value and, where there is a closed set, the allowed values, with the
closest allowed name when there is one ("unknown method 'sl'; did you mean 'sla'? allowed: ...").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["LabkitError", "check_choice", "did_you_mean", "unknown"]


class LabkitError(ValueError):
    """A problem with the user's input or files, explained in one line."""


def did_you_mean(value: object, allowed: Iterable[str]) -> str:
    """"did you mean 'sla'? " when an allowed name is close to `value` (difflib), else ""."""
    names = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.7)  # gpu is not cpu
    if not close:  # a different case is a typo too: EPOCH -> EPOCHS, Sla -> sla
        lower = {n.lower(): n for n in names}
        close = [lower[c] for c in difflib.get_close_matches(str(value).lower(), list(lower), n=1, cutoff=0.7)]
    return f"did you mean {close[0]!r}? " if close else ""


def unknown(field: str, value: object, allowed: Iterable[str], where: str = "") -> str:
    """The one message for a name outside a closed set: "unknown {field} {value!r}{where}; [did you mean ...?]
    allowed: a, b, c"."""
    allowed = [str(a) for a in allowed]
    return f"unknown {field} {value!r}{where}; {did_you_mean(value, allowed)}allowed: {', '.join(allowed)}"


def check_choice(field: str, value: object, allowed: Iterable[str]) -> None:
    """Raise a `LabkitError` naming `field`, the closest allowed name and the allowed values unless `value` is one
    of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise LabkitError(unknown(field, value, allowed))
