"""Exercises with feedback: re-derive a piece of SLA and `check` it against the library.

    >>> from labkit import exercises
    >>> def aggregate(joint_logits, M):
    ...     raise NotImplementedError  # the learner fills this in
    >>> exercises.check("aggregate", aggregate)
    not yet: aggregate is still a stub (it raises NotImplementedError); fill it in and run the check again
    False

`check` runs the learner's function and labkit's on the same inputs: random ones first, then adversarial ones
(B=1, M=2 and M=4, N=3 and N=10, logits of size 1e3). When the two differ, it also runs the typical wrong answers
of that exercise (each one is labkit's function on permuted inputs, or a short formula) on the same inputs. The
wrong answer that the learner's output matches names the mistake. Every message shows a worked example: the
inputs, labkit's value and the learner's value. It never shows the solution code.

`check` is `verdict(attempt(name, fn))`, printed: `attempt` runs the learner's function on the cases (where the
learner's code lives, e.g. a grading kernel) and `verdict` judges the outputs against labkit's own (anywhere, e.g.
the grader's process, so a learner's code cannot change its own grade). `notebook_exercises(nb)` names the
exercises a notebook holds, read from its stub cells (tag "exercise").

Layout, as in `labkit.sla.joint`: an expanded batch is sample-major (row b*M + j is view j of sample b), and the
joint head's column i*M + j is the label (class i, transformation j): the columns come in class blocks, class i's M
transformations side by side. The layout a learner may assume instead, column j*N + i, comes in view blocks (all N
classes of transformation 0 first). These two names, "class blocks" and "view blocks", are the only ones used for
the columns, here and in the notebooks, since "class-major" reads both ways.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.device import eval_mode
from ..core.errors import LabkitError, check_choice
from ..data.splits import long_tail_counts
from ..sla import joint, longtail, objectives, transforms

__all__ = ["Case", "Diagnosis", "Exercise", "Attempt", "available", "check", "solution", "attempt", "verdict",
           "notebook_exercises", "aggregated_accuracy"]

RTOL, ATOL = 1e-4, 1e-5  # compared in float64. Every wrong answer below is off by much more than this
SHOWN = 6  # values shown per row in a worked example
_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.MULTILINE)  # a stub cell's function


@dataclass(frozen=True)
class Case:
    """One set of inputs, in the exercise's argument order; `note` says what makes it adversarial."""

    args: tuple
    note: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """A typical mistake: `wrong(*args)` gives the answer it leads to, or a few variants of it."""

    hint: str
    wrong: Callable[..., Tensor | Sequence[Tensor]]


@dataclass(frozen=True)
class Exercise:
    """A library function to re-derive: its argument names, output shape in symbols, cases and mistakes."""

    name: str
    params: tuple[str, ...]
    shape: str  # the output shape in symbols, e.g. "(B, M, N)"
    reference: Callable[..., Tensor]
    cases: Callable[[], list[Case]]
    diagnoses: tuple[Diagnosis, ...]
    integers: str = "labels must be integers (torch.long) for cross_entropy"  # said when integers come back as floats


# ----------------------------------------------------------------------------------------------- the inputs
LARGE = "large logits, scale 1e3"  # softmax by hand overflows here
# (B, M, N, logit scale, note). The first case tells every wrong answer apart (N != M, B >= 2, distinct labels)
SIZES = ((2, 3, 5, 1.0, ""), (1, 4, 3, 1.0, "B=1"), (3, 2, 10, 1.0, ""), (2, 4, 10, 1.0, ""), (2, 3, 5, 1e3, LARGE),
         (3, 4, 3, 1e3, LARGE), (4, 2, 3, 3.0, ""))


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _logits(g: torch.Generator, rows: int, cols: int, scale: float) -> Tensor:
    return torch.randn(rows, cols, generator=g) * scale


def _labels(g: torch.Generator, B: int, N: int) -> Tensor:
    """(B,) class labels, distinct where B <= N (so that a mistake in the order of the rows shows)."""
    return torch.randperm(N, generator=g)[:B] if B <= N else torch.randint(0, N, (B,), generator=g)


def _label_cases() -> list[Case]:
    g = _generator()
    return [Case((_labels(g, B, N), M), note) for B, M, N, _, note in SIZES if note != LARGE]


def _joint_cases() -> list[Case]:
    g = _generator()
    return [Case((_logits(g, B * M, N * M, s), M), note) for B, M, N, s, note in SIZES]


def _distillation_cases() -> list[Case]:
    g = _generator()
    temperatures = (2.0, 4.0, 3.0, 2.0, 2.0, 1.0, 0.5)
    return [Case((_logits(g, B, N, s), _logits(g, B, N, s), T), note)
            for (B, _, N, s, note), T in zip(SIZES, temperatures, strict=True)]


def _image_cases() -> list[Case]:
    g = _generator()
    readable = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)  # small numbers to read
    return [Case((readable,), "x holds 0, 1, 2, ... so you can follow the pixels"),
            Case((torch.randn(1, 3, 4, 4, generator=g),), "B=1"),
            Case((torch.randn(3, 2, 5, 5, generator=g) * 1e3,), "large values, scale 1e3")]


def _sla_cases() -> list[Case]:
    g = _generator()
    return [Case((_logits(g, B * M, N * M, s), _labels(g, B, N), M), note) for B, M, N, s, note in SIZES]


def _mt_cases() -> list[Case]:
    g = _generator()
    return [Case((_logits(g, B * M, N, s), _logits(g, B * M, M, s), _labels(g, B, N), M), note)
            for B, M, N, s, note in SIZES]


# ------------------------------------------------------------------------------- layouts a learner may assume
def _rows_transform_major(t: Tensor, M: int) -> Tensor:
    """Rows read as j*B + b, moved to b*M + j: labkit on this is a learner who assumed transform-major rows."""
    return t.unflatten(0, (M, t.shape[0] // M)).transpose(0, 1).flatten(0, 1)


def _to_transform_major(t: Tensor, M: int) -> Tensor:
    """Rows b*M + j moved to j*B + b: a learner's output in transform-major order."""
    return t.unflatten(0, (t.shape[0] // M, M)).transpose(0, 1).flatten(0, 1)


def _cols_view_blocks(t: Tensor, M: int) -> Tensor:
    """Columns read as j*N + i (view blocks), moved to i*M + j (labkit's class blocks)."""
    return t.unflatten(-1, (M, t.shape[-1] // M)).transpose(-1, -2).flatten(-2)


def _cols_shifted(t: Tensor, M: int, shift: int) -> Tensor:
    """Column i*M + j gets column i*M + (j+shift) % M: view j reads another view's label."""
    return t.unflatten(-1, (t.shape[-1] // M, M)).roll(-shift, dims=-1).flatten(-2)


def _views_reordered(t: Tensor, M: int, order: Sequence[int]) -> Tensor:
    """(B*M, ...) sample-major with view j replaced by view order[j]."""
    return t.unflatten(0, (t.shape[0] // M, M))[:, list(order)].flatten(0, 1)


def _transposed_by_reshape(t: Tensor) -> Tensor:
    """(B, M, N) -> what a learner gets who built it (B, N, M) and reshaped instead of transposing: the same
    memory read in the other shape, classes and views mixed."""
    return t.transpose(1, 2).reshape(t.shape)


def _joint_softmax_own_column(joint_logits: Tensor, M: int) -> Tensor:
    """(B*M, N*M) -> (B, M, N): a softmax over all N*M labels, then view j's own column, not renormalised."""
    return joint.conditional_logits(joint_logits.float().log_softmax(-1), M).exp()


def _joint_labels_view_blocks(y: Tensor, M: int, stride: int) -> Tensor:
    return (torch.arange(M)[None, :] * stride + y[:, None]).flatten()  # (B, M) -> (B*M,)


def _strides(y: Tensor, M: int) -> list[int]:
    """N is not an argument of joint_labels: try every plausible N, and M (roles of y and j swapped)."""
    return sorted({M, *range(int(y.max()) + 1, 1025)})


# ------------------------------------------------------------------------------------------- the exercises
def _joint_labels_exercise() -> Exercise:
    def transform_major(y, M):
        return _to_transform_major(joint.joint_labels(y, M), M)

    return Exercise("joint_labels", ("y", "M"), "(B*M,)", joint.joint_labels, _label_cases, (
        Diagnosis("your joint labels are in view blocks (j·N + y); labkit's columns come in class blocks, y·M + j, "
                  "so that column i·M + j of the joint head is (class i, view j)",
                  lambda y, M: [_joint_labels_view_blocks(y, M, s) for s in _strides(y, M)]),
        Diagnosis("your labels are in transform-major order (row j·B + b); an expanded batch is sample-major: "
                  "row b·M + j is view j of sample b", transform_major),
        Diagnosis("your joint labels are in view blocks (j·N + y) and your rows transform-major (row j·B + b); "
                  "labkit puts the class-block label y·M + j at row b·M + j",
                  lambda y, M: [_to_transform_major(_joint_labels_view_blocks(y, M, s), M) for s in _strides(y, M)]),
        Diagnosis("you repeated the class labels but left out the view: the joint label also says which view j "
                  "(0 to M-1) the row is", lambda y, M: y.repeat_interleave(M)),
        Diagnosis("off by one: the views are numbered 0 to M-1, the identity being view 0",
                  lambda y, M: [joint.joint_labels(y, M) + 1, joint.joint_labels(y, M) - 1]),
    ))


def _conditional_probabilities_exercise() -> Exercise:
    ref = joint.conditional_probabilities
    return Exercise("conditional_probabilities", ("joint_logits", "M"), "(B, M, N)", ref, _joint_cases, (
        Diagnosis("you took a softmax over all N·M labels and kept view j's column; P(i | x̃_j, j) is a softmax "
                  "over the N classes within that column (renormalise it)", _joint_softmax_own_column),
        Diagnosis("you returned logits; the exercise asks for probabilities (a softmax over the N classes)",
                  joint.conditional_logits),
        Diagnosis("your softmax runs over the M views; it should run over the N classes (the last dim)",
                  lambda t, M: joint.conditional_logits(t, M).float().softmax(dim=1)),
        Diagnosis(RESHAPED, lambda t, M: [_transposed_by_reshape(joint.conditional_logits(t, M).float()).softmax(-1),
                                          _transposed_by_reshape(ref(t, M))]),
        *_layout_diagnoses(ref),
    ))


RESHAPED = ("you reshaped where the axes had to be swapped: taking view j's own column gives a (B, N, M) tensor, and "
            ".reshape(B, M, N) keeps its memory order, so it mixes classes and views; swap the two axes with "
            ".transpose(1, 2) (or .permute(0, 2, 1)) instead")


def _layout_diagnoses(ref: Callable[[Tensor, int], Tensor]) -> tuple[Diagnosis, ...]:
    """The three ways to misread the joint head's layout, for an exercise whose answer is `ref(joint_logits, M)`."""
    return (
        Diagnosis("off by one: view j must read the labels (i, j) of its own view, columns i·M + j",
                  lambda t, M: [ref(_cols_shifted(t, M, s), M) for s in (1, -1)]),
        Diagnosis("you read the joint head's columns in view blocks (column j·N + i); labkit's come in class "
                  "blocks: column i·M + j is (class i, view j)", lambda t, M: ref(_cols_view_blocks(t, M), M)),
        Diagnosis("you read the rows as transform-major (j·B + b); the expanded batch is sample-major, row b·M + j "
                  "is view j of sample b", lambda t, M: ref(_rows_transform_major(t, M), M)),
    )


def _all_columns(t: Tensor, M: int) -> list[Tensor]:
    """s_i as the mean (or sum) over the views and over all M columns of class i: (B*M, N*M) -> (B, N)."""
    blocks = t.float().unflatten(0, (t.shape[0] // M, M)).unflatten(-1, (t.shape[-1] // M, M))  # (B, M, N, M)
    return [blocks.mean(dim=(1, 3)), blocks.mean(dim=3).sum(1), blocks.sum(dim=3).mean(1)]


def _aggregate_exercise() -> Exercise:
    def averaged_probabilities(t, M):
        means = (joint.conditional_probabilities(t, M).mean(1), _joint_softmax_own_column(t, M).mean(1))
        return [p for m in means for p in (m, m.log())]

    ref = joint.aggregate
    return Exercise("aggregate", ("joint_logits", "M"), "(B, N)", ref, _joint_cases, (
        Diagnosis("you averaged probabilities; SLA averages logits: s_i = 1/M Σ_j of view j's logit for "
                  "(class i, view j)", averaged_probabilities),
        Diagnosis("you returned probabilities; aggregate returns the averaged logits themselves",
                  lambda t, M: [ref(t, M).softmax(-1), ref(t, M).log_softmax(-1)]),
        Diagnosis("you summed over the M views; aggregate averages them (divide by M)", lambda t, M: ref(t, M) * M),
        Diagnosis("you kept only the identity view (that is SLA+SI); aggregate averages all M views",
                  lambda t, M: joint.conditional_logits(t, M)[:, 0]),
        Diagnosis("you averaged all M columns (i, 0) … (i, M-1) of every view; each view j counts only in its own "
                  "column j, the label (i, j) it was trained towards: s_i = 1/M Σ_j of view j's logit for (i, j)",
                  _all_columns),
        Diagnosis(RESHAPED, lambda t, M: _transposed_by_reshape(joint.conditional_logits(t, M).float()).mean(1)),
        *_layout_diagnoses(ref),
    ))


def _distillation_loss_exercise() -> Exercise:
    def ref(student, teacher, T):
        return objectives.distillation_loss(student, teacher, T)

    def cross_entropy(student, teacher, T):
        p = F.softmax(teacher.float() / T, dim=-1)
        return -(p * F.log_softmax(student.float() / T, dim=-1)).sum(-1).mean() * T * T

    return Exercise("distillation_loss", ("student_logits", "teacher_logits", "T"), "()", ref,
                    _distillation_cases, (
        Diagnosis("reversed KL: you computed KL(student ‖ teacher), or swapped the arguments; distillation uses "
                  "KL(teacher ‖ student), weighted by the teacher's probabilities", lambda s, t, T: ref(t, s, T)),
        Diagnosis("missing the T² factor: multiply the KL by T² so that its gradients keep their size as T grows",
                  lambda s, t, T: ref(s, t, T) / T**2),
        Diagnosis("you multiplied by T; the factor is T²", lambda s, t, T: ref(s, t, T) / T),
        Diagnosis("you did not divide the logits by T before the softmax",
                  lambda s, t, T: [ref(s, t, 1.0), ref(s, t, 1.0) * T**2]),
        Diagnosis("you averaged over every entry (reduction='mean'); average over the samples only, a sum over "
                  "the N classes for each (reduction='batchmean')", lambda s, t, T: ref(s, t, T) / s.shape[-1]),
        Diagnosis("you summed over the samples; average over them (reduction='batchmean')",
                  lambda s, t, T: ref(s, t, T) * s.shape[0]),
        Diagnosis("you computed a cross-entropy; the KL divergence also subtracts the teacher's own entropy",
                  cross_entropy),
        Diagnosis("F.kl_div(input, target) reads `target` as probabilities; you gave it log-probabilities "
                  "(log_softmax of the teacher), so it takes the log of negative numbers and returns nan. Pass "
                  "log_target=True, or give it softmax(teacher / T)", _kl_div_log_target),
    ))


def _kl_div_log_target(student: Tensor, teacher: Tensor, T: float) -> list[Tensor]:
    """F.kl_div with the teacher's log-probabilities as a probability target, as a learner may write it."""
    log_s, log_t = F.log_softmax(student.float() / T, dim=-1), F.log_softmax(teacher.float() / T, dim=-1)
    with warnings.catch_warnings():  # torch warns about reduction="mean", which a learner may well have used
        warnings.simplefilter("ignore", UserWarning)
        return [F.kl_div(log_s, log_t, reduction=r) * f for r in ("batchmean", "mean", "sum")
                for f in (1.0, T, T * T)]


def _rotate_views_exercise() -> Exercise:
    def ref(x):
        return transforms.get("rotation").expand(x)

    return Exercise("rotate_views", ("x",), "(B*4, C, H, W)", ref, _image_cases, (
        Diagnosis("your rows are transform-major (row j·B + b, all identities first); the expanded batch is "
                  "sample-major: row b·4 + j is view j of sample b", lambda x: _to_transform_major(ref(x), 4)),
        Diagnosis("you turned clockwise; view k turns counter-clockwise (torch.rot90's positive direction over "
                  "the last two dims)", lambda x: _views_reordered(ref(x), 4, (0, 3, 2, 1))),
        Diagnosis("off by one: view k turns k quarter turns, so view 0 is the identity",
                  lambda x: [_views_reordered(ref(x), 4, order) for order in ((1, 2, 3, 0), (3, 0, 1, 2))]),
        Diagnosis("all four views are the same image: view k must be turned k quarter turns",
                  lambda x: _views_reordered(ref(x), 4, (0, 0, 0, 0))),
    ))


def _sla_loss_exercise() -> Exercise:
    def ref(joint_logits, y, M):
        return objectives.sla_loss({"joint": joint_logits}, y, M)

    return Exercise("sla_loss", ("joint_logits", "y", "M"), "()", ref, _sla_cases, (
        Diagnosis("your joint labels are in view blocks (j·N + y); labkit's columns come in class blocks, y·M + j",
                  lambda t, y, M: ref(_cols_view_blocks(t, M), y, M)),
        Diagnosis("your labels are in transform-major order (row j·B + b); the expanded batch is sample-major, "
                  "row b·M + j is view j of sample b", lambda t, y, M: ref(_rows_transform_major(t, M), y, M)),
        Diagnosis("you used the class labels y; the joint head is trained on the joint labels (class, view)",
                  lambda t, y, M: F.cross_entropy(t.float(), y.repeat_interleave(M))),
        Diagnosis("you summed over the rows; average over all B·M rows", lambda t, y, M: ref(t, y, M) * t.shape[0]),
        Diagnosis("you divided by B; average over all B·M rows (every view is a training example)",
                  lambda t, y, M: ref(t, y, M) * M),
    ))


def _mt_loss_exercise() -> Exercise:
    def ref(class_logits, transform_logits, y, M):
        return objectives.mt_loss({"class": class_logits, "transform": transform_logits}, y, M)

    def transform_major(c, v, y, M):
        tm = _rows_transform_major
        return [ref(tm(c, M), v, y, M), ref(c, tm(v, M), y, M), ref(tm(c, M), tm(v, M), y, M)]

    def class_term(c, v, y, M):
        return F.cross_entropy(c.float(), y.repeat_interleave(M))

    def view_term(c, v, y, M):
        return F.cross_entropy(v.float(), joint.view_labels(len(y), M))

    def transform_summed(c, v, y, M):
        summed = F.cross_entropy(v.float(), joint.view_labels(len(y), M), reduction="sum")
        return [class_term(c, v, y, M) + summed / d for d in (1, len(y), M)]

    return Exercise("mt_loss", ("class_logits", "transform_logits", "y", "M"), "()", ref, _mt_cases, (
        Diagnosis("your labels are in transform-major order (row j·B + b); the expanded batch is sample-major, "
                  "row b·M + j is view j of sample b", transform_major),
        Diagnosis("you left out the transformation term: add the cross-entropy of the transform head against the "
                  "view labels j", class_term),
        Diagnosis("you left out the class term: add the cross-entropy of the class head against y on every view",
                  view_term),
        Diagnosis("you averaged the two terms; mt_loss adds them", lambda c, v, y, M: ref(c, v, y, M) / 2),
        Diagnosis("your transformation term is a sum over the rows (reduction='sum'); like the class term it is a "
                  "mean over all B·M rows", transform_summed),
    ))


# ----------------------------------------------------------------------------------------- long tails
# (n_max, R, N, note): CIFAR-10-LT at R=100 first (it tells every wrong answer apart), then CIFAR-100-LT, digits
PROFILES = ((5000, 100.0, 10, "CIFAR-10-LT, R=100"), (5000, 10.0, 10, "CIFAR-10-LT, R=10"),
            (500, 100.0, 100, "CIFAR-100-LT, R=100"), (122, 50.0, 10, "digits, R=50"), (60, 2.5, 4, "R=2.5, N=4"),
            (7, 1.0, 3, "R=1: no tail"))


def _profile_cases() -> list[Case]:
    return [Case((n_max, R, N), note) for n_max, R, N, note in PROFILES]


def _profile(n_max: int, R: float, N: int, exponent: Callable[[int], float], rounding=math.floor) -> Tensor:
    """A profile n_max · R^(exponent(i)) with another exponent or rounding: the shape of a typical slip."""
    return torch.tensor([int(rounding(n_max * R ** exponent(i))) for i in range(N)])


def _long_tail_profile_exercise() -> Exercise:
    def ref(n_max, R, N):
        return torch.tensor(long_tail_counts(n_max, R, N))

    def off_by_one(n_max, R, N):
        return [_profile(n_max, R, N, e) for e in (lambda i: -i / N, lambda i: -(i + 1) / N,
                                                     lambda i: -(i + 1) / (N - 1), lambda i: -i / (N + 1))]

    def linear(n_max, R, N):
        return torch.tensor([math.floor(n_max - i * (n_max - n_max / R) / (N - 1)) for i in range(N)])

    return Exercise("long_tail_profile", ("n_max", "R", "N"), "(N,)", ref, _profile_cases, (
        Diagnosis("off by one in the exponent: the last class (i = N−1) must keep n_max / R, so the exponent is "
                  "−i/(N−1)", off_by_one),
        Diagnosis("your counts grow with i: the exponent is negative, n_i = n_max · R^(−i/(N−1)), so class 0 keeps "
                  "the most", lambda n_max, R, N: _profile(n_max, R, N, lambda i: i / (N - 1))),
        Diagnosis("your profile is the right one in reverse order: class 0 keeps n_max images and class N−1 the "
                  "fewest", lambda n_max, R, N: ref(n_max, R, N).flip(0)),
        Diagnosis("you rounded; the profile takes the floor (int() of the product), as the LDAM-DRW code does",
                  lambda n_max, R, N: [_profile(n_max, R, N, lambda i: -i / (N - 1), rounding=f)
                                       for f in (round, math.ceil)]),
        Diagnosis("your profile falls linearly; it falls exponentially: each class keeps the same fraction "
                  "R^(−1/(N−1)) of the one before", linear),
    ), integers="counts of images are integers (take the floor)")


def _cb_cases() -> list[Case]:
    profiles = [long_tail_counts(n, R, N) for n, R, N, _ in PROFILES[:4]]
    betas = (0.9999, 0.99, 0.999, 0.9)
    notes = ("CIFAR-10-LT, R=100", "CIFAR-10-LT, R=10", "CIFAR-100-LT, R=100", "digits, R=50")
    cases = [Case((torch.tensor(c), b), f"{note}, β={b}") for c, b, note in zip(profiles, betas, notes, strict=True)]
    return cases + [Case((torch.tensor([40, 20, 10, 5]), 0.0), "β=0: no re-weighting"),
                    Case((torch.tensor([30, 30, 30]), 0.999), "balanced classes")]


def _class_balanced_weights_exercise() -> Exercise:
    def ref(counts, beta):
        return longtail.class_balanced_weights(counts, beta)

    def to_n(w):
        return w / w.sum() * len(w)

    def inverse_frequency(counts, beta):
        inverse = 1.0 / counts.double()
        return [to_n(inverse), inverse, inverse / inverse.sum()]

    def raw(counts, beta):
        w = (1.0 - beta) / (1.0 - beta ** counts.double())
        return [w, w / w.sum()]

    def effective(counts, beta):
        e = (1.0 - beta ** counts.double()) / (1.0 - beta)
        return [to_n(e), e]

    return Exercise("class_balanced_weights", ("counts", "beta"), "(N,)", ref, _cb_cases, (
        Diagnosis("your weights ignore the effective number: 1/n_i is only its β → 1 limit; weigh class i by "
                  "(1 − β) / (1 − β^n_i)", inverse_frequency),
        Diagnosis("normalise the weights so that they sum to N, the number of classes (the average class keeps "
                  "weight 1)", raw),
        Diagnosis("you used the effective number itself, (1 − β^n_i) / (1 − β); the weight is its inverse, so "
                  "rare classes weigh more", effective),
        Diagnosis("you wrote β^n_i where 1 − β^n_i belongs: the effective number is (1 − β^n_i) / (1 − β)",
                  lambda counts, beta: to_n((1.0 - beta) / beta ** counts.double())),
    ))


def _registry() -> dict[str, Exercise]:
    built = (_joint_labels_exercise(), _conditional_probabilities_exercise(), _aggregate_exercise(),
             _distillation_loss_exercise(), _rotate_views_exercise(), _sla_loss_exercise(), _mt_loss_exercise(),
             _long_tail_profile_exercise(), _class_balanced_weights_exercise())
    return {e.name: e for e in built}


_EXERCISES = _registry()


def available() -> list[str]:
    """The names `check` accepts, which are also the names of the functions to write."""
    return list(_EXERCISES)


def solution(name: str) -> Callable[..., Tensor]:
    """labkit's own answer to exercise `name`, called like the learner's function (same arguments, same order).

    A notebook fills its stub with it when run with SOLUTIONS = True (CI, `make run`), so the learner's copy holds
    no solution code: `aggregate = exercises.solution("aggregate") if SOLUTIONS else aggregate`.
    """
    check_choice("exercise", name, available())
    return _EXERCISES[name].reference


# ---------------------------------------------------------------------------------------------- the check
def check(name: str, fn: Callable[..., object]) -> bool:
    """Run the learner's `fn` against labkit's `name` on every case; print a confirmation or a specific hint.

    Returns True when `fn` matches labkit everywhere. Never raises for a wrong or unfinished `fn` (a stub that
    raises `NotImplementedError` prints "not yet"), only for an unknown `name`.
    """
    ok, message = verdict(attempt(name, fn))
    print(message)
    return ok


@dataclass(frozen=True)
class Attempt:
    """The learner's outputs on an exercise's cases, in order, up to the first case that went wrong; `problem` is
    that case's message (still a stub, raised, no tensor, wrong shape), None when every case gave an output."""

    name: str
    outputs: tuple[Tensor, ...]
    problem: str | None = None


def attempt(name: str, fn: Callable[..., object]) -> Attempt:
    """Run the learner's `fn` on every case of exercise `name` (fresh copies of the inputs each time)."""
    check_choice("exercise", name, available())
    ex = _EXERCISES[name]
    cases = ex.cases()
    expected = [_as_tensor(ex.reference(*_copy(c.args))) for c in cases]
    got, problem = _run_learner(ex, fn, cases, expected)
    return Attempt(name, tuple(got), problem)


def verdict(a: Attempt) -> tuple[bool, str]:
    """(passed, the message `check` prints) for an attempt. The outputs are checked again here against labkit's
    own values and forms, so an attempt made elsewhere (a grading kernel) is judged by this process alone."""
    check_choice("exercise", a.name, available())
    ex = _EXERCISES[a.name]
    cases = ex.cases()
    expected = [_as_tensor(ex.reference(*_copy(c.args))) for c in cases]
    problem = a.problem or _outputs_problem(ex, cases, expected, a.outputs)
    if problem is None:
        problem = _compare(ex, cases, expected, [_as_tensor(o) for o in a.outputs])
    if problem is None:
        return True, f"✓ {a.name}: matches labkit on {len(cases)} cases"
    return False, problem


def _run_learner(ex: Exercise, fn: Callable[..., object], cases: list[Case],
                 expected: list[Tensor]) -> tuple[list[Tensor], str | None]:
    """The learner's outputs as tensors, or the message for the first case where it raised or got the form
    (type, dtype, shape) wrong."""
    got = []
    for case, want in zip(cases, expected, strict=True):
        try:
            out = fn(*_copy(case.args))
        except NotImplementedError:
            return got, (f"not yet: {ex.name} is still a stub (it raises NotImplementedError); fill it in and run "
                         f"the check again")
        except Exception as e:  # any error in the learner's code becomes a hint, never a crash
            message = (str(e).strip().splitlines() or [""])[0][:160]
            return got, f"✗ {ex.name} raised {type(e).__name__}: {message} (on {_describe(ex, case)})"
        problem = _form_problem(ex, case, out, want)
        if problem:
            return got, problem
        got.append(_as_tensor(out))
    return got, None


def _outputs_problem(ex: Exercise, cases: list[Case], expected: list[Tensor],
                     outputs: Sequence[object]) -> str | None:
    """A message unless there is one output per case, each of labkit's form."""
    if len(outputs) != len(cases):
        return f"✗ {ex.name}: {len(outputs)} outputs for {len(cases)} cases"
    forms = (_form_problem(ex, c, o, w) for c, w, o in zip(cases, expected, outputs, strict=True))
    return next((p for p in forms if p), None)


def _form_problem(ex: Exercise, case: Case, out: object, want: Tensor) -> str | None:
    """A message when `out` is not a tensor of `want`'s shape and kind, else None."""
    on = f"(on {_describe(ex, case)})"
    if out is None:
        return f"✗ {ex.name} returned None: did you forget the `return`? {on}"
    try:
        t = _as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        return f"✗ {ex.name} returned a {type(out).__name__}; a tensor is expected {on}"
    if t.shape != want.shape and want.dim() == 0:
        return f"✗ {ex.name}: a scalar (shape ()) expected, got shape {_shape(t)}: average over the rows {on}"
    if t.shape != want.shape:
        return f"✗ {ex.name}: shape {ex.shape} = {_shape(want)} expected, got {_shape(t)} {on}"
    if not want.is_floating_point() and t.is_floating_point():
        return f"✗ {ex.name}: {ex.integers}, got {t.dtype} {on}"
    return None


def _compare(ex: Exercise, cases: list[Case], expected: list[Tensor], got: list[Tensor]) -> str | None:
    """None when every case matches; otherwise the hint for the mistake and a worked example."""
    failing = [i for i, (w, g) in enumerate(zip(expected, got, strict=True)) if not _close(w, g)]
    if not failing:
        return None
    first = failing[0]
    hint = _diagnose(ex, cases, got, failing)
    if hint is None:
        hint = _nonfinite_hint(expected[first], got[first])
    if hint is None:
        hint = "your result differs from labkit's; compare the values below"
    return f"✗ {ex.name}: {hint}.\n" + _example(ex, cases[first], expected[first], got[first])


def _diagnose(ex: Exercise, cases: list[Case], got: list[Tensor], failing: list[int]) -> str | None:
    """The hint of the first mistake whose answer the learner's output matches on every failing case."""
    for d in ex.diagnoses:
        if all(_matches_any(_wrong_answers(d, cases[i]), got[i]) for i in failing):
            return d.hint
    return None


def _wrong_answers(d: Diagnosis, case: Case) -> list[Tensor]:
    out = d.wrong(*_copy(case.args))
    return [_as_tensor(w) for w in (out if isinstance(out, list | tuple) else [out])]


def _matches_any(candidates: list[Tensor], got: Tensor) -> bool:
    return any(c.shape == got.shape and _close(c, got) for c in candidates)


def _nonfinite_hint(want: Tensor, got: Tensor) -> str | None:
    if not bool(torch.isfinite(want.double()).all()) or bool(torch.isfinite(got.double()).all()):
        return None
    return ("your result has nan or inf where labkit's is finite: exp overflows (or a probability underflows to 0) "
            "on large logits; use softmax / log_softmax / logsumexp, which subtract the max first")


# ------------------------------------------------------------------------------------------------ helpers
def _copy(args: tuple) -> tuple:
    """Fresh copies, so that a function changing its inputs in place cannot change the next one's."""
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def _as_tensor(value: object) -> Tensor:
    return value.detach().cpu() if isinstance(value, Tensor) else torch.as_tensor(value)


def _close(want: Tensor, got: Tensor) -> bool:
    return want.shape == got.shape and torch.allclose(got.double(), want.double(), rtol=RTOL, atol=ATOL,
                                                      equal_nan=True)


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _describe(ex: Exercise, case: Case) -> str:
    """`aggregate(joint_logits of shape (6, 15), M=3)`, with small label tensors written out."""
    parts = []
    for name, a in zip(ex.params, case.args, strict=True):
        if isinstance(a, Tensor) and not a.is_floating_point() and a.numel() <= 12:
            parts.append(f"{name}={a.tolist()}")
        elif isinstance(a, Tensor):
            parts.append(f"{name} of shape {_shape(a)}")
        else:
            parts.append(f"{name}={a}")
    note = f"; {case.note}" if case.note else ""
    return f"{ex.name}({', '.join(parts)}){note}"


def _example(ex: Exercise, case: Case, want: Tensor, got: Tensor) -> str:
    """Two indented lines: the inputs, then labkit's and the learner's values where they first differ."""
    if want.dim() == 0:
        return f"  example: {_describe(ex, case)} -> a scalar\n  expected {_fmt(want)}, yours {_fmt(got)}"
    head = f"  example: {_describe(ex, case)} -> shape {ex.shape} = {_shape(want)}"
    bad = ~torch.isclose(got.double(), want.double(), rtol=RTOL, atol=ATOL, equal_nan=True)
    at = tuple(int(i) for i in bad.nonzero()[0][:-1])  # the first differing row, along the last dim
    where = "[" + ", ".join([str(i) for i in at] + [":"]) + "]"
    return f"{head}\n  at {where}: expected {_fmt(want[at])}, yours {_fmt(got[at])}"


def _fmt(t: Tensor) -> str:
    if t.dim() == 0:
        return _number(t.item())
    values = [_number(v) for v in t.tolist()[:SHOWN]]
    return "[" + ", ".join(values) + (", …" if t.numel() > SHOWN else "") + "]"


def _number(v: float | int) -> str:
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) < 1e6):
        return str(int(v))
    return f"{v:.4g}"


# ------------------------------------------------------------------------------------ back into the lab
@torch.no_grad()
def aggregated_accuracy(aggregate: Callable[[Tensor, int], Tensor], model: nn.Module, tset: transforms.TransformSet,
                        x: Tensor, y: Tensor, batch_size: int = 256) -> float | None:
    """The test accuracy of a trained model with a joint head, read out through the learner's `aggregate`: its
    (B*M, N*M) joint logits on the M views of each image go through `aggregate`, and the class with the largest
    aggregated logit is the prediction. None while `aggregate` is a stub or raises (the check above says why)."""
    hits = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            joint_logits = model(tset.expand(x[start:start + batch_size]))["joint"].float()  # (b*M, N*M)
            try:
                scores = _as_tensor(aggregate(joint_logits.clone(), tset.M))  # (b, N)
            except Exception:  # the check cell names what is wrong; here a stub or a slip only means no number
                return None
            labels = y[start:start + batch_size].cpu()
            if scores.shape != (len(labels), joint_logits.shape[1] // tset.M):
                return None
            hits += int((scores.argmax(-1) == labels).sum())
    return hits / len(x)


# ------------------------------------------------------------------------------------ exercises in a notebook
def notebook_exercises(nb: Mapping[str, Any]) -> list[str]:
    """The exercises a notebook holds, in order: the NAME of `def NAME(` in each code cell tagged "exercise" (its
    stub cell). `nb` is a notebook as nbformat or json reads it."""
    names = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "exercise" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        match = _DEF.search(source)
        if match is None:
            raise LabkitError(f"a cell tagged 'exercise' defines no function: {source.strip()[:60]!r}")
        names.append(match.group(1))
    return names
