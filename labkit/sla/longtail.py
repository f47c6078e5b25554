"""Long-tailed classes: the losses that re-balance them and the groups their accuracy is read in.

n_i is the number of training images of class i, N the classes, M the transformations.

| piece                  | formula                                                          | source             |
|------------------------|------------------------------------------------------------------|--------------------|
| effective number       | E_i = (1 − β^n_i) / (1 − β)                                      | Cui et al., 2019   |
| class-balanced weight  | w_i = N · (1/E_i) / Σ_k (1/E_k)                                  | Cui et al., 2019   |
| LDAM margin            | Δ_i = C / n_i^(1/4), C such that max_i Δ_i = m                   | Cao et al., 2019   |
| one row's loss         | ℓ = −log softmax(z − s·Δ_c·e_t)_t, t the label, c its class      | Cao et al., 2019   |
| a batch's loss         | Σ_b w_(c_b) ℓ_b / Σ_b w_(c_b)                                    | F.cross_entropy(weight) |

β = 0 gives E_i = 1: every class weighs the same; as β → 1, E_i → n_i: weights by inverse class size. A batch's
weighted loss is normalised by its own weights, as `F.cross_entropy(weight=...)` and the LDAM-DRW code do.

`ClassCrossEntropy` is that cross-entropy for any head trained on class labels: the class head's labels y, or the
joint head's labels t = y·M + j, whose class is c = t // M, so the joint label (i, j) carries class i's weight and
margin. The objectives (`labkit.sla.objectives`) take it as their `criterion`; deferred re-weighting (DRW) is the
same loss with the weights switched on at a step, which `labkit.training.resolve` binds.

LDAM's logits are cosines scaled by s (`labkit.sla.models.CosineLinear`, the LDAM-DRW code's `NormedLinear` times
s): the margin is subtracted from the cosine of the true label, s·(cos − Δ), which is z − s·Δ here.

Shot groups (Liu et al., 2019): a class with more than `many` training images is many-shot, one with fewer than
`few` is few-shot, the rest medium-shot; a group's accuracy is the mean of its classes' accuracies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import LabkitError

__all__ = ["effective_number", "class_balanced_weights", "ldam_margins", "ClassCrossEntropy", "SHOTS",
           "shot_groups", "group_accuracy"]

SHOTS = ("many", "medium", "few")


def _counts(counts: Sequence[int] | Tensor, what: str) -> Tensor:
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.dim() != 1 or len(n) == 0 or bool((n < 1).any()):
        raise LabkitError(f"{what} needs at least one training image of every class, got counts {n.long().tolist()}")
    return n


def effective_number(counts: Sequence[int] | Tensor, beta: float) -> Tensor:
    """(N,) float64: E_i = (1 − β^n_i) / (1 − β), the expected number of distinct samples among n_i draws."""
    n = _counts(counts, "the effective number")
    return (1.0 - beta ** n) / (1.0 - beta)


def class_balanced_weights(counts: Sequence[int] | Tensor, beta: float) -> Tensor:
    """(N,) float64: w_i ∝ 1 / E_i, normalised to sum to N (the LDAM-DRW code's per_cls_weights)."""
    inverse = 1.0 / effective_number(counts, beta)
    return inverse / inverse.sum() * len(inverse)


def ldam_margins(counts: Sequence[int] | Tensor, max_margin: float) -> Tensor:
    """(N,) float64: Δ_i ∝ n_i^(−1/4), the rarest class's margin `max_margin`."""
    m = _counts(counts, "LDAM") ** -0.25
    return m * (max_margin / m.max())


@dataclass(frozen=True)
class ClassCrossEntropy:
    """The cross-entropy against class (M=1) or joint (M>1) labels with per-class weights and margins.

    weights: (N,) per class, or None (every row weighs the same); margins: (N,) per class in cosine units, or None;
    scale: the s the margins are multiplied by (the cosine heads' scale). With neither weights nor margins it is
    exactly `F.cross_entropy(logits, labels)`. Tensors are used on the logits' device in float32.
    """

    weights: Tensor | None = None
    margins: Tensor | None = None
    scale: float = 1.0

    def to(self, device: torch.device | str) -> ClassCrossEntropy:
        """The same loss with its weights and margins on `device` (once, not every step)."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, torch.float32)

        return ClassCrossEntropy(move(self.weights), move(self.margins), self.scale)

    def __call__(self, logits: Tensor, labels: Tensor, M: int = 1) -> Tensor:
        """logits (R, N·M), labels (R,) in [0, N·M) -> the weighted mean loss (a scalar)."""
        if self.margins is not None:
            # the true label's logit lowered by s·Δ of its class: (R, N·M) minus a one-hot (R, N·M)
            shift = self.scale * self.margins.to(logits.device, torch.float32)[labels // M]  # (R,)
            logits = logits.float() - F.one_hot(labels, logits.shape[1]) * shift[:, None]
        if self.weights is None:
            return F.cross_entropy(logits, labels)
        per_label = self.weights.to(logits.device, torch.float32).repeat_interleave(M)  # (N,) -> (N·M,): (i, j) ~ i
        return F.cross_entropy(logits.float(), labels, weight=per_label)


def shot_groups(counts: Sequence[int], many: int, few: int) -> dict[str, list[int]]:
    """Class indices by training images: many-shot (n > many), medium-shot, few-shot (n < few)."""
    groups: dict[str, list[int]] = {shot: [] for shot in SHOTS}
    for i, n in enumerate(counts):
        groups["many" if n > many else "few" if n < few else "medium"].append(i)
    return groups


def group_accuracy(per_class: Sequence[float | None], groups: dict[str, list[int]]) -> dict[str, float | None]:
    """Each group's accuracy: the mean over its classes with test images; None for an empty group."""
    out: dict[str, float | None] = {}
    for shot, classes in groups.items():
        scores = [per_class[i] for i in classes if per_class[i] is not None]
        out[shot] = sum(scores) / len(scores) if scores else None
    return out
