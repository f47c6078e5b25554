"""Predictions of a trained model in an inference mode, and their scores on a split.

`predict` runs the model once on the batch, or once on its M views for a mode that expands (`labkit.sla.modes`);
`evaluate` scores every mode on a whole split: accuracy, confusion counts, class probabilities and wall time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.device import autocast, eval_mode, synchronize
from . import modes as modes_
from .transforms import TransformSet

__all__ = ["predict", "evaluate", "ModeResult", "confusion_matrix", "pair_confusions", "expected_pair_confusions",
           "per_class_accuracy", "balanced_accuracy"]


def predict(model: nn.Module, x: Tensor, tset: TransformSet, mode: str) -> Tensor:
    """(B, C, H, W) -> (B, N) logits of inference `mode` (single, aggregated or distilled)."""
    expands = modes_.get(mode).expands
    return modes_.mode_logits(model(tset.expand(x) if expands else x), tset.M, mode)


def confusion_matrix(y: Tensor, pred: Tensor, N: int) -> Tensor:
    """(N, N) counts, rows the true class."""
    return torch.bincount(y * N + pred, minlength=N * N).view(N, N)


def per_class_accuracy(confusion: Tensor | list) -> list[float | None]:
    """Each class's accuracy (its recall): the diagonal over the row sums of an (N, N) confusion matrix; None for
    a class without test images."""
    c = torch.as_tensor(confusion, dtype=torch.float64)
    return [float(c[i, i] / c[i].sum()) if c[i].sum() > 0 else None for i in range(len(c))]


def balanced_accuracy(confusion: Tensor | list) -> float:
    """The mean of the per-class accuracies (classes with test images): what accuracy would be on a test split
    with the same number of images of every class."""
    scores = [a for a in per_class_accuracy(confusion) if a is not None]
    return sum(scores) / max(len(scores), 1)


def pair_confusions(confusion: Tensor | list, a: int, b: int) -> int:
    """How many test images of class a were called b, plus b called a (the 6↔9 count on digits)."""
    c = torch.as_tensor(confusion)
    return int(c[a, b] + c[b, a])


def expected_pair_confusions(probabilities: Tensor, y: Tensor, a: int, b: int) -> float:
    """Σ P(b | x) over test images of class a plus Σ P(a | x) over those of class b: the confusion count a model
    is expected to make, which moves smoothly where the hard count sits at a few integers."""
    p, y = probabilities.float(), y.cpu()
    return float(p[y == a, b].sum() + p[y == b, a].sum())


@dataclass
class ModeResult:
    """One inference mode on one split: accuracy in [0, 1], confusion counts, (n, N) class probabilities,
    wall time in s."""

    accuracy: float
    confusion: Tensor
    probabilities: Tensor
    seconds: float

    @property
    def predictions(self) -> Tensor:
        return self.probabilities.argmax(dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, tset: TransformSet, x: Tensor, y: Tensor, N: int, modes: Sequence[str],
             batch_size: int = 512, precision: str = "auto") -> dict[str, ModeResult]:
    """Run every inference mode in `modes` over (x, y), already on the model's device."""
    with eval_mode(model):
        return {mode: _evaluate_mode(model, tset, x, y, N, mode, batch_size, precision) for mode in modes}


def _evaluate_mode(model, tset, x, y, N, mode, batch_size, precision) -> ModeResult:
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    with autocast(device, precision):
        logits = torch.cat([predict(model, x[i:i + batch_size], tset, mode) for i in range(0, len(x), batch_size)])
    synchronize(device)
    seconds = time.perf_counter() - start
    probs = logits.float().softmax(dim=1).cpu()
    confusion = confusion_matrix(y.cpu(), probs.argmax(dim=1), N)
    accuracy = float(confusion.diagonal().sum()) / max(len(y), 1)
    return ModeResult(accuracy, confusion, probs, seconds)
