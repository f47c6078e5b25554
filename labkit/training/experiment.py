"""One training run end to end: data, model, learner, evaluation, and its run folder.

`train_run(config, out)` trains into a `RunFolder` (`labkit.training.run_folder`: config.json, history.json,
checkpoint.pt, metrics.json, best.pt, showcase.npz), `evaluate_run` scores every inference mode of a resolved run on
the test split, and `load_run` opens a trained run folder (or one checkpoint file) for evaluation. An existing run is
never overwritten unless asked.

metrics.json holds, all of the last step: `test_acc`, `confusion` and `eval_seconds` per inference mode,
`forwards_per_image` per mode, `train_seconds`, `steps`, `epochs_run`; on a dataset with a showcase pair (digits
and MNIST: 6 and 9) `pair` (the two class names), `pair_confused` (test images of one class called the other, per
mode) and `pair_expected` (Σ P(b | x) over the a's plus Σ P(a | x) over the b's, per mode).

Per class, for every run whatever its data:

    train_counts      [n_0, ..., n_{N-1}]: the training images of each class the run used
    imbalance_ratio   the config's R of a long-tailed run, else null
    per_class_acc     {mode: [accuracy of class 0, ...]} on the test split (null for a class without test images)
    balanced_acc      {mode: mean of per_class_acc}
    shot_groups       {many, medium, few: [classes]}: more than many_shot, fewer than few_shot training images,
                      the rest (the thresholds: shot_thresholds {many_shot, few_shot})
    shot_acc          {mode: {many, medium, few: mean per-class accuracy of the group, null when it is empty}}

With `val_every` (the official protocol: a validation split held out with `val_size` or `val_indices`, scored
every 1,000 steps) the run also keeps the step of best validation accuracy in the method's first mode (`single`,
the official `single_acc`; the earliest of equals), and metrics.json gains:

    val_acc       {mode: accuracy} on the validation split at the last step
    selected      {step, epoch, val_acc: {mode: acc}, test_acc: {mode: acc}, seconds, by, checkpoint}: the test
                  accuracy at the selected step is the paper's reported number
    evaluations   every evaluation, {step, epoch, val_acc, test_acc, seconds}

and `best.pt` holds the selected step's model (`load_run(RunFolder(run).file("best.pt"))` opens it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.device import set_threads
from ..core.errors import LabkitError
from ..data.splits import DataBundle, split_tensors
from ..sla import modes
from ..sla.inference import (
    balanced_accuracy,
    evaluate,
    expected_pair_confusions,
    pair_confusions,
    per_class_accuracy,
)
from ..sla.longtail import group_accuracy, shot_groups
from . import distributed
from .callbacks import BestCheckpointer, Checkpointer, HistoryWriter, ShowcaseRecorder, epoch_callbacks
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .engine import Callback, Learner, NonFiniteLossError
from .resolve import ResolvedRun, load_config_data, resolve
from .run_folder import CHECKPOINT, RunFolder

__all__ = ["train_run", "evaluate_run", "load_run", "step_timings"]


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


def train_run(config: TrainConfig | None, out_dir: str | os.PathLike, *, resume: bool = False,
              overwrite: bool = False, progress: bool = True, data: DataBundle | None = None,
              device: str | None = None, callbacks: tuple[Callback, ...] = ()) -> RunFolder:
    """Train (or continue) the run in `out_dir` and write its metrics; returns its run folder.

    `device` overrides the config's (also when resuming). Every input is checked, and the data loaded, before
    anything in `out_dir` changes; a run already there is refused unless `resume` or `overwrite`.
    Under torchrun every rank calls this: each trains on its shard with DistributedDataParallel, and only rank 0
    writes files (see `labkit.training.distributed`). `callbacks` join the run's own (checkpoints, history, and a
    progress bar when `progress`, else a line per epoch under the notebook runner).
    """
    out = RunFolder(out_dir)
    if resume and overwrite:
        raise LabkitError("pass either --resume (continue the run) or --overwrite (replace it), not both")
    state = _resume_state(config, out) if resume else None  # every rank reads the same checkpoint
    config = _run_config(config, state, device)
    with distributed.session(config.device) as dev:
        return _train(config, state, out, dev, overwrite, progress, data, callbacks)


def _train(config: TrainConfig, state: dict[str, Any] | None, out: RunFolder, dev: torch.device, overwrite: bool,
           progress: bool, data: DataBundle | None, extra: tuple[Callback, ...]) -> RunFolder:
    if state is None:
        distributed.on_main(out.check_new, overwrite)  # rank 0 decides; its refusal stops every rank
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if data is None:  # rank 0 downloads first, if needed; then the others read its files
        data = distributed.main_first(load_config_data, config)
    run = resolve(config, dev, data)
    model = distributed.wrap(run.model, dev, config.sync_bn)  # DDP when distributed, else the model itself
    best = BestCheckpointer(out)
    recorders = [cb for cb in extra if isinstance(cb, ShowcaseRecorder)]  # a live view brings its own
    for recorder in recorders:
        recorder.folder = recorder.folder or out
    showcase = [] if recorders else [ShowcaseRecorder(out)]
    callbacks = [Checkpointer(out), HistoryWriter(out), best, *showcase, *epoch_callbacks(progress), *extra]
    main = distributed.is_main()
    learner = Learner(_maybe_compile(model, config), run, callbacks, rank=distributed.rank(),
                      world_size=distributed.world_size())
    if state is not None:
        _check_fits(state, run, out.file(CHECKPOINT), learner.load_state_dict)
        if main and learner.selected_model is not None:  # best.pt as the checkpoint knows it, even after a kill
            best.after_selection(learner)
    elif main:
        out.clear()
    if main:
        out.remove_temp_files()
        out.write_config(config.to_dict())
    set_threads(dev, config.threads)  # the config fixes the CPU threads: see set_threads
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
        out.write_metrics(metrics)
    distributed.barrier()  # every rank returns a folder whose metrics.json is written
    return out


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


def _resume_state(config: TrainConfig | None, out: RunFolder) -> dict[str, Any]:
    state = out.checkpoint()
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


def _last_good(out: RunFolder) -> str:
    path = out.file(CHECKPOINT)
    return f"the last good checkpoint {path} is intact" if path.exists() else "no checkpoint was written yet"


def _previous_seconds(state: dict[str, Any] | None) -> float:
    return sum(r["seconds"] for r in state["history"]) if state else 0.0


def evaluate_run(run: ResolvedRun) -> dict[str, Any]:
    """Test-set metrics of every inference mode of the run's method (in a distributed run each rank scores its
    shard and the counts are summed, so every rank returns the metrics of the whole test set)."""
    config, data, tset = run.config, run.data, run.tset
    x, y = split_tensors(data.test, run.device)
    x, y = distributed.shard(x), distributed.shard(y)  # rows rank, rank+K, ...: the whole split when alone
    results = distributed.reduce_results(evaluate(run.model, tset, x, y, data.N, run.method.modes,
                                                  precision=config.precision))
    metrics: dict[str, Any] = {
        "method": config.method, "transform": config.transform, "dataset": config.dataset,
        "model": config.resolved_model, "seed": config.seed, "N": data.N, "M": tset.M, "n_test": len(data.test),
        "test_acc": {m: r.accuracy for m, r in results.items()},
        "confusion": {m: r.confusion.tolist() for m, r in results.items()},
        "eval_seconds": {m: r.seconds for m, r in results.items()},
        "forwards_per_image": {m: modes.get(m).forwards(tset.M) for m in results},
    }
    metrics.update(_per_class(config, data.train_counts, {m: r.confusion for m, r in results.items()}))
    if data.showcase is not None:
        a, b = data.showcase
        metrics["pair"] = [data.classes[a], data.classes[b]]
        metrics["pair_confused"] = {m: pair_confusions(r.confusion, a, b) for m, r in results.items()}
        metrics["pair_expected"] = {  # a sum over test images: this shard's, summed over ranks
            m: float(distributed.all_reduce(torch.tensor(expected_pair_confusions(r.probabilities, y, a, b),
                                                         dtype=torch.float64))) for m, r in results.items()}
    return metrics


def _per_class(config: TrainConfig, counts: list[int], confusions: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The per-class metrics (see the module docstring): training counts, per-class and balanced accuracy, shot
    groups and their accuracy, per inference mode."""
    groups = shot_groups(counts, config.many_shot, config.few_shot)
    per_class = {m: per_class_accuracy(c) for m, c in confusions.items()}
    return {"train_counts": counts, "imbalance_ratio": config.imbalance_ratio, "per_class_acc": per_class,
            "balanced_acc": {m: balanced_accuracy(c) for m, c in confusions.items()}, "shot_groups": groups,
            "shot_thresholds": {"many_shot": config.many_shot, "few_shot": config.few_shot},
            "shot_acc": {m: group_accuracy(acc, groups) for m, acc in per_class.items()}}


def load_run(path: str | os.PathLike, device: str = "auto", data: DataBundle | None = None,
             expect: TrainConfig | None = None) -> ResolvedRun:
    """A trained run (model in eval mode) from a run folder or a checkpoint file, evaluated on `device`.

    With `expect`, a checkpoint trained with other settings (method, model, dataset, ...; not device or epochs)
    is refused."""
    path = Path(path)
    path = RunFolder(path).file(CHECKPOINT) if path.is_dir() else path
    state = load_checkpoint(path)
    if expect is not None:
        _check_same(state["config"], expect, f"checkpoint {path} does not match the request")
    run = resolve(TrainConfig.from_dict({**state["config"], "device": device}), data=data)
    _check_fits(state, run, path, lambda s: run.model.load_state_dict(s["model"]))
    run.model.eval()
    return run
