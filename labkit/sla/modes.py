"""The inference modes, each one object in one registry: how it reads a prediction out of the heads, what it
costs, and how figures draw it.

| mode         | paper  | reads                                                           | forwards per image |
|--------------|--------|-----------------------------------------------------------------|--------------------|
| `single`     | SLA+SI | the identity view: the joint head's identity column, else the class head | 1         |
| `aggregated` | SLA+AG | the M views: the mean of the conditional logits (joint head), else of the class logits | M |
| `distilled`  | SLA+SD | the identity view through the N-way head that sla+sd distils    | 1                  |

A method lists the modes it supports (`labkit.sla.methods`); every table, metric and figure takes the modes from
here, in this order. Add one with `register(Mode(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..core.registry import Registry
from .joint import aggregate, identity_logits

__all__ = ["Mode", "MODES", "available", "get", "register", "mode_logits"]

Readout = Callable[[dict[str, Tensor], int], Tensor]  # (head logits, M) -> (B, N) class logits


@dataclass(frozen=True)
class Mode:
    """One way to read a class prediction out of a trained model.

    expands: it reads the M views of each image (M forwards), else the image alone (1 forward); needs: the heads
    the model must have; readout(out, M): (B, N) logits from the head logits `out` ((B*M, ·) sample-major when
    `expands`, else (B, ·)); color, symbol, pattern: how figures draw it (Okabe-Ito colours).
    """

    name: str
    label: str
    expands: bool
    readout: Readout
    needs: tuple[str, ...] = ()
    about: str = ""
    color: str = "#000000"
    symbol: str = "circle"
    pattern: str = ""

    def forwards(self, M: int) -> int:
        """Backbone forward passes per test image."""
        return M if self.expands else 1


def _single(out: dict[str, Tensor], M: int) -> Tensor:
    return identity_logits(out["joint"], M) if "joint" in out else out["class"]


def _aggregated(out: dict[str, Tensor], M: int) -> Tensor:
    if "joint" in out:
        return aggregate(out["joint"], M)
    return out["class"].unflatten(0, (-1, M)).mean(dim=1)  # test-time augmentation: (B*M, N) -> (B, M, N) -> (B, N)


def _distilled(out: dict[str, Tensor], M: int) -> Tensor:
    return out["class"]


MODES: Registry[Mode] = Registry("inference mode", (
    Mode("single", "SLA+SI", expands=False, readout=_single, about="one forward of the image",
         color="#0072B2", symbol="circle", pattern=""),
    Mode("aggregated", "SLA+AG", expands=True, readout=_aggregated, about="the mean over its M views",
         color="#E69F00", symbol="square", pattern="/"),
    Mode("distilled", "SLA+SD", expands=False, readout=_distilled, needs=("joint", "class"),
         about="the N-way head distilled from the aggregate", color="#009E73", symbol="diamond", pattern="."),
))

available = MODES.available
get = MODES.lookup  # the registered mode called `name`, or the one-line error listing the allowed ones
register = MODES.add


def mode_logits(out: dict[str, Tensor], M: int, mode: str) -> Tensor:
    """(B, N) logits of inference `mode` from the model's head logits `out`: on the M views of the batch
    ((B*M, ·) sample-major) for an expanding mode, on the batch itself ((B, ·)) otherwise."""
    return get(mode).readout(out, M)
