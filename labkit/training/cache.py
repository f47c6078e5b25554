"""The run cache: finished training runs reused by key, listed, and cleared.

    run = cached_run(TrainConfig(method="sla"))     # a RunFolder: trained now, resumed, or reused
    run.metrics()["test_acc"]

A cached run lives in `<cache>/<dataset>-<transform>-<method>-s<seed>-<key>/` (`labkit.core.paths.cache_root()`).
Its key hashes everything that decides the result:

- the resolved config (not the device),
- labkit's version,
- a fingerprint of the code that trains and evaluates (`RESULT_MODULES`: the syntax tree of each module, so a
  comment or a re-wrapped line does not count, a changed statement does).

So after a change to the training code, or an upgrade of labkit, an old run is not reused: it trains again, and
the old folder shows as `stale` in `labkit cache list` until `labkit cache clear --stale` removes it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.files import read_json
from ..core.log import log as default_log
from ..core.paths import cache_root, shown
from .config import TrainConfig, run_length
from .engine import Callback
from .experiment import train_run
from .run_folder import CONFIG, METRICS, RunFolder

__all__ = ["RESULT_MODULES", "code_fingerprint", "cache_key", "run_key", "run_dir", "cached_run", "CachedRun",
           "list_runs", "clear", "format_runs"]

# The modules whose code decides a run's numbers (the config's own values are hashed separately).
RESULT_MODULES = ("core.device", "sla.transforms", "sla.joint", "sla.modes", "sla.objectives", "sla.methods",
                  "sla.models", "sla.inference", "sla.longtail", "data.datasets", "data.splits", "data.imagefolder",
                  "training.resolve", "training.engine", "training.experiment", "training.distributed")


@functools.cache
def code_fingerprint() -> str:
    """A short hash of the syntax trees of `RESULT_MODULES` (comments and formatting do not count)."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        origin = importlib.util.find_spec(f"labkit.{name}").origin
        digest.update(name.encode() + ast.dump(ast.parse(Path(origin).read_text(encoding="utf-8"))).encode())
    return digest.hexdigest()[:12]


def cache_key(config_dict: dict[str, Any]) -> str:
    """A short hash of a resolved config (without device and compile), labkit's version and the code
    fingerprint."""
    d = {k: v for k, v in config_dict.items() if k not in ("device", "compile")}
    keyed = {"config": d, "labkit": __version__, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]


def run_key(config: TrainConfig) -> str:
    """`cache_key` of a config: everything that changes its result."""
    return cache_key(config.to_dict())


def run_dir(config: TrainConfig, root: str | Path | None = None) -> RunFolder:
    """The cache's folder for `config` under `root` (default: the run cache)."""
    name = f"{config.dataset}-{config.transform}-{config.method}-s{config.seed}-{run_key(config)}"
    return RunFolder(Path(root or cache_root()) / name)


def cached_run(config: TrainConfig, root: str | Path | None = None, progress: bool = False,
               log: Callable[[str], None] | None = None, callbacks: tuple[Callback, ...] = ()) -> RunFolder:
    """`config`'s finished run folder under `root` (default: the run cache), training it first unless it already
    finished, or resuming it when a checkpoint is there. `log` (default: a `[labkit]` line) is told whether the
    run is reused, resumed or trained, and which folder it is. `callbacks` join the training, if there is any
    (a live view's `ShowcaseRecorder`, say); a reused run calls none."""
    log = log or default_log
    run = run_dir(config, root)
    name = f"{config.method} on {config.dataset}/{config.transform}, seed {config.seed}"
    if run.finished:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.file(METRICS).stat().st_mtime))
        log(f"reusing cached run {run.name} ({name}, trained {when}) from {shown(run.path.parent)}")
        return run
    resume = run.resumable
    log(f"{'resuming' if resume else 'training'} {name} ({run_length(config.to_dict())}) into {shown(run.path)}")
    return train_run(config, run, resume=resume, overwrite=not resume, progress=progress, callbacks=callbacks)


@dataclass(frozen=True)
class CachedRun:
    folder: RunFolder
    config: dict[str, Any]
    stale: bool  # trained by other code or another labkit version: never reused again
    modified: float  # seconds since the epoch, of the newest file
    bytes: int

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def finished(self) -> bool:
        """metrics.json written; else an interrupted run that `cached_run` resumes."""
        return self.folder.finished

    @property
    def age_days(self) -> float:
        return (time.time() - self.modified) / 86400


def list_runs(root: str | Path | None = None) -> list[CachedRun]:
    """Every run folder under the cache (a folder with a config.json), newest first."""
    root = Path(root) if root else cache_root()
    runs = []
    for config_file in sorted(root.glob(f"*/{CONFIG}")) if root.is_dir() else []:
        folder = RunFolder(config_file.parent)
        config = read_json(config_file)
        runs.append(CachedRun(folder, config, not folder.name.endswith("-" + cache_key(config)), folder.modified(),
                              folder.size()))
    return sorted(runs, key=lambda r: -r.modified)


def clear(root: str | Path | None = None, older_than_days: float | None = None,
          stale_only: bool = False) -> list[CachedRun]:
    """Delete cached runs (all, or those older than `older_than_days`, or only stale ones); returns them. Only
    folders that hold a run's config.json are touched."""
    removed = []
    for run in list_runs(root):
        if (older_than_days is None or run.age_days > older_than_days) and (run.stale or not stale_only):
            shutil.rmtree(run.path)
            removed.append(run)
    return removed


def format_runs(runs: list[CachedRun]) -> str:
    """One line per run: folder, state, length, age, size."""
    if not runs:
        return "(no cached runs)"
    lines = [f"{'run':<48} {'state':<9} {'length':>12} {'age':>8} {'size':>9}"]
    for r in runs:
        state = "stale" if r.stale else ("finished" if r.finished else "partial")
        age = f"{r.age_days:.1f} d" if r.age_days >= 1 else f"{r.age_days * 24:.1f} h"
        lines.append(f"{r.path.name:<48} {state:<9} {run_length(r.config):>12} {age:>8} {r.bytes / 2**20:>6.1f} MiB")
    return "\n".join(lines)
