"""A run folder: the one place that knows the files of a training run, reads them and writes them whole.

    run = RunFolder("runs/x")
    run.metrics()["test_acc"]["aggregated"]       # metrics.json
    run.history()[-1]["val_acc"]                  # history.json, one record per epoch
    load_run(run)                                 # the trained model (labkit.training.experiment)

| file          | written                                  | holds                                                   |
|---------------|------------------------------------------|---------------------------------------------------------|
| config.json   | when training starts                     | the resolved config                                     |
| history.json  | at every bookkeeping                     | per epoch: epoch, step, lr, train_loss, seconds, val_acc |
| checkpoint.pt | at every bookkeeping and on Ctrl-C       | everything to resume exactly or re-evaluate             |
| best.pt       | with val_every, when validation improves | the selected step's model                               |
| metrics.json  | at the end                               | test_acc, confusion, eval_seconds per mode, ...         |

Bookkeeping (`labkit.training.engine`) happens at the end of every epoch unless epochs are short next to it
(`log_every`); only the records of the epochs that did it hold `val_acc`. A history record's `val_acc` is
{mode: accuracy} on the validation split, as metrics.json's `test_acc` is on the test split.

Every write is atomic (`labkit.core.files.atomic_write`), checkpoints load safely (`labkit.training.checkpoint`),
and `check_new` refuses to replace a run unless asked, so nothing is lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError
from ..core.files import read_json, write_json
from ..core.paths import shown
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["RunFolder", "RUN_FILES", "SHOWCASE", "run_facts"]

CONFIG, HISTORY, CHECKPOINT, METRICS, BEST = "config.json", "history.json", "checkpoint.pt", "metrics.json", "best.pt"
SHOWCASE = "showcase.npz"  # what the heads said about the showcase images after each epoch (callbacks.ShowcaseRecorder)
RUN_FILES = (CONFIG, HISTORY, CHECKPOINT, METRICS, BEST, SHOWCASE)


def run_facts(config: dict[str, Any], N: int, M: int, classes: Sequence[str], shape: Sequence[int],
              world_size: int = 1) -> dict[str, Any]:
    """What every checkpoint of a run records about it: the resolved config, N, M, class names, image shape
    (C, H, W) and the number of processes it trained on."""
    return {"config": dict(config), "world_size": world_size, "N": N, "M": M, "classes": list(classes),
            "shape": list(shape)}


@dataclass(frozen=True)
class RunFolder:
    """The folder of one training run (see the module's table). `os.fspath(run)` is its path."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({shown(self.path)!r})"  # relative to labkit's home: no machine path in a saved copy

    def __truediv__(self, name: str) -> Path:
        """`run / "metrics.json"`: a path inside the folder, as with a `Path`."""
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------------------------------------- state
    @property
    def finished(self) -> bool:
        """metrics.json is written: the run trained to its end and was evaluated."""
        return self.file(METRICS).is_file()

    @property
    def resumable(self) -> bool:
        return self.file(CHECKPOINT).is_file()

    def existing(self) -> list[str]:
        """The run files the folder holds now."""
        return [name for name in RUN_FILES if self.file(name).exists()]

    def modified(self) -> float:
        """Seconds since the epoch of its newest file."""
        return max((p.stat().st_mtime for p in self.path.rglob("*") if p.is_file()), default=0.0)

    def size(self) -> int:
        """Bytes of all its files."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # ----------------------------------------------------------------------------------------------- reading
    def config(self) -> dict[str, Any]:
        return read_json(self.file(CONFIG))

    def metrics(self) -> dict[str, Any]:
        if not self.finished:
            raise LabkitError(f"run {self.path} has no metrics.json: it has not finished (train it, or resume it)")
        return read_json(self.file(METRICS))

    def history(self) -> list[dict[str, Any]]:
        return read_json(self.file(HISTORY)) if self.file(HISTORY).is_file() else []

    def showcase(self) -> dict[str, Any]:
        """showcase.npz as numpy arrays by name (empty when the run recorded none): see
        `labkit.training.callbacks.ShowcaseRecorder`."""
        import numpy as np

        if not self.file(SHOWCASE).is_file():
            return {}
        with np.load(self.file(SHOWCASE), allow_pickle=False) as saved:
            return {name: saved[name] for name in saved.files}

    def checkpoint(self, best: bool = False) -> dict[str, Any]:
        """checkpoint.pt (or best.pt), loaded safely: tensors and plain data only."""
        return load_checkpoint(self.file(BEST if best else CHECKPOINT))

    # ----------------------------------------------------------------------------------------------- writing
    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.file(CONFIG), config)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        write_json(self.file(HISTORY), history)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.file(METRICS), metrics)

    def save_checkpoint(self, state: dict[str, Any], best: bool = False) -> None:
        save_checkpoint(self.file(BEST if best else CHECKPOINT), state)

    # --------------------------------------------------------------------------------------------- lifecycle
    def check_new(self, overwrite: bool, resumable: bool = True) -> None:
        """Refuse a path that is a file, or a folder that holds a run (unless `overwrite`); nothing is changed."""
        if self.path.exists() and not self.path.is_dir():
            raise LabkitError(f"--out {self.path} is a file; it must be a folder (new or holding a run)")
        existing = self.existing()
        if existing and not overwrite:
            resume = "--resume to continue it, " if resumable else ""
            raise LabkitError(f"{self.path} already holds a run ({', '.join(existing)}); pass {resume}--overwrite to "
                              f"replace it, or choose another --out")

    def clear(self) -> None:
        """Remove the run files (a new run starts here); other files in the folder stay."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def remove_temp_files(self) -> None:
        """Temporary files left by a process killed while it wrote (see labkit.core.files.atomic_write)."""
        for name in RUN_FILES:
            for tmp in self.path.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
