"""Grade the notebooks learners hand back: one kernel per learner, labkit's checks, a CSV and a feedback page each.

    grades = grade("handed_in/", "grades.csv", timeout=30)   # handed_in/<learner>/<notebooks>
    # grades.csv: learner, one column per exercise (1 passed, 0 not), total, problems
    # feedback/<learner>.html: each check's message, and what went wrong with the hand-in

What runs, and where:
- In the grader's process: reading each hand-in (a file that is not a notebook, or not JSON, is a problem, not a
  crash), matching it to a master notebook (the handout's stamp `metadata.labkit.notebook`, else the file name's
  two-digit number, and then it must hold one of that notebook's exercises, or it is a notebook of another lab),
  and choosing what of it runs: the import statements, function and class definitions and plain constants of
  its cells, with IPython's syntax turned into Python first. Cells tagged "solution", "check" or "parameters"
  never run, nor does anything else (no training, no `exercises.check`, no assignment to SOLUTIONS, which is
  noted instead), and a learner function that takes labkit's own answer (`joint.aggregate` in `def aggregate`,
  `exercises.solution("aggregate")`) scores 0 with that reason.
- In a fresh kernel per learner (jupyter_client's IPC transport in a temporary folder, every proxy pointed at a
  refused port, Python's sockets refused by `labkit.lab.sandbox`, and a network namespace with no interface up
  where `unshare -rn` works): those statements (at least DEFINITIONS_FLOOR s for their imports), then each
  exercise's function on the check's cases, under the time limit. A step past its limit is interrupted; a
  kernel that does not stop, or dies, is replaced and the notebook's definitions are run again, and grading goes
  on with the next exercise.
- Back in the grader's process: `exercises.verdict` judges the outputs against labkit's own, so the grade comes
  from labkit's checks and never from the learner's kernel.

Why not otter-grader or nbgrader's autograde: both grade their own kind of assignment. otter wants notebooks made
by `otter assign` (its question and test annotations, a `grader.check("q1")` per question) and its own test files
(OK-format cases run by otter's runner); nbgrader wants its cell metadata (`nbgrader: {grade_id, points, ...}`,
written by `nbgrader generate_assignment`), its course folder layout and its gradebook database, and grades by
running every cell of the notebook with its hidden test cells. labkit's exercises are library functions checked
by `labkit.lab.exercises` (adversarial cases, named mistakes, worked examples); wrapping them as otter or nbgrader
tests would add a second annotation of every notebook and a database, and would still run the whole notebook
(training included) in a kernel where the learner's code can reach the checks. So grading is built on the
kernel machinery papermill and nbclient drive (jupyter_client) with a loop of its own: nbclient's timeout
interrupts a cell but cannot replace a kernel that ignores the interrupt and replay the learner's definitions.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import csv
import html
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError
from ..core.files import write_text
from ..core.paths import kernel_pythonpath, notebook_dir
from . import exercises
from .parameters import notebook_paths

__all__ = ["Master", "Result", "LearnerGrade", "masters", "grade", "grade_learner", "write_csv",
           "feedback_page", "network_isolation", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0  # seconds for one exercise's function on every case (and a notebook's definitions)
DEFINITIONS_FLOOR = 60.0  # seconds a notebook's definitions get at least: importing torch and plotly takes a while
GRACE = 5.0  # seconds an interrupted kernel gets to stop before it is replaced
LAB = "labkit"  # the handout's stamp: metadata.labkit.lab
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_NUMBER = re.compile(r"^(\d\d)_")
_BUILTINS = set(dir(builtins))
_SKIPPED = {"solution", "check", "parameters", "injected-parameters"}  # cells whose code never runs in grading


# ---------------------------------------------------------------------------------------------- what is graded
@dataclass(frozen=True)
class Master:
    """A teacher's notebook that holds exercises: its stem and its exercises, in order."""

    stem: str
    exercises: tuple[str, ...]


def masters(folder: Path | None = None) -> list[Master]:
    """The numbered notebooks of `folder` (default: labkit's) that hold exercises (cells tagged "exercise")."""
    found = []
    for path in notebook_paths(folder=folder):
        names = exercises.notebook_exercises(json.loads(path.read_text(encoding="utf-8")))
        if names:
            found.append(Master(path.stem, tuple(names)))
    if not found:
        raise LabkitError(f"no notebook in {folder or notebook_dir()} has exercise cells (code cells tagged "
                          f"'exercise' that define the function to write); nothing to grade")
    return found


@dataclass(frozen=True)
class Result:
    """One exercise of one learner: passed or not, and the check's message (or why it could not run)."""

    notebook: str
    exercise: str
    passed: bool
    message: str
    source: str = ""  # the learner's exercise cell, shown on the feedback page


@dataclass
class LearnerGrade:
    """A learner's row: a result per exercise (in the masters' order) and the problems with the hand-in."""

    learner: str
    results: list[Result] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(r.passed for r in self.results)


# ------------------------------------------------------------------------------------------- reading hand-ins
@dataclass
class _Submission:
    """A learner's notebook matched to a master: the statements that will run, and what the grader saw."""

    master: Master
    file: str
    statements: list[dict[str, Any]]  # [{"cell": k, "source": "..."}], notebook order
    sources: dict[str, str]  # exercise -> the learner's cell that defines it
    missing: dict[str, str]  # exercise -> why it cannot run (syntax error in its cell, renamed)
    borrowed: dict[str, str]  # exercise -> the labkit name the learner's code uses in its place


def _read(path: Path) -> tuple[dict | None, str | None]:
    """A notebook as a dict, or (None, the reason it is not one)."""
    if path.suffix != ".ipynb":
        return None, f"{path.name} is not a notebook (only .ipynb files are graded)"
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path.name} is not a notebook: not JSON ({str(e).splitlines()[0][:80]})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, f"{path.name} is not a notebook: JSON without a list of cells"
    return nb, None


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _code_cells(nb: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(1-based cell number, cell) of every code cell."""
    return [(k, c) for k, c in enumerate(nb["cells"], 1) if isinstance(c, dict) and c.get("cell_type") == "code"]


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _match(path: Path, nb: Mapping[str, Any], by_stem: Mapping[str, Master]) -> tuple[Master | None, str | None]:
    """The master this notebook is a copy of, or (None, why it is of another lab)."""
    stamp = nb.get("metadata", {}).get("labkit", {}) if isinstance(nb.get("metadata"), dict) else {}
    stamp = stamp if isinstance(stamp, dict) else {}
    master = by_stem.get(stamp.get("notebook", ""))
    if master is None:
        number = _NUMBER.match(path.stem)
        master = next((m for m in by_stem.values() if number and m.stem[:2] == number.group(1)), None)
    defined = "\n".join(_source(c) for _, c in _code_cells(nb))
    if master is None or not any(re.search(rf"\bdef\s+{n}\s*\(", defined) or "exercise" in _tags(c)
                                 for n in master.exercises for _, c in _code_cells(nb)):
        return None, f"{path.name} is a notebook of another lab (none of this lab's exercises are in it)"
    return master, None


def _python(source: str) -> str:
    """A cell's IPython (magics, `!shell`) as Python: the magics become calls, which are then left out."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _kept(node: ast.stmt, bound: set[str]) -> bool:
    """Imports, definitions, and assignments of constants, aliases and lambdas (`EPS = 1e-9`, `f = g`) whose names
    are all `bound` by what runs before them (so `acc = comparison.rows`, from a training cell, stays out)."""
    if isinstance(node, _KEPT):
        return True
    if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return (all(isinstance(t, ast.Name) and t.id != "SOLUTIONS" for t in targets) and _plain(node.value)
                and _free_names(node.value) <= bound | _BUILTINS)
    return False


def _plain(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant | ast.Name | ast.Attribute | ast.Lambda):
        return True
    if isinstance(value, ast.UnaryOp):
        return _plain(value.operand)
    return isinstance(value, ast.Tuple | ast.List) and all(_plain(v) for v in value.elts)


def _free_names(value: ast.expr) -> set[str]:
    """The names an expression reads, less a lambda's own arguments."""
    local = {a.arg for n in ast.walk(value) if isinstance(n, ast.Lambda) for a in n.args.args}
    return {n.id for n in ast.walk(value) if isinstance(n, ast.Name)} - local


def _select(tree: ast.Module, bound: set[str]) -> list[ast.stmt]:
    """The statements of a cell that run in grading; `bound` grows with the names they bind."""
    kept = []
    for node in tree.body:
        if _kept(node, bound):
            kept.append(node)
            bound |= _bound(ast.Module(body=[node], type_ignores=[]))
    return kept


def _labkit_names(tree: ast.Module) -> set[str]:
    """Names the notebook binds to labkit: `import labkit`, `from labkit import joint`, `from labkit.sla import x`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "labkit")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "labkit":
            names.update(a.asname or a.name for a in node.names)
    return names


def _borrowed(written: ast.Module, exercise_names: Sequence[str], labkit: set[str]) -> dict[str, str]:
    """Exercises whose function takes its answer from labkit: `def aggregate` calling `joint.aggregate` or
    `exercises.solution("aggregate")`, `aggregate = joint.aggregate`, `from labkit.sla.joint import aggregate`.
    Only the learner's own function is read: the notebook's teaching cells may call labkit's as they like."""
    found = {}
    for name in exercise_names:
        for top in _writing(written, name):
            if isinstance(top, ast.ImportFrom):  # _writing keeps only labkit's imports that bind `name`
                alias = next(a for a in top.names if (a.asname or a.name) == name)
                found.setdefault(name, f"{top.module}.{alias.name}")
            for node in ast.walk(top):
                if isinstance(node, ast.Attribute) and node.attr == name and _root(node) in labkit:
                    found.setdefault(name, ast.unparse(node))
                elif _fetches_solution(node, labkit) and node.args[0].value == name:
                    found.setdefault(name, ast.unparse(node))
    return found


def _writing(written: ast.Module, name: str) -> list[ast.stmt]:
    """The top-level statements that bind `name`: its def, assignments to it, imports of it from labkit."""
    found = []
    for node in written.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if ((isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name)
                or any(isinstance(t, ast.Name) and t.id == name for t in targets)
                or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "labkit"
                    and any((a.asname or a.name) == name for a in node.names))):
            found.append(node)
    return found


def _fetches_solution(node: ast.AST, labkit: set[str]) -> bool:
    """`exercises.solution("name")` (or `solution("name")` imported from labkit)."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "solution" and _root(f) in labkit) or (
        isinstance(f, ast.Name) and f.id == "solution" and "solution" in labkit)


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _submission(path: Path, nb: Mapping[str, Any], master: Master, problems: list[str]) -> _Submission:
    """What of the notebook runs, and the problems the grader sees without running it."""
    statements, sources, missing, trees, bound = [], {}, {}, [], set()
    where = path.name
    for k, cell in _code_cells(nb):
        tags, text = _tags(cell), _source(cell)
        for name in master.exercises:
            if re.search(rf"^\s*def\s+{name}\s*\(", text, re.MULTILINE) or (
                    "exercise" in tags and _exercise_at(nb, k, master) == name):
                sources.setdefault(name, text)
        try:
            tree = ast.parse(_python(text))
        except SyntaxError as e:
            problems.append(f"{where}: cell {k} has a syntax error (line {e.lineno}: {e.msg}); none of it ran")
            missing.update({n: f"✗ {n} is not defined: its cell has a syntax error (line {e.lineno}: {e.msg})"
                            for n in master.exercises if sources.get(n) == text})
            continue
        problems.extend(_solutions_set(tree, where, k))
        if not _SKIPPED & set(tags):
            trees.append(tree)
            statements += [{"cell": k, "source": ast.unparse(n)} for n in _select(tree, bound)]
    written = ast.Module(body=[n for t in trees for n in t.body], type_ignores=[])  # what runs, and what does not
    for name in master.exercises:
        if name not in bound and name not in missing:
            missing[name] = _not_found(nb, master, name)
    problems.extend(_deleted_checks(nb, master, where))
    return _Submission(master, where, statements, sources, missing,
                       _borrowed(written, master.exercises, _labkit_names(written)))


def _bound(module: ast.Module) -> set[str]:
    """The names the statements that run bind at the top level (functions, classes, assignments, imports)."""
    names = set()
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _exercise_at(nb: Mapping[str, Any], k: int, master: Master) -> str | None:
    """The master's exercise whose place the learner's cell k holds: the exercise whose check cell comes next, or,
    when the notebook keeps every exercise cell, the one at the same place in their order."""
    cells = _code_cells(nb)
    after = next((_source(c) for j, c in cells if j > k), "")
    checked = re.search(r"exercises\.check\(\s*[\"'](\w+)[\"']", after)
    if checked and checked.group(1) in master.exercises:
        return checked.group(1)
    tagged = [j for j, c in cells if "exercise" in _tags(c)]
    if len(tagged) != len(master.exercises) or k not in tagged:
        return None
    return master.exercises[tagged.index(k)]


def _not_found(nb: Mapping[str, Any], master: Master, name: str) -> str:
    """Why `name` is not in the notebook: a renamed function in its exercise cell, or no definition at all."""
    for k, cell in _code_cells(nb):
        if "exercise" in _tags(cell) and _exercise_at(nb, k, master) == name:
            other = re.search(r"^\s*def\s+(\w+)\s*\(", _source(cell), re.MULTILINE)
            if other:
                return f"✗ {name} is not defined: its exercise cell defines {other.group(1)} instead (keep the name)"
    return f"✗ {name} is not defined: no cell of the notebook defines it"


def _solutions_set(tree: ast.Module, where: str, k: int) -> list[str]:
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "SOLUTIONS" for t in targets) and node.value is not None:
            found.append(f"{where}: cell {k} sets SOLUTIONS = {ast.unparse(node.value)}; ignored, grading checks "
                         f"the learner's own functions")
    return found


def _deleted_checks(nb: Mapping[str, Any], master: Master, where: str) -> list[str]:
    text = "\n".join(_source(c) for _, c in _code_cells(nb))
    gone = [n for n in master.exercises if not re.search(rf"exercises\.check\(\s*[\"']{n}[\"']", text)]
    if not gone:
        return []
    cells = "the check cell of " + gone[0] if len(gone) == 1 else "the check cells of " + ", ".join(gone)
    return [f"{where}: {cells} deleted; graded all the same (grading runs labkit's checks itself)"]


def _collect(folder: Path, by_stem: Mapping[str, Master], problems: list[str]) -> list[_Submission]:
    """The learner's notebooks matched to masters (one per master: the one named like it first)."""
    chosen: dict[str, tuple[Path, dict, Master]] = {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    for path in sorted(files, key=lambda p: (p.stem not in by_stem, str(p))):
        nb, problem = _read(path)
        master = None
        if nb is not None:
            master, problem = _match(path, nb, by_stem)
        if problem:
            problems.append(problem)
        elif master.stem in chosen:
            problems.append(f"{path.name} is a second copy of {master.stem}; graded {chosen[master.stem][0].name}")
        else:
            chosen[master.stem] = (path, nb, master)
    if not files:
        problems.append("nothing handed in")
    return [_submission(path, nb, master, problems) for path, nb, master in chosen.values()]


# ---------------------------------------------------------------------------------------------------- kernels
def network_isolation() -> list[str]:
    """The command prefix that starts a process in a network namespace of its own with no interface up
    (`unshare -rn`), or [] where the system does not allow it (no unshare, user namespaces switched off)."""
    unshare = shutil.which("unshare")
    if not unshare or sys.platform != "linux":
        return []
    try:
        ok = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return [unshare, "-rn"] if ok else []


def _kernel_env() -> dict[str, str]:
    """This labkit first on PYTHONPATH, one thread, and every proxy on a port that refuses at once."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "jpy_session_name")}
    path = os.pathsep.join([*map(str, kernel_pythonpath()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    refused = "http://127.0.0.1:9"
    env.update({"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                "http_proxy": refused, "https_proxy": refused, "HTTP_PROXY": refused, "HTTPS_PROXY": refused,
                "all_proxy": refused, "ALL_PROXY": refused})
    return env


@dataclass(frozen=True)
class _Outcome:
    status: str  # "ok", "error", "timeout" or "died"
    error: str = ""
    replaced: bool = False  # the kernel was replaced: its namespace is gone


class _Kernel:
    """An ipykernel over IPC in `folder`, started in `prefix` (a network namespace), its cwd `folder/work`."""

    def __init__(self, folder: Path, prefix: Sequence[str]) -> None:
        self.folder, self.prefix = folder, list(prefix)
        (folder / "work").mkdir(parents=True, exist_ok=True)
        self.km = self.kc = None
        self._start()

    def _start(self) -> None:
        from jupyter_client import KernelManager

        prefix = self.prefix

        class Isolated(KernelManager):
            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                return [*prefix, *super().format_kernel_cmd(extra_arguments)]

        self.km = Isolated(kernel_name="python3", transport="ipc",
                           connection_file=str(self.folder / "kernel.json"))
        self.km.start_kernel(env=_kernel_env(), cwd=str(self.folder / "work"))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=120)
        except RuntimeError as e:
            self.stop()
            raise LabkitError(f"the grading kernel did not start: {e}") from None

    def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km is not None and self.km.has_kernel:
            self.km.shutdown_kernel(now=True)
        self.km = self.kc = None

    def run(self, code: str, timeout: float) -> _Outcome:
        """Execute `code`; past `timeout` s interrupt it, and replace the kernel if it has not stopped GRACE s
        later."""
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        reply = self._reply(msg_id, timeout)
        if reply is None and self.km.is_alive():
            self.km.interrupt_kernel()
            if self._reply(msg_id, GRACE) is not None:
                return _Outcome("timeout")
        if reply is None:
            died = not self.km.is_alive()
            self.stop()
            self._start()
            return _Outcome("died" if died else "timeout", replaced=True)
        self._drain()
        content = reply["content"]
        if content.get("status") == "ok":
            return _Outcome("ok")
        return _Outcome("error", f"{content.get('ename', 'error')}: {str(content.get('evalue', ''))[:160]}")

    def _drain(self) -> None:
        """Read and drop the output messages: what the learner's code printed is not kept."""
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return

    def _reply(self, msg_id: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.kc.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                if not self.km.is_alive():
                    return None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None


# ----------------------------------------------------------------------------------------------------- grading
def grade_learner(folder: Path, notebook_masters: Sequence[Master], timeout: float = DEFAULT_TIMEOUT,
                  isolation: Sequence[str] | None = None) -> LearnerGrade:
    """Grade one learner's folder: every exercise of every master gets a result, whatever the hand-in holds."""
    grade = LearnerGrade(folder.name)
    by_stem = {m.stem: m for m in notebook_masters}
    submissions = _collect(folder, by_stem, grade.problems)
    got: dict[tuple[str, str], Result] = {}
    if submissions:
        prefix = network_isolation() if isolation is None else isolation
        with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp, _kernel(Path(tmp), prefix) as kernel:
            for sub in submissions:
                for result in _run_submission(kernel, Path(tmp), sub, timeout, grade.problems):
                    got[(sub.master.stem, result.exercise)] = result
    handed = {s.master.stem for s in submissions}
    for master in notebook_masters:
        if master.stem not in handed and submissions:
            grade.problems.append(f"{master.stem} was not handed in")
        for name in master.exercises:
            grade.results.append(got.get((master.stem, name)) or Result(
                master.stem, name, False, f"✗ {name}: {master.stem} was not handed in"))
    return grade


@contextlib.contextmanager
def _kernel(folder: Path, prefix: Sequence[str]) -> Iterator[_Kernel]:
    """A grading kernel, stopped afterwards whatever happens."""
    kernel = _Kernel(folder, prefix)
    try:
        yield kernel
    finally:
        kernel.stop()


def _setup(kernel: _Kernel, job: Path, timeout: float) -> _Outcome:
    """A fresh namespace holding the sandbox and the notebook's definitions (its imports may take a while on a
    busy machine: they get at least DEFINITIONS_FLOOR s)."""
    kernel.run("%reset -f", max(timeout, 30))
    setup = kernel.run("from labkit.lab import sandbox as __labkit_sandbox\n__labkit_sandbox.enter()", 120)
    if setup.status != "ok":
        raise LabkitError(f"the grading kernel cannot load labkit's sandbox: {setup.error}")
    return kernel.run(f"__labkit_sandbox.define(globals(), {str(job)!r})", max(timeout, DEFINITIONS_FLOOR))


def _run_submission(kernel: _Kernel, tmp: Path, sub: _Submission, timeout: float,
                    problems: list[str]) -> Iterator[Result]:
    stem = sub.master.stem
    job = tmp / f"{stem}.definitions.json"
    job.write_text(json.dumps(sub.statements))
    defined = _setup(kernel, job, timeout)
    if defined.status in ("timeout", "died"):
        problems.append(f"{sub.file}: its definitions ran past {max(timeout, DEFINITIONS_FLOOR):g} s; none of its "
                        f"functions could be checked")
    for e in _read_errors(job):
        problems.append(f"{sub.file}: cell {e['cell']} failed while defining: {e['error']}")
    for name in sub.master.exercises:
        yield _result(kernel, tmp, sub, name, timeout, problems, defined.status == "ok")


def _read_errors(job: Path) -> list[dict]:
    path = job.with_suffix(".errors.json")
    try:
        errors = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in errors if isinstance(e, dict) and {"cell", "error"} <= set(e)]


def _result(kernel: _Kernel, tmp: Path, sub: _Submission, name: str, timeout: float, problems: list[str],
            defined: bool) -> Result:
    """Exercise `name` of a submission checked, and, when it fails, its reason added to `problems`."""
    passed, message = _check(kernel, tmp, sub, name, timeout, defined)
    if not passed:
        problems.append(_short(name, message))
    return Result(sub.master.stem, name, passed, message, sub.sources.get(name, ""))


def _check(kernel: _Kernel, tmp: Path, sub: _Submission, name: str, timeout: float,
           defined: bool) -> tuple[bool, str]:
    if name in sub.borrowed:
        return False, f"✗ {name} uses labkit's own {sub.borrowed[name]}: the exercise is to write it yourself"
    if name in sub.missing:
        return False, sub.missing[name]
    if not defined:
        return False, f"✗ {name} could not be checked: the notebook's definitions did not finish in time"
    stem = sub.master.stem
    out = tmp / f"{stem}.{name}.pt"
    out.unlink(missing_ok=True)
    ran = kernel.run(f"__labkit_sandbox.attempt(globals(), {name!r}, {str(out)!r})", timeout)
    if ran.replaced:  # a fresh kernel: the notebook's definitions again, for the exercises after this one
        _setup(kernel, tmp / f"{stem}.definitions.json", timeout)
    if ran.status == "timeout":
        return False, f"✗ {name} ran past the time limit ({timeout:g} s) and was stopped"
    if ran.status == "died":
        return False, f"✗ {name} stopped the kernel (it died while {name} ran)"
    return _judge(name, out, ran)


def _short(name: str, message: str) -> str:
    """A check's message as the CSV's few words: "aggregate: you averaged probabilities; SLA averages logits",
    "aggregate ran past the time limit (30 s) and was stopped"."""
    first = message.splitlines()[0].removeprefix("✗ ").removesuffix(".")
    if first.startswith(f"not yet: {name} is still a stub"):
        return f"{name}: not yet, still a stub"
    if first.startswith(f"{name}: "):
        first = first.replace(f"{name}: ", "", 1)
        first = f"{name}: {first}"
    return first if len(first) <= 110 else first[:109] + "…"


def _judge(name: str, out: Path, ran: _Outcome) -> tuple[bool, str]:
    """The grader's own verdict on the outputs the kernel saved."""
    import torch

    try:
        saved = torch.load(out, weights_only=True)
        outputs, problem = saved["outputs"], saved["problem"]
        if not (isinstance(outputs, list) and all(isinstance(t, torch.Tensor) for t in outputs)
                and (problem is None or isinstance(problem, str))):
            raise TypeError("unexpected contents")
    except Exception as e:  # noqa: BLE001 - whatever the file holds, the learner gets a reason, not a crash
        why = ran.error or f"{type(e).__name__}"
        return False, f"✗ {name} could not be checked: its run left no readable result ({why})"
    return exercises.verdict(exercises.Attempt(name, tuple(outputs), problem))


def grade(folder: str | Path, out: str | Path, timeout: float = DEFAULT_TIMEOUT, notebooks: Path | None = None,
          overwrite: bool = False, log: Callable[[str], None] = print) -> list[LearnerGrade]:
    """Grade every learner's sub-folder of `folder` into the CSV `out` and feedback pages in `out`'s folder,
    `feedback/<learner>.html`; returns the rows. `notebooks`: the masters' folder (default: labkit's)."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise LabkitError(f"grade: {folder} is not a folder; give the folder that holds one sub-folder per learner")
    if out.exists() and not overwrite:
        raise LabkitError(f"grade: {out} exists; pass --overwrite to replace it")
    if timeout <= 0:
        raise LabkitError(f"grade: --timeout must be a positive number of seconds, got {timeout:g}")
    notebook_masters = masters(notebooks)
    learners = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for stray in sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        log(f"ignored {stray}: not in a learner's folder")
    if not learners:
        raise LabkitError(f"grade: {folder} holds no learner's folder (one sub-folder per learner, named after them)")
    isolation = network_isolation()
    log(f"grading {len(learners)} learner(s) in {folder}; network: "
        f"{'a namespace with no interface' if isolation else 'refused by the sandbox only (no unshare -rn here)'}")
    grades = []
    for k, learner in enumerate(learners, 1):
        start = time.perf_counter()
        grades.append(grade_learner(learner, notebook_masters, timeout, isolation))
        g = grades[-1]
        log(f"[{k}/{len(learners)}] {g.learner}: {g.total}/{len(g.results)} ({time.perf_counter() - start:.1f} s)")
    write_csv(out, grades, notebook_masters)
    for g in grades:
        write_text(out.parent / "feedback" / f"{_file_name(g.learner)}.html", feedback_page(g))
    log(f"wrote {out} and {len(grades)} feedback page(s) in {out.parent / 'feedback'}")
    return grades


def write_csv(out: Path, grades: Sequence[LearnerGrade], notebook_masters: Sequence[Master]) -> None:
    """One row per learner: learner, one column per exercise (1/0), total, problems ("; "-joined)."""
    names = [n for m in notebook_masters for n in m.exercises]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["learner", *names, "total", "problems"])
    for g in grades:
        by_name = {r.exercise: r for r in g.results}
        writer.writerow([g.learner, *(int(by_name[n].passed) for n in names), g.total, "; ".join(g.problems)])
    write_text(out, buffer.getvalue())


def _file_name(learner: str) -> str:
    return re.sub(r"[^\w.-]+", "_", learner).strip("._") or "learner"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback: {learner}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
.score {{ font-size: 1.2em; }} .passed {{ color: #1a7f37; }} .failed {{ color: #b42318; }}
pre {{ background: #f6f8fa; padding: .7em; white-space: pre-wrap; border-radius: 4px; }}
.problems li {{ margin: .3em 0; }} details summary {{ cursor: pointer; color: #555; }}
</style></head><body>
<h1>Feedback for {learner}</h1>
<p class="score">{total} of {count} exercises pass labkit's checks.</p>
{problems}
{sections}
<p><small>Each check runs your function on random and adversarial inputs and compares it with labkit's; its
message names the mistake it recognises and shows a worked example. Run the check cells in your notebook as often
as you like.</small></p>
</body></html>
"""


def feedback_page(g: LearnerGrade) -> str:
    """A learner's page: the score, what went wrong with the hand-in, and each check's message by notebook."""
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in g.problems)
    problems = f'<h2>What to fix</h2><ul class="problems">{problems}</ul>' if problems else ""
    sections = []
    for notebook in dict.fromkeys(r.notebook for r in g.results):
        items = []
        for r in (r for r in g.results if r.notebook == notebook):
            mark = '<span class="passed">✓ passed</span>' if r.passed else '<span class="failed">✗ not yet</span>'
            code = (f"<details><summary>your cell</summary><pre>{html.escape(r.source)}</pre></details>"
                    if r.source else "")
            items.append(f"<h3>{html.escape(r.exercise)}: {mark}</h3><pre>{html.escape(r.message)}</pre>{code}")
        sections.append(f"<h2>{html.escape(notebook)}</h2>" + "".join(items))
    return _PAGE.format(learner=html.escape(g.learner), total=g.total, count=len(g.results), problems=problems,
                        sections="\n".join(sections))
