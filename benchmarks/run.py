"""Ratio benchmarks of labkit's training and evaluation pipeline, printed as one JSON document.

    python benchmarks/run.py            # digits model and ResNet-32 at 32x32, on CUDA when present (minutes on CPU)
    python benchmarks/run.py --quick    # a short run with every ratio (well under a minute on a quiet CPU)

Every ratio is measured side by side in one process: the cases take turns within each round (interleaved
repeats), warm-up rounds are dropped, and the ratio is taken between medians. Targets:

    R1  SLA step at batch B with M views / baseline step at batch B*M       <= 1.10
    R2  expansion time / SLA step                                           <= 0.03
    R3  sla+sd step / sla step                                              <= 1.05
    R4  aggregated eval / distilled eval >= 0.8*M;  distilled eval / baseline eval <= 1.05
    R5  an SLA epoch, reference-style pipeline / labkit's pipeline (the speed-up): reported, no target

The steps are labkit's own `train_step` (what `Learner` runs), evaluation is a whole call of labkit's `evaluate`
for one mode, and labkit's epoch is `Learner.fit` itself. Exit status 0 whether or not targets pass; the
JSON says which did.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from common import (
    bundle_of,
    cifar_like,
    interleaved,
    machine,
    median,
    peak_memory,
    reference_epoch,
    reference_loader,
    reset_peak,
)

from labkit.core.device import resolve_device, set_threads
from labkit.data.datasets import load_data
from labkit.data.splits import DataBundle
from labkit.sla import transforms
from labkit.sla.inference import evaluate
from labkit.training.config import TrainConfig
from labkit.training.engine import Learner, train_step
from labkit.training.resolve import resolve

TARGETS = {"R1": ("<=", 1.10), "R2": ("<=", 0.03), "R3": ("<=", 1.05), "R4_distilled_over_baseline": ("<=", 1.05),
           "R5_speedup": None}  # R4_aggregated_over_distilled: >= 0.8*M, filled in per model; R5 has no target


@dataclass(frozen=True)
class Plan:
    """How long to measure one model: batch B (original images), rounds and steps per round."""

    model: str
    B: int
    repeats: int  # interleaved rounds per comparison (medians over these)
    steps: int  # optimiser steps per timed call (per-step time = call time / steps)
    n_eval: int  # test images for R4 (digits: its test split, capped)
    epoch_steps: int | None  # R5: steps of the epoch (None: the whole training split)
    epoch_repeats: int


def plans(quick: bool, device: torch.device) -> dict[str, Plan]:
    gpu = device.type == "cuda"
    if quick:
        return {"digits": Plan("smallcnn", 64, 3, 1, 360, 3, 1),
                "resnet32": Plan("resnet32", 128 if gpu else 4, 3, 1, 512 if gpu else 16, 2, 1)}
    return {"digits": Plan("smallcnn", 64, 21, 3, 360, None, 3),
            "resnet32": Plan("resnet32", 128 if gpu else 16, 7 if gpu else 9, 10 if gpu else 1,
                             4096 if gpu else 128, 40 if gpu else 4, 5)}


# --------------------------------------------------------------------------------------------------- the data
def raw_data(name: str, plan: Plan) -> tuple[np.ndarray, np.ndarray, bool]:
    """(n, H, W, C) images, labels, augment. digits: the real training split (8x8 grey, no augmentation);
    resnet32: random CIFAR-shaped uint8 images, enough for the epoch, with crop+flip augmentation."""
    if name == "digits":
        d = load_data("digits")
        x = d.denormalize(d.train.x).permute(0, 2, 3, 1).numpy().astype(np.float32)  # back to [0, 1] pixels
        return x, d.train.y.numpy(), False
    n = max(plan.B * (plan.epoch_steps or 8), plan.B * 4, plan.n_eval)
    images, labels = cifar_like(n)
    return images, labels, True


def config_for(name: str, plan: Plan, method: str, device: torch.device, **kw: Any) -> TrainConfig:
    return TrainConfig(dataset="digits" if name == "digits" else "cifar10", model=plan.model, method=method,
                       transform="rotation", batch_size=plan.B, device=device.type, **kw)


def build(name: str, plan: Plan, method: str, data: DataBundle, device: torch.device):
    """labkit's resolved run (its seeded model channels_last on the device, its bound loss) and the Learner's
    optimiser settings."""
    config = config_for(name, plan, method, device)
    run = resolve(config, device, data)
    opt = torch.optim.SGD(run.model.parameters(), lr=0.01, momentum=config.momentum, weight_decay=config.weight_decay,
                          nesterov=True)
    return run, opt


# -------------------------------------------------------------------------------------------------- R1 R2 R3
def step_ratios(name: str, plan: Plan, data: DataBundle, device: torch.device, clock: str) -> dict[str, Any]:
    tset = transforms.get("rotation")
    M = tset.M
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.randint(0, len(data.train), (plan.B * M,), generator=gen, device=device)
    x_big, y_big = data.train.x[idx], data.train.y[idx]  # B*M images for the baseline
    x, y = x_big[:plan.B], y_big[:plan.B]
    cases, memory = {}, {}
    for label, method, xb, yb in (("baseline_BM", "baseline", x_big, y_big), ("sla_B", "sla", x, y),
                                  ("sla+sd_B", "sla+sd", x, y)):
        run, opt = build(name, plan, method, data, device)
        cases[label] = _steps(run, opt, xb, yb, plan.steps)
        reset_peak(device)
        cases[label]()
        memory[label] = peak_memory(device)
    reps = max(20, plan.steps)
    cases["expand_B"] = lambda: [tset.expand(x) for _ in range(reps)]
    t = interleaved(cases, device, plan.repeats, clock=clock)
    per_step = {k: median(v) / (reps if k == "expand_B" else plan.steps) for k, v in t.items()}
    return {"seconds_per_step": per_step, "memory": memory,
            "R1": per_step["sla_B"] / per_step["baseline_BM"],
            "R2": per_step["expand_B"] / per_step["sla_B"],
            "R3": per_step["sla+sd_B"] / per_step["sla_B"]}


def _steps(run, opt, x, y, n):
    def steps():
        for _ in range(n):
            train_step(run.model, opt, run, x, y)
    return steps


# ------------------------------------------------------------------------------------------------------- R4
def eval_ratios(name: str, plan: Plan, data: DataBundle, device: torch.device, clock: str) -> dict[str, Any]:
    """Seconds of labkit's evaluate() for one inference mode on the same test images (the whole call)."""
    tset = transforms.get("rotation")
    x, y = data.test.x[:plan.n_eval], data.test.y[:plan.n_eval]
    sd_model, base_model = build(name, plan, "sla+sd", data, device)[0].model, build(name, plan, "baseline", data,
                                                                                        device)[0].model

    def case(model, mode):
        return lambda: evaluate(model, tset, x, y, data.N, modes=(mode,))

    cases = {"baseline": case(base_model, "single"), "distilled": case(sd_model, "distilled"),
             "aggregated": case(sd_model, "aggregated")}
    med = {k: median(v) for k, v in interleaved(cases, device, plan.repeats, clock=clock).items()}
    return {"eval_seconds": med, "n_eval": len(y),
            "R4_aggregated_over_distilled": med["aggregated"] / med["distilled"],
            "R4_distilled_over_baseline": med["distilled"] / med["baseline"]}


# ------------------------------------------------------------------------------------------------------- R5
def epoch_ratio(name: str, plan: Plan, images: np.ndarray, labels: np.ndarray, data: DataBundle,
                device: torch.device, workers: int, clock: str) -> dict[str, Any]:
    tset = transforms.get("rotation")
    model0 = build(name, plan, "sla", data, device)[0].model
    steps = plan.epoch_steps or len(data.train) // plan.B
    config = config_for(name, plan, "sla", device, epochs=1, max_steps=steps, lr=0.01)
    loader = reference_loader(images, labels, data, plan.B, workers, pin_memory=device.type == "cuda")

    base = resolve(config, device, data)  # resolved once, outside the timed epochs

    def labkit_epoch(n=steps):
        run = dataclasses.replace(base, config=config.replace(max_steps=n), model=copy.deepcopy(model0))
        Learner(run.model, run).fit()

    def ref_epoch(n=steps):
        model = copy.deepcopy(model0)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=config.momentum,
                              weight_decay=config.weight_decay, nesterov=True)
        reference_epoch(model, opt, loader, tset, device, max_steps=n)

    labkit_epoch(1), ref_epoch(1)  # warm-up: one step each (allocator, cuDNN autotuning, worker start)
    t = interleaved({"labkit": labkit_epoch, "reference": ref_epoch}, device, plan.epoch_repeats, warmup=0,
                    clock=clock)
    med = {k: median(v) for k, v in t.items()}
    return {"epoch_seconds": med, "epoch_steps": steps, "images_per_epoch": steps * plan.B,
            "reference_workers": workers, "R5_speedup": med["reference"] / med["labkit"]}


# -------------------------------------------------------------------------------------------------- the report
def judge(key: str, value: float, M: int) -> dict[str, Any]:
    """The ratio against its target; R5 (the speed-up) is reported without one (pass: null)."""
    if TARGETS.get(key, True) is None:
        return {"value": round(value, 4), "target": None, "pass": None}
    op, target = (">=", 0.8 * M) if key == "R4_aggregated_over_distilled" else TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return {"value": round(value, 4), "target": f"{op} {target:g}", "pass": bool(ok)}


def bench_model(name: str, plan: Plan, device: torch.device, workers: int, clock: str) -> dict[str, Any]:
    images, labels, augment = raw_data(name, plan)
    data = bundle_of(images, labels, augment, device, "digits" if name == "digits" else "cifar10")
    reset_peak(device)
    steps = step_ratios(name, plan, data, device, clock)
    evals = eval_ratios(name, plan, data, device, clock)
    epoch = epoch_ratio(name, plan, images, labels, data, device, workers, clock)
    M = transforms.get("rotation").M
    ratios = {k: judge(k, v, M) for part in (steps, evals, epoch) for k, v in part.items() if k.startswith("R")}
    detail = {k: v for part in (steps, evals, epoch) for k, v in part.items() if not k.startswith("R")}
    return {"model": plan.model, "B": plan.B, "M": M, "input": list(data.shape), "ratios": ratios,
            "detail": detail, "peak_memory": peak_memory(device)}


def thread_scan(device: torch.device, threads: int) -> dict[str, float] | None:
    """SLA step on digits with 1 thread against every usable core, in wall seconds: on a CPU shared with other busy
    processes, more threads than idle cores make every parallel region wait for a descheduled thread. Restores
    `threads`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device.type != "cpu" or cores == 1:
        return None
    plan = plans(False, device)["digits"]
    images, labels, _ = raw_data("digits", plan)
    data = bundle_of(images, labels, False, device, "digits")
    sla_run, opt = build("digits", plan, "sla", data, device)
    x, y = data.train.x[:plan.B], data.train.y[:plan.B]
    run = _steps(sla_run, opt, x, y, 3)

    def with_threads(n):
        def go():
            torch.set_num_threads(n)
            run()
        return go

    t = interleaved({"1": with_threads(1), str(cores): with_threads(cores)}, device, 5)
    torch.set_num_threads(threads)
    return {f"sla_step_seconds_{k}_threads": median(v) / 3 for k, v in t.items()}


def layout_scan(name: str, plan: Plan, device: torch.device, clock: str) -> dict[str, float]:
    """An SLA step with the model and input channels_last (labkit's choice) against plain NCHW: the reason
    experiment.resolve makes every model channels_last, CPU included. Same weights and batch in both."""
    images, labels, augment = raw_data(name, plan)
    data = bundle_of(images, labels, augment, device, "digits" if name == "digits" else "cifar10")
    x, y = data.train.x[:plan.B], data.train.y[:plan.B]
    cl_run, cl_opt = build(name, plan, "sla", data, device)
    tset = cl_run.tset
    plain = copy.deepcopy(cl_run.model).to(memory_format=torch.contiguous_format)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def nchw_step():  # train_step's work without its channels_last conversion
        out = plain(tset.expand(x))
        loss = cl_run.loss(out, y, tset.M)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    t = interleaved({"channels_last": _steps(cl_run, cl_opt, x, y, 1), "nchw": nchw_step}, device,
                    plan.repeats, clock=clock)
    med = {k: median(v) for k, v in t.items()}
    return {"sla_step_seconds_channels_last": med["channels_last"], "sla_step_seconds_nchw": med["nchw"],
            "nchw_over_channels_last": med["nchw"] / med["channels_last"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run: few rounds and tiny batches")
    p.add_argument("--models", default="digits,resnet32", help="comma-separated: digits, resnet32")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: labkit's set_threads)")
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default: 0 on CPU, 4 "
                   "on CUDA); on CPU workers would compete with the training threads for the same cores")
    p.add_argument("--thread-scan", action="store_true", help="also time a digits SLA step with 1 thread against "
                   "all usable cores (CPU)")
    p.add_argument("--layout-scan", action="store_true", help="also time an SLA step channels_last against NCHW")
    p.add_argument("--clock", default="wall", choices=["wall", "process"],
                   help="wall seconds, or this process's CPU seconds (CPU only, no workers: on a machine shared with "
                   "other busy processes it leaves out time spent waiting for a core)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as labkit's train_run does
    threads = set_threads(device, args.threads)
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    if args.clock == "process" and (device.type == "cuda" or workers > 0):
        p.error("--clock process measures this process's CPU time: CPU device and --workers 0 only")
    all_plans = plans(args.quick, device)
    report: dict[str, Any] = {"command": " ".join(["python benchmarks/run.py", *(argv or sys.argv[1:])]),
                              "machine": machine(device), "quick": args.quick, "clock": args.clock, "models": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in all_plans:
            p.error(f"unknown model {name!r}; choose from {', '.join(all_plans)}")
        report["models"][name] = bench_model(name, all_plans[name], device, workers, args.clock)
    if args.thread_scan:
        report["thread_scan"] = thread_scan(device, threads)
    if args.layout_scan:
        report["layout_scan"] = {name: layout_scan(name, all_plans[name], device, args.clock)
                                 for name in report["models"]}
    report["machine"]["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report["all_pass"] = all(r["pass"] for m in report["models"].values() for r in m["ratios"].values()
                             if r["pass"] is not None)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
