"""One training run end to end: data, model, learner, evaluation, and the files of a run folder.

A run folder holds `config.json` (the resolved config), `history.json` (one record per epoch), `checkpoint.pt`
(everything needed to resume or re-evaluate) and `metrics.json` (test accuracy, confusion matrices and timings
per inference mode, all of the last step). An existing run is never overwritten unless asked.

With `val_every` (the official protocol: a validation split held out with `val_size` or `val_indices`, scored
every 1,000 steps) the run also keeps the step of best validation accuracy in the method's first mode (`single`,
the official `single_acc`; the earliest of equals), and metrics.json gains:

    val_acc       {mode: accuracy} on the validation split at the last step
    selected      {step, epoch, val_acc: {mode: acc}, test_acc: {mode: acc}, seconds, by, checkpoint}: the test
                  accuracy at the selected step is the paper's reported number
    evaluations   every evaluation, {step, epoch, val_acc, test_acc, seconds}

and `best.pt` holds the selected step's model (`load_run(run / "best.pt")` opens it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import datasets, distributed, methods, transforms
from .checkpoint import load_checkpoint, write_json
from .config import TrainConfig
from .data import DataBundle, split_tensors
from .device import resolve_device, set_threads
from .errors import LabkitError
from .inference import evaluate, expected_pair_confusions, pair_confusions
from .methods import Method
from .models import build_model
from .train import BestCheckpointer, Callback, Checkpointer, HistoryWriter, Learner, NonFiniteLossError, ProgressBar
from .transforms import TransformSet

__all__ = ["ResolvedRun", "resolve", "train_run", "evaluate_run", "load_run", "step_timings", "check_out_dir",
           "load_config_data", "RUN_FILES"]

RUN_FILES = ("config.json", "history.json", "checkpoint.pt", "metrics.json", "best.pt")


@dataclass
class ResolvedRun:
    """A config with every name in it resolved once: what everything below `resolve` takes.

    model: seeded, on `device`, channels_last (the plain module; training may wrap it in DDP or torch.compile).
    data: on `device` (an imagefolder's images stay on disk).
    """

    config: TrainConfig
    method: Method
    tset: TransformSet
    device: torch.device
    data: DataBundle
    model: nn.Module


def resolve(config: TrainConfig, device: torch.device | None = None, data: DataBundle | None = None) -> ResolvedRun:
    """The one place names become objects: method, transformation set, device, data and a seeded model.

    `device` defaults to `config.device` resolved; `data` (on the CPU or already on the device) is loaded when
    not given. The transformation set is checked against the data's image shape."""
    device = device or resolve_device(config.device)
    data = data or load_config_data(config)
    method, tset = methods.get(config.method), transforms.get(config.transform)
    tset.check_input(*data.shape, dataset=config.dataset)
    if config.val_every and len(data.val) == 0:
        raise LabkitError(f"val_every selects a step by validation accuracy, but {config.dataset} has no validation "
                          f"split here; hold one out with val_size (--val-size) or val_indices (--val-indices)")
    torch.manual_seed(config.seed)
    model = build_model(config.resolved_model, data.shape[0], data.N, tset.M, method)
    # channels_last on every device: cuDNN's bf16 kernels and oneDNN's CPU kernels both prefer NHWC (a CPU step
    # takes about a quarter less time; see docs/benchmarks.md)
    model = model.to(device, memory_format=torch.channels_last)
    return ResolvedRun(config, method, tset, device, data.to(device), model)


def load_config_data(config: TrainConfig, download: bool = True) -> DataBundle:
    """The data a config trains on, on the CPU: its dataset, validation split, training fraction and per-class
    sample (see `datasets.load_data`)."""
    return datasets.load_data(config.dataset, config.train_fraction, config.data_dir, config.image_size, download,
                              val_size=config.val_size, val_indices=config.val_indices,
                              samples_per_class=config.samples_per_class)


def step_timings(learner: Learner, first_step: int, first_epoch: int) -> dict[str, float | None]:
    """This fit's first step apart from the steady state, in seconds: with --compile, `warmup_seconds` is (mostly)
    the compile time; `steady_step_seconds` is the mean of the other steps (epoch loop time, no validation)."""
    if learner.first_step_seconds is None:
        return {}
    first = learner.first_step_seconds
    loop = sum(r["seconds"] for r in learner.history[first_epoch:])
    rest = learner.step - first_step - 1
    if rest < 1:  # a one-step fit has no steady state
        return {"first_step_seconds": first, "steady_step_seconds": None, "warmup_seconds": None}
    steady = (loop - first) / rest
    return {"first_step_seconds": first, "steady_step_seconds": steady, "warmup_seconds": first - steady}


def train_run(config: TrainConfig | None, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
              progress: bool = True, data: DataBundle | None = None, device: str | None = None,
              callbacks: tuple[Callback, ...] = ()) -> dict[str, Any]:
    """Train (or continue) the run in `out_dir` and write its metrics; returns the metrics dict.

    `device` overrides the config's (also when resuming). Every input is checked, and the data loaded, before
    anything in `out_dir` changes; a run already there is refused unless `resume` or `overwrite`.
    Under torchrun every rank calls this: each trains on its shard with DistributedDataParallel, and only rank 0
    writes files (see `labkit.distributed`). `callbacks` join the run's own (checkpoints, history, progress).
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise LabkitError("pass either --resume (continue the run) or --overwrite (replace it), not both")
    state = _resume_state(config, out) if resume else None  # every rank reads the same checkpoint
    config = _run_config(config, state, device)
    with distributed.session(config.device) as dev:
        return _train(config, state, out, dev, overwrite, progress, data, callbacks)


def _train(config: TrainConfig, state: dict[str, Any] | None, out: Path, dev: torch.device, overwrite: bool,
           progress: bool, data: DataBundle | None, extra: tuple[Callback, ...]) -> dict[str, Any]:
    if state is None:
        distributed.on_main(check_out_dir, out, overwrite)  # rank 0 decides; its refusal stops every rank
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if data is None:  # rank 0 downloads first, if needed; then the others read its files
        data = distributed.main_first(load_config_data, config)
    run = resolve(config, dev, data)
    model = distributed.wrap(run.model, dev, config.sync_bn)  # DDP when distributed, else the model itself
    best = BestCheckpointer(out / "best.pt")
    callbacks = [Checkpointer(out / "checkpoint.pt"), HistoryWriter(out / "history.json"), best, *extra]
    main = distributed.is_main()
    learner = Learner(_maybe_compile(model, config), run, [ProgressBar(), *callbacks] if progress and main else
                      callbacks, rank=distributed.rank(), world_size=distributed.world_size())
    if state is not None:
        _check_fits(state, run, out / "checkpoint.pt", learner.load_state_dict)
        if learner.selected_model is not None:  # best.pt as the checkpoint knows it, even if a kill left a later one
            best.after_selection(learner)
    elif main:
        _clear_out_dir(out)
    if main:
        _remove_temp_files(out)
        write_json(out / "config.json", config.to_dict())
    set_threads(dev)  # CPU threads, deliberately: see set_threads
    start, first = time.perf_counter(), (learner.step, len(learner.history))
    try:
        learner.fit()
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; {_last_good(out)}") from None
    train_seconds = time.perf_counter() - start + _previous_seconds(state)
    metrics = evaluate_run(run)
    metrics.update(train_seconds=train_seconds, steps=learner.step, epochs_run=learner.epoch,
                   world_size=learner.world_size)
    metrics.update(step_timings(learner, *first), compiled=config.compile, threads=torch.get_num_threads())
    metrics.update(_selection(learner))
    if main:
        write_json(out / "metrics.json", metrics)
    return metrics


def _selection(learner: Learner) -> dict[str, Any]:
    """With val_every: the last evaluation's validation accuracy, the selected step and every evaluation."""
    if not learner.evaluations:
        return {}
    selected = {**learner.selected, "by": f"val_acc.{learner.method.modes[0]}", "checkpoint": "best.pt"}
    return {"val_acc": learner.evaluations[-1]["val_acc"], "selected": selected, "evaluations": learner.evaluations}


def _run_config(config: TrainConfig | None, state: dict[str, Any] | None, device: str | None) -> TrainConfig:
    """The requested config, or the checkpoint's when resuming (with the requested device and epochs)."""
    if state is None:
        if config is None:
            raise LabkitError("train_run needs a config unless it resumes a run")
        return config.replace(device=device) if device else config
    changes = {"device": device or (config.device if config else "auto")}
    if config is not None:
        changes["epochs"] = config.epochs
    return TrainConfig.from_dict({**state["config"], **changes})


def _maybe_compile(model: nn.Module, config: TrainConfig) -> nn.Module:
    return torch.compile(model) if config.compile else model


def _resume_state(config: TrainConfig | None, out: Path) -> dict[str, Any]:
    state = load_checkpoint(out / "checkpoint.pt")
    if config is not None:
        _check_same(state["config"], config, f"cannot resume {out}")
    return state


def _check_same(saved: dict[str, Any], config: TrainConfig, what: str, free: tuple[str, ...] = ("device", "epochs")
                ) -> None:
    """Refuse a checkpoint trained with other settings than `config` (fields in `free` may differ; a field the
    checkpoint predates counts as its default)."""
    mine = config.to_dict()
    saved = {**TrainConfig().to_dict(), **saved}
    differ = [k for k in mine if k not in free and mine[k] != saved.get(k)]
    if differ:
        raise LabkitError(f"{what}: the checkpoint was trained with different "
                          + ", ".join(f"{k} ({saved.get(k)!r}, requested {mine[k]!r})" for k in differ))


def _check_fits(state: dict[str, Any], run: ResolvedRun, path: Path, load: Any) -> None:
    """Refuse a checkpoint whose N, M or weights do not fit the model built for the run; else `load(state)`."""
    config, data, M = run.config, run.data, run.tset.M
    if (data.N, M) != (state["N"], state["M"]):
        raise LabkitError(f"checkpoint {path} has N={state['N']} classes and M={state['M']} transformations but "
                          f"{config.dataset} with {config.transform} gives N={data.N}, M={M}")
    try:
        load(state)
    except LabkitError:  # already says what does not fit (e.g. another number of processes)
        raise
    except (RuntimeError, KeyError, ValueError) as e:
        raise LabkitError(f"checkpoint {path} does not fit a {config.resolved_model} trained with {config.method} "
                          f"({' '.join(str(e).split())[:160]})") from None


def check_out_dir(out: Path, overwrite: bool, resumable: bool = True) -> None:
    """Refuse an --out that is a file, or that holds a run (unless `overwrite`); nothing is changed."""
    if out.exists() and not out.is_dir():
        raise LabkitError(f"--out {out} is a file; it must be a folder (new or holding a run)")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        resume = "--resume to continue it, " if resumable else ""
        raise LabkitError(f"{out} already holds a run ({', '.join(existing)}); pass {resume}--overwrite to replace "
                          f"it, or choose another --out")


def _clear_out_dir(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _remove_temp_files(out: Path) -> None:
    """Temporary files left by a process killed while it wrote (see checkpoint.atomic_write)."""
    for name in RUN_FILES:
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _last_good(out: Path) -> str:
    path = out / "checkpoint.pt"
    return f"the last good checkpoint {path} is intact" if path.exists() else "no checkpoint was written yet"


def _previous_seconds(state: dict[str, Any] | None) -> float:
    return sum(r["seconds"] for r in state["history"]) if state else 0.0


def evaluate_run(run: ResolvedRun) -> dict[str, Any]:
    """Test-set metrics of every inference mode of the run's method (in a distributed run each rank scores its
    shard and the counts are summed, so every rank returns the metrics of the whole test set)."""
    config, data, tset = run.config, run.data, run.tset
    x, y = split_tensors(data.test, run.device)
    x, y = distributed.shard(x), distributed.shard(y)  # rows rank, rank+K, ...: the whole split when alone
    results = distributed.reduce_results(evaluate(run.model, run.method, tset, x, y, data.N,
                                                  precision=config.precision))
    metrics: dict[str, Any] = {
        "method": config.method, "transform": config.transform, "dataset": config.dataset,
        "model": config.resolved_model, "seed": config.seed, "N": data.N, "M": tset.M, "n_test": len(data.test),
        "test_acc": {m: r.accuracy for m, r in results.items()},
        "confusion": {m: r.confusion.tolist() for m, r in results.items()},
        "eval_seconds": {m: r.seconds for m, r in results.items()},
        "forwards_per_image": {m: tset.M if m == "aggregated" else 1 for m in results},
    }
    if data.N == 10 and config.dataset in ("digits", "mnist"):
        metrics["six_nine"] = {m: pair_confusions(r.confusion, 6, 9) for m, r in results.items()}
        metrics["six_nine_expected"] = {  # a sum over test images: this shard's, summed over ranks
            m: float(distributed.all_reduce(torch.tensor(expected_pair_confusions(r.probabilities, y, 6, 9),
                                                         dtype=torch.float64))) for m, r in results.items()}
    return metrics


def load_run(path: str | Path, device: str = "auto", data: DataBundle | None = None,
             expect: TrainConfig | None = None) -> ResolvedRun:
    """A trained run (model in eval mode) from a run folder or a checkpoint file, evaluated on `device`.

    With `expect`, a checkpoint trained with other settings (method, model, dataset, ...; not device or epochs)
    is refused."""
    path = Path(path)
    path = path / "checkpoint.pt" if path.is_dir() else path
    state = load_checkpoint(path)
    if expect is not None:
        _check_same(state["config"], expect, f"checkpoint {path} does not match the request")
    run = resolve(TrainConfig.from_dict({**state["config"], "device": device}), data=data)
    _check_fits(state, run, path, lambda s: run.model.load_state_dict(s["model"]))
    run.model.eval()
    return run
