"""The methods of the paper, each one object in one registry: its heads, its loss, its inference modes, its colour.

Inference modes are `labkit.sla.modes`' registry: `single` (one forward of x), `aggregated` (M forwards, one per
view, averaged logits) and `distilled` (one forward through the N-way head that sla+sd trains to mimic the
aggregate).

A loss is `loss(out, y, M, **options)`; `options` names the config fields it reads (sla+sd: T, beta, large_loss),
and `Method.bind(values)` fixes them once, when a run is resolved, giving the `loss(out, y, M)` that training calls.
A method whose loss also takes `criterion=` (`takes_criterion`; every method here) sends each of its
cross-entropies against class or joint labels through it, so the long-tail losses of `labkit.sla.longtail`
(class-balanced weights, LDAM margins) combine with it: `Method.bind(values, criterion)`.
Add a method in one place::

    methods.register(Method("sla-sum", heads=("joint",), expands=True, modes=("single", "aggregated"),
                            loss=lambda out, y, M: M * objectives.sla_loss(out, y, M), color="#E69F00"))

and it trains, evaluates and plots everywhere: the CLI's `--method`, the notebooks, the explorer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.errors import LabkitError, check_choice
from ..core.registry import Registry
from . import modes as modes_
from . import objectives
from .objectives import Criterion

__all__ = ["Method", "LossFn", "HEADS", "METHODS", "get", "available", "register"]

HEADS = ("class", "transform", "joint")  # N-way u, M-way v, N·M-way w (see labkit.sla.models.LabkitNet)
LossFn = Callable[[dict[str, Tensor], Tensor, int], Tensor]  # (head logits, y (B,), M) -> scalar


@dataclass(frozen=True)
class Method:
    """What a method trains and how it is scored.

    heads: the model's output heads; expands: trains on the M views (B*M rows) rather than on x alone;
    modes: its inference modes (`labkit.sla.modes`), the first one the default; loss(out, y, M, **options) ->
    scalar; options: the config fields the loss reads, as keywords; color: its colour in every figure (Okabe-Ito,
    colour-blind safe); takes_criterion: the loss takes `criterion=` (`labkit.sla.objectives.Criterion`) for its
    cross-entropies against class labels.
    """

    name: str
    heads: tuple[str, ...]
    expands: bool
    modes: tuple[str, ...]
    loss: Callable[..., Tensor]
    color: str = "#000000"
    options: tuple[str, ...] = ()
    takes_criterion: bool = False

    def __post_init__(self) -> None:
        for head in self.heads:
            check_choice("head", head, HEADS)
        for mode in map(modes_.get, self.modes):
            if mode.expands and not self.expands:
                raise LabkitError(f"method {self.name!r}: the {mode.name} mode needs a method trained on the M views")
            if not set(mode.needs) <= set(self.heads):
                raise LabkitError(f"method {self.name!r}: the {mode.name} mode needs the heads "
                                  f"{', '.join(mode.needs)}")

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise LabkitError(f"method {self.name!r} has no inference mode {mode!r}; allowed: {', '.join(self.modes)}")

    def bind(self, values: Mapping[str, Any], criterion: Criterion | None = None) -> LossFn:
        """The loss with its options fixed from `values` (a run's config as a dict), and the cross-entropy against
        class labels `criterion` (None: the plain one): `loss(out, y, M)`."""
        missing = [k for k in self.options if k not in values]
        if missing:
            raise LabkitError(f"method {self.name!r} needs the option(s) {', '.join(missing)}")
        bound = {k: values[k] for k in self.options}
        if criterion is not None:
            if not self.takes_criterion:
                raise LabkitError(f"method {self.name!r} has a loss without class weights or margins (it takes no "
                                  f"criterion); train it without class_balanced and ldam")
            bound["criterion"] = criterion
        return functools.partial(self.loss, **bound) if bound else self.loss


def _sla(out: dict[str, Tensor], y: Tensor, M: int, large_loss: bool, criterion: Criterion | None = None) -> Tensor:
    return objectives.sla_loss(out, y, M, summed=large_loss, criterion=criterion)


def _sla_sd(out: dict[str, Tensor], y: Tensor, M: int, T: float, beta: float, large_loss: bool,
            criterion: Criterion | None = None) -> Tensor:
    return objectives.sla_sd_loss(out, y, M, T, beta, summed=large_loss, criterion=criterion)


# Okabe & Ito's colour-blind-safe palette; vermillion (#D55E00) is kept for the true label
# (labkit.figures.theme.TRUE_COLOR)
METHODS: Registry[Method] = Registry("method", (
    Method("baseline", ("class",), expands=False, modes=("single",), loss=objectives.baseline_loss,
           color="#7F7F7F", takes_criterion=True),
    Method("da", ("class",), expands=True, modes=("single", "aggregated"), loss=objectives.da_loss, color="#56B4E9",
           takes_criterion=True),
    Method("mt", ("class", "transform"), expands=True, modes=("single", "aggregated"), loss=objectives.mt_loss,
           color="#0072B2", takes_criterion=True),
    Method("sla", ("joint",), expands=True, modes=("single", "aggregated"), loss=_sla, color="#009E73",
           options=("large_loss",), takes_criterion=True),
    Method("sla+sd", ("joint", "class"), expands=True, modes=("single", "aggregated", "distilled"), loss=_sla_sd,
           color="#CC79A7", options=("T", "beta", "large_loss"), takes_criterion=True),
))


available = METHODS.available
get = METHODS.lookup  # the registered method called `name`, or the one-line error listing the allowed ones
register = METHODS.add  # make a method available by name to the config, the CLI, the notebooks and the figures
