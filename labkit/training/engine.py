"""A small training engine that returns a history.

`Learner.fit()` runs the epochs and returns `history`, a list of one dict per epoch (the shape of history.json,
see `labkit.training.run_folder`). Progress bars, checkpoints and history files are optional callbacks
(`labkit.training.callbacks`), run in the order of their `order`; a callback that writes files or prints sets
`main_only` and runs on rank 0 alone. The optimiser and its schedule come from the config in one function,
`build_optimizer`. The model never calls plotting code.

Bookkeeping (scoring the validation split into the epoch's record, then the `after_log` callbacks: checkpoint.pt,
history.json, progress lines) happens at the end of an epoch that reaches `next_log_step`, and at the end of the
run. With `log_every` k the next one is due k steps later (1: every epoch); without (auto) the learner times each
bookkeeping and sets the next one so far ahead that bookkeeping stays near `LOG_SHARE` of the training time: an
epoch of one step (5 images per class, batch 64) is then not followed by a validation and a checkpoint every
time, while epochs much longer than their bookkeeping keep one each. Bookkeeping never changes the training
itself (validation draws no random numbers and leaves the weights and batch-norm statistics alone), so the
weights and metrics are the same whatever its schedule; `next_log_step` is part of the state, so a resumed run
keeps the schedule it was on.

The hot loop does no host synchronisation: the summed loss and the first non-finite step stay on the device and
are read once per epoch. All randomness of an epoch (permutation, augmentation) comes from one generator whose
state at the start of the epoch is saved, so a run resumed from a mid-epoch checkpoint replays exactly the same
batches and ends with the same weights as one that was never stopped. Ctrl-C (SIGINT) during `fit` is held until
the step in flight has finished, so the checkpoint written on interrupt is never half a step; a second Ctrl-C
stops at once and keeps the last checkpoint instead.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core.device import autocast, synchronize
from ..core.errors import LabkitError
from ..data.splits import batches, split_tensors
from ..sla.inference import evaluate
from ..sla.methods import LossFn
from . import distributed
from .config import TrainConfig
from .resolve import ResolvedRun
from .run_folder import run_facts

__all__ = ["Learner", "Callback", "NonFiniteLossError", "build_optimizer", "steps_per_epoch", "unwrap",
           "train_step", "LOG_SHARE"]

LOG_SHARE = 0.05  # automatic bookkeeping aims at this share of the training time (the bound is 10 %)


class NonFiniteLossError(LabkitError):
    """The training loss became NaN or infinite."""


class Callback:
    """Override any of: before_fit, after_step, after_selection, after_epoch, after_log, after_fit, on_interrupt
    (each gets the learner). after_epoch runs at the end of every epoch; after_log at the end of the epochs that
    do bookkeeping (the record then holds val_acc), which is where files are written and progress is shown.

    order: callbacks run in increasing order (ties keep the order given); main_only: run on rank 0 alone, the
    rule for anything that writes files or prints in a distributed run."""

    order: int = 0
    main_only: bool = False


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, run: ResolvedRun, x: Tensor, y: Tensor,
               loss_fn: LossFn | None = None) -> Tensor:
    """One optimiser step of the run's method on a batch x (B, C, H, W), y (B,); the detached fp32 loss, not
    synchronised.

    The training step itself, shared by `Learner` and the benchmarks so they time exactly what training runs.
    `model` is the run's model or a wrapper of it (DDP, torch.compile); the run gives the bound loss (`loss_fn`
    overrides it: the learner passes `run.loss_at(step, total_steps)`) and the precision (bf16 autocast by default
    on CUDA only, so CPU results stay exact).
    """
    if run.method.expands:
        x = run.tset.expand(x)  # (B, C, H, W) -> (B*M, C, H, W), sample-major
    x = x.contiguous(memory_format=torch.channels_last)  # the model's layout (see labkit.training.resolve)
    with autocast(x.device, run.config.precision):
        loss = (loss_fn or run.loss)(model(x), y, run.tset.M)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float()


def steps_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    per_rank = n_train // world_size
    return max(per_rank // batch_size, 1)


def build_optimizer(model: nn.Module, config: TrainConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with the config's learning rate, momentum, Nesterov and weight decay, and its schedule, stepped once per
    optimiser step: ×lr_decay at each milestone (a fraction of `total_steps`), and with `warmup` a linear rise over
    the first round(warmup · total_steps) steps (step s at (s + 1) / that of the rate)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    milestones = [round(m * total_steps) for m in config.milestones]
    warm, decay = round(config.warmup * total_steps), config.lr_decay

    def factor(s: int) -> float:
        f = decay ** sum(s >= m for m in milestones)
        return f * min(1.0, (s + 1) / warm) if warm else f

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Learner:
    """Trains `model` (the run's model, or a DDP / torch.compile wrapper of it) on the resolved run's data."""

    def __init__(self, model: nn.Module, run: ResolvedRun, callbacks: Sequence[Callback] = (), rank: int = 0,
                 world_size: int = 1) -> None:
        self.model, self.run = model, run
        self.config, self.data, self.device = run.config, run.data, run.device
        self.method, self.tset = run.method, run.tset
        config, data = self.config, self.data
        self.rank, self.world_size = rank, world_size
        # sorted by order (stable: ties keep the order given); rank 0 alone runs the main_only ones
        self.callbacks = sorted((cb for cb in callbacks if rank == 0 or not getattr(cb, "main_only", False)),
                                key=lambda cb: getattr(cb, "order", 0))
        self.steps_per_epoch = steps_per_epoch(len(data.train), config.batch_size, world_size)
        planned = config.steps or self.steps_per_epoch * config.epochs
        self.total_steps = min(planned, config.max_steps) if config.max_steps else planned
        self.optimizer, self.scheduler = build_optimizer(model, config, self.total_steps)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        # Only a fit's first step is synchronised, to time it apart: it pays for torch.compile and cuDNN autotuning.
        self.first_step_seconds: float | None = None  # wall seconds of this fit's first step (not in `history`)
        self.epoch = self.step = self.epoch_step = 0
        self.epoch_generator_state: Tensor | None = None
        self.history: list[dict[str, Any]] = []
        # With val_every: {step, epoch, val_acc, test_acc, seconds} at every evaluation, the selected one (best
        # validation accuracy of the method's first mode, `single`; the earliest of equals) and its weights (CPU).
        self.evaluations: list[dict[str, Any]] = []
        self.selected: dict[str, Any] | None = None
        self.selected_model: dict[str, Tensor] | None = None
        self._eval_seconds = 0.0  # evaluation time inside this epoch's loop, kept out of its training time
        # Bookkeeping: the first epoch end at or past next_log_step does it. Auto mode's measurements since the last
        # one: loop seconds and steps, and what the last after_log callbacks took.
        self.next_log_step = config.log_every or 1
        self._loop_seconds, self._loop_steps, self._callback_seconds = 0.0, 0, 0.0
        self._first_in_stretch = False  # the fit's first (timed) step is among those _loop_steps
        self.interrupted_cleanly = False  # set when Ctrl-C stopped fit between two steps (state is consistent)
        self._sigint = _DeferredSigint()
        self._reset_sums()

    # ----------------------------------------------------------------------------------------------------- loop
    @property
    def sized_by_epochs(self) -> bool:
        """The run ends at the end of its last epoch (no `steps`, no `max_steps` cutting it short)."""
        return self.config.steps is None and self.total_steps == self.steps_per_epoch * self.config.epochs

    @property
    def done(self) -> bool:
        if self.step >= self.total_steps:
            return True
        return self.config.steps is None and self.epoch >= self.config.epochs

    def fit(self) -> list[dict[str, Any]]:
        self._call("before_fit")
        self.interrupted_cleanly = False
        with self._sigint:
            try:
                while not self.done:
                    self._run_epoch()
                    self._stop_if_interrupted()
            except KeyboardInterrupt:
                self._call("on_interrupt")
                raise
        self._call("after_fit")
        return self.history

    def _stop_if_interrupted(self) -> None:
        """Raise the Ctrl-C that arrived during the last step, now that the state is whole again."""
        if self._sigint.requested:
            self.interrupted_cleanly = True
            raise KeyboardInterrupt

    @property
    def finite(self) -> bool:
        """No NaN or infinite loss so far in this epoch (reads the device once)."""
        return int(self._first_bad) < 0

    def _run_epoch(self) -> None:
        if self.epoch_step == 0:
            self.epoch_generator_state = self.generator.get_state()
            self._reset_sums()
        else:  # resuming mid-epoch: replay this epoch's draws up to where it stopped
            self.generator.set_state(self.epoch_generator_state)
        self.model.train()
        synchronize(self.device)
        start = time.perf_counter()
        for i, (x, y) in enumerate(self._batches()):
            if i < self.epoch_step:
                continue
            if self.first_step_seconds is None:
                self._timed_first_step(x, y)
            else:
                self._train_step(x, y)
            self.epoch_step += 1
            self.step += 1
            if self.config.val_every and (self.step % self.config.val_every == 0 or self.step == self.total_steps):
                self._evaluate()
            self._call("after_step")
            self._stop_if_interrupted()
            if self.step >= self.total_steps:
                break
        synchronize(self.device)  # count the queued steps in this epoch's time
        self._end_epoch(time.perf_counter() - start - self._eval_seconds)
        self._eval_seconds = 0.0

    def _timed_first_step(self, x: Tensor, y: Tensor) -> None:
        """The first step of this fit, timed on its own: it pays for torch.compile, cuDNN autotuning and lazy
        initialisation, which the steady-state step time must not include."""
        synchronize(self.device)
        start = time.perf_counter()
        self._train_step(x, y)
        synchronize(self.device)
        self.first_step_seconds = time.perf_counter() - start
        self._first_in_stretch = True

    def _batches(self):
        return batches(self.data.train, self.config.batch_size, self.device, shuffle=True, generator=self.generator,
                       augment=self.data.augment, drop_last=True, rank=self.rank, world_size=self.world_size,
                       fill=self.data.black)

    def _train_step(self, x: Tensor, y: Tensor) -> None:
        loss = train_step(self.model, self.optimizer, self.run, x, y, self.run.loss_at(self.step, self.total_steps))
        self.last_loss = loss  # on the device, not synchronised: for callbacks (labkit.tracking buffers it)
        self.scheduler.step()
        self._loop_steps += 1  # steps this process took since the last bookkeeping (a resumed epoch's too)
        bad = ~torch.isfinite(loss)
        self._first_bad = torch.where(bad & (self._first_bad < 0), self.step + 1, self._first_bad)
        self._loss_sum += torch.where(bad, torch.zeros_like(loss), loss)
        self._loss_count += 1

    def _reset_sums(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._loss_count = 0

    def _end_epoch(self, seconds: float) -> None:
        distributed.broadcast_buffers(unwrap(self.model))  # evaluate with the statistics the checkpoint keeps
        loss_sum = distributed.all_reduce(self._loss_sum)
        first_bad = int(distributed.all_reduce(self._first_bad, op="max"))
        if first_bad >= 0:
            raise NonFiniteLossError(
                f"loss became NaN or infinite at step {first_bad} (epoch {self.epoch + 1}); likely cause: the "
                f"learning rate is too high for this model and data (lr={self.config.lr})")
        record = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": float(loss_sum) / max(self._loss_count * self.world_size, 1), "seconds": seconds}
        self.history.append(record)
        self._loop_seconds += seconds
        self.epoch += 1
        self.epoch_step = 0
        self._call("after_epoch")
        if self.done or self.step >= self.next_log_step:
            self._log()

    def _log(self) -> None:
        """Bookkeeping: validation accuracy into the last record, the next log step, then the after_log callbacks
        (which save the state, next_log_step included)."""
        start = time.perf_counter()
        if len(self.data.val):
            self.history[-1]["val_acc"] = self._accuracies(self.data.val)
        validation = time.perf_counter() - start
        self.next_log_step = self.step + self._log_gap(validation + self._callback_seconds)
        self._loop_seconds, self._loop_steps, self._first_in_stretch = 0.0, 0, False
        start = time.perf_counter()
        self._call("after_log")
        self._callback_seconds = time.perf_counter() - start

    def _log_gap(self, cost: float) -> int:
        """Steps until the next bookkeeping: log_every, or in auto mode enough steps that `cost` seconds of
        bookkeeping are LOG_SHARE of the time (at the mean step time since the last one); the same on every rank."""
        if self.config.log_every:
            return self.config.log_every
        seconds, steps = self._loop_seconds, self._loop_steps
        if self._first_in_stretch and steps > 1:  # the fit's first step pays for compiling and warming up
            seconds, steps = seconds - self.first_step_seconds, steps - 1
        gap = math.ceil(cost / max(seconds / max(steps, 1), 1e-9) * (1 - LOG_SHARE) / LOG_SHARE)
        return int(distributed.all_reduce(torch.tensor(max(gap, 1), device=self.device), op="max"))

    def _accuracies(self, split: Any) -> dict[str, float]:
        """Accuracy of every inference mode on a whole split (each rank scores its shard; the counts are summed)."""
        x, y = split_tensors(split, self.device)
        x, y = (distributed.shard(t, self.rank, self.world_size) for t in (x, y))
        results = distributed.reduce_results(evaluate(unwrap(self.model), self.tset, x, y, self.data.N,
                                                      self.method.modes, precision=self.config.precision))
        return {mode: r.accuracy for mode, r in results.items()}

    def _evaluate(self) -> None:
        """The official protocol's evaluation (every val_every steps): validation and test accuracy now, and the
        weights kept when the validation accuracy of the first mode beats every earlier one."""
        distributed.broadcast_buffers(unwrap(self.model))  # the batch-norm statistics of rank 0, as at epoch ends
        synchronize(self.device)
        start = time.perf_counter()
        record = {"step": self.step, "epoch": self.epoch + 1, "val_acc": self._accuracies(self.data.val),
                  "test_acc": self._accuracies(self.data.test)}
        key = self.method.modes[0]
        if self.selected is None or record["val_acc"][key] > self.selected["val_acc"][key]:
            self.selected = record
            self.selected_model = {k: v.detach().to("cpu", copy=True)
                                   for k, v in unwrap(self.model).state_dict().items()}
            self._call("after_selection")
        synchronize(self.device)
        record["seconds"] = time.perf_counter() - start
        self._eval_seconds += record["seconds"]
        self.evaluations.append(record)

    def selected_state(self) -> dict[str, Any]:
        """The selected step as a checkpoint `labkit.training.experiment.load_run` opens (best.pt); not for
        resuming."""
        return {"model": self.selected_model, **self._run_facts(), "history": [], "selected": self.selected}

    def _run_facts(self) -> dict[str, Any]:
        return run_facts(self.config.to_dict(), self.data.N, self.tset.M, self.data.classes, self.data.shape,
                         self.world_size)

    def _call(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event, lambda _: None)(self)

    # ---------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: tensors and plain data only (loadable with weights_only)."""
        return {
            "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
            "epoch_generator": self.epoch_generator_state, "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch, "step": self.step, "epoch_step": self.epoch_step, "history": self.history,
            "loss_sum": self._loss_sum.cpu(), "first_bad": self._first_bad.cpu(), "loss_count": self._loss_count,
            **self._run_facts(), "evaluations": self.evaluations, "selected": self.selected,
            "selected_model": self.selected_model, "next_log_step": self.next_log_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", 1) != self.world_size:  # the shards and the steps per epoch depend on it
            raise LabkitError(f"the checkpoint was trained on {state.get('world_size', 1)} process(es) but this run "
                              f"has {self.world_size}; resume with the same torchrun --nnodes × --nproc_per_node")
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch_generator_state = state["epoch_generator"]
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step, self.epoch_step = state["epoch"], state["step"], state["epoch_step"]
        self.history = list(state["history"])
        self._loss_sum = state["loss_sum"].to(self.device)
        self._first_bad = state["first_bad"].to(self.device)
        self._loss_count = state["loss_count"]
        self.evaluations = list(state.get("evaluations", []))  # a checkpoint from before val_every has none
        self.selected, self.selected_model = state.get("selected"), state.get("selected_model")
        self.next_log_step = state.get("next_log_step", self.step)  # an older checkpoint: at the next epoch end


class _DeferredSigint:
    """Within `with`, the first SIGINT only sets `requested`; a second raises KeyboardInterrupt at once.

    Python runs signal handlers in the main thread only; elsewhere (or where the handler cannot be installed)
    Ctrl-C keeps its usual behaviour."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _DeferredSigint:
        self.requested = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
