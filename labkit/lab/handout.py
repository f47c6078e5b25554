"""What a teacher hands out: the learner's notebooks, and the solutions handout.

    write_handout("handout/")                        # learner notebooks, no outputs, no answers + README.md
    write_solutions("solutions/", preset="default")  # every notebook run with worked solutions: .ipynb .html .pdf

The repository's notebooks are the teacher's masters. Each exercise in them is three cells (stub tagged
"exercise", hidden solution cell tagged "solution", check tagged "check"). The learner's copy is made from a master
by dropping its solution cells and the SOLUTIONS parameter, clearing every output, and stamping the notebook's
metadata with `labkit: {lab, notebook, exercises}`, which grading reads (`labkit.lab.grading`); then every cell is
scanned, and a copy in which anything could still fetch an answer (the name SOLUTIONS, a call to `solution(`) is
refused rather than written. The solutions handout runs each master with its solution cells replaced by the
worked solutions (`labkit.lab.worked`), shown and executed in place, through the notebook runner (HTML copies by
`runner.write_html`), and prints each HTML copy to an A4 PDF in headless Chromium (`browser.print_pdf`).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat

from .. import __version__
from ..core.errors import LabkitError
from ..core.files import write_text
from ..core.paths import notebook_dir, preset_dir
from . import exercises
from .grading import LAB
from .parameters import notebook_paths
from .worked import worked_source

__all__ = ["learner_notebook", "leaks", "with_defaults", "worked_notebook", "write_handout", "write_solutions",
           "LEARNER_README"]

# the switch, or a call that fetches an answer; in prose, the switch or the function's name
_LEAK = {"code": re.compile(r"\bSOLUTIONS\b|\bsolution\s*\("),
         "markdown": re.compile(r"\bSOLUTIONS\b|\bexercises\.solution\b")}
_SOLUTIONS_LINE = re.compile(r"^\s*SOLUTIONS\s*(:[^=]*)?=")


# ------------------------------------------------------------------------------------------ the learner's copy
def learner_notebook(master: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """The learner's copy of a master: no solution cell, no SOLUTIONS parameter, no output, stamped for grading.
    Raises a LabkitError naming the cell when anything that could fetch an answer is left."""
    nb = copy.deepcopy(master)
    nb.cells = [c for c in nb.cells if "solution" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = "\n".join(line for line in cell.source.splitlines() if not _SOLUTIONS_LINE.match(line))
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    nb.metadata["labkit"] = {"lab": LAB, "notebook": stem, "exercises": exercises.notebook_exercises(nb),
                             "version": __version__}
    found = leaks(nb)
    if found:
        raise LabkitError(f"the learner's copy of {stem} would still hold an answer: {found[0]}; each exercise's "
                          f"solution line belongs in its own cell tagged 'solution' (docs/teaching.md)")
    return nb


def leaks(nb: nbformat.NotebookNode) -> list[str]:
    """Every cell that names SOLUTIONS or calls `solution(`: "cell 9: `joint_labels = exercises.solution(...`"."""
    found = []
    for k, cell in enumerate(nb.cells, 1):
        pattern = _LEAK.get(cell.cell_type, _LEAK["code"])
        for line in cell.source.splitlines():
            if pattern.search(line):
                found.append(f"cell {k}: {line.strip()[:70]!r}")
    return found


LEARNER_README = """# {title}

Notebooks of labkit, a lab on *Self-supervised Label Augmentation* (SLA; Lee, Hwang & Shin, ICML 2020).

## Start

    pip install "labkit[lab]"      # or, in the teacher's checkout: make lab
    jupyter lab                    # in this folder

Open the notebooks in order and run them top to bottom (Run > Run All Cells). They train small models on your
CPU; a GPU is used when there is one.

## Data

Nothing to download: the handwritten digits the notebooks train on (1,797 real 8x8 images) and the photo in
notebook 01 are bundled with scikit-learn, which labkit installs. Other datasets (mnist, cifar10, cifar100) are
downloaded by torchvision into `data/` on first use: notebook 06 shows the paper's CIFAR recipe, which at the
paper's size downloads CIFAR-10 and wants a GPU.

## Your turn

{exercises}

Each exercise is a function to write, in the cell that says `raise NotImplementedError  # your turn`. The cell
after it checks your function against labkit's own, on random and tricky inputs, and names the mistake it
recognises, with a worked example. Run it as often as you like.

## Handing back

Hand back the notebooks with exercises, under their own names, in one folder named after you, for example

    {example}

Grading runs your notebooks' imports, functions, classes and constants (not your training cells) in a
fresh kernel without network, then labkit's checks on your functions. So:

- keep each function's name, and everything it needs inside its cell or in an import;
- make sure each function stops: a function running longer than the time limit scores 0;
- the check cells are not needed for grading, but they tell you what grading will say.
"""


def _readme(title: str, listing: Sequence[tuple[str, list[str]]]) -> str:
    lines = [f"- `{stem}.ipynb`: " + (", ".join(f"`{n}`" for n in names) if names else "no exercise")
             for stem, names in listing]
    with_exercises = [stem for stem, names in listing if names]
    example = f"ada/{with_exercises[0] if with_exercises else '01_name'}.ipynb"
    return LEARNER_README.format(title=title, exercises="\n".join(lines), example=example)


def write_handout(out: str | Path, only: Sequence[str] | None = None, notebooks: Path | None = None,
                  preset: str | None = "default", presets: Path | None = None, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> list[Path]:
    """The learner's handout in `out`: a copy of each notebook (`only` some, by number or name) and README.md.
    With `preset`, its values become the notebooks' parameter defaults (how long they train; not DEVICE, PROGRESS,
    WORKERS or SOLUTIONS), so learners run what the preset runs. Returns the files written. Refuses a folder that
    exists unless `overwrite`, and writes nothing when any notebook would leak an answer."""
    from .runner import load_preset

    values = load_preset(preset, presets).notebooks if preset else {}
    copies = []
    for path in notebook_paths(only, notebooks):
        master = with_defaults(nbformat.read(path, as_version=4), values.get(path.stem[:2], {}), path.stem)
        copies.append((path.stem, learner_notebook(master, path.stem)))
    out = _fresh_folder(out, overwrite)
    written = []
    for stem, nb in copies:
        target = out / f"{stem}.ipynb"
        write_text(target, nbformat.writes(nb) + "\n")
        written.append(target)
    listing = [(stem, nb.metadata["labkit"]["exercises"]) for stem, nb in copies]
    write_text(out / "README.md", _readme("The SLA lab: your notebooks", listing))
    written.append(out / "README.md")
    log(f"wrote {len(copies)} notebook(s) and README.md to {out}")
    return written


# the learner's machine and copy decide these (WORKERS > 1 needs Ray, which "labkit[lab]" does not install)
_NOT_DEFAULTS = {"DEVICE", "PROGRESS", "SOLUTIONS", "OUT_DIR", "WORKERS"}


def with_defaults(nb: nbformat.NotebookNode, values: dict[str, Any], stem: str) -> nbformat.NotebookNode:
    """`nb` with `values` (a preset's, checked against the parameters cell) as its parameters' defaults: the line
    `EPOCHS: int = 30  # comment` becomes `EPOCHS: int = 3  # comment`."""
    from .parameters import Parameter, check_parameters

    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    values = {k: v for k, v in values.items() if k not in _NOT_DEFAULTS}
    if cell is None or not values:
        return nb
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    declared = {}
    for k, line in enumerate(lines):
        match = _PARAMETER_LINE.match(line)
        if match:
            declared[match["name"]] = (k, match)
    params = {n: Parameter(n, m["annotation"].strip(), None, "") for n, (_, m) in declared.items()}
    for name, value in check_parameters(values, params, stem).items():
        k, m = declared[name]
        lines[k] = f"{name}: {m['annotation'].strip()} = {_literal(value)}{m['rest']}"
    cell.source = "\n".join(lines)
    return nb


_PARAMETER_LINE = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*)\s*:(?P<annotation>[^=]+)=\s*(?P<value>.*?)"
                             r"(?P<rest>\s+#.*)?$")


def _literal(value: Any) -> str:
    """A Python literal in the notebooks' style: double-quoted strings, lists of literals."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def _fresh_folder(out: str | Path, overwrite: bool) -> Path:
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LabkitError(f"handout: {out} exists and is not empty; pass --overwrite to replace its files")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------ the solutions copy
def worked_notebook(master: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The master with each hidden solution cell replaced by its worked solution, shown (not hidden)."""
    nb = copy.deepcopy(master)
    names, name = iter(exercises.notebook_exercises(nb)), None
    for k, cell in enumerate(nb.cells, 1):
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags:
            name = next(names)
        elif "solution" in tags:
            if name is None:
                raise LabkitError(f"cell {k} is tagged 'solution' but no exercise cell comes before it")
            cell.source = "# The worked solution\n" + worked_source(name).rstrip("\n")
            cell.metadata.pop("jupyter", None)
    return nb


def write_solutions(out: str | Path, preset: str = "default", only: Sequence[str] | None = None,
                    notebooks: Path | None = None, presets: Path | None = None, pdf: bool = True,
                    overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every notebook (or `only` some) with its worked solutions, executed under `preset` by the runner, into
    `out` as NN_name.ipynb, .html and (with `pdf`) an A4 .pdf, and summary.md (every recorded number). Returns
    the runner's summary with, per notebook, `pdf`, `pages` and `too_wide` (the figures wider than the printed
    page)."""
    from . import browser, runner

    out = _fresh_folder(out, overwrite)
    folder = notebooks or notebook_dir()
    with tempfile.TemporaryDirectory(prefix="labkit-solutions-") as tmp:
        worked = Path(tmp) / "notebooks"
        worked.mkdir()
        for path in notebook_paths(only, folder):
            nbformat.write(worked_notebook(nbformat.read(path, as_version=4)), worked / path.name)
        summary = runner.run_notebooks(preset, only, notebooks=worked, presets=presets or preset_dir(),
                                       out_root=Path(tmp) / "run", log=log)
        ran = Path(tmp) / "run" / preset
        for stem in summary["notebooks"]:
            summary["notebooks"][stem]["html"] = str(_tidy_copy(ran / f"{stem}.ipynb", out / f"{stem}.ipynb"))
        write_text(out / "summary.md", runner.format_results(summary) + "\n")  # every number, for the recaps
    if pdf:
        _print_all(out, summary, browser, log)
    return summary


def _tidy_copy(executed: Path, target: Path) -> Path:
    """The executed notebook without the cell papermill injected (the runner's own parameters and paths), and its
    HTML copy; returns the HTML's path."""
    from .runner import write_html

    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    write_text(target, nbformat.writes(nb) + "\n")
    return write_html(target)


def _print_all(out: Path, summary: dict[str, Any], browser: Any, log: Callable[[str], None]) -> None:
    with browser.chromium() as chromium:
        for stem, entry in summary["notebooks"].items():
            printed = browser.print_pdf(out / f"{stem}.html", out / f"{stem}.pdf", chromium)
            entry.update(pdf=str(printed.pdf), pages=printed.pages, too_wide=printed.too_wide)
            log(f"printed {printed.pdf.name}: {printed.pages} A4 page(s)")
            for d in printed.too_wide:
                log(f"    too wide for the page: {d['kind']} {d['title']!r} is {d['width']} px, the printed page "
                    f"holds {printed.content_px} px")
