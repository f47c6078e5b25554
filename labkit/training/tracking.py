"""Experiment tracking as a training callback: TensorBoard through torch's own `SummaryWriter`.

    train_run(config, "runs/x", callbacks=[TensorBoard("runs/tb/x")])   # or: labkit train ... --tensorboard DIR

What it logs, with the optimiser step as the x axis:

- `train/loss`: the loss of every step;
- `val/acc_<mode>`: validation accuracy per inference mode (single, aggregated, distilled), at each bookkeeping
  (every epoch unless epochs are short, see `labkit.training.engine`);
- `train/lr`: the learning rate at each of those evaluations.

The learner keeps the loss on the device and never synchronises per step (see labkit.train); this callback keeps
that: it buffers each step's loss tensor on the device and copies the epoch's values to the host once, at the end
of each bookkeeping, then writes them. So turning TensorBoard on costs one extra device-to-host copy per
bookkeeping, not one per step. `SummaryWriter` needs the `tensorboard` package: `pip install "labkit[tensorboard]"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import LabkitError
from .engine import Callback

__all__ = ["TensorBoard"]


class TensorBoard(Callback):
    """Log the per-step loss, and per evaluation the accuracy of each inference mode and the learning rate, into
    the event files of `log_dir` (rank 0 only)."""

    order, main_only = 30, True

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self._losses: list[torch.Tensor] = []
        self._first_step = 0

    def before_fit(self, learner: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LabkitError('--tensorboard needs the tensorboard package: pip install "labkit[tensorboard]"') \
                from None
        self.writer = SummaryWriter(str(self.log_dir))
        self._losses, self._first_step = [], learner.step

    def after_step(self, learner: Any) -> None:
        if self.writer is not None:
            self._losses.append(learner.last_loss)  # stays on the device: no synchronisation here

    def after_log(self, learner: Any) -> None:
        if self.writer is None:
            return
        self._flush_losses()
        last = learner.history[-1]
        self.writer.add_scalar("train/lr", last["lr"], last["step"])
        for mode, value in last.get("val_acc", {}).items():
            self.writer.add_scalar(f"val/acc_{mode}", value, last["step"])
        self.writer.flush()
        self._first_step = learner.step

    def _flush_losses(self) -> None:
        if self._losses:
            values = torch.stack(self._losses).cpu().tolist()  # one copy to the host per bookkeeping
            for i, value in enumerate(values, self._first_step + 1):
                self.writer.add_scalar("train/loss", value, i)
        self._losses = []

    def after_fit(self, learner: Any) -> None:
        if self.writer is not None:
            self._flush_losses()
            self.writer.close()
            self.writer = None

    on_interrupt = after_fit
