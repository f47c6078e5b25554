"""Small teacher's notebooks that follow the exercise-cell contract (stub tagged "exercise", hidden solution cell
tagged "solution", check cell tagged "check"), a preset for them, and the learners' hand-ins the grading test
grades: one correct, one partly correct, and one for each way a hand-in goes wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat

MASTERS = {"01_first": ("joint_labels", "aggregate"), "02_second": ("distillation_loss",)}
STUBS = {
    "joint_labels": ("y, M", "(B,) class labels -> (B*M,) joint labels y*M + j, sample-major."),
    "aggregate": ("joint_logits, M", "(B*M, N*M) joint logits -> (B, N): the mean of each view's own logits."),
    "distillation_loss": ("student_logits, teacher_logits, T", "T² · KL(teacher ‖ student), batch mean."),
}
RIGHT = {
    "joint_labels": "    return (y[:, None] * M + torch.arange(M)).reshape(-1)\n",
    "aggregate": ("    B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M\n"
                  "    grid = joint_logits.reshape(B, M, N, M)\n"
                  "    return torch.stack([grid[:, j, :, j] for j in range(M)], dim=1).mean(1)\n"),
    "distillation_loss": ("    p = F.softmax(teacher_logits / T, dim=-1)\n"
                          "    return F.kl_div(F.log_softmax(student_logits / T, dim=-1), p, "
                          "reduction='batchmean') * T * T\n"),
}
AVERAGED_PROBABILITIES = ("    B, N = joint_logits.shape[0] // M, joint_logits.shape[1] // M\n"
                          "    grid = joint_logits.reshape(B, M, N, M)\n"
                          "    own = torch.stack([grid[:, j, :, j] for j in range(M)], dim=1)\n"
                          "    return own.softmax(-1).mean(1)\n")
EQUATION = r"$$s_i = \frac{1}{M}\sum_{j=1}^{M} \log P(i, j \mid \tilde x_j)$$"


def _code(source: str, *tags: str, hidden: bool = False) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    if hidden:
        cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def stub(name: str, body: str = "    raise NotImplementedError  # your turn\n") -> str:
    args, doc = STUBS[name]
    return f'def {name}({args}):\n    """{doc}"""\n{body}'


def exercise_cells(name: str) -> list[nbformat.NotebookNode]:
    """The contract's three cells for one exercise."""
    return [nbformat.v4.new_markdown_cell(f"### Your turn: `{name}`"),
            _code(stub(name), "exercise"),
            _code(f"{name} = exercises.solution({name!r}) if SOLUTIONS else {name}  # SOLUTIONS: labkit's answer, "
                  f"for CI and make run", "solution", hidden=True),
            _code(f"ok = exercises.check({name!r}, {name})  # run it as often as you like\n"
                  f"record.value(P.out, record.key('exercises', {name!r}), int(ok));", "check")]


def master(stem: str, figure_width: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = _code('SOLUTIONS: bool = False  # True fills each stub with labkit\'s answer\n'
                   'EPOCHS: int = 1  # passes over the training split\n'
                   'OUT_DIR: str = ""  # folder of the recorded numbers', "parameters")
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}\n\nThe aggregate of the views:\n\n{EQUATION}"),
                _code("import torch\nimport torch.nn.functional as F\nfrom types import SimpleNamespace\n\n"
                      "from labkit import exercises, record"),
                params,
                _code('P = SimpleNamespace(out=OUT_DIR or "runs/interactive")\nprint("training", EPOCHS)')]
    for name in MASTERS[stem]:
        nb.cells += exercise_cells(name)
    nb.cells.append(_code(f"import plotly.graph_objects as go\n\ngo.Figure(go.Bar(y=[3, 1, 2]), layout=dict("
                          f"title='accuracy by method', width={figure_width}, height=300))"))
    return nb


def write_masters(folder: Path) -> Path:
    """The two masters and a preset `tiny` (SOLUTIONS true, as the real presets) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in MASTERS:
        nbformat.write(master(stem), folder / f"{stem}.ipynb")
    (folder / "presets").mkdir(exist_ok=True)
    (folder / "presets" / "tiny.yaml").write_text(
        "description: two small notebooks\nnotebooks:\n  '01': {SOLUTIONS: true, EPOCHS: 3}\n"
        "  '02': {SOLUTIONS: true}\n")
    return folder


# ----------------------------------------------------------------------------------------------------- hand-ins
def _fill(nb: nbformat.NotebookNode, name: str, body: str | None = None, source: str | None = None) -> None:
    """Put the learner's code in the stub cell of `name`: `body` under the stub's def, or a whole `source`."""
    cell = next(c for c in nb.cells if "exercise" in c.metadata.get("tags", []) and f"def {name}(" in c.source)
    cell.source = source if source is not None else stub(name, body)


def _drop(nb: nbformat.NotebookNode, tag: str, name: str) -> None:
    nb.cells = [c for c in nb.cells if not (tag in c.metadata.get("tags", []) and name in c.source)]


def _learner(handout: Path, folder: Path, edits: dict[str, Callable[[nbformat.NotebookNode], object]]) -> None:
    """A learner's folder: each notebook of the handout, edited by edits[stem](nb) (or left out when absent)."""
    folder.mkdir(parents=True)
    for stem, edit in edits.items():
        nb = nbformat.read(handout / f"{stem}.ipynb", as_version=4)
        edit(nb)
        nbformat.write(nb, folder / f"{stem}.ipynb")


def _correct(nb: nbformat.NotebookNode, *names: str) -> nbformat.NotebookNode:
    for name in names or [n for n in STUBS if f"def {n}(" in "".join(c.source for c in nb.cells)]:
        _fill(nb, name, RIGHT[name])
    return nb


def write_hand_ins(handout: Path, folder: Path) -> dict[str, str]:
    """One sub-folder per learner under `folder`, built from the learner's handout; returns learner -> what their
    hand-in shows."""
    def both(edit_01, edit_02=_correct):
        return {"01_first": edit_01, "02_second": edit_02}

    learners = {
        "ada": ("everything right", both(_correct)),
        "ben": ("partly right: averaged probabilities, 02 left as a stub",
                both(lambda nb: (_correct(nb, "joint_labels"), _fill(nb, "aggregate", AVERAGED_PROBABILITIES)),
                     lambda nb: None)),
        "dee": ("a syntax error in aggregate's cell",
                both(lambda nb: (_correct(nb, "joint_labels"), _fill(nb, "aggregate", "    return (joint_logits\n")))),
        "eve": ("aggregate renamed, joint_labels's cell deleted",
                both(lambda nb: (_fill(nb, "aggregate", source=stub("aggregate", RIGHT["aggregate"]).replace(
                    "def aggregate(", "def my_aggregate(")), _drop(nb, "exercise", "def joint_labels(")))),
        "fay": ("joint_labels raises, aggregate loops forever",
                both(lambda nb: (_fill(nb, "joint_labels", "    raise ValueError('M must be 4')\n"),
                                 _fill(nb, "aggregate", "    while True:\n        pass\n")))),
        "gus": ("aggregate loops and swallows the interrupt; 02 right after it",
                both(lambda nb: (_correct(nb, "joint_labels"), _fill(
                    nb, "aggregate", "    while True:\n        try:\n            pass\n"
                                     "        except BaseException:\n            pass\n")))),
        "hal": ("every check cell deleted, functions right",
                both(lambda nb: (_correct(nb), _drop(nb, "check", "exercises.check(")),
                     lambda nb: (_correct(nb), _drop(nb, "check", "exercises.check(")))),
        "ivy": ("SOLUTIONS = True and labkit's answers borrowed",
                both(lambda nb: (nb.cells.insert(3, _code("SOLUTIONS = True")),
                                 _fill(nb, "joint_labels", "    return exercises.solution('joint_labels')(y, M)\n"),
                                 _fill(nb, "aggregate", source=stub("aggregate") + "\n\naggregate = exercises."
                                       "solution('aggregate') if SOLUTIONS else aggregate\n")),
                     lambda nb: _fill(nb, "distillation_loss", "    from labkit.sla import objectives\n"
                                      "    return objectives.distillation_loss(student_logits, teacher_logits, T)\n"))),
    }
    for learner, (_, edits) in learners.items():
        _learner(handout, folder / learner, edits)
    (folder / "cy").mkdir()
    (folder / "cy" / "01_first.ipynb").write_text("my answers are in the PDF, sorry")
    (folder / "cy" / "answers.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    other = nbformat.v4.new_notebook()
    other.cells = [_code("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)")]
    (folder / "jon").mkdir()
    nbformat.write(other, folder / "jon" / "lab3_recursion.ipynb")
    described = {k: v[0] for k, v in learners.items()}
    described.update(cy="not JSON, and a PDF", jon="a notebook of another lab")
    return described


def read_csv_rows(path: Path) -> dict[str, dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return {row["learner"]: row for row in csv.DictReader(f)}
