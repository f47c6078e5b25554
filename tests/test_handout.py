"""`labkit handout`: the learner's notebooks hold no answer anywhere, and the solutions handout runs the worked
solutions, shows them, and prints to A4 PDFs with figures and maths intact.

The notebooks here are small ones of the tests' own (tests/_classroom.py) that follow the exercise-cell contract;
the last test takes labkit's own notebooks once they do.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from labkit.core.errors import LabkitError
from labkit.lab import browser, exercises, handout, runner
from labkit.lab.worked import WORKED, worked_source
from tests import _classroom as C
from tests.support import assert_one_line_error, run_cli

LEAK = re.compile(r"\bSOLUTIONS\b|\bsolution\s*\(")


def _cells_text(nb) -> list[str]:
    return [c.source for c in nb.cells]


# ----------------------------------------------------------------------------------------- the learner's copy
def test_the_learners_copy_holds_no_answer_anywhere():
    nb = handout.learner_notebook(C.master("01_first"), "01_first")
    for k, text in enumerate(_cells_text(nb), 1):
        assert not LEAK.search(text), f"cell {k} still holds {text!r}"
    assert not [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert exercises.notebook_exercises(nb) == ["joint_labels", "aggregate"]
    assert nb.metadata["labkit"]["notebook"] == "01_first"
    assert nb.metadata["labkit"]["exercises"] == ["joint_labels", "aggregate"]
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "EPOCHS: int = 1" in params.source and "OUT_DIR" in params.source
    stubs = [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    assert all("raise NotImplementedError  # your turn" in s and "return" not in s for s in stubs)
    checks = [c.source for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == 2, "the learner keeps the checks"


def test_outputs_and_execution_counts_are_cleared():
    master = C.master("02_second")
    cell = master.cells[1]
    cell.outputs = [nbformat.v4.new_output("stream", text="done\n")]
    cell.execution_count = 3
    cell.metadata["execution"] = {"iopub.status.busy": "2024"}
    nb = handout.learner_notebook(master, "02_second")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None and "execution" not in c.metadata for c in code)


def test_a_solution_line_outside_its_own_cell_is_refused():
    """Today's layout (the solution line in the stub cell) would leak into the learner's copy: refused, naming the
    cell, rather than written."""
    master = C.master("01_first")
    stub = next(c for c in master.cells if "exercise" in c.metadata.get("tags", []))
    stub.source += '\n\njoint_labels = exercises.solution("joint_labels") if SOLUTIONS else joint_labels'
    with pytest.raises(LabkitError, match=r"the learner's copy of 01_first would still hold an answer: cell 6"):
        handout.learner_notebook(master, "01_first")


def test_markdown_that_tells_how_to_fetch_answers_is_refused_too():
    master = C.master("02_second")
    master.cells.append(nbformat.v4.new_markdown_cell("Set `SOLUTIONS = True` to see labkit's answers."))
    with pytest.raises(LabkitError, match="would still hold an answer"):
        handout.learner_notebook(master, "02_second")


def test_write_handout_writes_notebooks_and_a_readme_and_refuses_a_full_folder(tmp_path):
    masters = C.write_masters(tmp_path / "masters")
    out = tmp_path / "handout"
    written = handout.write_handout(out, notebooks=masters, preset="tiny", presets=masters / "presets",
                                    log=lambda _: None)
    assert sorted(p.name for p in written) == ["01_first.ipynb", "02_second.ipynb", "README.md"]
    assert sorted(p.name for p in out.iterdir()) == ["01_first.ipynb", "02_second.ipynb", "README.md"]
    for path in out.glob("*.ipynb"):
        text = path.read_text()
        assert text.endswith("}\n") and not LEAK.search(text), path.name
        nbformat.validate(nbformat.read(path, as_version=4))
    params = nbformat.read(out / "01_first.ipynb", as_version=4).cells[2].source
    assert "EPOCHS: int = 3  # passes over the training split" in params, "the preset's value is the default"
    readme = (out / "README.md").read_text()
    assert "bundled with scikit-learn" in readme and "`01_first.ipynb`: `joint_labels`, `aggregate`" in readme
    assert "Hand back" in readme
    before = (out / "README.md").read_text()
    rc, _, err = run_cli("handout", "--out", str(out), "--notebooks", str(masters), "--preset", "tiny")
    assert_one_line_error(rc, err, "is not empty; pass --overwrite")
    assert (out / "README.md").read_text() == before


def test_the_handout_from_the_command_line(tmp_path):
    masters = C.write_masters(tmp_path / "masters")
    rc, out, err = run_cli("handout", "--out", str(tmp_path / "h"), "--notebooks", str(masters), "--only", "02",
                           "--preset", "tiny")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["02_second.ipynb", "README.md"]
    assert "wrote 1 notebook(s) and README.md" in out


def test_a_preset_value_of_the_wrong_type_is_refused():
    with pytest.raises(LabkitError, match="parameter EPOCHS of notebook 01_first must be int"):
        handout.with_defaults(C.master("01_first"), {"EPOCHS": "three"}, "01_first")
    same = handout.with_defaults(C.master("01_first"), {"DEVICE": "cpu", "PROGRESS": False, "WORKERS": 2},
                                 "01_first")
    assert same.cells[2].source == C.master("01_first").cells[2].source, "the learner's machine decides these"


# ------------------------------------------------------------------------------------------ worked solutions
@pytest.mark.parametrize("name", sorted(WORKED))
def test_each_worked_solution_runs_on_its_own_and_passes_its_check(name, capsys):
    namespace: dict = {}
    exec(worked_source(name), namespace)
    assert exercises.check(name, namespace[name]), capsys.readouterr().out
    assert "labkit" not in WORKED[name], "written with torch alone, as a learner would"


def test_an_exercise_without_a_worked_solution_shows_labkits_source(monkeypatch):
    monkeypatch.delitem(WORKED, "aggregate")
    text = worked_source("aggregate")
    assert "# def aggregate(joint_logits: Tensor, M: int) -> Tensor:" in text
    assert text.strip().endswith("aggregate = exercises.solution('aggregate')")


def test_the_worked_notebook_shows_each_solution_in_place():
    nb = handout.worked_notebook(C.master("01_first"))
    cells = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert [c.source.splitlines()[0] for c in cells] == ["# The worked solution"] * 2
    assert "def joint_labels(" in cells[0].source and "def aggregate(" in cells[1].source
    assert all("jupyter" not in c.metadata for c in cells), "shown, not hidden"


# ------------------------------------------------------------------------------------------ solutions handout
@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    root = tmp_path_factory.mktemp("solutions")
    masters = C.write_masters(root / "masters")
    nbformat.write(C.master("02_second", figure_width=1000), masters / "02_second.ipynb")  # too wide for A4
    if browser.missing():
        pytest.skip("the solutions handout prints with headless Chromium: " + ", ".join(browser.missing()))
    summary = handout.write_solutions(root / "out", preset="tiny", notebooks=masters, presets=masters / "presets",
                                      log=lambda _: None)
    return root / "out", summary


@pytest.mark.slow
@pytest.mark.browser
def test_the_solutions_handout_runs_the_worked_solutions(solutions):
    out, summary = solutions
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}{suffix}" for stem in C.MASTERS for suffix in (".ipynb", ".html", ".pdf")] + ["summary.md"])
    assert "| exercises.aggregate | 1 |" in (out / "summary.md").read_text()
    assert summary["notebooks"]["01_first"]["results"] == {"exercises.joint_labels": 1.0, "exercises.aggregate": 1.0}
    assert summary["notebooks"]["02_second"]["results"] == {"exercises.distillation_loss": 1.0}
    executed = nbformat.read(out / "01_first.ipynb", as_version=4)
    assert not [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    said = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("✓ " in t for t in said) == 2 and not any("not yet" in t or "✗" in t for t in said)
    page = (out / "01_first.html").read_text()
    assert "The worked solution" in page and "<math" in page and "labkit-solutions-" not in page


@pytest.mark.slow
@pytest.mark.browser
def test_the_pdfs_are_a4_with_figures_and_maths_and_name_what_is_too_wide(solutions):
    out, summary = solutions
    for stem, entry in summary["notebooks"].items():
        data = (out / f"{stem}.pdf").read_bytes()
        assert data.startswith(b"%PDF") and entry["pages"] == browser.pdf_pages(data) >= 1
        boxes = {(float(w), float(h)) for w, h in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)}
        assert boxes and all(abs(w - 595) < 2 and abs(h - 842) < 2 for w, h in boxes), f"{stem}: not A4 ({boxes})"
    first = summary["notebooks"]["01_first"]
    assert first["too_wide"] == []
    second = summary["notebooks"]["02_second"]
    assert [(d["kind"], d["title"], d["width"]) for d in second["too_wide"]] == [("figure", "accuracy by method",
                                                                                   1000)]


@pytest.mark.slow
@pytest.mark.browser
def test_what_the_printed_page_draws(solutions, chromium_browser):
    """Laid out at the printed width: the display formula and the figure have a size, and fit."""
    out, _ = solutions
    printed = browser.print_pdf(out / "01_first.html", out / "again.pdf", chromium_browser)
    kinds = {d["kind"] for d in printed.drawn}
    assert {"figure", "math"} <= kinds
    assert all(d["width"] > 20 and d["height"] > 5 for d in printed.drawn)
    assert printed.content_px == browser.A4_PX - 2 * browser.PRINT_MARGIN_PX and printed.too_wide == []
    (out / "again.pdf").unlink()


# ----------------------------------------------------------------------------------------- labkit's notebooks
def test_labkits_own_handout_holds_no_answer(tmp_path):
    """Every notebook in the learner's handout, every cell scanned. Runs once the notebooks follow the exercise-cell
    contract (cells tagged exercise / solution / check); before that, making the handout is refused."""
    tagged = [p for p in runner.notebook_paths() if exercises.notebook_exercises(json.loads(p.read_text()))]
    if not tagged:
        with pytest.raises(LabkitError, match="would still hold an answer"):
            handout.write_handout(tmp_path / "h", log=lambda _: None)
        pytest.skip("labkit's notebooks do not tag their exercise cells yet: the handout is refused, as checked")
    handout.write_handout(tmp_path / "h", log=lambda _: None)
    for path in (tmp_path / "h").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for k, cell in enumerate(nb.cells, 1):
            assert not LEAK.search(cell.source), f"{path.name} cell {k}"
            assert cell.cell_type != "code" or (cell.outputs == [] and cell.execution_count is None)
