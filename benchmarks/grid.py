"""A grid on Ray against the same grid one run after another, printed as one JSON document.

    python benchmarks/grid.py                  # 8 short digits runs (sla and da x seeds 0-3), --workers 1 then 2
    python benchmarks/grid.py --train-fraction 0.5   # runs half as long: Ray's start-up weighs more
    python benchmarks/grid.py --epochs 10      # shorter runs: Ray's start-up weighs more

One invocation trains the same 8 configs twice, each time into a fresh temporary cache: first with `--workers 1`
(in this process, one after another), then with `--workers 2` (a fresh local Ray on 127.0.0.1, two worker
processes of one thread each; this process trains runs too, as one of the two), and prints the wall-time ratio
2 / 1 with Ray's start-up included (`--repeats N`: N pairs taking turns, the ratio of the medians). Target on a
2-core machine: <= 0.65. Also printed: what the start-up costs (starting Ray; the extra time of each worker's first
run, which imports torch and labkit), how much memory Ray's processes and its object store take, and whether
every run's numbers are identical both ways (they must be: a run's threads are its config's). Exit status 0
either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from common import machine

from labkit.core import workers as engine
from labkit.training.config import TrainConfig
from labkit.training.grid import run_grid
from labkit.training.run_folder import RunFolder

TARGET = 0.65


def configs(epochs: int, fraction: float) -> list[TrainConfig]:
    return [TrainConfig(dataset="digits", method=m, seed=s, epochs=epochs, train_fraction=fraction, device="cpu")
            for m in ("sla", "da") for s in range(4)]


def numbers(folder: RunFolder) -> tuple[dict, list]:
    """Metrics and each epoch's step, learning rate and loss; not wall times, nor which epochs validated (timed
    bookkeeping: that follows the clock, never the weights)."""
    metrics = {k: v for k, v in folder.metrics().items() if "seconds" not in k}
    return metrics, [{k: r[k] for k in ("epoch", "step", "lr", "train_loss")} for r in folder.history()]


class RayMemory:
    """Samples the resident memory of this process's children (Ray's services and workers) while it runs."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.peak, self.by_name = every, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RayMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            rss: dict[str, int] = {}
            for p in psutil.Process().children(recursive=True):
                try:
                    rss[p.name()] = rss.get(p.name(), 0) + p.memory_info().rss
                except psutil.Error:
                    pass
            if sum(rss.values()) > self.peak:
                self.peak, self.by_name = sum(rss.values()), rss


def grid(configs_: list[TrainConfig], workers: int) -> dict[str, Any]:
    """Wall time of one grid into a fresh cache; for workers > 1 a fresh local Ray, its start-up included."""
    engine.shutdown()
    root = Path(tempfile.mkdtemp(prefix=f"labkit-grid-{workers}-"))
    heard: list[tuple[TrainConfig, engine.Outcome]] = []
    lines: list[str] = []
    load = os.getloadavg()[0]
    began = time.perf_counter()
    folders = run_grid(configs_, root, workers=workers, log=lines.append,
                       on_done=lambda config, outcome: heard.append((config, outcome)))
    wall = time.perf_counter() - began
    result = {"root": root, "folders": folders, "wall_s": wall, "heard": heard, "lines": lines,
              "load_before": load, "load_after": os.getloadavg()[0]}
    if workers > 1:
        ray = sys.modules["ray"]
        result.update(ray_start_s=engine.started()["seconds"],
                      object_store=ray.cluster_resources().get("object_store_memory", 0),
                      shm_used=shutil.disk_usage("/dev/shm").used if os.path.isdir("/dev/shm") else None)
    return result


def first_run_extra(heard: list[tuple[TrainConfig, engine.Outcome]]) -> dict[str, float]:
    """Per Ray worker process: how much longer its first run took than its later runs of the same method (the
    import of torch and labkit, the first data load)."""
    extra = {}
    for pid in dict.fromkeys(o.pid for _, o in heard if o.node_id):
        mine = [(c, o) for c, o in heard if o.pid == pid]
        first, later = mine[0], [o.seconds for c, o in mine[1:] if c.method == mine[0][0].method]
        if later:
            extra[str(pid)] = round(first[1].seconds - statistics.median(later), 2)
    return extra


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30, help="epochs of each run (default 30)")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="share of the digits' training split (1.0: the CLI's default run, about 17 s on one core)")
    p.add_argument("--repeats", type=int, default=1,
                   help="pairs of grids, taking turns (1 then 2, then 2 then 1, ...) so drift in the machine's load "
                        "hits both alike; the ratio is of the medians (default 1)")
    p.add_argument("--json", default=None, help="also write the JSON document to this file")
    args = p.parse_args()
    grid_configs = configs(args.epochs, args.train_fraction)
    ones, twos = [], []
    with RayMemory() as memory:
        for r in range(args.repeats):
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                (ones if workers == 1 else twos).append(grid(grid_configs, workers))
    engine.shutdown()
    report = _report(args, grid_configs, ones, twos, memory)
    for run in ones + twos:
        shutil.rmtree(run["root"], ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _report(args: argparse.Namespace, grid_configs: list[TrainConfig], ones: list[dict], twos: list[dict],
            memory: RayMemory) -> dict[str, Any]:
    one_s, two_s = statistics.median(r["wall_s"] for r in ones), statistics.median(r["wall_s"] for r in twos)
    same = all(numbers(a) == numbers(b) for one, two in zip(ones, twos, strict=True)
               for a, b in zip(one["folders"], two["folders"], strict=True))
    return {
        "benchmark": "grid of 8 digits runs, --workers 2 (local Ray, start-up included) / --workers 1 (in process)",
        "machine": machine(torch.device("cpu")),
        "runs": {"count": len(grid_configs), "epochs": args.epochs, "train_fraction": args.train_fraction,
                 "threads_per_run": grid_configs[0].threads,
                 "seconds_each_workers_1": [round(o.seconds, 2) for _, o in ones[0]["heard"]],
                 "seconds_each_workers_2": [f"{o.seconds:.2f} {'on Ray' if o.node_id else 'here'}"
                                            for _, o in twos[0]["heard"]]},
        "workers_1_wall_s": [round(r["wall_s"], 2) for r in ones],
        "workers_2_wall_s": [round(r["wall_s"], 2) for r in twos],
        "load_average_1min_before_after": {"workers_1": [(round(r["load_before"], 2), round(r["load_after"], 2))
                                                         for r in ones],
                                           "workers_2": [(round(r["load_before"], 2), round(r["load_after"], 2))
                                                         for r in twos]},
        "ratio": round(two_s / one_s, 3), "target": TARGET, "passed": two_s / one_s <= TARGET,
        "startup": {"ray_start_s": [round(r["ray_start_s"], 2) for r in twos],
                    "runs_trained_in_this_process": [sum(not o.node_id for _, o in r["heard"]) for r in twos],
                    "first_run_extra_s_per_worker": [first_run_extra(r["heard"]) for r in twos]},
        "memory": {"ray_processes_peak_rss_mib": round(memory.peak / 2**20),
                   "by_process_mib": {k: round(v / 2**20) for k, v in sorted(memory.by_name.items())},
                   "object_store_mib": round(twos[0]["object_store"] / 2**20),
                   "dev_shm_used_mib": None if twos[0]["shm_used"] is None else round(twos[0]["shm_used"] / 2**20)},
        "numbers_identical_run_by_run": same,
    }


if __name__ == "__main__":
    main()
