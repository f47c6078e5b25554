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

The cache is shared by every process that uses it (notebook kernels, a grid's workers on this machine or on the
nodes of a cluster) and stays honest:

- `cached_run` holds a lock on `<cache>/.<run folder>.lock`, beside the folder, while it decides and trains: two
  processes never train the same config at once; the second waits, then reuses the first one's run.
- a finished run (metrics.json written, last and atomically) is never trained again;
- a run that was stopped (Ctrl-C, a killed process, a lost node) resumes from its last checkpoint, so a grid
  started again trains only what is missing.

The lock is `flock`, which the kernel releases when its process dies, even by SIGKILL: a killed worker never leaves
a stale lock behind. On a filesystem that several machines mount (a cluster's shared runs folder), Linux's NFS
client turns `flock` into a lock the NFS server keeps (NFSv4, or NFSv3 with lockd), held across machines; the
server frees the lock of a machine that died when its lease runs out (90 s by default for NFSv4). A filesystem
without locks is refused in one line rather than trusted: put the cache (`$LABKIT_CACHE`) on one that has them.
`labkit cache list` shows a run being trained as `training`, and `labkit cache clear` leaves it alone.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import LabkitError
from ..core.files import read_json
from ..core.log import log as default_log
from ..core.paths import cache_root, shown
from . import distributed
from .config import TrainConfig, run_length
from .engine import Callback
from .experiment import train_run
from .run_folder import CONFIG, METRICS, RunFolder

__all__ = ["RESULT_MODULES", "code_fingerprint", "cache_key", "run_key", "run_dir", "run_name", "cached_run",
           "run_lock", "RunBusy", "CachedRun", "list_runs", "clear", "format_runs"]

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


def run_name(config: dict[str, Any], key: str) -> str:
    """The name of a cached run's folder: `<dataset>-<transform>-<method>-s<seed>-<key>`."""
    return f"{config['dataset']}-{config['transform']}-{config['method']}-s{config['seed']}-{key}"


def run_dir(config: TrainConfig, root: str | Path | None = None) -> RunFolder:
    """The cache's folder for `config` under `root` (default: the run cache)."""
    return RunFolder(Path(root or cache_root()) / run_name(config.to_dict(), run_key(config)))


def cached_run(config: TrainConfig, root: str | Path | None = None, progress: bool = False,
               log: Callable[[str], None] | None = None, callbacks: tuple[Callback, ...] = ()) -> RunFolder:
    """`config`'s finished run folder under `root` (default: the run cache), training it first unless it already
    finished, or resuming it when a checkpoint is there. `log` (default: a `[labkit]` line) is told whether the
    run is reused, resumed or trained, and which folder it is. While it decides and trains it holds the run's
    lock: another process asking for the same config waits, then reuses the run (under torchrun, rank 0 holds it
    for every rank). `callbacks` join the training, if there is any (a live view's `ShowcaseRecorder`, say); a
    reused run calls none."""
    log = log or default_log
    run = run_dir(config, root)
    name = f"{config.method} on {config.dataset}/{config.transform}, seed {config.seed}"

    def waiting(holder: str) -> None:
        log(f"waiting for {name}: {holder} is training it")

    with run_lock(run, waiting) if distributed.is_main() else contextlib.nullcontext():
        distributed.barrier()  # the other ranks look at the folder once rank 0 holds its lock
        if run.finished:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.file(METRICS).stat().st_mtime))
            log(f"reusing cached run {run.name} ({name}, trained {when}) from {shown(run.path.parent)}")
            return run
        resume = run.resumable
        log(f"{'resuming' if resume else 'training'} {name} ({run_length(config.to_dict())}) into "
            f"{shown(run.path)}")
        return train_run(config, run, resume=resume, overwrite=not resume, progress=progress,
                         callbacks=callbacks)


# ---------------------------------------------------------------------------------------------------- locking
class RunBusy(LabkitError):
    """The run's lock is held by another process (`run_lock(..., wait=False)`)."""


def _lock_path(run: RunFolder) -> Path:
    return run.path.parent / f".{run.name}.lock"


@contextlib.contextmanager
def run_lock(run: RunFolder, on_wait: Callable[[str], None] | None = None, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of `run` (the file `.<name>.lock` beside its folder) for the block. When another
    process holds it: `on_wait(who)` is told who ("pid 123 on host"), then this waits; with `wait=False` it raises
    `RunBusy` instead."""
    lock = _lock_path(run)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, on_wait, wait)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (the kernel also does when the process dies)


def _acquire(lock: Path, on_wait: Callable[[str], None] | None, wait: bool) -> int:
    """An open descriptor of `lock` holding its flock. A lock file removed or replaced while this waited (by
    `clear`) is not the run's lock any more: lock the file now at the path instead."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(fd, lock, on_wait, wait)
            if os.path.exists(lock) and os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _flock(fd: int, lock: Path, on_wait: Callable[[str], None] | None, wait: bool) -> None:
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise RunBusy(f"{lock.name[1:].removesuffix('.lock')} is being trained by {holder}") from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise LabkitError(f"cannot lock {lock} ({e.strerror}): the run cache needs a filesystem with file locks, "
                              f"so that two processes never train the same run; set LABKIT_CACHE to a folder on one "
                              f"(a local disk, or NFS with locking)") from None
        raise


def _busy(run: RunFolder) -> bool:
    """Whether a process holds the run's lock now (it is training the run)."""
    lock = _lock_path(run)
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CachedRun:
    folder: RunFolder
    config: dict[str, Any]
    stale: bool  # trained by other code or another labkit version: never reused again
    modified: float  # seconds since the epoch, of the newest file
    bytes: int
    busy: bool = False  # a process holds its lock: it is being trained now

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


_KEY = re.compile(r"[0-9a-f]{10}")


def list_runs(root: str | Path | None = None) -> list[CachedRun]:
    """Every run folder of the cache, newest first: a folder holding a config.json whose name is the one the cache
    gives that config (`run_name`, with any key: a stale run's key is an older one). Nothing else counts, so a run
    a user trained into a folder of their own is never listed, nor cleared."""
    root = Path(root) if root else cache_root()
    runs = []
    for config_file in sorted(root.glob(f"*/{CONFIG}")) if root.is_dir() else []:
        folder = RunFolder(config_file.parent)
        config = read_json(config_file)
        key = folder.name.rpartition("-")[2]
        if not (_KEY.fullmatch(key) and _named_by_cache(config, folder.name, key)):
            continue
        runs.append(CachedRun(folder, config, key != cache_key(config), folder.modified(), folder.size(),
                              _busy(folder)))
    return sorted(runs, key=lambda r: -r.modified)


def _named_by_cache(config: dict[str, Any], name: str, key: str) -> bool:
    try:
        return name == run_name(config, key)
    except KeyError:
        return False


def clear(root: str | Path | None = None, older_than_days: float | None = None,
          stale_only: bool = False) -> list[CachedRun]:
    """Delete cached runs (all, or those older than `older_than_days`, or only stale ones); returns them. Only
    the cache's own run folders are touched (`list_runs`), and never one that a process is training now."""
    if older_than_days is not None and (isinstance(older_than_days, bool) or not isinstance(
            older_than_days, (int, float)) or not math.isfinite(older_than_days) or older_than_days < 0):
        raise LabkitError(f"older_than_days must be a number of days >= 0, got {older_than_days!r}; nothing was "
                          f"removed")
    removed = []
    for run in list_runs(root):
        if (older_than_days is None or run.age_days > older_than_days) and (run.stale or not stale_only):
            with contextlib.suppress(RunBusy), run_lock(run.folder, wait=False):
                shutil.rmtree(run.path)
                _lock_path(run.folder).unlink(missing_ok=True)  # a process waiting on it locks a new file
                removed.append(run)
    return removed


def format_runs(runs: list[CachedRun]) -> str:
    """One line per run: folder, state, length, age, size."""
    if not runs:
        return "(no cached runs)"
    lines = [f"{'run':<48} {'state':<9} {'length':>12} {'age':>8} {'size':>9}"]
    for r in runs:
        state = "training" if r.busy else "stale" if r.stale else ("finished" if r.finished else "partial")
        age = f"{r.age_days:.1f} d" if r.age_days >= 1 else f"{r.age_days * 24:.1f} h"
        lines.append(f"{r.path.name:<48} {state:<9} {run_length(r.config):>12} {age:>8} {r.bytes / 2**20:>6.1f} MiB")
    return "\n".join(lines)
