"""GPU throughput of labkit's training: expanded images per second for ResNet-32 on CIFAR-shaped tensors.

    python benchmarks/gpu.py            # on a CUDA GPU: a few minutes (each torch.compile mode adds about one)
    python benchmarks/gpu.py --smoke    # any device, tiny sizes: checks the script runs; its figures mean nothing

Plain Python: needs torch and the repo's labkit (torchvision, scikit-learn, tqdm), nothing else. Measures, with
the data held on the GPU as labkit holds it (50,000 random CIFAR-shaped images, per-sample crop+flip on device):

    sla M=4 and M=6 (bf16, eager and torch.compile), baseline at batch B and B*4, sla M=4 in fp32,
    an SLA epoch through labkit's pipeline against the reference-style one (DataLoader with per-image PIL
    transforms in worker processes, a Python loop over views, loss.item() every step), and the number of host
    synchronisations in labkit's steady steps (torch.cuda.set_sync_debug_mode; expected 0).

Every figure is `Learner.fit`'s own loop (batching, augmentation, expansion, step, scheduler, on-device loss sums):
warm-up steps (torch.compile, cuDNN autotuning) are timed apart, then the steady steps. Target on one H100: sla M=4
at >= 75,000 expanded images/s. Without a GPU (and without --smoke) it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from typing import Any

import torch
from common import bundle_of, cifar_like, machine, peak_memory, reference_epoch, reference_loader, reset_peak

from labkit.core.device import set_threads, synchronize
from labkit.sla import transforms
from labkit.training.config import TrainConfig
from labkit.training.engine import Callback, Learner
from labkit.training.resolve import resolve

TARGET = 75_000  # expanded images/s, SLA M=4 on one H100


class SteadyTimer(Callback):
    """Times Learner.fit's steps after the first `warmup` ones (synchronised once at each end)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.seconds = 0.0
        self.warm_seconds = 0.0

    def before_fit(self, learner: Learner) -> None:
        synchronize(learner.device)
        self.fit_start = time.perf_counter()

    def after_step(self, learner: Learner) -> None:
        if learner.step == self.warmup:
            synchronize(learner.device)
            self.start = time.perf_counter()
            self.warm_seconds = self.start - self.fit_start

    def after_fit(self, learner: Learner) -> None:
        synchronize(learner.device)
        self.seconds = time.perf_counter() - self.start


def labkit_run(data, device, *, method: str, transform: str, B: int, warmup: int, steps: int, autocast: bool,
               compile_mode: str | None) -> dict[str, Any]:
    """Steady expanded images/s of Learner.fit, and the warm-up (compile) time apart."""
    epochs = math.ceil((warmup + steps) / (len(data.train) // B))  # enough epochs for warm-up + timed steps
    config = TrainConfig(dataset="cifar10", model="resnet32", method=method, transform=transform, batch_size=B,
                         epochs=epochs, max_steps=warmup + steps, device=device.type, lr=0.01,
                         precision="bf16" if autocast else "fp32")
    run = resolve(config, device, data)
    model = run.model
    if compile_mode:
        model = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
    timer = SteadyTimer(warmup)
    reset_peak(device)
    learner = Learner(model, run, [timer])
    learner.fit()
    per_step = B * (transforms.get(transform).M if method != "baseline" else 1)
    steps = learner.step - warmup
    return {"images_per_s": round(per_step * steps / timer.seconds), "images_per_step": per_step,
            "steady_seconds": timer.seconds, "steps": steps, "warmup_steps": warmup,
            "warmup_seconds": timer.warm_seconds, "first_step_seconds": learner.first_step_seconds,
            "compile": compile_mode or "eager", "bf16": autocast, **peak_memory(device)}


class SyncCounter(Callback):
    """Counts host synchronisations (torch.cuda.set_sync_debug_mode warnings) between the end of the first step
    and the end of the last: the steady steps. labkit's loop should make none there (only at epoch ends)."""

    def __init__(self, log: list) -> None:
        self.log, self.at_start, self.at_end = log, 0, 0

    def after_step(self, learner: Learner) -> None:
        if learner.step == 1:
            torch.cuda.set_sync_debug_mode("warn")
            self.at_start = len(self.log)
        if learner.step == learner.total_steps:
            self.at_end = len(self.log)
            torch.cuda.set_sync_debug_mode("default")


def sync_check(data, device, *, B: int, steps: int) -> dict[str, Any]:
    """Host syncs in `steps` steady SLA steps of Learner.fit (one epoch): expected 0."""
    config = TrainConfig(dataset="cifar10", model="resnet32", method="sla", batch_size=B, epochs=1,
                         max_steps=min(steps + 1, len(data.train) // B), device=device.type, lr=0.01)
    run = resolve(config, device, data)
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        counter = SyncCounter(log)
        try:
            Learner(run.model, run, [counter]).fit()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [str(w.message)[:160] for w in log[counter.at_start:counter.at_end]]
    return {"steady_steps": config.max_steps - 1, "host_syncs": len(found), "first_messages": found[:3]}


def reference_run(images, labels, data, device, *, B: int, warmup: int, steps: int, workers: int,
                  autocast: bool) -> dict[str, Any]:
    """Steady expanded images/s of the reference-style SLA loop on the same model and images."""
    tset = transforms.get("rotation")
    config = TrainConfig(dataset="cifar10", model="resnet32", method="sla", batch_size=B, device=device.type)
    model = resolve(config, device, data).model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loader = reference_loader(images, labels, data, B, workers, pin_memory=device.type == "cuda")
    reference_epoch(model, opt, loader, tset, device, max_steps=warmup, autocast=autocast)
    synchronize(device)
    start = time.perf_counter()
    reference_epoch(model, opt, loader, tset, device, max_steps=steps, autocast=autocast)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": round(B * tset.M * steps / seconds), "steady_seconds": seconds, "steps": steps,
            "workers": workers, **peak_memory(device)}


def measure(name: str, fn, results: dict[str, Any]) -> None:
    """Run one measurement; a failure (e.g. a compile mode this install lacks) is recorded, not fatal."""
    print(f"gpu.py: {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn()
    except Exception as e:  # noqa: BLE001 - report and go on to the next figure
        results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device (CPU included): checks the script")
    p.add_argument("--batch", type=int, default=128, help="original images per step (the paper's CIFAR batch)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per figure")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (compile, cuDNN autotuning)")
    p.add_argument("--m6-transform", default="color_perm", help="the M=6 transform set")
    p.add_argument("--compile-modes", default="default,reduce-overhead",
                   help="comma-separated torch.compile modes for sla M=4 ('' for none)")
    p.add_argument("--workers", type=int, default=4, help="reference DataLoader worker processes")
    p.add_argument("--n", type=int, default=50_000, help="training images held on the device")
    args = p.parse_args(argv)
    args.warmup = max(args.warmup, 1)  # the first step (compile, autotuning) is never a steady one
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu.py: no CUDA GPU visible; nothing measured (run on a GPU machine, or --smoke to check the "
              "script on this one)", file=sys.stderr)
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True  # as labkit's train_run does
    set_threads(device)
    if args.smoke:  # every code path, seconds on a CPU
        args.batch, args.steps, args.warmup, args.n, args.workers = 4, 2, 1, 64, 0
        if not cuda:
            args.compile_modes = ""  # inductor on CPU needs a C++ toolchain and minutes; not a smoke check
    images, labels = cifar_like(args.n)
    data = bundle_of(images, labels, True, device)
    run = dict(B=args.batch, warmup=args.warmup, steps=args.steps)
    results: dict[str, Any] = {}
    m6 = args.m6_transform
    measure("sla_M4_bf16_eager", lambda: labkit_run(data, device, method="sla", transform="rotation",
                                                    autocast=cuda, compile_mode=None, **run), results)
    measure(f"sla_M{transforms.get(m6).M}_bf16_eager", lambda: labkit_run(
        data, device, method="sla", transform=m6, autocast=cuda, compile_mode=None, **run), results)
    measure("sla_M4_fp32_eager", lambda: labkit_run(data, device, method="sla", transform="rotation",
                                                    autocast=False, compile_mode=None, **run), results)
    measure("baseline_B_bf16_eager", lambda: labkit_run(data, device, method="baseline", transform="rotation",
                                                        autocast=cuda, compile_mode=None, **run), results)
    measure("baseline_4B_bf16_eager", lambda: labkit_run(
        data, device, method="baseline", transform="rotation", autocast=cuda, compile_mode=None,
        **{**run, "B": 4 * args.batch}), results)
    for mode in [m.strip() for m in args.compile_modes.split(",") if m.strip()]:
        measure(f"sla_M4_bf16_compile_{mode}", lambda mode=mode: labkit_run(
            data, device, method="sla", transform="rotation", autocast=cuda, compile_mode=mode, **run), results)
    measure("reference_sla_M4_bf16", lambda: reference_run(images, labels, data, device, workers=args.workers,
                                                           autocast=cuda, **run), results)
    if cuda:
        measure("sync_check_sla_M4", lambda: sync_check(data, device, B=args.batch, steps=min(args.steps, 30)),
                results)
    report = summarize(results, args, device)
    print(json.dumps(report, indent=2))
    return 0


def summarize(results: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    def ips(key: str) -> float | None:
        return results.get(key, {}).get("images_per_s")

    sla4 = {k: v["images_per_s"] for k, v in results.items() if k.startswith("sla_M4_bf16") and "images_per_s" in v}
    best = max(sla4.values()) if sla4 else None
    ratios = {
        "bf16_over_fp32": _div(ips("sla_M4_bf16_eager"), ips("sla_M4_fp32_eager")),
        "best_compile_over_eager": _div(max((v for k, v in sla4.items() if "compile" in k), default=None),
                                        ips("sla_M4_bf16_eager")),
        "labkit_over_reference": _div(ips("sla_M4_bf16_eager"), ips("reference_sla_M4_bf16")),
        "sla_M4_over_baseline_4B": _div(ips("sla_M4_bf16_eager"), ips("baseline_4B_bf16_eager")),
    }
    return {"command": " ".join(["python benchmarks/gpu.py", *(sys.argv[1:])]), "smoke": args.smoke,
            "note": "smoke run: tiny sizes, figures are not measurements" if args.smoke else None,
            "machine": machine(device), "batch": args.batch, "timed_steps": args.steps, "results": results,
            "ratios": ratios,
            "target": {"what": "sla M=4 expanded images/s (best of eager/compile), one H100", "value": TARGET,
                       "measured": best, "pass": None if args.smoke or best is None else best >= TARGET}}


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


if __name__ == "__main__":
    sys.exit(main())
