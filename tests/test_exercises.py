"""`exercises.check` passes labkit's own functions and hand-written right answers, and rejects each typical wrong
answer with the hint that names it. A checker earns trust only when it has been shown to reject them.

Every wrong answer below is written the way a learner would write it, from torch alone, without labkit's help.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labkit.core.errors import LabkitError
from labkit.data.splits import long_tail_counts
from labkit.lab import exercises
from labkit.sla import joint as jl
from labkit.sla import longtail, objectives, transforms

N_NOTEBOOK = 10  # a learner's notebook global N, which the view-blocks mistake tends to use


def _check(capsys, name, fn) -> tuple[bool, str]:
    ok = exercises.check(name, fn)
    return ok, capsys.readouterr().out


def _rejects(capsys, name, fn, *phrases) -> str:
    ok, out = _check(capsys, name, fn)
    assert ok is False, out
    assert out.startswith("✗ " + name) or out.startswith("not yet"), out
    for phrase in phrases:
        assert phrase in out, (phrase, out)
    return out


# ------------------------------------------------------------------------------------------ right answers
LIBRARY = {
    "joint_labels": jl.joint_labels,
    "conditional_probabilities": jl.conditional_probabilities,
    "aggregate": jl.aggregate,
    "distillation_loss": lambda s, t, T: objectives.distillation_loss(s, t, T),
    "rotate_views": lambda x: transforms.get("rotation").expand(x),
    "sla_loss": lambda joint, y, M: objectives.sla_loss({"joint": joint}, y, M),
    "mt_loss": lambda c, v, y, M: objectives.mt_loss({"class": c, "transform": v}, y, M),
    "long_tail_profile": lambda n_max, R, N: torch.tensor(long_tail_counts(n_max, R, N)),
    "class_balanced_weights": longtail.class_balanced_weights,
}


def test_every_exercise_has_a_library_answer():
    assert sorted(exercises.available()) == sorted(LIBRARY)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_the_library_passes(capsys, name):
    ok, out = _check(capsys, name, LIBRARY[name])
    assert ok is True, out
    assert out.startswith(f"✓ {name}: matches labkit on ") and out.strip().endswith(" cases"), out


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_solution_is_labkits_answer_and_passes(capsys, name):
    """What a notebook run with SOLUTIONS = True puts in place of the learner's stub."""
    ok, out = _check(capsys, name, exercises.solution(name))
    assert ok is True, out


def test_solution_of_an_unknown_name_is_one_line():
    message = r"unknown exercise 'agregate'; did you mean 'aggregate'\? allowed: joint_labels"
    with pytest.raises(LabkitError, match=message):
        exercises.solution("agregate")


def _own_column(joint_logits, M):
    """(B*M, N*M) -> (B, M, N), written with a loop the way a learner might."""
    B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
    rows = joint_logits.view(B, M, N, M)
    return torch.stack([rows[:, j, :, j] for j in range(M)], dim=1)


def test_hand_written_right_answers_pass(capsys):
    def joint_labels(y, M):
        return torch.tensor([int(c) * M + j for c in y for j in range(M)])

    def rotate_views(x):
        return torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=1).flatten(0, 1)

    def distillation_loss(s, t, T):
        p = F.softmax(t / T, dim=1)
        return T * T * (p * (F.log_softmax(t / T, dim=1) - F.log_softmax(s / T, dim=1))).sum(1).mean()

    for name, fn in [("joint_labels", joint_labels), ("rotate_views", rotate_views),
                     ("distillation_loss", distillation_loss),
                     ("aggregate", lambda t, M: _own_column(t, M).mean(1)),
                     ("conditional_probabilities", lambda t, M: _own_column(t, M).softmax(-1))]:
        ok, out = _check(capsys, name, fn)
        assert ok is True, out


# ----------------------------------------------------------------------------------------- wrong answers
def test_averaged_probabilities(capsys):
    def mean_probs(t, M):
        return _own_column(t, M).softmax(-1).mean(1)

    def log_mean_probs(t, M):
        return _own_column(t, M).softmax(-1).mean(1).log()

    for fn in (mean_probs, log_mean_probs):
        out = _rejects(capsys, "aggregate", fn, "you averaged probabilities; SLA averages logits", "expected",
                       "yours", "example: aggregate(joint_logits of shape (6, 15), M=3)")
        assert "mean(" not in out and "softmax" not in out  # names the mistake, never shows the solution


def test_joint_labels_in_view_blocks(capsys):
    def view_blocks(y, M):
        return torch.stack([j * N_NOTEBOOK + y for j in range(M)], dim=1).flatten()

    _rejects(capsys, "joint_labels", view_blocks, "view blocks (j·N + y)", "class blocks, y·M + j")
    _rejects(capsys, "joint_labels", lambda y, M: torch.stack([y + j * M for j in range(M)], 1).flatten(),
             "view blocks (j·N + y)")


def test_transform_major_joint_labels(capsys):
    def transform_major(y, M):
        return torch.cat([y * M + j for j in range(M)])

    _rejects(capsys, "joint_labels", transform_major, "transform-major", "sample-major")


def test_float_joint_labels(capsys):
    _rejects(capsys, "joint_labels", lambda y, M: jl.joint_labels(y, M).float(), "integers")


def test_sla_loss_in_view_blocks(capsys):
    def sla_loss(joint_logits, y, M):
        N = joint_logits.shape[1] // M
        labels = torch.stack([j * N + y for j in range(M)], dim=1).flatten()
        return F.cross_entropy(joint_logits, labels)

    _rejects(capsys, "sla_loss", sla_loss, "view blocks (j·N + y)")


def test_transform_major_mt_loss(capsys):
    def mt_loss(class_logits, transform_logits, y, M):
        B = len(y)
        return (F.cross_entropy(class_logits, y.repeat(M))
                + F.cross_entropy(transform_logits, torch.arange(M).repeat_interleave(B)))

    _rejects(capsys, "mt_loss", mt_loss, "transform-major")


def test_transform_major_aggregate(capsys):
    def aggregate(joint_logits, M):
        B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
        rows = joint_logits.view(M, B, N, M)  # assumes row j*B + b
        return torch.stack([rows[j, :, :, j] for j in range(M)], dim=1).mean(1)

    _rejects(capsys, "aggregate", aggregate, "transform-major")


def test_transform_major_rotate_views(capsys):
    _rejects(capsys, "rotate_views", lambda x: torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]),
             "transform-major", "example: rotate_views(x of shape (2, 1, 3, 3)")


def test_clockwise_rotation(capsys):
    def clockwise(x):
        return torch.stack([torch.rot90(x, -k, dims=(-2, -1)) for k in range(4)], dim=1).flatten(0, 1)

    _rejects(capsys, "rotate_views", clockwise, "clockwise")


def test_off_by_one_rotation(capsys):
    def shifted(x):
        return torch.stack([torch.rot90(x, k + 1, dims=(-2, -1)) for k in range(4)], dim=1).flatten(0, 1)

    _rejects(capsys, "rotate_views", shifted, "off by one", "identity")


def test_reversed_kl(capsys):
    def reversed_kl(s, t, T):
        return F.kl_div(F.log_softmax(t / T, dim=1), F.softmax(s / T, dim=1), reduction="batchmean") * T * T

    _rejects(capsys, "distillation_loss", reversed_kl, "reversed KL")


def test_missing_temperature_squared(capsys):
    def no_factor(s, t, T):
        return F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")

    def times_T(s, t, T):
        return no_factor(s, t, T) * T

    _rejects(capsys, "distillation_loss", no_factor, "missing the T² factor")
    _rejects(capsys, "distillation_loss", times_T, "you multiplied by T; the factor is T²")


def test_softmax_over_all_labels(capsys):
    def joint_softmax(joint_logits, M):
        return _own_column(joint_logits.softmax(-1), M)

    _rejects(capsys, "conditional_probabilities", joint_softmax, "all N·M labels", "renormalise")


def test_off_by_one_column(capsys):
    def next_column(joint_logits, M):
        B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
        rows = joint_logits.view(B, M, N, M)
        return torch.stack([rows[:, j, :, (j + 1) % M] for j in range(M)], dim=1).softmax(-1)

    _rejects(capsys, "conditional_probabilities", next_column, "off by one")


def test_wrong_shape(capsys):
    def flat(joint_logits, M):
        return jl.conditional_probabilities(joint_logits, M).flatten(0, 1)  # (B*M, N)

    out = _rejects(capsys, "conditional_probabilities", flat, "shape (B, M, N) = (2, 3, 5) expected, got (6, 5)")
    assert len(out.strip().splitlines()) == 1


def test_a_loss_must_be_a_scalar(capsys):
    def per_row(joint_logits, y, M):
        return F.cross_entropy(joint_logits, jl.joint_labels(y, M), reduction="none")

    _rejects(capsys, "sla_loss", per_row, "a scalar (shape ()) expected, got shape (6,)")


def test_overflow_on_large_logits(capsys):
    def naive(joint_logits, M):
        e = _own_column(joint_logits, M).exp()
        return e / e.sum(-1, keepdim=True)

    _rejects(capsys, "conditional_probabilities", naive, "nan or inf", "large logits, scale 1e3")


# ---- four slips, each fed as a learner writes it; the hint is quoted in full, so a vaguer one fails -------------
KL_LOG_TARGET = ("F.kl_div(input, target) reads `target` as probabilities; you gave it log-probabilities (log_softmax "
                 "of the teacher), so it takes the log of negative numbers and returns nan. Pass log_target=True, or "
                 "give it softmax(teacher / T)")
ALL_COLUMNS = ("you averaged all M columns (i, 0) … (i, M-1) of every view; each view j counts only in its own column "
               "j, the label (i, j) it was trained towards: s_i = 1/M Σ_j of view j's logit for (i, j)")
RESHAPED = ("you reshaped where the axes had to be swapped: taking view j's own column gives a (B, N, M) tensor, and "
            ".reshape(B, M, N) keeps its memory order, so it mixes classes and views; swap the two axes with "
            ".transpose(1, 2) (or .permute(0, 2, 1)) instead")
SUMMED = ("your transformation term is a sum over the rows (reduction='sum'); like the class term it is a mean over "
          "all B·M rows")


def test_kl_div_without_log_target(capsys):
    def distillation_loss(s, t, T):
        return F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean") * T * T

    out = _rejects(capsys, "distillation_loss", distillation_loss, KL_LOG_TARGET)
    assert "exp overflows" not in out


def test_averaging_all_columns_instead_of_each_views_own(capsys):
    def aggregate(joint_logits, M):
        B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
        return joint_logits.view(B, M, N, M).mean(dim=(1, 3))

    _rejects(capsys, "aggregate", aggregate, ALL_COLUMNS)


def test_a_reshape_where_a_transpose_is_needed(capsys):
    def conditional_probabilities(joint_logits, M):
        B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
        own = joint_logits.view(B, M, N, M).diagonal(dim1=1, dim2=3)  # (B, N, M): view j's column j
        return own.reshape(B, M, N).softmax(-1)

    def aggregate(joint_logits, M):
        B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M
        return joint_logits.view(B, M, N, M).diagonal(dim1=1, dim2=3).reshape(B, M, N).mean(1)

    _rejects(capsys, "conditional_probabilities", conditional_probabilities, RESHAPED)
    _rejects(capsys, "aggregate", aggregate, RESHAPED)


def test_a_sum_in_the_transformation_term(capsys):
    def mt_loss(class_logits, transform_logits, y, M):
        views = torch.arange(M).repeat(len(y))
        return (F.cross_entropy(class_logits, y.repeat_interleave(M))
                + F.cross_entropy(transform_logits, views, reduction="sum"))

    _rejects(capsys, "mt_loss", mt_loss, SUMMED)


# ------------------------------------------------------------------------- stubs, errors and unknown names
def test_a_stub_is_not_yet(capsys):
    def aggregate(joint_logits, M):
        raise NotImplementedError

    ok, out = _check(capsys, "aggregate", aggregate)
    assert ok is False
    assert out.startswith("not yet: aggregate is still a stub"), out


def test_an_error_in_learner_code_is_one_line(capsys):
    def aggregate(joint_logits, M):
        return joint_logits.view(M, -1, 7)

    out = _rejects(capsys, "aggregate", aggregate, "raised RuntimeError", "on aggregate(joint_logits of shape")
    assert len(out.strip().splitlines()) == 1


def test_returning_nothing(capsys):
    _rejects(capsys, "mt_loss", lambda c, v, y, M: None, "returned None")


def test_unknown_name():
    with pytest.raises(LabkitError) as e:
        exercises.check("agregate", jl.aggregate)
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert "'agregate'" in message and all(name in message for name in exercises.available())


# ------------------------------------------------------------------------------- the checker's own inputs
def _any_pair_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Whether some tensor of `a` is close to some tensor of `b` (all at once: a list may hold 1000 answers)."""
    a, b = [t for t in a if t.shape == b[0].shape], [t for t in b if t.shape == b[0].shape]
    if not a:
        return False
    A, B = (torch.stack(t).double().reshape(len(t), -1) for t in (a, b))  # (K, n), (L, n)
    close = torch.isclose(A[:, None], B[None], rtol=exercises.RTOL, atol=exercises.ATOL, equal_nan=True)
    return bool(close.all(-1).any())


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_first_case_tells_every_wrong_answer_apart(name):
    """On the first case, no wrong answer equals labkit's, nor any other mistake's, so each hint is specific."""
    ex = exercises._EXERCISES[name]
    case = ex.cases()[0]
    want = exercises._as_tensor(ex.reference(*case.args))
    answers = [exercises._wrong_answers(d, case) for d in ex.diagnoses]
    for i, candidates in enumerate(answers):
        assert not _any_pair_close(candidates, [want]), ex.diagnoses[i].hint
        for j, others in enumerate(answers[:i]):
            assert not _any_pair_close(candidates, others), (ex.diagnoses[i].hint, ex.diagnoses[j].hint)


# ---- what a learner sees: notebook 01's first "Your turn" cell, run by a kernel, in an HTML copy in Chromium -------
_VIEW_BLOCKS = '''def joint_labels(y, M):
    """(B,) class labels -> (B*M,) joint labels, sample-major: row b*M + j gets label y[b]*M + j."""
    N = int(y.max()) + 1
    return torch.arange(M).repeat(len(y)) * N + y.repeat_interleave(M)  # a typical slip: j*N + y
'''


def _your_turn_copy(stub: str | None, out: Path):
    """Notebook 01's joint-label exercise (its markdown, the stub cell, the check cell) with `stub` as the learner's
    cell, or the notebook's own stub (None); the check records its result under `out`."""
    import nbformat

    from labkit.lab import runner

    cells = nbformat.read(runner.find_notebook("01"), as_version=4).cells
    start = next(k for k, c in enumerate(cells) if c.source.startswith("### Your turn: the joint labels"))
    heading, own_stub, solution, check = cells[start:start + 4]  # the learner's handout drops the solution cell
    assert "solution" in solution.metadata.get("tags", [])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    setup = (f"import torch\nfrom labkit import exercises, record\nSOLUTIONS = False\n"
             f"class P:\n    out = {str(out)!r}\n")
    nb.cells = [nbformat.v4.new_code_cell(setup), heading,
                nbformat.v4.new_code_cell(stub) if stub is not None else own_stub, check]
    return nb


@pytest.mark.browser
def test_your_turn_cells_as_a_learner_sees_them(tmp_path, chromium_browser, screenshots):
    """The stub gives "not yet", an answer in view blocks the ✗ hint that names it, labkit's answer ✓: each executed by
    a kernel, exported, and looked at in Chromium (screenshots in runs/screenshots/your_turn_*.png)."""
    from nbclient import NotebookClient

    from labkit.lab.offline_html import notebook_to_html

    solution = "def joint_labels(y, M):\n    return y.repeat_interleave(M) * M + torch.arange(M).repeat(len(y))\n"
    copies = {"not_yet": (None, "not yet: joint_labels is still a stub"),
              "wrong": (_VIEW_BLOCKS, "✗ joint_labels: your joint labels are in view blocks (j·N + y)"),
              "passed": (solution, "✓ joint_labels: matches labkit")}
    shots, browser = screenshots, chromium_browser  # one browser for the three copies
    for name, (stub, said) in copies.items():
        (tmp_path / name).mkdir()
        nb = _your_turn_copy(stub, tmp_path / name)
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        page_file = tmp_path / f"{name}.html"
        page_file.write_text(notebook_to_html(nb), encoding="utf-8")
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(page_file.as_uri())
        check = page.locator(".jp-CodeCell").last
        assert said in check.inner_text(), f"{name}: the check cell shows {check.inner_text()!r}"
        page.locator(".jp-Cell").first.evaluate("cell => cell.remove()")  # the test's set-up, not 01's
        page.screenshot(path=str(shots / f"your_turn_{name}.png"), full_page=True)
        page.close()
        recorded = json.loads((tmp_path / name / "results.json").read_text())
        assert recorded["exercises.joint_labels"] == int(name == "passed")


def test_the_learners_aggregate_scores_the_trained_model(tiny_runs):
    """Plugged back into the lab, a right `aggregate` gives the SLA model's aggregated test accuracy (labkit's own
    number), a slip gives another, and a stub gives none."""
    from labkit.data.splits import split_tensors
    from labkit.sla.inference import evaluate
    from labkit.training.experiment import load_run

    run = load_run(tiny_runs("sla").path, "cpu")
    x, y = split_tensors(run.data.test, torch.device("cpu"))
    labkit_acc = evaluate(run.model, run.tset, x, y, run.data.N, ["aggregated"])["aggregated"].accuracy
    assert exercises.aggregated_accuracy(jl.aggregate, run.model, run.tset, x, y) == pytest.approx(labkit_acc)

    def identity_only(joint_logits, M):
        return jl.conditional_logits(joint_logits, M)[:, 0]

    single = evaluate(run.model, run.tset, x, y, run.data.N, ["single"])["single"].accuracy
    assert exercises.aggregated_accuracy(identity_only, run.model, run.tset, x, y) == pytest.approx(single)

    def stub(joint_logits, M):
        raise NotImplementedError

    assert exercises.aggregated_accuracy(stub, run.model, run.tset, x, y) is None


# ------------------------------------------------------------------------------------------ long tails
def _profile_by(exponent, rounding=math.floor):
    return lambda n_max, R, N: [int(rounding(n_max * R ** exponent(i, N))) for i in range(N)]


def test_a_hand_written_profile_and_hand_written_weights_pass(capsys):
    ok, out = _check(capsys, "long_tail_profile", _profile_by(lambda i, N: -i / (N - 1)))
    assert ok is True, out

    def weights(counts, beta):
        w = (1 - beta) / (1 - beta ** counts.float())
        return w / w.sum() * len(counts)

    ok, out = _check(capsys, "class_balanced_weights", weights)
    assert ok is True, out


def test_profile_slips(capsys):
    _rejects(capsys, "long_tail_profile", _profile_by(lambda i, N: -i / N), "off by one in the exponent", "−i/(N−1)",
             "example: long_tail_profile(n_max=5000, R=100.0, N=10)")
    _rejects(capsys, "long_tail_profile", _profile_by(lambda i, N: i / (N - 1)), "your counts grow with i")
    _rejects(capsys, "long_tail_profile", lambda n, R, N: _profile_by(lambda i, N: -i / (N - 1))(n, R, N)[::-1],
             "in reverse order")
    _rejects(capsys, "long_tail_profile", _profile_by(lambda i, N: -i / (N - 1), round), "you rounded")
    _rejects(capsys, "long_tail_profile", lambda n, R, N: [math.floor(n - i * (n - n / R) / (N - 1)) for i in range(N)],
             "your profile falls linearly")
    _rejects(capsys, "long_tail_profile", lambda n, R, N: torch.tensor(_profile_by(lambda i, N: -i / (N - 1))(n, R, N),
                                                                       dtype=torch.float32),
             "counts of images are integers")


def test_class_balanced_weight_slips(capsys):
    def inverse_frequency(counts, beta):
        w = 1 / counts.float()
        return w / w.sum() * len(counts)

    def unnormalised(counts, beta):
        return (1 - beta) / (1 - beta ** counts.float())

    def uninverted(counts, beta):
        e = (1 - beta ** counts.float()) / (1 - beta)
        return e / e.sum() * len(counts)

    _rejects(capsys, "class_balanced_weights", inverse_frequency, "ignore the effective number",
             "(1 − β) / (1 − β^n_i)")
    _rejects(capsys, "class_balanced_weights", unnormalised, "sum to N")
    _rejects(capsys, "class_balanced_weights", uninverted, "the weight is its inverse")
