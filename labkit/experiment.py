"""One training run end to end: data, model, learner, evaluation, and the files of a run folder.

A run folder holds `config.json` (the resolved config), `history.json` (one record per epoch), `checkpoint.pt`
(everything needed to resume or re-evaluate) and `metrics.json` (test accuracy, confusion matrices and timings
per inference mode). An existing run is never overwritten unless asked.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, transforms
from .checkpoint import load_checkpoint, write_json
from .config import TrainConfig, resolve_device
from .data import DataBundle, load_data
from .errors import LabkitError
from .inference import evaluate, expected_pair_confusions, pair_confusions
from .methods import get_method
from .models import build_model
from .train import Checkpointer, HistoryWriter, Learner, NonFiniteLossError, ProgressBar, unwrap

__all__ = ["train_run", "evaluate_run", "load_run", "prepare", "RUN_FILES"]

RUN_FILES = ("config.json", "history.json", "checkpoint.pt", "metrics.json")


def prepare(config: TrainConfig, device: torch.device, data: DataBundle | None = None) -> tuple[nn.Module,
                                                                                                DataBundle]:
    """Seeded model and device-resident data for `config`; the transform set is checked against the data."""
    data = data or load_data(config.dataset, config.train_fraction, config.data_dir, config.image_size)
    tset = transforms.get(config.transform)
    tset.check_input(*data.shape, dataset=config.dataset)
    torch.manual_seed(config.seed)
    model = build_model(config.resolved_model, data.shape[0], data.N, tset.M, get_method(config.method))
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, data.to(device)


def train_run(config: TrainConfig | None, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
              progress: bool = True, data: DataBundle | None = None) -> dict[str, Any]:
    """Train (or continue) the run in `out_dir` and write its metrics; returns the metrics dict.

    Under torchrun every rank calls this: each trains on its shard with DistributedDataParallel, and only rank 0
    writes files (see `labkit.distributed`)."""
    with distributed.session((config or TrainConfig()).device) as device:
        return _train_run(config, Path(out_dir), device, resume, overwrite, progress, data)


def _train_run(config: TrainConfig | None, out: Path, device: torch.device, resume: bool, overwrite: bool,
               progress: bool, data: DataBundle | None) -> dict[str, Any]:
    state = _resume_state(config, out) if resume else None
    if state is not None:
        config = TrainConfig.from_dict({**state["config"], "device": (config or TrainConfig()).device})
    elif config is None:
        raise LabkitError("train_run needs a config unless it resumes a run")
    else:
        distributed.on_main(_claim_out_dir, out, overwrite)  # rank 0 claims; its refusal stops every rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if data is None:  # rank 0 downloads first, if needed; then the others read its files
        data = distributed.main_first(load_data, config.dataset, config.train_fraction, config.data_dir,
                                      config.image_size)
    model, data = prepare(config, device, data)
    model = distributed.wrap(model, device, config.sync_bn)  # DDP when distributed, else the model itself
    callbacks = [Checkpointer(out / "checkpoint.pt"), HistoryWriter(out / "history.json")]
    main = distributed.is_main()
    learner = Learner(_maybe_compile(model, config), config, data, device,
                      [ProgressBar(), *callbacks] if progress and main else callbacks,
                      rank=distributed.rank(), world_size=distributed.world_size())
    if state is not None:
        learner.load_state_dict(state)
    if main:
        write_json(out / "config.json", config.to_dict())
    start = time.perf_counter()
    try:
        learner.fit()
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; {_last_good(out)}") from None
    train_seconds = time.perf_counter() - start + _previous_seconds(state)
    metrics = evaluate_run(unwrap(learner.model), config, data, device)
    metrics.update(train_seconds=train_seconds, steps=learner.step, epochs_run=learner.epoch,
                   world_size=learner.world_size)
    if main:
        write_json(out / "metrics.json", metrics)
    return metrics


def _maybe_compile(model: nn.Module, config: TrainConfig) -> nn.Module:
    return torch.compile(model) if config.compile else model


def _resume_state(config: TrainConfig | None, out: Path) -> dict[str, Any]:
    state = load_checkpoint(out / "checkpoint.pt")
    if config is not None:
        saved = state["config"]
        mine = config.to_dict()
        differ = [k for k in mine if k not in ("device", "epochs") and mine[k] != saved.get(k)]
        if differ:
            raise LabkitError(f"cannot resume {out}: the checkpoint was trained with different "
                              + ", ".join(f"{k} ({saved.get(k)!r}, requested {mine[k]!r})" for k in differ))
    return state


def _claim_out_dir(out: Path, overwrite: bool) -> None:
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise LabkitError(f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another --out")
    for name in existing:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


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
    x, y = (test.x, test.y) if hasattr(test, "x") else _materialise(test, device)
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


def _materialise(split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from .data import batches

    xs, ys = zip(*batches(split, 256, device, shuffle=False), strict=True)
    return torch.cat(xs), torch.cat(ys)


def load_run(path: str | Path, device: str = "auto", data: DataBundle | None = None) -> tuple[
        nn.Module, TrainConfig, DataBundle]:
    """A trained model (eval mode), its config and its data, from a run folder or a checkpoint file."""
    path = Path(path)
    state = load_checkpoint(path / "checkpoint.pt" if path.is_dir() else path)
    config = TrainConfig.from_dict({**state["config"], "device": device})
    dev = resolve_device(device)
    model, data = prepare(config, dev, data)
    if (data.N, transforms.get(config.transform).M) != (state["N"], state["M"]):
        raise LabkitError(f"checkpoint {path} has N={state['N']}, M={state['M']} but {config.dataset} with "
                          f"{config.transform} gives N={data.N}, M={transforms.get(config.transform).M}")
    unwrap(model).load_state_dict(state["model"])
    return model.eval(), config, data
