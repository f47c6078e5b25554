"""Installed as a package, not from the checkout: build the wheel, install it into a fresh virtual environment and
run a shipped smoke notebook from an unrelated folder. Its runs go under that folder, never under site-packages.

The environment borrows torch, papermill and the rest from the test's own interpreter (one `.pth` line naming its
site-packages, so nothing is downloaded) and installs only the labkit wheel, `--no-deps --no-index`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["pyproject.toml", "README.md", "LICENSE", "labkit", "notebooks"]


def _run(*cmd, cwd=None, env=None, timeout=300):
    env = env or {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never the checkout: the wheel only
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, its site-packages/labkit) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # build from a copy: the build writes build/ and *.egg-info next to its sources
    src.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_*"))
        else:
            shutil.copy(REPO / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src)
    wheel = next((tmp / "dist").glob("labkit-*.whl"))
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_labkit_test_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., no .pth run
    _run(py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    return venv / "bin", site / "labkit"


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_") and k != "PYTHONPATH"}
    # nbconvert's HTML templates are data files of the borrowed environment, outside its site-packages
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_the_wheel_ships_notebooks_and_presets(installed):
    bin_dir, package = installed
    assert (package / "_notebooks" / "02_invariance_six_nine.ipynb").is_file()
    assert (package / "_notebooks" / "presets" / "smoke.yaml").is_file()
    r = _run(bin_dir / "labkit", "--version", env=_clean_env())
    assert r.stdout.strip() == "labkit 0.1.0"


@pytest.mark.slow
def test_installed_labkit_runs_a_smoke_notebook_from_any_folder(installed, tmp_path):
    bin_dir, package = installed
    before = {p for p in package.rglob("*") if "__pycache__" not in p.parts}
    work = tmp_path / "work"
    work.mkdir()
    r = _run(bin_dir / "labkit", "notebooks", "--preset", "smoke", "--only", "00", cwd=work, env=_clean_env())
    out = work / "runs" / "notebooks" / "smoke"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notebooks"]["00_quick_tour"]["results"]["acc.sla+sd.single.mean"] >= 0
    assert (out / "00_quick_tour.html").is_file() and any((work / "runs" / "cache").iterdir())
    assert "00_quick_tour" in r.stdout
    after = {p for p in package.rglob("*") if "__pycache__" not in p.parts}
    assert after == before, f"wrote into site-packages: {sorted(map(str, after - before))}"
