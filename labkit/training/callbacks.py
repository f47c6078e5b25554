"""The learner's callbacks: progress you can see, and the run folder kept in step with training.

| callback         | order | rank 0 only | what it does                                                        |
|------------------|------:|:-----------:|---------------------------------------------------------------------|
| Checkpointer     | 10    | yes         | checkpoint.pt at every bookkeeping and on Ctrl-C (a consistent state) |
| BestCheckpointer | 10    | yes         | best.pt whenever validation accuracy improves (with val_every)      |
| HistoryWriter    | 20    | yes         | history.json at every bookkeeping                                   |
| ProgressBar      | 30    | yes         | a tqdm bar over all steps, refreshed at most once a second          |
| EpochLine        | 30    | yes         | one `[labkit:epoch]` line per bookkeeping, for the notebook runner  |

Bookkeeping is the end of an epoch where the learner validates (`Learner.next_log_step`: every epoch unless
epochs are short next to it); the callbacks above act there (`after_log`). Files are written before anything
reports, so what a bar or a line shows is already on disk.
"""

from __future__ import annotations

from typing import Any

from ..core.log import epoch_line, lines_wanted
from .engine import Callback, Learner
from .run_folder import RunFolder

__all__ = ["ProgressBar", "Checkpointer", "BestCheckpointer", "HistoryWriter", "EpochLine", "epoch_callbacks",
           "progress_text"]


class Checkpointer(Callback):
    """Atomically save the learner's whole state at every bookkeeping and on Ctrl-C.

    On Ctrl-C it saves only a consistent state (stopped between steps) with finite losses, so an interrupt never
    replaces the last good checkpoint with a worse one."""

    order, main_only = 10, True

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def after_log(self, learner: Learner) -> None:
        self.folder.save_checkpoint(learner.state_dict())

    def on_interrupt(self, learner: Learner) -> None:
        if learner.interrupted_cleanly and learner.finite:
            self.after_log(learner)


class BestCheckpointer(Callback):
    """Atomically save the selected step's model (best.pt) whenever the validation accuracy improves."""

    order, main_only = 10, True

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def after_selection(self, learner: Learner) -> None:
        self.folder.save_checkpoint(learner.selected_state(), best=True)


class HistoryWriter(Callback):
    """Keep history.json in step with the learner's history (at every bookkeeping)."""

    order, main_only = 20, True

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def after_log(self, learner: Learner) -> None:
        self.folder.write_history(learner.history)


def progress_text(learner: Learner) -> str:
    """Where the run stands after an epoch: "epoch 3/30" for a run sized in epochs, "step 120/600" for one sized
    (or cut short) in steps."""
    if learner.sized_by_epochs:
        return f"epoch {learner.epoch}/{learner.config.epochs}"
    return f"step {learner.step}/{learner.total_steps}"


def _shown(record: dict[str, Any]) -> dict[str, float]:
    """An epoch's loss and validation accuracies, by name ("train_loss", "val single", ...)."""
    return {"loss": record["train_loss"], **{f"val {mode}": acc for mode, acc in record.get("val_acc", {}).items()}}


class ProgressBar(Callback):
    """A tqdm bar over all steps, refreshed at most once a second, so papermill logs stay short."""

    order, main_only = 30, True

    def before_fit(self, learner: Learner) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=learner.total_steps, initial=learner.step, mininterval=1.0, unit="step",
                        desc=f"{learner.config.method} {learner.config.transform}", leave=True)

    def after_step(self, learner: Learner) -> None:
        self.bar.update(1)

    def after_log(self, learner: Learner) -> None:
        self.bar.set_postfix(epoch=learner.history[-1]["epoch"],
                             **{k: f"{v:.3f}" for k, v in _shown(learner.history[-1]).items()})

    def after_fit(self, learner: Learner) -> None:
        self.bar.close()

    on_interrupt = after_fit


class EpochLine(Callback):
    """One `[labkit:epoch]` line per bookkeeping (every epoch unless epochs are short): the run, where it stands,
    the last epoch's loss, the validation accuracies and the training seconds since the last line."""

    order, main_only = 30, True

    def __init__(self) -> None:
        self._shown_epochs = 0  # history records already covered by a line

    def before_fit(self, learner: Learner) -> None:
        self._shown_epochs = len(learner.history)

    def after_log(self, learner: Learner) -> None:
        last, config = learner.history[-1], learner.config
        seconds = sum(r["seconds"] for r in learner.history[self._shown_epochs:])
        self._shown_epochs = len(learner.history)
        shown = " ".join(f"{k} {v:.3f}" if k.startswith("val") else f"{k} {v:.4f}" for k, v in _shown(last).items())
        epoch_line(f"{config.method} seed {config.seed}: {progress_text(learner)} {shown} ({seconds:.1f} s)")


def epoch_callbacks(progress: bool) -> tuple[Callback, ...]:
    """The progress a run shows: a tqdm bar when `progress`, else one line per bookkeeping under the notebook runner,
    else nothing."""
    if progress:
        return (ProgressBar(),)
    return (EpochLine(),) if lines_wanted() else ()
