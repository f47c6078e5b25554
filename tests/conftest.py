"""Fixtures shared by the test modules (helpers that are not fixtures live in tests/support.py).

- `tiny_runs`: tiny trained runs on the digits, one per method, trained once per test session and shared; a test
  that changes a run copies it first (`tiny_run_copy`).
- `chromium_browser`: headless Chromium, skipped on a developer machine that lacks it, a failure in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labkit.lab import browser
from labkit.training.experiment import train_run
from labkit.training.run_folder import RunFolder
from tests.support import one_thread, tiny_config


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Callable[..., RunFolder]:
    """`tiny_runs("mt")`: the finished tiny run of a method (tests.support.TINY: 2 epochs on 10 % of the digits),
    trained at its first use in the session. Treat it as read only."""
    root = tmp_path_factory.mktemp("tiny-runs")
    trained: dict[str, RunFolder] = {}

    def get(method: str = "sla") -> RunFolder:
        if method not in trained:
            with one_thread():
                trained[method] = train_run(tiny_config(method=method), root / method, progress=False)
        return trained[method]

    return get


@pytest.fixture
def tiny_run_copy(tiny_runs, tmp_path) -> Callable[..., RunFolder]:
    """`tiny_run_copy("sla")`: a copy of the shared tiny run in this test's tmp_path, free to change."""
    def copy(method: str = "sla", name: str = "run") -> RunFolder:
        shutil.copytree(tiny_runs(method).path, tmp_path / name)
        return RunFolder(tmp_path / name)

    return copy


@pytest.fixture
def chromium_ready() -> None:
    """Skip on a developer machine without Chromium or Playwright; in CI their absence is a failure."""
    missing = browser.missing()
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def chromium_browser(chromium_ready) -> Iterator[Any]:
    """Headless Chromium (labkit.lab.browser), closed after the test."""
    with browser.chromium() as chromium:
        yield chromium


@pytest.fixture
def screenshots() -> Path:
    """runs/screenshots/: where browser tests leave what a person would see, to look at."""
    from labkit.core import paths

    folder = paths.runs_root() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
