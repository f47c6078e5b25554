"""Parameters are checked wherever a notebook runs: `labkit.notebook.parameters`, called right after the
parameters cell, refuses a wrong name, type or range from plain `papermill -p`, JupyterLab or a hosted service
with one line naming the parameter and the allowed values, and turns `-p SEEDS 1` into [1] for every later cell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.lab import notebook
from labkit.lab.notebook import ParameterError
from labkit.lab.parameters import notebook_parameters
from labkit.training.config import long_tail_loss

REPO = Path(__file__).resolve().parent.parent
NB02 = REPO / "notebooks" / "02_invariance_six_nine.ipynb"
GOOD = dict(DATASET="digits", TRANSFORM="rotation", METHODS=["sla"], EPOCHS=1, TRAIN_FRACTION=0.3, SEEDS=[0],
            DEVICE="cpu", OUT_DIR="", PROGRESS=False)


def test_parameters_are_read_by_papermill_inspect_notebook():
    import papermill

    found = papermill.inspect_notebook(str(NB02))
    params = notebook_parameters(NB02)
    assert list(params) == list(found)
    assert params["SEEDS"].annotation == found["SEEDS"]["inferred_type_name"] == "list[int]"


@pytest.mark.parametrize("bad,message", [
    ({"SEEDS": "one"}, "parameter SEEDS of notebook 02 must be list[int], got 'one' (str)"),
    ({"EPOCHS": 0}, "parameter EPOCHS: epochs must be a positive integer (>= 1), got 0"),
    ({"METHODS": ["sl"]}, "parameter METHODS: unknown method 'sl'; did you mean 'sla'? allowed: baseline, da"),
    ({"TRAIN_FRACTION": 1.5}, "parameter TRAIN_FRACTION: train_fraction must be in (0.0, 1.0], got 1.5"),
    ({"_ih": ["import x", "# Parameters\nEPOCH = 3\n"]},
     "unknown parameter 'EPOCH' for notebook 02; did you mean 'EPOCHS'? allowed: DATASET, TRANSFORM"),
])
def test_a_bad_value_is_one_line_naming_the_parameter(bad, message, tmp_path):
    with pytest.raises(ParameterError) as err:
        notebook.parameters("02", {**GOOD, "OUT_DIR": str(tmp_path), **bad})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value._render_traceback_() == [f"ParameterError: {err.value}"]  # what IPython shows: one line


def test_scalars_and_yaml_text_become_lists_in_the_namespace(tmp_path):
    namespace = {**GOOD, "OUT_DIR": str(tmp_path), "SEEDS": 1, "METHODS": "[da, sla]"}
    P = notebook.parameters("02", namespace)
    assert namespace["SEEDS"] == [1] and namespace["METHODS"] == ["da", "sla"]  # later cells read the globals
    assert [(c.method, c.seed) for c in P.configs()] == [("da", 1), ("sla", 1)]


def _papermill(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "LABKIT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(NB02), str(out), "--no-progress-bar", *args],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    return r, out


@pytest.mark.slow
def test_plain_papermill_with_a_scalar_for_a_list_runs(tmp_path):
    r, out = _papermill(tmp_path, "-p", "SEEDS", "1", "-p", "EPOCHS", "1", "-p", "METHODS", "[sla]",
                        "-p", "DEVICE", "cpu", "-p", "PROGRESS", "False")
    assert r.returncode == 0, r.stderr[-2000:]
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "[labkit] training sla on digits/rotation, seed 1" in text


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["-p", "EPOCH", "3"], "ParameterError: unknown parameter 'EPOCH' for notebook 02_invariance_six_nine; "
                           "did you mean 'EPOCHS'?"),
    (["-y", "METHODS: [da, sl]"], "ParameterError: parameter METHODS: unknown method 'sl'; did you mean 'sla'?"),
])
def test_plain_papermill_stops_at_the_check_cell(tmp_path, args, message):
    r, out = _papermill(tmp_path, *args)
    assert r.returncode != 0 and message in r.stderr
    failed = [c for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []) if
              o.get("output_type") == "error"]
    assert len(failed) == 1 and "notebook.parameters(" in failed[0].source
    traceback = failed[0].outputs[-1]["traceback"]
    assert len(traceback) == 1 and traceback[0].startswith(message)  # one line in the notebook, no traceback


NB07 = dict(DATASET="digits", TRANSFORM="rotation", METHODS=["baseline", "sla+sd"], LABELS_PER_CLASS=[5, 0],
            SEEDS=[0], STEPS=4, BATCH_SIZE=64, WARMUP=0.1, IMBALANCE_RATIOS=[10.0], LONG_TAIL_METHODS=["baseline"],
            LONG_TAIL_LOSSES=["plain"], LONG_TAIL_SEEDS=[0], DEVICE="cpu", WORKERS=1, SOLUTIONS=False,
            OUT_DIR="", PROGRESS=False)


@pytest.mark.parametrize("name,bad,message", [
    ("LABELS_PER_CLASS", [5, -1], "parameter LABELS_PER_CLASS: samples_per_class must be a positive integer (>= 1), "
                                  "got -1; 0 is allowed too"),
    ("IMBALANCE_RATIOS", [10.0, 0.5], "parameter IMBALANCE_RATIOS: imbalance_ratio must be in [1.0, inf), got 0.5"),
    ("LONG_TAIL_LOSSES", ["plain", "ldam-dwr"], "parameter LONG_TAIL_LOSSES: unknown long-tail loss 'ldam-dwr'; did "
                                                "you mean 'ldam-drw'? allowed: plain, cb, drw, ldam, ldam-drw"),
    ("LONG_TAIL_METHODS", ["sla+ds"], "parameter LONG_TAIL_METHODS: unknown method 'sla+ds'"),
])
def test_notebook_07s_grid_values_are_checked_one_line_each(name, bad, message, tmp_path):
    P = notebook.parameters("07", {**NB07, "OUT_DIR": str(tmp_path), name: bad})
    with pytest.raises(ParameterError) as err:
        P.each(name, field={"LABELS_PER_CLASS": "samples_per_class", "IMBALANCE_RATIOS": "imbalance_ratio",
                            "LONG_TAIL_METHODS": "method"}.get(name),
               check=long_tail_loss if name == "LONG_TAIL_LOSSES" else None,
               allow=(0,) if name == "LABELS_PER_CLASS" else ())
    assert message in str(err.value) and "\n" not in str(err.value)
    good = notebook.parameters("07", {**NB07, "OUT_DIR": str(tmp_path)})
    assert good.each("LABELS_PER_CLASS", field="samples_per_class", allow=(0,)) == [5, 0]
