"""README, environment.yml, pyproject.toml, Makefile and CI agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_environment_yml_pins_what_pyproject_requires():
    project = _pyproject()
    wanted = set(project["dependencies"])
    for extra in ("lab", "dev", "tensorboard", "sweep"):
        wanted |= set(project["optional-dependencies"][extra])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {r for r in pip if not r.startswith("-e")} == wanted
    assert "-e ." in pip


def test_torch_requirements_are_the_supported_ranges():
    deps = {_name(r): r for r in _pyproject()["dependencies"]}
    assert deps["torch"] == "torch>=2.4" and deps["torchvision"] == "torchvision>=0.19"


def test_readme_opens_with_the_two_setup_commands_and_they_exist():
    first = (REPO / "README.md").read_text().splitlines()[:12]
    text = "\n".join(first)
    assert "make run" in text and "make test" in text
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test", "lab"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks target {target}"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    assert "|| true" not in ci, "CI must not hide failures"


def test_lab_extra_has_the_chosen_packages():
    lab = {_name(r) for r in _pyproject()["optional-dependencies"]["lab"]}
    assert {"jupyterlab", "ipywidgets", "plotly", "papermill"} <= lab
