"""Atomic writes, and checkpoints that are loaded safely.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over the old one, so
a process killed at any moment leaves either the old or the new checkpoint, never half of one. Loading uses
`torch.load(weights_only=True)`: tensors and plain data only, so a file carrying pickled code is refused and
nothing in it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import LabkitError

__all__ = ["FORMAT", "atomic_write", "write_json", "save_checkpoint", "load_checkpoint"]

FORMAT = "labkit-checkpoint/1"
_REQUIRED = ("format", "config", "model", "N", "M")


def atomic_write(path: str | Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors and plain data only)."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a labkit checkpoint without executing anything in it; every failure is one clear `LabkitError`."""
    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise LabkitError(f"refused to load {path}: it holds objects other than tensors and plain data (possibly "
                          f"code), which labkit never unpickles ({str(e).splitlines()[0][:100]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise LabkitError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                          f"use an intact checkpoint or retrain") from None
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    if missing or state.get("format") != FORMAT:
        raise LabkitError(f"{path} is not a labkit checkpoint (format {FORMAT}); missing: {', '.join(missing) or '-'}")
    return state
