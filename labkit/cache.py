"""The run cache: finished training runs reused by key, listed, and cleared.

A cached run lives in `<cache>/<dataset>-<transform>-<method>-s<seed>-<key>/` (`labkit.paths.cache_root()`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .paths import cache_root

__all__ = ["RESULT_MODULES", "code_fingerprint", "cache_key", "CachedRun", "list_runs", "clear", "format_runs"]

# The modules whose code decides a run's numbers (the config's own values are hashed separately).
RESULT_MODULES = ("train", "experiment", "objectives", "inference", "methods", "models", "transforms", "data",
                  "datasets", "folder", "device", "distributed")


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


@dataclass(frozen=True)
class CachedRun:
    path: Path
    config: dict[str, Any]
    finished: bool  # metrics.json written; else an interrupted run that `cached_run` resumes
    stale: bool  # trained by other code or another labkit version: never reused again
    modified: float  # seconds since the epoch, of the newest file
    bytes: int

    @property
    def age_days(self) -> float:
        return (time.time() - self.modified) / 86400


def list_runs(root: str | Path | None = None) -> list[CachedRun]:
    """Every run folder under the cache (a folder with a config.json), newest first."""
    root = Path(root) if root else cache_root()
    runs = []
    for config_file in sorted(root.glob("*/config.json")) if root.is_dir() else []:
        folder = config_file.parent
        config = json.loads(config_file.read_text())
        files = [p for p in folder.rglob("*") if p.is_file()]
        runs.append(CachedRun(folder, config, (folder / "metrics.json").is_file(),
                              not folder.name.endswith("-" + cache_key(config)),
                              max(p.stat().st_mtime for p in files), sum(p.stat().st_size for p in files)))
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
    """One line per run: folder, state, age, size."""
    if not runs:
        return "(no cached runs)"
    lines = [f"{'run':<48} {'state':<9} {'epochs':>6} {'age':>8} {'size':>9}"]
    for r in runs:
        state = "stale" if r.stale else ("finished" if r.finished else "partial")
        age = f"{r.age_days:.1f} d" if r.age_days >= 1 else f"{r.age_days * 24:.1f} h"
        lines.append(f"{r.path.name:<48} {state:<9} {r.config.get('epochs', '?')!s:>6} {age:>8} "
                     f"{r.bytes / 2**20:>6.1f} MiB")
    return "\n".join(lines)
