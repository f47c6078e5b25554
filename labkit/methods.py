"""The methods of the paper: which heads each trains, whether it sees the M views, which inference modes it has.

Inference modes: `single` (one forward of x), `aggregated` (M forwards, one per view, averaged logits) and
`distilled` (one forward through the N-way head that sla+sd trains to mimic the aggregate).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LabkitError, check_choice

__all__ = ["Method", "METHODS", "get_method"]


@dataclass(frozen=True)
class Method:
    """What a method trains (its heads, whether it sees the M views) and which inference modes it offers."""

    name: str
    heads: tuple[str, ...]
    expands: bool
    modes: tuple[str, ...]

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise LabkitError(f"method {self.name!r} has no inference mode {mode!r}; allowed: {', '.join(self.modes)}")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("baseline", ("class",), expands=False, modes=("single",)),
    Method("da", ("class",), expands=True, modes=("single", "aggregated")),
    Method("mt", ("class", "transform"), expands=True, modes=("single", "aggregated")),
    Method("sla", ("joint",), expands=True, modes=("single", "aggregated")),
    Method("sla+sd", ("joint", "class"), expands=True, modes=("single", "aggregated", "distilled")),
)}


def get_method(name: str) -> Method:
    check_choice("method", name, METHODS)
    return METHODS[name]
