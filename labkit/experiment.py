"""One training run end to end: data, model, learner, evaluation, and the files of a run folder.

A run folder holds `config.json` (the resolved config), `history.json` (one record per epoch), `checkpoint.pt`
(everything needed to resume or re-evaluate) and `metrics.json` (test accuracy, confusion matrices and timings
per inference mode). An existing run is never overwritten unless asked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, transforms
from .checkpoint import load_checkpoint, write_json
from .config import TrainConfig, resolve_device
from .data import DataBundle, load_data, split_tensors
from .errors import LabkitError
from .inference import evaluate, expected_pair_confusions, pair_confusions
from .methods import get_method
from .models import build_model
from .train import Checkpointer, HistoryWriter, Learner, NonFiniteLossError, ProgressBar, unwrap

__all__ = ["train_run", "evaluate_run", "load_run", "prepare", "set_threads", "step_timings", "RUN_FILES"]

RUN_FILES = ("config.json", "history.json", "checkpoint.pt", "metrics.json")


def prepare(config: TrainConfig, device: torch.device, data: DataBundle | None = None) -> tuple[nn.Module,
                                                                                                DataBundle]:
    """Seeded model and device-resident data for `config`; the transform set is checked against the data."""
    data = data or load_data(config.dataset, config.train_fraction, config.data_dir, config.image_size)
    tset = transforms.get(config.transform)
    tset.check_input(*data.shape, dataset=config.dataset)
    torch.manual_seed(config.seed)
    model = build_model(config.resolved_model, data.shape[0], data.N, tset.M, get_method(config.method))
    # channels_last on every device: cuDNN's bf16 kernels and oneDNN's CPU kernels both prefer NHWC (a CPU step
    # takes about a quarter less time; see docs/benchmarks.md)
    model = model.to(device, memory_format=torch.channels_last)
    return model, data.to(device)


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


def set_threads(device: torch.device, threads: int | None = None) -> int:
    """The one place labkit sets the CPU thread count (intra-op), for training on `device`.

    On CPU: `threads`, else $LABKIT_THREADS, else $OMP_NUM_THREADS (the usual knob, which the notebook presets and
    torchrun set), else every core this process may run on (the affinity mask, which container CPU pinning narrows;
    os.cpu_count() would ignore it) shared among the processes torchrun started on this machine. On CUDA the host
    threads only launch kernels and are left as PyTorch sets them. Returns the count in force.
    """
    if device.type == "cpu":
        n = threads or _env_threads("LABKIT_THREADS") or _env_threads("OMP_NUM_THREADS") or max(
            _usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
    return torch.get_num_threads()


def _env_threads(name: str) -> int | None:
    env = os.environ.get(name, "").strip()
    if env and not (env.isdigit() and int(env) > 0):
        raise LabkitError(f"{name} must be a positive integer, got {env!r}")
    return int(env) if env else None


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train_run(config: TrainConfig | None, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
              progress: bool = True, data: DataBundle | None = None, device: str | None = None) -> dict[str, Any]:
    """Train (or continue) the run in `out_dir` and write its metrics; returns the metrics dict.

    `device` overrides the config's (also when resuming). Every input is checked, and the data loaded, before
    anything in `out_dir` changes; a run already there is refused unless `resume` or `overwrite`.
    Under torchrun every rank calls this: each trains on its shard with DistributedDataParallel, and only rank 0
    writes files (see `labkit.distributed`).
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise LabkitError("pass either --resume (continue the run) or --overwrite (replace it), not both")
    state = _resume_state(config, out) if resume else None  # every rank reads the same checkpoint
    config = _run_config(config, state, device)
    with distributed.session(config.device) as dev:
        return _train(config, state, out, dev, overwrite, progress, data)


def _train(config: TrainConfig, state: dict[str, Any] | None, out: Path, dev: torch.device, overwrite: bool,
           progress: bool, data: DataBundle | None) -> dict[str, Any]:
    if state is None:
        distributed.on_main(_check_out_dir, out, overwrite)  # rank 0 decides; its refusal stops every rank
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if data is None:  # rank 0 downloads first, if needed; then the others read its files
        data = distributed.main_first(load_data, config.dataset, config.train_fraction, config.data_dir,
                                      config.image_size)
    model, data = prepare(config, dev, data)
    model = distributed.wrap(model, dev, config.sync_bn)  # DDP when distributed, else the model itself
    callbacks = [Checkpointer(out / "checkpoint.pt"), HistoryWriter(out / "history.json")]
    main = distributed.is_main()
    learner = Learner(_maybe_compile(model, config), config, data, dev,
                      [ProgressBar(), *callbacks] if progress and main else callbacks,
                      rank=distributed.rank(), world_size=distributed.world_size())
    if state is not None:
        _check_fits(state, config, data, out / "checkpoint.pt", learner.load_state_dict)
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
    metrics = evaluate_run(unwrap(learner.model), config, data, dev)
    metrics.update(train_seconds=train_seconds, steps=learner.step, epochs_run=learner.epoch,
                   world_size=learner.world_size)
    metrics.update(step_timings(learner, *first), compiled=config.compile, threads=torch.get_num_threads())
    if main:
        write_json(out / "metrics.json", metrics)
    return metrics


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
    """Refuse a checkpoint trained with other settings than `config` (fields in `free` may differ)."""
    mine = config.to_dict()
    differ = [k for k in mine if k not in free and mine[k] != saved.get(k)]
    if differ:
        raise LabkitError(f"{what}: the checkpoint was trained with different "
                          + ", ".join(f"{k} ({saved.get(k)!r}, requested {mine[k]!r})" for k in differ))


def _check_fits(state: dict[str, Any], config: TrainConfig, data: DataBundle, path: Path, load: Any) -> None:
    """Refuse a checkpoint whose N, M or weights do not fit the model built for `config`; else `load(state)`."""
    M = transforms.get(config.transform).M
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


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LabkitError(f"--out {out} is a file; it must be a folder (new or holding a run)")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise LabkitError(f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another --out")


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


def evaluate_run(model: nn.Module, config: TrainConfig, data: DataBundle, device: torch.device) -> dict[str, Any]:
    """Test-set metrics of every inference mode of the run's method (in a distributed run each rank scores its
    shard and the counts are summed, so every rank returns the metrics of the whole test set)."""
    tset = transforms.get(config.transform)
    test = data.test
    x, y = split_tensors(test, device)
    x, y = distributed.shard(x), distributed.shard(y)  # rows rank, rank+K, ...: the whole split when alone
    results = distributed.reduce_results(evaluate(model, config.method, tset, x, y, data.N))
    metrics: dict[str, Any] = {
        "method": config.method, "transform": config.transform, "dataset": config.dataset,
        "model": config.resolved_model, "seed": config.seed, "N": data.N, "M": tset.M, "n_test": len(test),
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
             expect: TrainConfig | None = None) -> tuple[nn.Module, TrainConfig, DataBundle]:
    """A trained model (eval mode), its config and its data, from a run folder or a checkpoint file.

    With `expect`, a checkpoint trained with other settings (method, model, dataset, ...; not device or epochs)
    is refused."""
    path = Path(path)
    path = path / "checkpoint.pt" if path.is_dir() else path
    state = load_checkpoint(path)
    if expect is not None:
        _check_same(state["config"], expect, f"checkpoint {path} does not match the request")
    config = TrainConfig.from_dict({**state["config"], "device": device})
    dev = resolve_device(device)
    model, data = prepare(config, dev, data)
    _check_fits(state, config, data, path, lambda s: unwrap(model).load_state_dict(s["model"]))
    return model.eval(), config, data
