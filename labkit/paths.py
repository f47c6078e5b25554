"""Where labkit's files live: the one module that knows the folders.

| what            | where                                                    |
|-----------------|----------------------------------------------------------|
| datasets        | $LABKIT_DATA, else <repo>/data                           |
| executed runs   | <repo>/runs (notebooks, sweeps, the run cache below)     |
| the run cache   | $LABKIT_CACHE, else <repo>/runs/cache                    |
| notebooks       | <repo>/notebooks, presets in <repo>/notebooks/presets    |

Every path is absolute and computed when asked (nothing happens at import), so a change of the environment
variables takes effect at once and the working directory never matters.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "data_root", "runs_root", "cache_root", "notebook_dir", "preset_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else None


def data_root() -> Path:
    """Datasets: $LABKIT_DATA, else <repo>/data."""
    return _env_path("LABKIT_DATA") or REPO_ROOT / "data"


def runs_root() -> Path:
    """Executed notebooks, sweeps and cached runs: <repo>/runs."""
    return REPO_ROOT / "runs"


def cache_root() -> Path:
    """Trained runs reused by config hash (`labkit.report.cached_run`): $LABKIT_CACHE, else <repo>/runs/cache."""
    return _env_path("LABKIT_CACHE") or runs_root() / "cache"


def notebook_dir() -> Path:
    """The numbered notebooks `NN_*.ipynb`."""
    return REPO_ROOT / "notebooks"


def preset_dir() -> Path:
    """The runner's presets, `<name>.yaml`."""
    return notebook_dir() / "presets"
