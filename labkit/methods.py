"""The methods of the paper, each one object in one registry: its heads, its loss, its inference modes, its colour.

Inference modes: `single` (one forward of x), `aggregated` (M forwards, one per view, averaged logits) and
`distilled` (one forward through the N-way head that sla+sd trains to mimic the aggregate).

Add a method in one place::

    def summed_sla(out, y, M, options):             # Σ_j instead of 1/M Σ_j (the built-in: large_loss=True)
        return M * objectives.sla_loss(out, y, M)

    methods.register(Method("sla-sum", heads=("joint",), expands=True, modes=("single", "aggregated"),
                            loss=summed_sla, color="#E69F00"))

and it trains, evaluates and plots everywhere: the CLI's `--method`, the notebooks, the explorer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from . import objectives
from .errors import LabkitError, check_choice
from .registry import Registry

if TYPE_CHECKING:  # the config names methods; methods only read a few options from it
    from .config import TrainConfig

__all__ = ["Method", "LossFn", "HEADS", "MODES", "METHODS", "get", "available", "register"]

HEADS = ("class", "transform", "joint")  # N-way u, M-way v, N·M-way w (see labkit.models.LabkitNet)
MODES = ("single", "aggregated", "distilled")
LossFn = Callable[[dict[str, Tensor], Tensor, int, "TrainConfig"], Tensor]  # (head logits, y (B,), M, options)


@dataclass(frozen=True)
class Method:
    """What a method trains and how it is scored.

    heads: the model's output heads; expands: trains on the M views (B*M rows) rather than on x alone;
    modes: its inference modes, the first one the default; loss(out, y, M, options) -> scalar, where `options`
    carries T, beta and large_loss (a `TrainConfig`); color: its colour in every figure (Okabe-Ito, colour-blind safe).
    """

    name: str
    heads: tuple[str, ...]
    expands: bool
    modes: tuple[str, ...]
    loss: LossFn
    color: str = "#000000"

    def __post_init__(self) -> None:
        for head in self.heads:
            check_choice("head", head, HEADS)
        for mode in self.modes:
            check_choice("inference mode", mode, MODES)
        if "aggregated" in self.modes and not self.expands:
            raise LabkitError(f"method {self.name!r}: the aggregated mode needs a method trained on the M views")
        if "distilled" in self.modes and not {"joint", "class"} <= set(self.heads):
            raise LabkitError(f"method {self.name!r}: the distilled mode needs a joint and a class head")

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise LabkitError(f"method {self.name!r} has no inference mode {mode!r}; allowed: {', '.join(self.modes)}")


def _baseline(out: dict[str, Tensor], y: Tensor, M: int, options: TrainConfig) -> Tensor:
    return objectives.baseline_loss(out, y)


def _da(out: dict[str, Tensor], y: Tensor, M: int, options: TrainConfig) -> Tensor:
    return objectives.da_loss(out, y, M)


def _mt(out: dict[str, Tensor], y: Tensor, M: int, options: TrainConfig) -> Tensor:
    return objectives.mt_loss(out, y, M)


def _sla(out: dict[str, Tensor], y: Tensor, M: int, options: TrainConfig) -> Tensor:
    return objectives.sla_loss(out, y, M, summed=options.large_loss)


def _sla_sd(out: dict[str, Tensor], y: Tensor, M: int, options: TrainConfig) -> Tensor:
    return objectives.sla_sd_loss(out, y, M, options.T, options.beta, summed=options.large_loss)


# Okabe & Ito's colour-blind-safe palette; vermillion (#D55E00) is kept for the true label (labkit.viz.TRUE_COLOR)
METHODS: Registry[Method] = Registry("method", (
    Method("baseline", ("class",), expands=False, modes=("single",), loss=_baseline, color="#7F7F7F"),
    Method("da", ("class",), expands=True, modes=("single", "aggregated"), loss=_da, color="#56B4E9"),
    Method("mt", ("class", "transform"), expands=True, modes=("single", "aggregated"), loss=_mt, color="#0072B2"),
    Method("sla", ("joint",), expands=True, modes=("single", "aggregated"), loss=_sla, color="#009E73"),
    Method("sla+sd", ("joint", "class"), expands=True, modes=("single", "aggregated", "distilled"), loss=_sla_sd,
           color="#CC79A7"),
))


available = METHODS.available
get = METHODS.lookup  # the registered method called `name`, or the one-line error listing the allowed ones
register = METHODS.add  # make a method available by name to the config, the CLI, the notebooks and the figures
