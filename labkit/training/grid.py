"""A grid of training runs: every config's run folder, trained here one after another or in parallel on Ray.

    folders = run_grid(configs)                          # in this process, as `cached_run` one by one
    folders = run_grid(configs, workers=2)               # a local Ray on 127.0.0.1, two runs at a time
    folders = run_grid(configs, address="head:6379")     # the nodes of an existing Ray cluster

Each run goes through the run cache (`labkit.training.cache`): a finished run is reused and never trained again,
a stopped one resumes from its checkpoint, and two workers never train the same config at once, so a grid that
was stopped and started again trains only what is missing. The driver reuses the finished runs itself and sends
only the others to Ray; with nothing left to train, Ray is not even started.

What a run needs decides where it runs (`labkit.core.workers` has the engine):

- on the CPU, `config.threads` cores: the thread count is the config's, never the number of workers', so a run's
  numbers do not depend on how the grid ran (`--workers 1` and `--workers 2` give identical metrics);
- on a GPU (device `cuda`, or `auto` where the node has GPUs), one GPU per run, or `gpus_per_run` (0.5 packs
  two runs on a GPU).

The run folders must be on a filesystem every node sees (the cache's `root`): a worker trains into it and the
driver reads the metrics from it. A worker also checks that it computes the same cache key as the driver: a node
with other labkit code would otherwise file its run under another name.

Progress: one line per finished run with the time left, and in a terminal an overall bar. A run that fails (bad
input, e.g. a data_dir that is not there) fails alone with its one-line error; the others finish, and `run_grid`
then raises one `GridError` naming every failed run.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import workers as engine
from ..core.errors import LabkitError
from ..core.log import log as default_log
from ..core.paths import cache_root, shown
from .cache import cached_run, run_dir
from .config import TrainConfig
from .distributed import launch_from_env
from .run_folder import RunFolder

__all__ = ["run_grid", "GridError", "check_grid", "run_label"]


class GridError(LabkitError):
    """Some runs of a grid failed; `folders` holds the others' run folders (None where a run failed)."""

    def __init__(self, message: str, folders: list[RunFolder | None]) -> None:
        super().__init__(message)
        self.folders = folders


@dataclass(frozen=True)
class _Job:
    """One run as a worker receives it: its config, the cache's root and the folder name the driver expects."""

    config: TrainConfig
    root: str
    name: str


def run_label(config: TrainConfig) -> str:
    return f"{config.method} seed {config.seed} on {config.dataset}/{config.transform}"


# ------------------------------------------------------------------------------------------------------- checks
def check_grid(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    """A grid has at least one config and no run twice (the same config would be one run counted twice, with a
    spread of zero)."""
    configs = list(configs)
    if not configs:
        raise LabkitError("the grid is empty: give at least one config (one method and one seed)")
    seen: dict[str, int] = {}
    for i, config in enumerate(configs):
        name = run_dir(config, "/").name
        if name in seen:
            raise LabkitError(f"the grid has the same run twice ({run_label(config)}: configs {seen[name] + 1} and "
                              f"{i + 1}); each run must differ, e.g. by its seed")
        seen[name] = i
    return configs


# --------------------------------------------------------------------------------------------------------- grid
def run_grid(configs: Sequence[TrainConfig], root: str | Path | None = None, workers: int | None = 1,
             address: str | None = None, gpus_per_run: float | None = None, progress: bool = False,
             log: Callable[[str], None] | None = None, dashboard: bool = False,
             on_done: Callable[[TrainConfig, engine.Outcome], None] | None = None) -> list[RunFolder]:
    """Every config's finished run folder under `root` (default: the run cache), in the order of `configs`.

    `workers` runs train at once: 1 (the default) in this process, one after another, without importing Ray; more
    on a local Ray on this machine (127.0.0.1 only, token authentication, no dashboard unless `dashboard`). With
    `address`, on that Ray cluster, `workers` at most at once (None: as many as its resources allow). `progress`:
    each run's progress bar in this process, or the grid's overall bar on Ray (in a terminal). `on_done(config,
    outcome)` hears of each run trained here as it finishes: where (node, pid), how long, its error if it failed.
    Raises `GridError` after the other runs finished when some failed."""
    configs = check_grid(configs)
    engine.check_workers(workers)
    engine.check_gpus_per_run(gpus_per_run)
    log = log or default_log
    root = Path(root or cache_root()).expanduser().resolve()  # absolute: a worker may start elsewhere
    on_ray = not (workers == 1 and address is None)
    if on_ray and launch_from_env() is not None:
        raise LabkitError("a grid on Ray runs each run in one process; under torchrun use --workers 1 (each run then "
                          "trains on every process)")
    folders: list[RunFolder | None] = [None] * len(configs)
    todo = [i for i, c in enumerate(configs) if not run_dir(c, root).finished]
    for i in sorted(set(range(len(configs))) - set(todo)):
        folders[i] = cached_run(configs[i], root, log=log)  # says "reusing cached run ..."
    if not todo:
        return folders
    if len(todo) < len(configs):
        log(f"{len(configs) - len(todo)} of {len(configs)} runs are in the cache; training the other {len(todo)}")
    jobs = [_Job(configs[i], str(root), run_dir(configs[i], root).name) for i in todo]
    heard = (lambda o: on_done(jobs[o.index].config, o)) if on_done else None
    if on_ray and address is None and len(jobs) == 1 and not _ray_is_up():
        on_ray = False  # one run: starting a local Ray would only add its start-up
    if on_ray:
        outcomes = _on_ray(jobs, workers, address, gpus_per_run, progress, log, dashboard, heard)
    else:
        outcomes = _here(jobs, progress, log, heard)
    for i, outcome in zip(todo, outcomes, strict=True):
        folders[i] = RunFolder(outcome.value["path"]) if outcome.ok else None
    _raise_failures(configs, todo, outcomes, folders, root)
    return folders


def _here(jobs: list[_Job], progress: bool, log: Callable[[str], None],
          heard: Callable[[engine.Outcome], None] | None) -> list[engine.Outcome]:
    bar = engine.Progress(len(jobs), log)

    def train(job: _Job) -> dict[str, Any]:
        return _train(job, log, progress)

    def done(outcome: engine.Outcome) -> None:
        bar.finished(run_label(jobs[outcome.index].config), _said(outcome, on_ray=False))
        if heard:
            heard(outcome)

    return engine.in_process(train, jobs, done)


def _on_ray(jobs: list[_Job], workers: int | None, address: str | None, gpus_per_run: float | None,
            progress: bool, log: Callable[[str], None], dashboard: bool,
            heard: Callable[[engine.Outcome], None] | None) -> list[engine.Outcome]:
    if address is not None:  # join first: what the nodes have decides what each run asks for
        gpus = engine.node_gpus(engine.start(address, 0, dashboard=dashboard, log=log))
    else:
        gpus = torch.cuda.device_count()
    resources = _resources([j.config for j in jobs], gpus_per_run, gpus, local=address is None)
    if workers is None and address is None:
        workers = max(_usable_cpus() // max(math.ceil(r.cpus) for r in resources), 1)
    if address is not None:
        engine.prepare(resources, workers, address, dashboard, log)  # refuses runs no node can take
    bar = engine.Progress(len(jobs), log, bar=progress)

    def done(outcome: engine.Outcome) -> None:
        bar.finished(run_label(jobs[outcome.index].config), _said(outcome, on_ray=True))
        if heard:
            heard(outcome)

    # CPU runs: when a local Ray starts, this process trains runs too, as one of the workers (on GPUs it would share
    # one with Ray's)
    here = functools.partial(_train, log=log) if all(r.gpus == 0 for r in resources) else None
    try:
        return engine.run_tasks(_train_on_worker, jobs, workers, address, resources, dashboard, done, log, here)
    finally:
        bar.close()


def _ray_is_up() -> bool:
    return engine.started().get("where") == "local"


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _resources(configs: list[TrainConfig], gpus_per_run: float | None, gpus: float, local: bool
               ) -> list[engine.Resources]:
    """What each run asks of a node: `threads` CPUs on the CPU; one CPU and `gpus_per_run` (default 1) GPUs on a
    GPU. Refuses runs that no node can take, before anything trains."""
    machine = "this machine" if local else "any node of the cluster"
    on_gpu = [c.device == "cuda" or (c.device == "auto" and gpus > 0) for c in configs]
    if any(c.device == "cuda" for c in configs) and gpus == 0:
        raise LabkitError(f"runs with device cuda need a GPU and {machine} has none; use --device cpu or auto")
    if gpus_per_run is not None and not any(on_gpu):
        raise LabkitError(f"--gpus-per-run {gpus_per_run:g} is for runs on a GPU, and none of these runs uses one "
                          f"(device cpu, or auto where {machine} has no GPU)")
    if gpus_per_run is not None and gpus_per_run > gpus:
        raise LabkitError(f"--gpus-per-run {gpus_per_run:g} is more GPUs than {machine} has ({gpus:g}); use at most "
                          f"{gpus:g}, or a share such as 0.5 to pack two runs on one GPU")
    return [engine.Resources(1.0, gpus_per_run or 1.0) if gpu else engine.Resources(float(c.threads), 0.0)
            for c, gpu in zip(configs, on_gpu, strict=True)]


def _said(outcome: engine.Outcome, on_ray: bool) -> str:
    if not outcome.ok:
        return f"FAILED: {outcome.error}"
    where = ""
    if on_ray:
        where = (f" on node {outcome.node_id[:8]} at {outcome.node} (pid {outcome.pid})" if outcome.node_id
                 else " in this process")
    return f"{outcome.value['how']} in {outcome.seconds:.1f} s{where}"


def _raise_failures(configs: list[TrainConfig], todo: list[int], outcomes: list[engine.Outcome],
                    folders: list[RunFolder | None], root: Path) -> None:
    failed = [(configs[i], o.error) for i, o in zip(todo, outcomes, strict=True) if not o.ok]
    if not failed:
        return
    which = "; ".join(f"{run_label(c)}: {error}" for c, error in failed)
    rest = len(configs) - len(failed)
    raise GridError(f"{len(failed)} of {len(configs)} runs failed ({which}); the other {rest} finished in "
                    f"{shown(root)}: run the grid again once the input is fixed, and only the failed runs train",
                    folders)


# ------------------------------------------------------------------------------------------------ one run's work
def _train(job: _Job, log: Callable[[str], None] | None, progress: bool = False) -> dict[str, Any]:
    """`cached_run` of one job: its folder, and how it got there (trained, resumed, reused). `log` hears its
    lines as they come (None: they come back in the result, from a worker)."""
    said: list[str] = []

    def hear(line: str) -> None:
        said.append(line)
        if log is not None:
            log(line)

    folder = cached_run(job.config, job.root, progress=progress, log=hear)
    if folder.name != job.name:
        raise LabkitError(f"this node files the run as {folder.name} but the driver expects {job.name}: it runs other "
                          f"labkit code or another version; install the same labkit on every node")
    return {"path": str(folder.path), "how": _how(said), "said": said}


def _train_on_worker(job: _Job) -> dict[str, Any]:
    """What a Ray worker runs for one job (a top-level function: Ray sends it by reference)."""
    return _train(job, None)


def _how(said: list[str]) -> str:
    words = {"training": "trained", "resuming": "resumed from its checkpoint", "reusing": "reused (another process "
             "trained it meanwhile)"}
    kinds = [words[line.split()[0]] for line in said if line.split() and line.split()[0] in words]
    return kinds[-1] if kinds else "done"
