"""`labkit grade`: a folder of hand-ins, one per learner, graded in a kernel each with labkit's own checks.

The slow test grades a correct and a partly correct hand-in and one for every way a hand-in goes wrong (not JSON,
a syntax error, a renamed and a missing function, a function that raises, one that loops, one that loops and
swallows the interrupt, deleted check cells, SOLUTIONS = True with labkit's answers borrowed, a notebook of another
lab) and asserts every row of the CSV. The fast tests read hand-ins without a kernel.
"""

from __future__ import annotations

import json
import socket
import threading

import nbformat
import pytest

from labkit.core.errors import LabkitError
from labkit.lab import exercises, grading, handout
from tests import _classroom as C
from tests.support import assert_one_line_error, run_cli

TIMEOUT = 3.0  # seconds per step: the right functions take well under a second


@pytest.fixture(scope="module")
def masters_dir(tmp_path_factory):
    return C.write_masters(tmp_path_factory.mktemp("masters"))


@pytest.fixture(scope="module")
def learner_handout(masters_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("handout")
    handout.write_handout(out, notebooks=masters_dir, preset=None, overwrite=True, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def graded(masters_dir, learner_handout, tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    described = C.write_hand_ins(learner_handout, root / "handed_in")
    lines = []
    grades = grading.grade(root / "handed_in", root / "out" / "grades.csv", timeout=TIMEOUT, notebooks=masters_dir,
                           log=lines.append)
    return root, described, {g.learner: g for g in grades}, lines


# ---------------------------------------------------------------------------------------------- the whole class
@pytest.mark.slow
def test_every_hand_in_gets_its_row_and_grading_goes_on(graded):
    root, described, grades, lines = graded
    rows = C.read_csv_rows(root / "out" / "grades.csv")
    assert list(rows) == sorted(described), "one row per learner, each of them"
    assert list(next(iter(rows.values()))) == ["learner", "joint_labels", "aggregate", "distillation_loss", "total",
                                               "problems"]
    scores = {name: (int(r["joint_labels"]), int(r["aggregate"]), int(r["distillation_loss"]), int(r["total"]))
              for name, r in rows.items()}
    assert scores == {
        "ada": (1, 1, 1, 3),  # everything right
        "ben": (1, 0, 0, 1),  # averaged probabilities; 02 still a stub
        "cy": (0, 0, 0, 0),  # not JSON, and a PDF
        "dee": (1, 0, 1, 2),  # a syntax error in aggregate's cell, the rest graded
        "eve": (0, 0, 1, 1),  # aggregate renamed, joint_labels's cell deleted
        "fay": (0, 0, 1, 1),  # raises, loops forever
        "gus": (1, 0, 1, 2),  # loops and swallows the interrupt: the kernel is replaced, 02 still graded
        "hal": (1, 1, 1, 3),  # check cells deleted: graded by labkit's checks all the same
        "ivy": (0, 0, 0, 0),  # SOLUTIONS = True and labkit's answers borrowed
        "jon": (0, 0, 0, 0),  # a notebook of another lab
    }
    problems = {name: r["problems"] for name, r in rows.items()}
    assert problems["ada"] == ""
    expected = {
        "ben": ["aggregate: you averaged probabilities; SLA averages logits",
                "distillation_loss: not yet, still a stub"],
        "cy": ["01_first.ipynb is not a notebook: not JSON", "answers.pdf is not a notebook"],
        "dee": ["01_first.ipynb: cell 9 has a syntax error (line 3:", "aggregate is not defined: its cell has a "
                "syntax error"],
        "eve": ["joint_labels is not defined: no cell of the notebook defines it",
                "aggregate is not defined: its exercise cell defines my_aggregate instead"],
        "fay": ["joint_labels raised ValueError: M must be 4", "aggregate ran past the time limit (3 s)"],
        "gus": ["aggregate ran past the time limit (3 s) and was stopped"],
        "hal": ["01_first.ipynb: the check cells of joint_labels, aggregate deleted; graded all the same",
                "02_second.ipynb: the check cell of distillation_loss deleted"],
        "ivy": ["01_first.ipynb: cell 4 sets SOLUTIONS = True; ignored",
                "joint_labels uses labkit's own exercises.solution('joint_labels')",
                "aggregate uses labkit's own exercises.solution('aggregate')",
                "distillation_loss uses labkit's own objectives.distillation_loss"],
        "jon": ["lab3_recursion.ipynb is a notebook of another lab"],
    }
    for learner, fragments in expected.items():
        for fragment in fragments:
            assert fragment in problems[learner], (learner, fragment, problems[learner])
    assert len(lines) == 2 + len(rows) and all(f"] {name}: " in "\n".join(lines) for name in rows)


@pytest.mark.slow
def test_feedback_pages_repeat_each_checks_message(graded):
    root, _, grades, _ = graded
    pages = {p.stem: p.read_text() for p in (root / "out" / "feedback").glob("*.html")}
    assert set(pages) == set(grades)
    ben = pages["ben"]
    assert "1 of 3 exercises pass" in ben and "✓ passed" in ben and "✗ not yet" in ben
    assert "you averaged probabilities; SLA averages logits" in ben and "expected" in ben and "yours" in ben
    aggregate = next(r for r in grades["ben"].results if r.exercise == "aggregate")
    assert aggregate.message.startswith("✗ aggregate: you averaged probabilities") and not aggregate.passed
    assert "softmax(-1).mean(1)" in ben, "the learner's own cell is on their page"
    assert "F.kl_div" not in ben and "grid[:, j, :, j]" not in pages["ben"].split("joint_labels")[0]
    assert "ran past the time limit" in pages["fay"]


@pytest.mark.browser
@pytest.mark.slow
def test_a_feedback_page_as_a_learner_sees_it(graded, chromium_browser, screenshots):
    root = graded[0]
    page = chromium_browser.new_page(viewport={"width": 900, "height": 1200})
    page.goto((root / "out" / "feedback" / "ben.html").as_uri())
    assert "Feedback for ben" in page.locator("h1").inner_text()
    assert page.locator(".failed").count() == 2 and page.locator(".passed").count() == 1
    page.screenshot(path=str(screenshots / "feedback_ben.png"), full_page=True)
    page.close()


# ------------------------------------------------------------------------------------------------- no network
@pytest.fixture
def listening():
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["namespace", "sandbox only"])
def test_a_learner_function_reaches_no_network(masters_dir, learner_handout, tmp_path, listening, isolation):
    """The learner's joint_labels answers right only when it reaches a server on this machine's loopback: graded 0,
    the server never sees a connection, with and without the network namespace."""
    port, accepted = listening
    prefix = grading.network_isolation() if isolation == "namespace" else []
    if isolation == "namespace" and not prefix:
        pytest.skip("unshare -rn is not allowed here")
    body = (f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
            + C.RIGHT["joint_labels"])
    nb = nbformat.read(learner_handout / "01_first.ipynb", as_version=4)
    C._fill(nb, "joint_labels", body)
    (tmp_path / "kim").mkdir()
    nbformat.write(nb, tmp_path / "kim" / "01_first.ipynb")
    g = grading.grade_learner(tmp_path / "kim", grading.masters(masters_dir), TIMEOUT, prefix)
    result = next(r for r in g.results if r.exercise == "joint_labels")
    assert not result.passed and "raised" in result.message and accepted == []
    assert ("no network while grading" in result.message) or ("unreachable" in result.message.lower())


# -------------------------------------------------------------------------------------- reading, no kernel
def _submission(nb, tmp_path, problems=None):
    masters = {m.stem: m for m in (grading.Master("01_first", ("joint_labels", "aggregate")),)}
    path = tmp_path / "01_first.ipynb"
    return grading._submission(path, nb, masters["01_first"], problems if problems is not None else [])


def test_only_imports_definitions_and_constants_run(learner_handout, tmp_path):
    nb = json.loads((learner_handout / "01_first.ipynb").read_text())
    sub = _submission(nb, tmp_path)
    ran = "\n".join(s["source"] for s in sub.statements)
    assert "import torch" in ran and "def joint_labels(" in ran and "def aggregate(" in ran
    for never in ("print(", "exercises.check", "record.value", "SimpleNamespace(", "SOLUTIONS", "OUT_DIR"):
        assert never not in ran, never


def test_ipython_syntax_is_read_and_left_out(learner_handout, tmp_path):
    nb = nbformat.read(learner_handout / "01_first.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("%load_ext autoreload\n!pip install nothing\nEPS = 1e-9"))
    problems = []
    sub = _submission(json.loads(nbformat.writes(nb)), tmp_path, problems)
    ran = [s["source"] for s in sub.statements]
    assert "EPS = 1e-09" in ran and not any("get_ipython" in s for s in ran) and problems == []


def test_teaching_cells_may_call_labkits_function_the_learners_may_not(learner_handout, tmp_path):
    """A notebook re-derives aggregate and checks it against joint.aggregate in a teaching cell: not the learner's
    borrowing. The learner's aggregate calling joint.aggregate is."""
    nb = nbformat.read(learner_handout / "01_first.ipynb", as_version=4)
    nb.cells.insert(4, nbformat.v4.new_code_cell("from labkit import joint\nacc = comparison.rows\n"
                                                 "torch.testing.assert_close(joint.aggregate(x, 4), x)"))
    C._fill(nb, "aggregate", C.RIGHT["aggregate"])
    sub = _submission(json.loads(nbformat.writes(nb)), tmp_path)
    assert sub.borrowed == {} and "acc = comparison.rows" not in [s["source"] for s in sub.statements]
    C._fill(nb, "aggregate", "    return joint.aggregate(joint_logits, M)\n")
    assert _submission(json.loads(nbformat.writes(nb)), tmp_path).borrowed == {"aggregate": "joint.aggregate"}
    nb.cells.append(nbformat.v4.new_code_cell("from labkit.sla.joint import aggregate"))
    assert _submission(json.loads(nbformat.writes(nb)), tmp_path).borrowed == {"aggregate": "joint.aggregate"}


def test_a_notebook_named_like_ours_without_our_exercises_is_of_another_lab(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def fib(n):\n    return n")]
    path = tmp_path / "01_first.ipynb"
    nbformat.write(nb, path)
    master = grading.Master("01_first", ("joint_labels",))
    got, why = grading._match(path, json.loads(path.read_text()), {"01_first": master})
    assert got is None and "another lab" in why


def test_masters_are_read_from_the_exercise_tags(masters_dir, tmp_path):
    assert grading.masters(masters_dir) == [grading.Master("01_first", ("joint_labels", "aggregate")),
                                            grading.Master("02_second", ("distillation_loss",))]
    (tmp_path / "01_plain.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    with pytest.raises(LabkitError, match="no notebook in .* has exercise cells"):
        grading.masters(tmp_path)


def test_notebook_exercises_reads_the_stub_cells():
    nb = C.master("01_first")
    assert exercises.notebook_exercises(nb) == ["joint_labels", "aggregate"]
    nb.cells[5].source = "raise NotImplementedError"  # the first stub cell, without its def
    with pytest.raises(LabkitError, match="a cell tagged 'exercise' defines no function"):
        exercises.notebook_exercises(nb)


def test_verdict_judges_outputs_from_elsewhere_itself():
    """What a kernel saves is checked again by the grader: the wrong shape or count fails, whatever it claims."""
    import torch

    right = exercises.attempt("joint_labels", lambda y, M: (y[:, None] * M + torch.arange(M)).reshape(-1))
    assert exercises.verdict(right)[0] is True
    forged = exercises.Attempt("joint_labels", right.outputs[:-1])
    assert exercises.verdict(forged) == (False, f"✗ joint_labels: {len(right.outputs) - 1} outputs for "
                                                f"{len(right.outputs)} cases")
    flat = exercises.Attempt("joint_labels", tuple(o[None] for o in right.outputs))
    assert exercises.verdict(flat)[0] is False and "shape" in exercises.verdict(flat)[1]


# ----------------------------------------------------------------------------------------------------- the CLI
def test_grade_refuses_bad_input_in_one_line(masters_dir, tmp_path):
    (tmp_path / "in").mkdir()
    rc, _, err = run_cli("grade", str(tmp_path / "missing"), "--out", str(tmp_path / "g.csv"))
    assert_one_line_error(rc, err, "is not a folder")
    rc, _, err = run_cli("grade", str(tmp_path / "in"), "--out", str(tmp_path / "g.csv"), "--timeout", "0")
    assert_one_line_error(rc, err, "--timeout must be a positive number of seconds")
    (tmp_path / "g.csv").write_text("learner,total\nada,3\n")
    rc, _, err = run_cli("grade", str(tmp_path / "in"), "--out", str(tmp_path / "g.csv"))
    assert_one_line_error(rc, err, "g.csv exists; pass --overwrite")
    assert (tmp_path / "g.csv").read_text() == "learner,total\nada,3\n", "a teacher's grades are never replaced"
    rc, _, err = run_cli("grade", str(tmp_path / "in"), "--out", str(tmp_path / "h.csv"), "--notebooks",
                         str(masters_dir))
    assert_one_line_error(rc, err, "holds no learner's folder")


@pytest.mark.slow
def test_grade_from_the_command_line(masters_dir, learner_handout, tmp_path):
    (tmp_path / "in" / "ada").mkdir(parents=True)
    for stem in C.MASTERS:
        nb = C._correct(nbformat.read(learner_handout / f"{stem}.ipynb", as_version=4))
        nbformat.write(nb, tmp_path / "in" / "ada" / f"{stem}.ipynb")
    rc, out, err = run_cli("grade", str(tmp_path / "in"), "--out", str(tmp_path / "g.csv"), "--timeout", "20",
                           "--notebooks", str(masters_dir))
    assert rc == 0, err
    assert C.read_csv_rows(tmp_path / "g.csv")["ada"]["total"] == "3" and "[1/1] ada: 3/3" in out
    assert (tmp_path / "feedback" / "ada.html").is_file()
