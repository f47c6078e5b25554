"""Execute the numbered notebooks with papermill under a preset, and collect the numbers they record.

    run_notebooks("default")            # every notebook -> runs/notebooks/default/
    run_notebooks("smoke", only=["02"], overrides={"EPOCHS": 2})
    sweep("02", {"SEEDS": [0, 1], "TRANSFORM": ["rotation", "rotation2"]})

For each notebook `NN_name.ipynb` the run folder gets `NN_name.ipynb` (executed), `NN_name.html` (plotly figures
carry their own JavaScript and maths is MathML, so a plain browser shows it offline) and `NN_name/results.json`
(the notebook's `OUT_DIR`, written by `labkit.lab.record`). `summary.json` and `summary.md` gather every recorded
number, also of the notebooks run before with the same preset. A failed execution never replaces a good copy: it
is kept beside it as `NN_name.failed.ipynb`, `NN_name.failed.html` and `NN_name/results.failed.json`, and the last
good copy and its numbers stay as they were.

A sweep executes one notebook at every point of a grid of parameters, one kernel per point: one after another,
or `workers` at once on Ray (`labkit.core.workers`; `address`: on a Ray cluster whose nodes see the same files).

A preset is `notebooks/presets/<name>.yaml`: `env` (variables for the kernel) and `notebooks` (parameters per
notebook, keyed by its two-digit number). Every value is checked against the notebook's `parameters` cell, whose
lines read `NAME: type = literal  # comment`, before anything runs.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core import workers as engine
from ..core.errors import LabkitError
from ..core.errors import unknown as unknown_name
from ..core.files import read_json, write_json, write_text
from ..core.paths import home, kernel_pythonpath, notebook_dir, preset_dir, runs_root, shown
from ..figures.theme import NOTEBOOK_RENDERER
from . import record
from .parameters import check_parameters, find_notebook, notebook_parameters, notebook_paths
from .watch import NotebookWatch

__all__ = ["Preset", "NotebookError", "load_preset", "parse_assignments", "parse_grid", "check_grid", "run_notebook",
           "run_notebooks", "quiet_kernel_manager", "parameter_note", "note_parameters", "write_html",
           "format_results", "sweep", "format_sweep", "format_catalogue"]
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class NotebookError(LabkitError):
    """A cell of a notebook raised; the message names the notebook, the cell and the error."""


# ------------------------------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)  # set in the kernel's environment
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # "02" -> {"EPOCHS": 30, ...}


def load_preset(name: str, folder: Path | None = None) -> Preset:
    """`folder/<name>.yaml`; the notebook keys are two-digit numbers, quoted or not."""
    folder = folder or preset_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise LabkitError(unknown_name("preset", name, sorted(p.stem for p in folder.glob("*.yaml"))))
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - {"description", "env", "notebooks"})
    if unknown:
        raise LabkitError(f"preset {name}: unknown section(s) {', '.join(unknown)}; allowed: description, env, "
                          f"notebooks")
    notebooks = {_notebook_id(k): dict(v or {}) for k, v in (raw.get("notebooks") or {}).items()}
    env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
    return Preset(name, str(raw.get("description", "")), env, notebooks)


def _notebook_id(key: Any) -> str:
    key = f"{key:02d}" if isinstance(key, int) else str(key)
    if len(key) != 2 or not key.isdigit():
        raise LabkitError(f"preset notebook keys are two-digit numbers like '02', got {key!r}")
    return key


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """["EPOCHS=3", "METHODS=[da, sla]"] -> {"EPOCHS": 3, "METHODS": ["da", "sla"]}: values are YAML literals."""
    return {key: _yaml_value(key, text) for key, text in (_split_assignment(item) for item in items)}


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """["SEEDS=0,1", "TRANSFORM=rotation,rotation2"] -> {"SEEDS": [0, 1], ...}; commas inside [] or {} stay.
    Each key once, with at least one value and none twice."""
    grid: dict[str, list[Any]] = {}
    for key, text in (_split_assignment(item) for item in items):
        if key in grid:
            raise LabkitError(f"-p {key} is given twice; give all its values in one: -p {key}=V1,V2")
        grid[key] = [_yaml_value(key, part) for part in _split_top_level(text)]
    check_grid(grid)
    return grid


def check_grid(grid: Mapping[str, Sequence[Any]]) -> None:
    """A sweep's grid: at least one parameter, each with at least one value and none twice."""
    if not grid:
        raise LabkitError("a sweep needs at least one parameter to vary: -p KEY=V1,V2")
    for key, values in grid.items():
        if not values:
            raise LabkitError(f"-p {key}= gives no values; a sweep needs at least one: -p {key}=V1,V2")
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise LabkitError(f"-p {key} has {twice[0]!r} twice; each value is one point of the grid, give it once")


def _split_assignment(item: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise LabkitError(f"-p takes KEY=VALUE, got {item!r}")
    return key.strip(), text.strip()


def _yaml_value(key: str, text: str) -> Any:
    if _SCIENTIFIC.fullmatch(text):  # YAML 1.1 reads 1e-4 as a string; everyone means the number
        return float(text)
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise LabkitError(f"-p {key}: {text!r} is not a YAML literal") from None


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in [*parts, current] if p.strip()]


# ---------------------------------------------------------------------------------------------------- execution
@contextlib.contextmanager
def _kernel_env(extra: Mapping[str, str]) -> Iterator[None]:
    """The kernel papermill starts inherits os.environ: the checkout first on PYTHONPATH, a plotly renderer whose
    output survives HTML export, and the preset's `extra` variables."""
    saved = dict(os.environ)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*map(str, kernel_pythonpath()), *([path] if path else [])])
    # plotly's own default in a kernel (plotly_mimetype) leaves nbconvert's HTML blank; this one embeds plotly.js
    os.environ.setdefault("PLOTLY_RENDERER", NOTEBOOK_RENDERER)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _ipc_kernel_config() -> Iterator[Any]:
    """nbclient's config for the kernel it starts: IPC transport, so its five channels are Unix sockets, not TCP
    ports, and ipykernel has no "running over TCP without encryption" warning to print. (ipykernel 7 still binds
    one loopback TCP socket of its own, hard-coded, to collect output from forked subprocesses.) The sockets and
    connection file live in a fresh temporary folder, removed afterwards: a short path, as Unix socket paths must
    stay under about 100 bytes (the Jupyter runtime folder can be deeper)."""
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="labkit-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "connection_file": os.path.join(folder, "kernel.json")}})


def run_notebook(path: Path, params: Mapping[str, Any], out_dir: Path, env: Mapping[str, str] | None = None,
                 html: bool = True, watch: NotebookWatch | None = None) -> dict[str, float]:
    """Execute `path` into out_dir/<stem>.ipynb with OUT_DIR = out_dir/<stem>; returns the numbers it recorded.
    With `watch` (labkit.lab.watch), the cell being run, the epochs trained and the cache's reuses reach the
    terminal. The copy opens with a note of the parameters that differ from the notebook's defaults, and names
    its files relative to labkit's home. A failed (or interrupted) execution is kept as <stem>.failed.ipynb
    (and .html, and results.failed.json) beside the last good copy, which it never replaces."""
    import papermill

    results_dir = out_dir / path.stem
    results_dir.mkdir(parents=True, exist_ok=True)
    good_results = _set_aside(results_dir)  # never report numbers of an earlier execution, never lose them either
    output, running = out_dir / path.name, out_dir / f".{path.stem}.running.ipynb"
    declared = notebook_parameters(path)
    try:
        shown_by = watch.papermill_kwargs(len(json.loads(path.read_text())["cells"]) + 1) if watch else {}
        with _kernel_env({**(watch.env if watch else {}), **(env or {})}), _ipc_kernel_config() as kernel_config:
            papermill.execute_notebook(str(path), str(running), parameters={**params, "OUT_DIR": shown(results_dir)},
                                       kernel_name="python3", progress_bar=False, log_output=False,
                                       store_widget_state=False,  # live widgets only; HTML shows static figures
                                       cwd=str(home()), config=kernel_config,
                                       kernel_manager_class=quiet_kernel_manager(), **shown_by)  # on to nbclient
    except BaseException as e:  # a failed cell, Ctrl-C, ...: the copy goes beside the good one
        note_parameters(running, params, declared, _failed(output))
        failed = _keep_failed(running, output, results_dir, good_results, html, watch)
        if not isinstance(e, papermill.PapermillExecutionError):
            raise
        first = next((line for line in e.source.splitlines() if line.strip()), "")
        error = (str(e.evalue).strip().splitlines() or [""])[0]
        kept = f"; the last good copy {output.name} is as it was" if output.exists() else ""
        raise NotebookError(f"notebook {path.name} failed in cell [{e.exec_count}] (starting {first[:60]!r}): "
                            f"{e.ename}: {error[:300]}; partial output kept in {shown(failed)}{kept}") from None
    if watch:
        watch.close()
    note_parameters(running, params, declared, output)
    os.replace(running, output)
    good_results.unlink(missing_ok=True)
    for old in (_failed(output), _failed(output).with_suffix(".html"), results_dir / _FAILED_RESULTS):
        old.unlink(missing_ok=True)  # a failure older than this good copy says nothing any more
    if html:
        write_html(output)
    return record.read(results_dir)


@functools.cache
def quiet_kernel_manager() -> type:
    """jupyter_client's kernel manager, less the interrupt it sends before every shutdown. Its SIGINT reaches a
    kernel that is idle, between messages, and ipykernel logs "ERROR | KeyboardInterrupt caught in kernel." to the
    runner's terminal after a notebook that succeeded. Shut down without it: a shutdown request, then (as before)
    SIGTERM and SIGKILL if the kernel does not stop in time. Interrupts asked for otherwise still go through."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return QuietShutdownKernelManager


PARAMETERS_NOTE = "labkit-parameters-note"  # the tag of the note a copy opens with


def parameter_note(params: Mapping[str, Any], declared: Mapping[str, Any]) -> str:
    """Markdown: the parameters this copy ran with that differ from the notebook's defaults (OUT_DIR aside)."""
    changed = {k: v for k, v in params.items() if k != "OUT_DIR" and (k not in declared or declared[k].default != v)}
    if not changed:
        return "**This copy ran with the notebook's default parameters.**"
    items = "; ".join(f"`{k} = {v!r}` (notebook default: `{declared[k].default!r}`)" if k in declared
                      else f"`{k} = {v!r}`" for k, v in changed.items())
    return (f"**This copy ran with parameters that differ from the notebook's defaults:** {items}. Its numbers "
            f"are for these settings; the notebook's defaults may give others.")


def note_parameters(output: Path, params: Mapping[str, Any], declared: Mapping[str, Any],
                    final: Path | None = None) -> None:
    """Put `parameter_note` right after the executed copy's first cell (its title), and name the copy's source and
    output (`final`, where the copy will go, default `output`) relative to labkit's home in papermill's metadata."""
    import nbformat

    if not output.is_file():
        return
    nb = nbformat.read(output, as_version=4)
    nb.cells = [c for c in nb.cells if PARAMETERS_NOTE not in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(parameter_note(params, declared))
    cell.metadata["tags"] = [PARAMETERS_NOTE]
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, cell)
    meta = nb.metadata.get("papermill", {})
    if meta.get("output_path") and final is not None:
        meta["output_path"] = str(final)
    for name in ("input_path", "output_path"):
        if meta.get(name):
            meta[name] = shown(meta[name])
    meta.get("parameters", {}).pop("OUT_DIR", None)
    nbformat.write(nb, output)


_FAILED_RESULTS = "results.failed.json"


def _failed(output: Path) -> Path:
    """02_x.ipynb -> 02_x.failed.ipynb"""
    return output.with_name(f"{output.stem}.failed{output.suffix}")


def _set_aside(results_dir: Path) -> Path:
    """Move the last good execution's results.json aside (to .results.json.good) while the notebook runs, first
    putting back one an execution killed earlier left there; returns where it is."""
    current, good = results_dir / record.RESULTS_FILE, results_dir / f".{record.RESULTS_FILE}.good"
    if good.exists():
        os.replace(good, current)
    if current.exists():
        os.replace(current, good)
    return good


def _keep_failed(running: Path, output: Path, results_dir: Path, good_results: Path, html: bool,
                 watch: NotebookWatch | None) -> Path:
    """A failed execution goes beside the good copy (<stem>.failed.*), and the good copy's numbers come back."""
    if watch:
        watch.close()
    failed = _failed(output)
    if running.exists():
        os.replace(running, failed)
        if html:
            write_html(failed)
    current = results_dir / record.RESULTS_FILE
    if current.exists():
        os.replace(current, results_dir / _FAILED_RESULTS)
    if good_results.exists():
        os.replace(good_results, current)
    return failed


def write_html(notebook: Path) -> Path:
    """An HTML copy of an executed notebook beside it that reads offline: plotly outputs keep their embedded
    plotly.js, maths is MathML, nothing loads from the network (labkit.lab.offline_html says why)."""
    import nbformat

    from .offline_html import notebook_to_html  # nbconvert, only when a copy is written

    out = notebook.with_suffix(".html")
    write_text(out, notebook_to_html(nbformat.read(notebook, as_version=4)))
    return out


def _plan(preset: Preset, paths: Sequence[Path], overrides: Mapping[str, Any]) -> list[tuple[Path, dict]]:
    """Each notebook with its checked parameters (preset, then -p overrides where the notebook has the key)."""
    plan = []
    all_params = {p: notebook_parameters(p) for p in paths}
    for key in overrides:
        if not any(key in params for params in all_params.values()):
            names = ", ".join(p.stem for p in paths)
            allowed = dict.fromkeys(k for params in all_params.values() for k in params)
            raise LabkitError(unknown_name("parameter", key, allowed, f" for notebook(s) {names}"))
    for path, params in all_params.items():
        values = dict(preset.notebooks.get(path.stem[:2], {}))
        values.update({k: v for k, v in overrides.items() if k in params})
        if "OUT_DIR" not in params:
            raise LabkitError(f"notebook {path.name} has no OUT_DIR parameter; the runner sets it")
        values.pop("OUT_DIR", None)  # the runner decides where results go
        if "PROGRESS" in params:
            values.setdefault("PROGRESS", False)  # no progress bars in executed notebooks unless asked for
        plan.append((path, check_parameters(values, params, path.stem)))
    return plan


def run_notebooks(preset: str, only: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
                  out_root: Path | None = None, notebooks: Path | None = None, presets: Path | None = None,
                  log: Callable[[str], None] = print, student: bool = False) -> dict[str, Any]:
    """Execute the notebooks of `preset` in order into out_root/<preset>/; returns the summary it writes.
    `notebooks` and `presets` are folders (default: labkit.paths.notebook_dir() and preset_dir()).
    `student`: the learner's copy, every exercise stub left empty (SOLUTIONS False), into out_root/<preset>-student/."""
    spec = load_preset(preset, presets)
    plan = _plan(spec, notebook_paths(only, notebooks), overrides or {})
    if student:
        plan = _student_plan(plan)
    out_dir = (out_root or runs_root() / "notebooks") / (f"{preset}-student" if student else preset)
    summary: dict[str, Any] = {"preset": preset, "overrides": dict(overrides or {}), "notebooks": {}}
    for k, (path, params) in enumerate(plan, 1):
        log(f"[{k}/{len(plan)}] {path.stem} {_short(params)}")
        start = time.perf_counter()
        try:
            results = run_notebook(path, params, out_dir, spec.env,
                                   watch=NotebookWatch(f"[{k}/{len(plan)}] {path.stem}", log))
        except NotebookError:
            _write_summary(out_dir, summary)  # the notebooks that finished keep their numbers
            raise
        seconds = time.perf_counter() - start
        summary["notebooks"][path.stem] = {"seconds": round(seconds, 1), "parameters": params, "results": results,
                                           "html": str(out_dir / f"{path.stem}.html"),
                                           "overrides": {k: v for k, v in (overrides or {}).items() if k in params}}
        _write_summary(out_dir, summary)
        log(f"    done in {seconds:.1f} s, {len(results)} numbers recorded")
    return summary


def format_catalogue(notebooks: Path | None = None, presets: Path | None = None) -> str:
    """`labkit notebooks --list`: every notebook with its parameters (type, default, comment), then the presets."""
    lines = [f"notebooks in {notebooks or notebook_dir()}:"]
    for path in notebook_paths(folder=notebooks):
        lines.append(f"  {path.stem}")
        for p in notebook_parameters(path).values():
            lines.append(f"      {p.name}: {p.annotation} = {p.default!r}  # {p.comment}")
    folder = presets or preset_dir()
    lines.append(f"presets in {folder} (labkit notebooks --preset NAME):")
    for name in sorted(p.stem for p in folder.glob("*.yaml")):
        lines.append(f"  {name:<8} {load_preset(name, folder).description}")
    return "\n".join(lines)


def _student_plan(plan: Sequence[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """The plan with SOLUTIONS False wherever a notebook has exercises: the stubs stay empty, the checks say
    "not yet"."""
    return [(path, {**params, "SOLUTIONS": False} if "SOLUTIONS" in notebook_parameters(path) else params)
            for path, params in plan]


def _short(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) if params else "(notebook defaults)"


def _write_summary(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """summary.json and .md: this execution's notebooks, and those of earlier ones in the folder it did not run
    again (or that failed this time), so a partial or failed run loses no numbers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = {**summary, "notebooks": {**_previous_notebooks(out_dir / "summary.json"), **summary["notebooks"]}}
    merged["notebooks"] = dict(sorted(merged["notebooks"].items()))
    write_json(out_dir / "summary.json", merged)
    write_text(out_dir / "summary.md", format_results(merged) + "\n")


def _previous_notebooks(path: Path) -> dict[str, Any]:
    try:
        return dict(read_json(path).get("notebooks", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def format_results(summary: Mapping[str, Any]) -> str:
    """Markdown: per notebook, its wall time and a table of every number it recorded."""
    lines = [f"# Notebook results, preset `{summary['preset']}`"]
    for stem, entry in summary["notebooks"].items():
        lines += ["", f"## {stem} ({entry['seconds']:.0f} s)"]
        if entry.get("overrides"):  # each notebook's own: the summary also keeps notebooks of earlier executions
            lines.append(f"Overrides: {_short(entry['overrides'])}")
        lines += ["", "| result | value |", "|---|---:|"]
        lines += [f"| {name} | {_fmt(value)} |" for name, value in entry["results"].items()]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e12 else f"{value:.4g}"


# ------------------------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class _Point:
    """One point of a sweep as a worker receives it: the notebook, its checked parameters, its folder, the kernel's
    environment."""

    path: Path
    values: dict[str, Any]
    out_dir: Path
    env: dict[str, str]


def sweep(notebook: str, grid: Mapping[str, Sequence[Any]], preset: str = "default", out_root: Path | None = None,
          notebooks: Path | None = None, presets: Path | None = None, log: Callable[[str], None] = print,
          workers: int | None = 1, address: str | None = None, gpus_per_run: float | None = None,
          dashboard: bool = False) -> dict[str, Any]:
    """Execute one notebook at every point of `grid` (preset values underneath), one kernel per point; write
    sweep.json and sweep.md. Every point is checked before any runs. `workers` kernels at once: 1 in this process
    one after another, more on a local Ray (`address`: on a Ray cluster), each asking for one CPU and
    `gpus_per_run` GPUs. A point that fails fails alone; the table holds the others, then one error names it."""
    check_grid(grid)
    engine.check_workers(workers)
    engine.check_gpus_per_run(gpus_per_run)
    path = find_notebook(notebook, notebooks)
    params = notebook_parameters(path)
    spec = load_preset(preset, presets)
    base = dict(spec.notebooks.get(path.stem[:2], {}))
    keys = list(grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    checked = [check_parameters({**base, **point}, params, path.stem) for point in points]  # all, before any runs
    out_dir = (out_root or runs_root() / "sweeps") / path.stem
    names = ["_".join(f"{key}={_slug(v)}" for key, v in point.items()) for point in points]
    if len(set(names)) < len(names):
        same = next(n for i, n in enumerate(names) if n in names[:i])
        raise LabkitError(f"two points of the sweep would share the folder {same}; give values that differ in "
                          f"letters or digits")
    jobs = [_Point(path, values, out_dir / name, dict(spec.env)) for values, name in zip(checked, names, strict=True)]
    outcomes = _run_points(jobs, names, log, workers, address, gpus_per_run, dashboard)
    rows = [{"point": {key: values[key] for key in point}, "results": o.value}
            for point, values, o in zip(points, checked, outcomes, strict=True) if o.ok]
    table = {"notebook": path.stem, "preset": preset, "grid": dict(grid), "rows": rows}
    write_json(out_dir / "sweep.json", table)
    write_text(out_dir / "sweep.md", format_sweep(table) + "\n")
    failed = [f"{name}: {o.error}" for name, o in zip(names, outcomes, strict=True) if not o.ok]
    if failed:
        raise NotebookError(f"{len(failed)} of {len(points)} points of the sweep failed ({'; '.join(failed)}); the "
                            f"table of the other {len(rows)} is in {out_dir / 'sweep.md'}")
    return table


def _run_points(jobs: list[_Point], names: list[str], log: Callable[[str], None], workers: int | None,
                address: str | None, gpus_per_run: float | None, dashboard: bool) -> list[engine.Outcome]:
    on_ray = not (workers == 1 and address is None)
    if on_ray and address is None and len(jobs) == 1 and engine.started().get("where") != "local":
        on_ray = False  # one point: starting a local Ray would only add its start-up
    resources = [engine.Resources(1.0, gpus_per_run or 0.0)] * len(jobs)
    if on_ray:
        engine.prepare(resources, workers, address, dashboard, log)  # Ray's start-up before the clock starts
    bar = engine.Progress(len(jobs), log, what="point", bar=on_ray)

    def done(o: engine.Outcome) -> None:
        where = f" on {o.node} (pid {o.pid})" if on_ray else ""
        bar.finished(names[o.index], f"done in {o.seconds:.1f} s{where}" if o.ok else f"FAILED: {o.error}")

    if not on_ray:
        def here(job: _Point) -> dict[str, float]:
            k = jobs.index(job) + 1
            log(f"[{k}/{len(jobs)}] {job.path.stem} {job.out_dir.name}")
            return run_notebook(job.path, job.values, job.out_dir, job.env,
                                watch=NotebookWatch(f"[{k}/{len(jobs)}] {job.out_dir.name}", log))

        return engine.in_process(here, jobs, done)
    try:
        return engine.run_tasks(_run_point, jobs, workers, address, resources, dashboard, done, log)
    finally:
        bar.close()


def _run_point(job: _Point) -> dict[str, float]:
    """What a Ray worker runs for one point of a sweep (a top-level function: Ray sends it by reference)."""
    return run_notebook(job.path, job.values, job.out_dir, job.env)


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return "".join(ch if ch.isalnum() or ch in "+-." else "-" for ch in text).strip("-")


def format_sweep(table: Mapping[str, Any]) -> str:
    """Markdown: one row per recorded number, one column per grid point."""
    rows = table["rows"]
    heads = [", ".join(f"{k}={v}" for k, v in r["point"].items()) for r in rows]
    names = list(dict.fromkeys(n for r in rows for n in r["results"]))
    lines = [f"# Sweep of {table['notebook']} (preset `{table['preset']}`)", "",
             "| result | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(rows)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(r["results"][n]) if n in r["results"] else "-" for r in rows)
                     + " |")
    return "\n".join(lines)
