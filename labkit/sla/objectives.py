"""The five training objectives of the paper, as functions of head logits (`labkit.sla.methods` ties each to a
method).

N classes, M transformations, B samples. `out` is the model's dict of head logits on the batch the method trains
on: (B, ·) for `baseline`, (B*M, ·) sample-major for the others.

| method   | heads            | loss per sample                                                      |
|----------|------------------|----------------------------------------------------------------------|
| baseline | class u          | CE(σ(f(x);u), y)                                                     |
| da       | class u          | 1/M Σ_j CE(σ(z̃_j;u), y)                                             |
| mt       | class u, trans v | 1/M Σ_j [CE(σ(z̃_j;u), y) + CE(σ(z̃_j;v), j)]                         |
| sla      | joint w          | 1/M Σ_j CE(ρ(z̃_j;w), (y, j))                                         |
| sla+sd   | joint w, class u | L_SLA + T²·KL(P_agg(·|x)/T ‖ σ(f(x);u)/T) + β·CE(σ(f(x);u), y)        |

With `summed=True` (the config's `large_loss`, the official `--with-large-loss`) the joint term of sla and sla+sd is
Σ_j instead of 1/M Σ_j: M times larger. The official code does exactly that (its mean cross-entropy over the B·M
rows times M) and leaves sla+sd's distillation and class terms alone; its README reports it helps on ImageNet-scale
data (ImageNet, iNaturalist), and its CIFAR recipe does not use it.

For sla+sd the student reads z̃_0 = f(x), the identity view already in the expanded batch, so distillation costs
no extra forward; the teacher (the aggregate) is detached.

Every cross-entropy against class labels (the class head's y, the joint head's (y, j)) goes through `criterion`,
`criterion(logits, labels, M)` with M the labels per class (1 for class labels, M for joint labels): None is the
plain CE above; `labkit.sla.longtail.ClassCrossEntropy` adds class-balanced weights and LDAM margins, the joint
label (i, j) taking class i's. MT's transformation term and sla+sd's distillation term have no class label and stay
as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from .joint import aggregate, joint_labels, view_labels

__all__ = ["baseline_loss", "da_loss", "mt_loss", "sla_loss",
           "distillation_loss", "sla_sd_loss", "Criterion", "class_ce"]

Criterion = Callable[[Tensor, Tensor, int], Tensor]  # (logits (R, N·M), labels (R,), labels per class M) -> scalar


def class_ce(logits: Tensor, labels: Tensor, M: int = 1, criterion: Criterion | None = None) -> Tensor:
    """The cross-entropy against class (M=1) or joint labels: plain, or the run's `criterion`."""
    return F.cross_entropy(logits, labels) if criterion is None else criterion(logits, labels, M)


def baseline_loss(out: dict[str, Tensor], y: Tensor, M: int = 1, criterion: Criterion | None = None) -> Tensor:
    """CE on the original images; M is not used (the baseline trains on x alone)."""
    return class_ce(out["class"], y, 1, criterion)


def da_loss(out: dict[str, Tensor], y: Tensor, M: int, criterion: Criterion | None = None) -> Tensor:
    """The class head must give y on every view: forced invariance."""
    return class_ce(out["class"], y.repeat_interleave(M), 1, criterion)


def mt_loss(out: dict[str, Tensor], y: Tensor, M: int, criterion: Criterion | None = None) -> Tensor:
    return da_loss(out, y, M, criterion) + F.cross_entropy(out["transform"], view_labels(len(y), M, y.device))


def sla_loss(out: dict[str, Tensor], y: Tensor, M: int, summed: bool = False,
             criterion: Criterion | None = None) -> Tensor:
    """1/M Σ_j CE(ρ(z̃_j;w), (y, j)) averaged over the batch; with `summed`, Σ_j (M times as large)."""
    loss = class_ce(out["joint"], joint_labels(y, M), M, criterion)
    return loss * M if summed else loss


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), mean over samples; the teacher gets no gradient."""
    teacher = F.softmax(teacher_logits.detach().float() / T, dim=-1)
    student = F.log_softmax(student_logits.float() / T, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean") * T * T


def sla_sd_loss(out: dict[str, Tensor], y: Tensor, M: int, T: float, beta: float, summed: bool = False,
                criterion: Criterion | None = None) -> Tensor:
    student = out["class"][::M]  # the identity view's rows: (B*M, N) -> (B, N)
    teacher = aggregate(out["joint"], M)
    return (sla_loss(out, y, M, summed, criterion) + distillation_loss(student, teacher, T)
            + beta * class_ce(student, y, 1, criterion))
