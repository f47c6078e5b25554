"""What bookkeeping (validation, checkpoint.pt, history.json, progress lines) costs a run, printed as JSON.

    python benchmarks/bookkeeping.py            # digits baseline: 5 images per class (600 one-step epochs) and
                                                # the whole training split (30 epochs), on CUDA when present
    python benchmarks/bookkeeping.py --quick    # a quarter of the steps

Each setting trains twice through `train_run`, into a temporary run folder as a real run writes: with
`log_every=1` (bookkeeping at every epoch, what labkit did before `log_every`) and with the automatic schedule (the
default). The two runs of a setting take turns within each round (order reversed every other round), so drift in
the machine's load hits both alike. The share is the part of the training time (`train_seconds`, the learner's
`fit`) spent outside the epochs' training loops (the history records' `seconds`): validation, checkpoints, history
files and progress lines. The target is a share of at most 0.10 with the automatic schedule, whatever the epoch
size. Both runs of a setting end with the same weights (bookkeeping does not touch the training); the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import machine, median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's labkit, without installing it

from labkit.core.device import resolve_device  # noqa: E402
from labkit.training.config import TrainConfig  # noqa: E402
from labkit.training.engine import Callback, Learner  # noqa: E402
from labkit.training.experiment import train_run  # noqa: E402

TARGET = 0.10  # the most of a run's training time bookkeeping may take
SCHEDULES = {"every epoch": 1, "auto": None}  # log_every


class _Count(Callback):
    """How many times bookkeeping happened."""

    def __init__(self) -> None:
        self.times = 0

    def after_log(self, learner: Learner) -> None:
        self.times += 1


def settings(quick: bool, method: str, device: str) -> dict[str, TrainConfig]:
    scale = 4 if quick else 1
    base = dict(dataset="digits", method=method, device=device, batch_size=64)
    return {"5 images per class": TrainConfig(**base, samples_per_class=5, epochs=600 // scale),
            "whole split": TrainConfig(**base, epochs=max(30 // scale, 2))}


def one_run(config: TrainConfig) -> dict[str, Any]:
    count = _Count()
    with tempfile.TemporaryDirectory() as d:
        run = train_run(config, Path(d) / "run", progress=False, callbacks=(count,))
        metrics, history = run.metrics(), run.history()
        weights = run.checkpoint()["model"]
    loop = sum(r["seconds"] for r in history)
    return {"train_seconds": metrics["train_seconds"], "loop_seconds": loop, "steps": metrics["steps"],
            "epochs": len(history), "bookkeepings": count.times,
            "validated_epochs": sum("val_acc" in r for r in history),
            "share": 1.0 - loop / metrics["train_seconds"], "test_acc": metrics["test_acc"], "weights": weights}


def measure(config: TrainConfig, repeats: int) -> dict[str, Any]:
    """Both schedules, taking turns over `repeats` rounds; medians of the shares and times."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEDULES}
    for r in range(repeats):
        for name in (list(SCHEDULES) if r % 2 == 0 else list(reversed(SCHEDULES))):
            rounds[name].append(one_run(config.replace(log_every=SCHEDULES[name])))
    out: dict[str, Any] = {}
    for name, runs in rounds.items():
        last = runs[-1]
        out[name] = {"share": median([x["share"] for x in runs]), "shares": [round(x["share"], 4) for x in runs],
                     "train_seconds": median([x["train_seconds"] for x in runs]),
                     "loop_seconds": median([x["loop_seconds"] for x in runs]),
                     **{k: last[k] for k in ("steps", "epochs", "bookkeepings", "validated_epochs", "test_acc")}}
    a, b = (rounds[name][-1]["weights"] for name in SCHEDULES)
    out["same_weights"] = all(torch.equal(a[k], b[k]) for k in a)
    out["auto_within_target"] = out["auto"]["share"] <= TARGET
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    parser.add_argument("--method", default="baseline", help="the method trained (default baseline)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both schedules (default 2)")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report = {"machine": machine(device), "target_share": TARGET,
              "settings": {name: measure(config, args.repeats)
                           for name, config in settings(args.quick, args.method, str(device.type)).items()}}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
