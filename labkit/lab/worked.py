"""Worked solutions of the exercises, written as a learner would (torch alone), for the solutions handout.

`labkit.lab.handout` puts `WORKED[name]` in place of each hidden solution cell of a notebook before it runs, so the
solutions handout shows this code, executed, with its check passing under it. Each one is checked against labkit
in tests/test_handout.py. An exercise without an entry here is shown with labkit's own source instead
(`worked_source`).
"""

from __future__ import annotations

import inspect

from . import exercises

__all__ = ["WORKED", "worked_source"]

WORKED: dict[str, str] = {
    "joint_labels": '''\
import torch


def joint_labels(y, M):
    """(B,) class labels -> (B*M,) joint labels, sample-major: row b*M + j gets label y[b]*M + j."""
    views = torch.arange(M, device=y.device)  # (M,): the view index j
    return (y[:, None] * M + views[None, :]).reshape(-1)  # (B, M) -> (B*M,): row b holds y[b]*M + 0..M-1
''',
    "conditional_probabilities": '''\
import torch


def conditional_probabilities(joint_logits, M):
    """(B*M, N*M) joint logits -> (B, M, N): view j's own column j, a softmax over the N classes."""
    B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
    grid = joint_logits.reshape(B, M, N, M)  # (sample b, view j, class i, the label's view j')
    own = torch.stack([grid[:, j, :, j] for j in range(M)], dim=1)  # keep j' == j: (B, M, N)
    return own.float().softmax(dim=-1)  # over the N classes, within each view
''',
    "aggregate": '''\
import torch


def aggregate(joint_logits, M):
    """(B*M, N*M) joint logits -> (B, N): s_i, the mean over views j of view j's logit for the label (i, j)."""
    B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
    grid = joint_logits.reshape(B, M, N, M)  # (sample b, view j, class i, the label's view j')
    own = torch.stack([grid[:, j, :, j] for j in range(M)], dim=1)  # keep j' == j: (B, M, N)
    return own.mean(dim=1)  # average the logits (not the probabilities) over the M views: (B, N)
''',
    "distillation_loss": '''\
import torch.nn.functional as F


def distillation_loss(student_logits, teacher_logits, T):
    """(B, N) student and teacher logits, a temperature T -> a scalar: T² · KL(teacher ‖ student), batch mean."""
    teacher = F.softmax(teacher_logits.float() / T, dim=-1)  # soft labels, (B, N)
    student = F.log_softmax(student_logits.float() / T, dim=-1)  # log-probabilities, stable for large logits
    # KL(teacher ‖ student) summed over the N classes, averaged over the B samples; T² keeps the gradients' size
    return F.kl_div(student, teacher, reduction="batchmean") * T * T
''',
    "rotate_views": '''\
import torch


def rotate_views(x):
    """(B, C, H, W) -> (B*4, C, H, W): row b*4 + k is image b turned k quarter turns counter-clockwise."""
    views = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]  # 4 tensors of (B, C, H, W)
    return torch.stack(views, dim=1).flatten(0, 1)  # (B, 4, C, H, W) -> (B*4, C, H, W), sample-major
''',
    "sla_loss": '''\
import torch
import torch.nn.functional as F


def sla_loss(joint_logits, y, M):
    """(B*M, N*M) joint logits, (B,) labels -> a scalar: the mean cross-entropy over every (sample, view) row."""
    labels = (y[:, None] * M + torch.arange(M, device=y.device)).reshape(-1)  # (B*M,): y*M + j, sample-major
    return F.cross_entropy(joint_logits.float(), labels)  # the mean over all B*M rows
''',
    "mt_loss": '''\
import torch
import torch.nn.functional as F


def mt_loss(class_logits, transform_logits, y, M):
    """(B*M, N) and (B*M, M) logits, (B,) labels -> a scalar: L_DA + the transformation head's cross-entropy."""
    classes = y.repeat_interleave(M)  # (B*M,): the class y on every view of its sample
    views = torch.arange(M, device=y.device).repeat(len(y))  # (B*M,): view j of each sample
    return F.cross_entropy(class_logits.float(), classes) + F.cross_entropy(transform_logits.float(), views)
''',
    "long_tail_profile": '''\
import math

import torch


def long_tail_profile(n_max, R, N):
    """n_max images for class 0, an imbalance ratio R, N classes -> (N,) integer counts n_i."""
    # class i keeps n_max * R^(-i/(N-1)): class 0 all n_max, class N-1 n_max / R; the floor, as counts are whole
    return torch.tensor([math.floor(n_max * R ** (-i / (N - 1))) for i in range(N)])
''',
    "class_balanced_weights": '''\
import torch


def class_balanced_weights(counts, beta):
    """(N,) training counts n_i and beta in [0, 1) -> (N,) weights summing to N."""
    effective = (1.0 - beta ** counts.double()) / (1.0 - beta)  # (N,): each class's effective number of samples
    weights = 1.0 / effective  # rare classes weigh more
    return weights / weights.sum() * len(counts)  # the average class keeps weight 1
''',
}


def worked_source(name: str) -> str:
    """The code the solutions handout shows and runs for exercise `name`: its worked solution, or, for an exercise
    without one, labkit's own source (as comments) and labkit's function bound to the name."""
    if name in WORKED:
        return WORKED[name]
    lines = inspect.getsource(exercises.solution(name)).splitlines()
    shown = "\n".join(f"# {line}" if line else "#" for line in lines)
    return f"# labkit's own answer, whose source is:\n{shown}\n{name} = exercises.solution({name!r})\n"
