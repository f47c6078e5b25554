"""Joint labels, the N×M joint probabilities, aggregation, and the three inference modes.

Layout (the official SLA code's, kept everywhere): an expanded batch is sample-major, row b*M + j is view j of
sample b, and the joint head's column i*M + j is the label (class i, transformation j).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .device import autocast, eval_mode, synchronize
from .transforms import TransformSet

if TYPE_CHECKING:  # methods import their losses, which import this module; here a method is only read
    from .methods import Method

__all__ = ["joint_labels", "view_labels", "joint_probabilities", "conditional_logits", "conditional_probabilities",
           "aggregate", "identity_logits", "mode_logits", "predict", "evaluate", "confusion_matrix", "pair_confusions",
           "expected_pair_confusions",
           "ModeResult"]


def joint_labels(y: Tensor, M: int) -> Tensor:
    """(B,) class labels -> (B*M,) joint labels y*M + j, sample-major."""
    return (y[:, None] * M + torch.arange(M, device=y.device)).reshape(-1)


def view_labels(B: int, M: int, device: torch.device | str = "cpu") -> Tensor:
    """(B*M,) transformation labels 0..M-1 repeated for each sample."""
    return torch.arange(M, device=device).repeat(B)


def joint_probabilities(joint_logits: Tensor, M: int) -> Tensor:
    """(..., N*M) joint logits -> P(i, j | x̃) as (..., N, M)."""
    probs = joint_logits.float().softmax(dim=-1)
    return probs.unflatten(-1, (probs.shape[-1] // M, M))


def conditional_logits(joint_logits: Tensor, M: int) -> Tensor:
    """(B*M, N*M) sample-major -> (B, M, N): for view j, the logits w_ij·z̃_j of the labels (i, j)."""
    BM, NM = joint_logits.shape
    grid = joint_logits.view(BM // M, M, NM // M, M)  # (B, view j, class i, label transform j')
    return grid.diagonal(dim1=1, dim2=3).transpose(1, 2)  # keep j' == j: (B, N, M) -> (B, M, N)


def conditional_probabilities(joint_logits: Tensor, M: int) -> Tensor:
    """P(i | x̃_j, j) as (B, M, N): a softmax over classes within view j's own column."""
    return conditional_logits(joint_logits, M).float().softmax(dim=-1)


def aggregate(joint_logits: Tensor, M: int) -> Tensor:
    """SLA+AG: s_i = 1/M Σ_j w_ij·z̃_j. (B*M, N*M) sample-major -> (B, N) aggregated logits."""
    return conditional_logits(joint_logits, M).mean(dim=1)


def identity_logits(joint_logits: Tensor, M: int) -> Tensor:
    """SLA+SI: the identity column of an unexpanded batch. (B, N*M) -> (B, N)."""
    return joint_logits.unflatten(-1, (joint_logits.shape[-1] // M, M))[..., 0]


def mode_logits(out: dict[str, Tensor], method: Method, M: int, mode: str) -> Tensor:
    """(B, N) logits of inference `mode` from the model's head logits `out`: on the M views of the batch
    ((B*M, ·) sample-major) for `aggregated`, on the batch itself ((B, ·)) for `single` and `distilled`."""
    method.check_mode(mode)
    joint = "joint" in method.heads
    if mode == "aggregated":
        if joint:
            return aggregate(out["joint"], M)
        return out["class"].unflatten(0, (-1, M)).mean(dim=1)  # test-time augmentation: (B, M, N) -> (B, N)
    if mode == "single" and joint:
        return identity_logits(out["joint"], M)
    return out["class"]


def predict(model: nn.Module, x: Tensor, method: Method, tset: TransformSet, mode: str) -> Tensor:
    """(B, C, H, W) -> (B, N) logits of `method` in inference `mode` (single, aggregated or distilled)."""
    method.check_mode(mode)
    return mode_logits(model(tset.expand(x) if mode == "aggregated" else x), method, tset.M, mode)


def confusion_matrix(y: Tensor, pred: Tensor, N: int) -> Tensor:
    """(N, N) counts, rows the true class."""
    return torch.bincount(y * N + pred, minlength=N * N).view(N, N)


def pair_confusions(confusion: Tensor | list, a: int = 6, b: int = 9) -> int:
    """How many test images of class a were called b, plus b called a (the 6↔9 count on digits)."""
    c = torch.as_tensor(confusion)
    return int(c[a, b] + c[b, a])


def expected_pair_confusions(probabilities: Tensor, y: Tensor, a: int = 6, b: int = 9) -> float:
    """Σ P(b | x) over test images of class a plus Σ P(a | x) over those of class b: the 6↔9 confusion count a
    model is expected to make, which moves smoothly where the hard count sits at a few integers."""
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
def evaluate(model: nn.Module, method: Method, tset: TransformSet, x: Tensor, y: Tensor, N: int,
             modes: tuple[str, ...] | None = None, batch_size: int = 512, precision: str = "auto"
             ) -> dict[str, ModeResult]:
    """Run every inference mode of `method` over (x, y), already on the model's device."""
    with eval_mode(model):
        return {mode: _evaluate_mode(model, method, tset, x, y, N, mode, batch_size, precision)
                for mode in modes or method.modes}


def _evaluate_mode(model, method, tset, x, y, N, mode, batch_size, precision) -> ModeResult:
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    with autocast(device, precision):
        logits = torch.cat([predict(model, x[i:i + batch_size], method, tset, mode)
                            for i in range(0, len(x), batch_size)])
    synchronize(device)
    seconds = time.perf_counter() - start
    probs = logits.float().softmax(dim=1).cpu()
    confusion = confusion_matrix(y.cpu(), probs.argmax(dim=1), N)
    accuracy = float(confusion.diagonal().sum()) / max(len(y), 1)
    return ModeResult(accuracy, confusion, probs, seconds)
