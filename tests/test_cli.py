"""The command line: every method trains, a run folder holds what the contract says, eval reproduces it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.sla.methods import METHODS

REPO = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "2", "--train-fraction", "0.3", "--batch-size", "32", "--no-progress"]


def labkit(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or REPO, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_from_the_cli(method, tmp_path):
    out = tmp_path / "run"
    r = labkit("train", "--method", method, "--transform", "rotation", "--seed", "1", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_acc"]) == set(METHODS[method].modes)
    assert all(0.0 <= a <= 1.0 for a in metrics["test_acc"].values())
    assert metrics["test_acc"][METHODS[method].modes[0]] > 0.2, "two short epochs should beat chance (0.1) clearly"
    for mode, confusion in metrics["confusion"].items():
        assert len(confusion) == 10 and sum(map(sum, confusion)) == metrics["n_test"]
        assert metrics["pair_confused"][mode] == confusion[6][9] + confusion[9][6]
    assert (metrics["method"], metrics["transform"], metrics["N"], metrics["M"]) == (method, "rotation", 10, 4)
    assert metrics["train_seconds"] > 0 and set(metrics["eval_seconds"]) == set(metrics["test_acc"])
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["model"] == "smallcnn" and config["seed"] == 1
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_eval_reprints_the_saved_runs_numbers(tmp_path):
    out = tmp_path / "run"
    assert labkit("train", "--method", "sla+sd", "--out", str(out), *TINY).returncode == 0
    r = labkit("eval", "--checkpoint", str(out / "checkpoint.pt"), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    again, saved = json.loads(r.stdout), json.loads((out / "metrics.json").read_text())
    assert again["test_acc"] == saved["test_acc"] and again["confusion"] == saved["confusion"]
    text = labkit("eval", "--checkpoint", str(out)).stdout
    assert "distilled" in text and f"{saved['test_acc']['distilled']:.4f}" in text


@pytest.mark.slow
def test_cli_works_from_any_directory(tmp_path):
    r = labkit("train", "--method", "baseline", "--out", "run", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_compare_prints_a_table_and_reuses_finished_runs(tmp_path):
    args = ["compare", "--methods", "baseline,sla", "--seeds", "0,1", "--out", str(tmp_path), *TINY]
    r = labkit(*args)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [(row["method"], row["mode"]) for row in rows] == [("baseline", "single"), ("sla", "single"),
                                                               ("sla", "aggregated")]
    assert all(row["seeds"] == 2 for row in rows)
    assert "| sla | aggregated |" in r.stdout
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")}
    assert len(mtimes) == 4
    assert labkit(*args).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")} == mtimes, "finished runs retrained"


@pytest.mark.parametrize("args,message", [
    (["--method", "nope"], "unknown method 'nope'; allowed: baseline, da, mt, sla, sla+sd"),
    (["--transform", "color_perm"], "permutes RGB channels but digits has 1 channel"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; allowed: digits"),
    (["--method", "sl"], "unknown method 'sl'; did you mean 'sla'? allowed: baseline, da, mt, sla, sla+sd"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--train-fraction", "1.5"], "train_fraction must be in (0.0, 1.0]"),
])
def test_bad_arguments_get_one_line_errors(args, message, tmp_path):
    r = labkit("train", "--out", str(tmp_path / "run"), *args, "--no-progress")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"labkit: error: {r.stderr.split('labkit: error: ')[-1].strip()}"
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_version_and_the_program_name_as_invoked():
    from labkit import __version__
    from labkit.cli.commands import build_parser, program_name

    r = labkit("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"labkit {__version__}"
    assert program_name("/venv/bin/labkit") == "labkit"
    assert program_name("/src/labkit/__main__.py") == "python -m labkit"
    assert build_parser("labkit").format_usage().startswith("usage: labkit ")


def test_an_unknown_flag_points_to_the_subcommands_help_with_the_closest_flag(tmp_path):
    r = labkit("train", "--epohcs", "3", "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip() == ("labkit: error: unrecognized arguments: --epohcs 3; did you mean '--epochs'? "
                                "(see python -m labkit train --help)")
