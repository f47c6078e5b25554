"""Where labkit's files live: the one module that knows the folders.

labkit runs either from its source checkout (`make run`, `pip install -e .`) or installed as a package
(`pip install .`, a wheel, a notebook service). The *home* is the folder everything it writes goes under:

| what            | where                                                                        |
|-----------------|------------------------------------------------------------------------------|
| home            | $LABKIT_HOME (`--root`), else the checkout, else the current folder           |
| datasets        | $LABKIT_DATA, else <home>/data                                               |
| executed runs   | <home>/runs (notebooks, sweeps, the run cache below)                         |
| the run cache   | $LABKIT_CACHE, else <home>/runs/cache                                        |
| notebooks       | <checkout>/notebooks, else the copy shipped inside the package (read only)   |
| presets         | <notebooks>/presets                                                          |

So an installed labkit never writes under site-packages: it reads its notebooks and presets from the package and
writes runs where the user is (or names). Every path is absolute and computed when asked (nothing happens at
import), so a change of the environment variables takes effect at once.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "PACKAGE_DIR", "is_checkout", "home", "data_root", "runs_root", "cache_root",
           "notebook_dir", "preset_dir", "kernel_pythonpath", "shown"]

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # labkit/ (this file is labkit/core/paths.py)
REPO_ROOT = PACKAGE_DIR.parent  # the checkout when running from source; site-packages when installed
BUNDLED_NOTEBOOKS = PACKAGE_DIR / "_notebooks"  # the wheel's copy of notebooks/ (pyproject.toml: package-dir)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else None


def is_checkout() -> bool:
    """Running from the source tree (plain or editable install), not from an installed copy."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "notebooks").is_dir()


def home() -> Path:
    """The folder labkit writes under: $LABKIT_HOME, else the checkout, else the current folder."""
    return _env_path("LABKIT_HOME") or (REPO_ROOT if is_checkout() else Path.cwd().resolve())


def data_root() -> Path:
    """Datasets: $LABKIT_DATA, else <home>/data."""
    return _env_path("LABKIT_DATA") or home() / "data"


def runs_root() -> Path:
    """Executed notebooks, sweeps and cached runs: <home>/runs."""
    return home() / "runs"


def cache_root() -> Path:
    """Trained runs reused by `labkit.report.cached_run`: $LABKIT_CACHE, else <home>/runs/cache."""
    return _env_path("LABKIT_CACHE") or runs_root() / "cache"


def notebook_dir() -> Path:
    """The numbered notebooks `NN_*.ipynb`: the checkout's, else the copy inside the installed package."""
    return REPO_ROOT / "notebooks" if is_checkout() else BUNDLED_NOTEBOOKS


def preset_dir() -> Path:
    """The runner's presets, `<name>.yaml`."""
    return notebook_dir() / "presets"


def kernel_pythonpath() -> list[Path]:
    """What a notebook kernel needs first on PYTHONPATH to import this labkit: the checkout, or nothing (an
    installed labkit is already importable)."""
    return [REPO_ROOT] if is_checkout() else []


def shown(path: str | Path) -> str:
    """A path as a person should read it: relative to labkit's home when it is below it (`runs/cache/...`), so
    no machine path lands in a saved notebook; absolute otherwise."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(home()))
    except ValueError:
        return str(path)
