"""The notebooks, their presets and the papermill runner.

Fast tests read the committed notebooks and presets; slow ones execute notebooks in a real kernel: every numbered
notebook once with the smoke preset (its recorded numbers must exist and be sane), and tiny throwaway notebooks
for the runner's error paths.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from labkit.cli import main
from labkit.core import paths
from labkit.core.errors import LabkitError
from labkit.lab import exercises, parameters, runner
from labkit.lab.parameters import Parameter
from labkit.lab.runner import NotebookError
from labkit.sla import transforms
from tests.support import write_notebook

NOTEBOOKS = runner.notebook_paths()
PRESETS = sorted(paths.preset_dir().glob("*.yaml"))


def _ids(paths):
    return [p.stem for p in paths]


# ------------------------------------------------------------------------------------------ committed notebooks
def test_the_sequence_is_there():
    stems = {p.stem[:2] for p in NOTEBOOKS}
    assert {"00", "01", "02", "03", "04", "05", "06", "07"} <= stems
    assert {p.stem for p in PRESETS} >= {"smoke", "default", "full"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_one_parameters_cell_near_the_top_typed_and_commented(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] <= 3
    params = runner.notebook_parameters(path)
    assert {"DEVICE", "OUT_DIR"} <= set(params)
    for p in params.values():
        assert p.comment, f"{path.name}: parameter {p.name} has no comment"
        assert "=" not in p.comment, f"{path.name}: papermill cannot parse '=' in the comment of {p.name}"
        assert p.accepts(p.default), f"{path.name}: default of {p.name} is not a {p.annotation}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_trains_only_through_the_library_and_records_numbers(path):
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    for loop_sign in ("backward(", "optimizer", ".step()", "zero_grad"):
        assert loop_sign not in source, f"{path.name} looks like it trains by hand ({loop_sign})"
    assert "record." in source, f"{path.name} records no numbers (labkit.lab.record)"


@pytest.mark.parametrize("preset", PRESETS, ids=_ids(PRESETS))
def test_every_preset_key_is_a_parameter_of_the_notebook_it_targets(preset):
    spec = runner.load_preset(preset.stem)
    by_id = {p.stem[:2]: p for p in NOTEBOOKS}
    for nb_id, values in spec.notebooks.items():
        assert nb_id in by_id, f"{preset.name} has parameters for a notebook that does not exist: {nb_id}"
        params = runner.notebook_parameters(by_id[nb_id])
        runner.check_parameters(values, params, by_id[nb_id].stem)  # raises on unknown keys or wrong types
    if preset.stem in ("smoke", "default"):
        assert set(by_id) <= set(spec.notebooks), f"{preset.name} misses notebooks {set(by_id) - set(spec.notebooks)}"


EXERCISE_NOTEBOOKS = ("01", "02", "04", "05", "07")
STUB = "raise NotImplementedError  # your turn"
SOLUTION = ('{name} = exercises.solution("{name}") if SOLUTIONS else {name}  '
            "# SOLUTIONS: labkit's answer, for CI and make run")


def _exercises_in(path: Path) -> list[str]:
    """The exercise names a notebook holds, in order, read from its stub cells (tag "exercise") and their `def`."""
    cells = nbformat.read(path, as_version=4).cells
    return [re.match(r"def (\w+)\(", c.source).group(1) for c in cells if "exercise" in c.metadata.get("tags", [])]


def _tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


@pytest.mark.parametrize("number", EXERCISE_NOTEBOOKS)
def test_each_exercise_is_a_stub_a_hidden_solution_cell_and_a_check(number):
    """Contract 1: three consecutive code cells. The stub (tag "exercise") holds the def, its docstring and the
    NotImplementedError line, nothing else; the solution cell (tag "solution", source hidden) is exactly the line
    that swaps in labkit's answer for CI, which the learner's handout drops; the check (tag "check") checks and
    records."""
    path = runner.find_notebook(number)
    assert runner.notebook_parameters(path)["SOLUTIONS"].default is False, "the committed copy is the learner's"
    cells = nbformat.read(path, as_version=4).cells
    names = _exercises_in(path)
    assert names and set(names) <= set(exercises.available())
    for name in names:
        k = next(i for i, c in enumerate(cells) if "exercise" in _tags(c) and c.source.startswith(f"def {name}("))
        stub, solution, check = cells[k:k + 3]
        body = stub.source.split('"""')
        assert len(body) == 3 and body[2].strip() == STUB, f"{path.stem}: the stub of {name} holds more than a stub"
        assert "SOLUTIONS" not in stub.source and "exercises." not in stub.source
        assert _tags(solution) == ["solution"] and solution.metadata.get("jupyter", {}).get("source_hidden") is True
        assert solution.source == SOLUTION.format(name=name)
        assert _tags(check) == ["check"] and solution.cell_type == check.cell_type == "code"
        lines = check.source.splitlines()
        assert lines[0].startswith(f'ok = exercises.check("{name}", {name})')
        assert lines[1] == f'record.value(P.out, record.key("exercises", "{name}"), int(ok));'
    solutions = [c for c in cells if "solution" in _tags(c)]
    assert len(solutions) == len(names), "every solution line sits in its own tagged cell"
    assert not any("exercises.solution(" in c.source for c in cells if "solution" not in _tags(c))


def test_a_predict_then_run_question_in_notebook_02_asks_before_telling():
    cells = [c.source for c in nbformat.read(runner.find_notebook("02"), as_version=4).cells]
    guess = next(k for k, c in enumerate(cells) if c.startswith("my_guess = "))
    assert "predict, then run" in cells[guess - 1].lower() and "train_fraction=1.0" in cells[guess + 1]
    note = next(k for k, c in enumerate(cells) if c.startswith("### Why a reduced training split"))
    assert note > guess + 1, "the note that answers the question comes after the learner has answered it"
    assert "hint" not in cells[guess - 1].lower()


def test_one_maths_style_latex_everywhere():
    """Equations are LaTeX ($...$, $$...$$) in every notebook's markdown: no plain-text pseudo-maths with literal
    underscores (t_j, w_ij, z̃_j) and no two equations run together on one line."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            prose = re.sub(r"\$\$.+?\$\$|\$[^$]+\$|`[^`]+`", "", cell.source, flags=re.S)  # maths and code removed
            for slip in ("t_j", "w_ij", "z̃_j", "x̃_j", "L_DA", "L_MT", "L_SLA", "1/M", "Σ_j"):
                assert slip not in prose, f"{path.stem}: {slip!r} outside LaTeX in {cell.source[:60]!r}"
            for line in cell.source.splitlines():
                assert line.count("$$") <= 2, f"{path.stem}: two display equations on one line: {line[:80]}"


# --------------------------------------------------------------------------------------------- parameter checks
def test_parameters_are_checked_by_name_and_type():
    params = {"EPOCHS": Parameter("EPOCHS", "int", 3, "c"), "SEEDS": Parameter("SEEDS", "list[int]", [0], "c"),
              "LR": Parameter("LR", "float", 0.1, "c"), "MAX": Parameter("MAX", "int | None", None, "c")}
    assert runner.check_parameters({"EPOCHS": 2, "SEEDS": 1, "LR": 1, "MAX": None}, params, "nb") == {
        "EPOCHS": 2, "SEEDS": [1], "LR": 1, "MAX": None}
    with pytest.raises(LabkitError,
                       match=r"unknown parameter 'EPOCH' for notebook nb; did you mean 'EPOCHS'\? "
                             r"allowed: EPOCHS, SEEDS"):
        runner.check_parameters({"EPOCH": 2}, params, "nb")
    with pytest.raises(LabkitError, match=r"parameter EPOCHS of notebook nb must be int, got 'two' \(str\)"):
        runner.check_parameters({"EPOCHS": "two"}, params, "nb")
    for bad in ({"EPOCHS": True}, {"EPOCHS": 1.5}, {"SEEDS": [0, "a"]}, {"LR": "0.1"}, {"MAX": [1]}):
        with pytest.raises(LabkitError, match=next(iter(bad))):
            runner.check_parameters(bad, params, "nb")


def test_assignments_and_grids_are_yaml_literals():
    assert runner.parse_assignments(["EPOCHS=3", "METHODS=[da, sla]", "TRANSFORM=rotation", "LR=1e-3"]) == {
        "EPOCHS": 3, "METHODS": ["da", "sla"], "TRANSFORM": "rotation", "LR": 1e-3}
    assert runner.parse_grid(["SEEDS=0,1,2", "METHODS=[da, sla],[sla]", "T=1.0,2"]) == {
        "SEEDS": [0, 1, 2], "METHODS": [["da", "sla"], ["sla"]], "T": [1.0, 2]}
    with pytest.raises(LabkitError, match="KEY=VALUE"):
        runner.parse_assignments(["EPOCHS"])


def test_cli_refuses_bad_presets_and_parameters_in_one_line(capsys):
    assert main(["notebooks", "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit: error: unknown preset 'nope'") and "smoke" in err and "\n" not in err
    assert main(["notebooks", "--preset", "smoke", "--only", "02", "-p", "EPOCH=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'EPOCH'" in err and "02_invariance_six_nine" in err and "EPOCHS" in err and "\n" not in err
    assert main(["notebooks", "--preset", "smoke", "--only", "02", "-p", "EPOCHS=many"]) == 2
    assert "EPOCHS of notebook 02_invariance_six_nine must be int, got 'many'" in capsys.readouterr().err
    assert main(["sweep", "03", "-p", "SEEDS=0,x"]) == 2
    assert "SEEDS" in capsys.readouterr().err


def test_plan_applies_preset_then_overrides_and_silences_progress(tmp_path):
    (tmp_path / "p.yaml").write_text("notebooks:\n  '02': {EPOCHS: 2, SEEDS: [0, 1]}\n")
    plan = dict(runner._plan(runner.load_preset("p", tmp_path), runner.notebook_paths(["02", "03"]),
                             {"SEEDS": 3, "TRAIN_FRACTION": 0.5}))
    two, three = plan[runner.find_notebook("02")], plan[runner.find_notebook("03")]
    assert two == {"EPOCHS": 2, "SEEDS": [3], "TRAIN_FRACTION": 0.5, "PROGRESS": False}
    assert three == {"SEEDS": [3], "TRAIN_FRACTION": 0.5, "PROGRESS": False}
    with pytest.raises(LabkitError, match="unknown parameter 'TEMPERATURES' for notebook.s. 02_invariance_six_nine"):
        runner._plan(runner.load_preset("p", tmp_path), runner.notebook_paths(["02"]), {"TEMPERATURES": [1.0]})


def test_unknown_preset_section_and_notebook_key_are_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("notebook:\n  '02': {EPOCHS: 1}\n")
    with pytest.raises(LabkitError, match="unknown section"):
        runner.load_preset("bad", tmp_path)
    (tmp_path / "bad2.yaml").write_text("notebooks:\n  two: {EPOCHS: 1}\n")
    with pytest.raises(LabkitError, match="two-digit"):
        runner.load_preset("bad2", tmp_path)


# ------------------------------------------------------------------------------- runner on throwaway notebooks
@pytest.fixture
def lab(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "tiny.yaml").write_text("env: {LABKIT_TEST_FLAG: '7'}\nnotebooks:\n  '00': {VALUE: 5}\n")
    write_notebook(tmp_path / "nb" / "00_ok.ipynb", f"""
from_checkout = pathlib.Path(labkit.__file__).resolve().parent.parent == pathlib.Path({str(paths.REPO_ROOT)!r})
record.value(OUT_DIR, "value", VALUE)
record.value(OUT_DIR, "from_checkout", float(from_checkout))
record.value(OUT_DIR, "env_flag", float(os.environ["LABKIT_TEST_FLAG"]))
import plotly.graph_objects as go
go.Figure(go.Bar(y=[1, 2]))  # no setup_notebook(): the runner's renderer must still reach the HTML
""")
    return tmp_path


@pytest.mark.slow
def test_runner_collects_numbers_html_and_uses_the_checkout(lab):
    summary = runner.run_notebooks("tiny", notebooks=lab / "nb", presets=lab / "nb", out_root=lab / "out",
                                   log=lambda _: None)
    assert summary["notebooks"]["00_ok"]["results"] == {"value": 5.0, "from_checkout": 1.0, "env_flag": 7.0}
    on_disk = json.loads((lab / "out" / "tiny" / "summary.json").read_text())
    assert on_disk["notebooks"]["00_ok"]["results"]["value"] == 5.0
    assert "| value | 5 |" in (lab / "out" / "tiny" / "summary.md").read_text()
    html = (lab / "out" / "tiny" / "00_ok.html").read_text()
    assert "env_flag" in html and "Plotly.newPlot" in html and "plotly.js v" in html
    executed = nbformat.read(lab / "out" / "tiny" / "00_ok.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


@pytest.mark.slow
def test_sweep_runs_the_grid_into_one_table(lab):
    table = runner.sweep("00", {"VALUE": [2, 3]}, preset="tiny", notebooks=lab / "nb", presets=lab / "nb",
                         out_root=lab / "sw", log=lambda _: None)
    assert [r["results"]["value"] for r in table["rows"]] == [2.0, 3.0]
    md = (lab / "sw" / "00_ok" / "sweep.md").read_text()
    assert "| value | 2 | 3 |" in md and "VALUE=2" in md
    assert json.loads((lab / "sw" / "00_ok" / "sweep.json").read_text())["rows"][1]["point"] == {"VALUE": 3}


@pytest.mark.slow
def test_failing_notebook_names_the_cell_and_keeps_partial_output(lab):
    write_notebook(lab / "nb" / "01_fails.ipynb", 'record.value(OUT_DIR, "before", 1)\nprint("reached")\n'
                    'ratio = VALUE / 0')
    with pytest.raises(NotebookError) as err:
        runner.run_notebooks("tiny", notebooks=lab / "nb", presets=lab / "nb", out_root=lab / "out",
                             log=lambda _: None)
    msg = str(err.value)
    assert "01_fails.ipynb" in msg and "ZeroDivisionError" in msg and "cell [4]" in msg and "record.value" in msg
    assert "\n" not in msg
    partial = nbformat.read(lab / "out" / "tiny" / "01_fails.failed.ipynb", as_version=4)
    outputs = [o for c in partial.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("ename") == "ZeroDivisionError" for o in outputs)
    assert any("reached" in o.get("text", "") for o in outputs)
    summary = json.loads((lab / "out" / "tiny" / "summary.json").read_text())
    assert summary["notebooks"]["00_ok"]["results"]["value"] == 5.0  # what ran before the failure is kept


@pytest.mark.slow
def test_runner_kernel_talks_over_ipc_not_tcp(tmp_path, capfd):
    """The kernel's channels are Unix sockets in a temporary folder, removed afterwards, and ipykernel's "Kernel is
    running over TCP without encryption" warning never prints. ipykernel's own pipe for forked subprocesses' output
    is the one TCP socket left (hard-coded), on loopback."""
    write_notebook(tmp_path / "00_ipc.ipynb", """
import ipykernel, psutil
info = ipykernel.get_connection_info(unpack=True)
tcp = psutil.Process().net_connections(kind="inet")
record.value(OUT_DIR, "ipc", float(info["transport"] == "ipc"))
record.value(OUT_DIR, "tcp_sockets", len(tcp))
record.value(OUT_DIR, "tcp_off_loopback", sum(c.laddr.ip != "127.0.0.1" for c in tcp))
print(info["ip"])  # the socket paths' prefix, in the runner's temporary folder
""")
    recorded = runner.run_notebook(tmp_path / "00_ipc.ipynb", {}, tmp_path / "out", html=False)
    assert recorded["ipc"] == 1.0 and recorded["tcp_off_loopback"] == 0.0
    assert recorded["tcp_sockets"] <= 1, "over TCP the kernel's five channels would add five sockets"
    err = capfd.readouterr().err
    assert "without encryption" not in err and "TCP" not in err, err
    executed = nbformat.read(tmp_path / "out" / "00_ipc.ipynb", as_version=4)
    socket_prefix = Path(executed.cells[-1].outputs[0]["text"].strip())
    assert socket_prefix.name == "kernel-ipc" and len(str(socket_prefix)) < 90  # Unix sockets: ~100 bytes at most
    assert not socket_prefix.parent.exists(), "the sockets' temporary folder outlives the run"


# ----------------------------------------------------------------------------- every notebook, smoke preset
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_CACHE", str(out / "cache"))  # train for real, never reuse runs from elsewhere
        summary = runner.run_notebooks("smoke", out_root=out, log=lambda _: None)
    return out / "smoke", summary["notebooks"]


@pytest.fixture(scope="module")
def student(smoke):
    """The learner's copies of the notebooks with exercises, with the runs the smoke fixture trained."""
    out = smoke[0].parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_CACHE", str(out / "cache"))
        summary = runner.run_notebooks("smoke", only=list(EXERCISE_NOTEBOOKS), out_root=out, log=lambda _: None,
                                       student=True)
    return out / "smoke-student", summary["notebooks"]


@pytest.mark.slow
@pytest.mark.parametrize("number", EXERCISE_NOTEBOOKS)
def test_exercises_pass_in_the_solution_copy_and_say_not_yet_in_the_students(smoke, student, number):
    stem = runner.find_notebook(number).stem
    names = _exercises_in(runner.find_notebook(number))
    solved, learner = smoke[1][stem]["results"], student[1][stem]["results"]
    assert {n: solved[f"exercises.{n}"] for n in names} == {n: 1.0 for n in names}
    assert {n: learner[f"exercises.{n}"] for n in names} == {n: 0.0 for n in names}
    assert student[1][stem]["parameters"]["SOLUTIONS"] is False
    executed = nbformat.read(student[0] / f"{stem}.ipynb", as_version=4)
    said = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert sum(f"not yet: {n} is still a stub" in t for t in said for n in names) == len(names)
    assert not any(o.get("output_type") == "error" for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "not yet: " in (student[0] / f"{stem}.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_smoke_notebook_records_sane_numbers(smoke, path):
    out, notebooks = smoke
    results = notebooks[path.stem]["results"]
    assert results, f"{path.stem} recorded nothing"
    for name, value in results.items():
        assert math.isfinite(value), name
        if name.startswith("acc."):
            assert 0.0 <= value <= 1.0, (name, value)
        if name.startswith(("pair_", "forwards_per_image", "train_seconds", "seeds", "steps", "epochs", "M.")):
            assert value >= 0, (name, value)
    html = (out / f"{path.stem}.html").read_text()
    assert "Plotly.newPlot" in html and "plotly.js v" in html, f"{path.stem}.html lacks plotly figures or plotly.js"


@pytest.mark.slow
def test_smoke_numbers_match_what_each_notebook_promises(smoke):
    _, notebooks = smoke
    tour = notebooks["00_quick_tour"]["results"]
    assert {f"acc.sla+sd.{mode}.mean" for mode in ("single", "aggregated", "distilled")} <= set(tour)
    assert tour["forwards_per_image.sla+sd.aggregated"] == transforms.get("rotation").M
    eqs = notebooks["01_transformations_and_joint_labels"]["results"]
    assert eqs["checks_passed"] == 5 and eqs["aggregate_max_abs_diff"] < 1e-5
    assert all(eqs[f"M.{n}"] == transforms.get(n).M for n in transforms.available())
    six = notebooks["02_invariance_six_nine"]["results"]
    for m in ("da", "mt", "sla"):
        for mode in ("single", "aggregated"):
            assert six[f"pair_confused.{m}.{mode}.mean"] == int(six[f"pair_confused.{m}.{mode}.mean"])  # 1 seed
            assert six[f"pair_expected.{m}.{mode}.mean"] >= 0
    cmp = notebooks["03_compare_methods"]["results"]
    assert {f"acc.{m}.single.mean" for m in ("baseline", "da", "mt", "sla", "sla+sd")} <= set(cmp)
    assert "acc.sla+sd.distilled.mean" in cmp and "acc.baseline.aggregated.mean" not in cmp
    sd = notebooks["05_self_distillation"]["results"]
    assert {"acc.sla+sd.distilled.mean", "acc.sla+sd.T=2.distilled.mean", "acc.sla+sd.β=0.distilled.mean"} <= set(sd)
    paper = notebooks["06_paper_scale"]["results"]
    smoke_06 = yaml.safe_load((paths.preset_dir() / "smoke.yaml").read_text())["notebooks"]["06"]
    assert paper["steps"] == smoke_06["STEPS"] and paper["epochs"] >= 1
    assert any(key.startswith("selected.") for key in paper)  # the best-validation step, as the paper reports
    helps = notebooks["07_where_sla_helps"]["results"]
    smoke_07 = yaml.safe_load((paths.preset_dir() / "smoke.yaml").read_text())["notebooks"]["07"]
    for k in ("k=5", "k=all"):  # every setting of the grid, each method at its readout, against the baseline
        assert {f"acc.{m}.{k}.{mode}.mean" for m, mode in (("baseline", "single"), ("da", "single"),
                                                            ("sla+sd", "distilled"))} <= set(helps)
        assert f"diff.acc.sla+sd.{k}.distilled.vs.baseline.{k}.single.mean" in helps
        assert f"diff.pair_confused.da.{k}.single.vs.baseline.{k}.single.mean" in helps
    for loss in smoke_07["LONG_TAIL_LOSSES"]:
        assert {f"balanced_acc.{m}.R=10.{loss}.{mode}.mean" for m, mode in (("baseline", "single"),
                                                                            ("sla+sd", "distilled"))} <= set(helps)
    assert "diff.acc.sla+sd.R=10.ldam-drw.distilled.vs.sla+sd.R=10.plain.distilled.mean" in helps
    assert helps["seeds.sla+sd.k=5"] == len(smoke_07["SEEDS"])


def test_runner_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.notebook_dir().is_dir() and paths.preset_dir().is_dir()
    assert runner.find_notebook("02").name == "02_invariance_six_nine.ipynb"
    assert parameters.resolve_out_dir(str(tmp_path / "a"), "x") == tmp_path / "a" and (tmp_path / "a").is_dir()


# ------------------------------------------------------------------------------------------ clean copies
_TRAINS = """
from labkit import cached_run, report
from labkit.training.config import TrainConfig
configs = [TrainConfig(dataset="digits", method="sla", epochs=3, batch_size=32, train_fraction=0.1, device="cpu",
                       log_every=1, seed=seed) for seed in (0, 1)]  # bookkeeping, and so a line, every epoch
for config in configs:
    cached_run(config)
record.value(OUT_DIR, "value", VALUE)
report.compare(configs, log=lambda line: None)  # its plain-text copy names no run folder by a machine path
"""


@pytest.mark.slow
def test_a_copy_keeps_one_line_per_run_while_the_terminal_shows_every_epoch(tmp_path, monkeypatch, capfd):
    """Two runs of 3 epochs, validated every epoch: the runner's terminal shows 6 epoch lines, the saved copy one
    line per run and no epoch line; the kernel is shut down without jupyter_client's interrupt, so no
    "KeyboardInterrupt caught in kernel" reaches the runner's stderr; the copy opens with its non-default
    parameters and names no machine path below labkit's home."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    (tmp_path / "nb").mkdir()
    write_notebook(tmp_path / "nb" / "00_trains.ipynb", _TRAINS)
    said: list[str] = []
    watch = runner.NotebookWatch("[1/1] 00_trains", said.append, live=False)
    runner.run_notebook(tmp_path / "nb" / "00_trains.ipynb", {"VALUE": 4}, tmp_path / "runs" / "out", watch=watch)
    assert sum("seed" in line and "epoch " in line for line in said) == 6, said
    assert not watch.epoch_file.exists()
    copy = nbformat.read(tmp_path / "runs" / "out" / "00_trains.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in copy.cells if c.cell_type == "code" for o in c.outputs)
    assert "[labkit:epoch]" not in text and "epoch 1/3" not in text
    assert len([line for line in text.splitlines() if line.strip()]) <= 2, text  # one line per run
    assert "KeyboardInterrupt" not in capfd.readouterr().err
    note = copy.cells[0] if copy.cells[0].cell_type == "markdown" else copy.cells[1]
    assert "VALUE = 4" in note.source and "notebook default: `1`" in note.source
    html = (tmp_path / "runs" / "out" / "00_trains.html").read_text()
    for saved in (html, nbformat.writes(copy)):
        assert str(tmp_path) not in saved, "a machine path below labkit's home is in the copy"


@pytest.mark.slow
def test_the_runner_shuts_kernels_down_without_an_interrupt(tmp_path, capfd):
    """What `quiet_kernel_manager` removes: jupyter_client's own manager sends SIGINT before every shutdown, which
    ipykernel reports as "ERROR | KeyboardInterrupt caught in kernel." when the signal lands while it handles a
    message (so the line itself comes and goes). The signals each manager sends are counted: one SIGINT with
    jupyter_client's manager, none with the runner's, and no such line on the runner's stderr."""
    import signal

    import papermill
    from jupyter_client.manager import AsyncKernelManager

    write_notebook(tmp_path / "00_idle.ipynb", "record.value(OUT_DIR, 'value', VALUE)")
    for manager, interrupts in ((AsyncKernelManager, 1), (runner.quiet_kernel_manager(), 0)):
        sent: list[int] = []

        class Counting(manager):
            async def _async_signal_kernel(self, signum: int) -> None:
                sent.append(signum)
                await super()._async_signal_kernel(signum)

        capfd.readouterr()
        papermill.execute_notebook(str(tmp_path / "00_idle.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"OUT_DIR": str(tmp_path / "r")}, kernel_name="python3",
                                   progress_bar=False, kernel_manager_class=Counting)
        assert sent.count(signal.SIGINT) == interrupts, manager.__name__
        if not interrupts:
            assert "KeyboardInterrupt" not in capfd.readouterr().err


@pytest.mark.slow
def test_the_sentences_after_each_table_agree_with_the_recorded_numbers(smoke):
    """Every recorded difference (diff.*) has its sentence in the executed copy, and the sentence claims what the
    interval shows ("within noise" for an interval holding 0, "higher"/"lower" for one that excludes it)."""
    from labkit.lab import record
    from labkit.training import stats
    from tests.test_stats import claimed

    out, notebooks = smoke
    checked = 0
    for stem in notebooks:
        found = record.intervals(out / stem)
        if not found:
            continue
        copy = nbformat.read(out / f"{stem}.ipynb", as_version=4)
        printed = "".join(o.get("text", "") for c in copy.cells if c.cell_type == "code" for o in c.outputs)
        lines = printed.splitlines()
        for (quantity, a, b), interval in found.items():
            head = f"{record._spoken(a)} − {record._spoken(b)}: "
            unit = record.UNITS[quantity][1]
            said = [line for line in lines if re.match(re.escape(head) + r"[+−-]\d+\.\d+ " + re.escape(unit), line)]
            assert said, f"{stem}: no sentence for {head!r}"
            assert claimed(said[-1]) == stats.verdict(interval), (stem, said[-1], interval)
            checked += 1
    assert checked >= 10


def test_a_recap_fills_in_recorded_numbers_and_names_the_missing(tmp_path):
    from labkit.lab import record

    record.values(tmp_path, {"acc.sla.aggregated.mean": 0.9661, "pair_confused.da.single.mean": 4.0})
    text = record.recap(tmp_path, "SLA's aggregate {acc.sla.aggregated.mean:.1%}; DA confused "
                                  "{pair_confused.da.single.mean:.0f}; MT {acc.mt.single.mean:.1%}")
    assert text.startswith("SLA's aggregate 96.6%; DA confused 4; MT —")
    assert "not recorded in this execution: acc.mt.single.mean" in text and text._repr_markdown_() == text
    assert "not recorded" not in record.recap(tmp_path, "{acc.sla.aggregated.mean:.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_each_notebook_opens_with_objectives_and_ends_with_a_filled_recap_and_questions(smoke, path):
    from labkit.lab import record

    cells = nbformat.read(smoke[0] / f"{path.stem}.ipynb", as_version=4).cells
    tagged = {tag: k for k, c in enumerate(cells) for tag in c.metadata.get("tags", [])}
    assert tagged["learning-objectives"] <= 2 and "you will learn to" in cells[tagged["learning-objectives"]].source
    recap = cells[tagged["recap"]]
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in recap.outputs)
    assert shown.startswith("\n**Recap.**") or shown.startswith("**Recap.**"), shown
    assert record.MISSING not in shown, f"{path.stem}: the recap names a number this execution did not record"
    questions = cells[tagged["discussion"]].source
    assert tagged["discussion"] == len(cells) - 1 and questions.count("\n2. ") == 1, questions
