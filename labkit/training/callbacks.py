"""The learner's callbacks: progress you can see, and the run folder kept in step with training.

| callback         | order | rank 0 only | what it does                                                        |
|------------------|------:|:-----------:|---------------------------------------------------------------------|
| Checkpointer     | 10    | yes         | checkpoint.pt at every bookkeeping and on Ctrl-C (a consistent state) |
| BestCheckpointer | 10    | yes         | best.pt whenever validation accuracy improves (with val_every)      |
| HistoryWriter    | 20    | yes         | history.json at every bookkeeping                                   |
| ProgressBar      | 30    | yes         | a tqdm bar over all steps, refreshed at most once a second          |
| EpochLine        | 30    | yes         | one `[labkit:epoch]` line per bookkeeping, for the notebook runner  |
| ShowcaseRecorder | 25    | yes         | every head on the showcase images, upright and turned, per epoch    |

Bookkeeping is the end of an epoch where the learner validates (`Learner.next_log_step`: every epoch unless
epochs are short next to it); the callbacks above act there (`after_log`). Files are written before anything
reports, so what a bar or a line shows is already on disk.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..core.device import eval_mode
from ..core.files import atomic_write
from ..core.log import epoch_line, lines_wanted
from ..data.splits import DataBundle, split_tensors
from ..sla.joint import joint_probabilities
from ..sla.transforms import rotation
from .engine import Callback, Learner, unwrap
from .run_folder import SHOWCASE, RunFolder

__all__ = ["ProgressBar", "Checkpointer", "BestCheckpointer", "HistoryWriter", "EpochLine", "epoch_callbacks",
           "progress_text", "ShowcaseRecorder", "showcase_indices", "WATCHED_PER_CLASS"]


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


WATCHED_PER_CLASS = 64  # showcase images recorded per class: every 6 and 9 of the digits' test split


def showcase_indices(data: DataBundle, per_class: int = WATCHED_PER_CLASS) -> list[int]:
    """The test images `ShowcaseRecorder` records, in its order: the first `per_class` of each showcase class
    (all the 6s, then all the 9s, on the digits), by test index; none without a showcase pair."""
    y = data.test.y.cpu()
    return [i for c in data.showcase or () for i in torch.nonzero(y == c).flatten()[:per_class].tolist()]


class ShowcaseRecorder(Callback):
    """After every epoch, what each head of the model says about the showcase images, upright and turned by 180°
    (square images only), with the epoch's loss and validation accuracies: in the run folder as showcase.npz, and
    handed to each of `listeners` (a live view) as a dict of the same names for that epoch.

    showcase.npz: index (K,) test indices (`showcase_indices`); turned (1,) 1 when the second half of the inputs is
    the first half turned by 180°; epoch (E,); loss (E,); "val MODE" (E,) accuracies; and per head, float16,
    "joint" (E, I, N, M) P(i, j | input), "class" (E, I, N), "transform" (E, I, M), with I = 2K inputs (K upright,
    then K turned) or K. One forward pass of I images per epoch in eval mode, the file written once at the end of
    the fit: the cost is measured against training in tests/test_watch.py. A resumed fit continues the epochs
    recorded before it stopped."""

    order, main_only = 25, True

    def __init__(self, folder: RunFolder | None = None, listeners: Sequence[Callable[[dict[str, Any]], None]] = ()
                 ) -> None:
        self.folder, self.listeners = folder, list(listeners)
        self.inputs: torch.Tensor | None = None
        self.saved: dict[str, list] = {}

    def before_fit(self, learner: Learner) -> None:
        data = learner.data
        self.index = showcase_indices(data)
        if not self.index:
            return
        x = split_tensors(data.test, learner.device)[0][self.index]  # (K, C, H, W)
        self.turned = x.shape[-1] == x.shape[-2]
        self.inputs = torch.cat([x, rotation(2)(x)]) if self.turned else x
        self.saved = self._earlier(learner.epoch)

    def _earlier(self, epoch: int) -> dict[str, list]:
        """The epochs recorded before a resumed fit (those up to `epoch`), to continue from."""
        old = self.folder.showcase() if self.folder is not None else {}
        if not old or list(old["index"]) != self.index:
            return {}
        keep = old["epoch"] <= epoch
        return {k: list(v[keep]) for k, v in old.items() if k not in ("index", "turned")}

    @torch.no_grad()
    def after_epoch(self, learner: Learner) -> None:
        if self.inputs is None:
            return
        model, M = unwrap(learner.model), learner.tset.M
        with eval_mode(model):
            out = model(self.inputs.contiguous(memory_format=torch.channels_last))
        val = learner.history[-1].get("val_acc", {})  # only at bookkeeping epochs (Learner.next_log_step)
        frame = {"epoch": learner.history[-1]["epoch"], "loss": learner.history[-1]["train_loss"],
                 **{f"val {m}": val.get(m, float("nan")) for m in learner.method.modes}}  # NaN: not measured
        for head, logits in out.items():
            probs = joint_probabilities(logits, M) if head == "joint" else logits.float().softmax(-1)
            frame[head] = probs.cpu().numpy()
        for listener in self.listeners:
            listener(frame)
        for k, v in frame.items():
            self.saved.setdefault(k, []).append(v.astype(np.float16) if isinstance(v, np.ndarray) else v)

    def after_fit(self, learner: Learner) -> None:
        """Write showcase.npz once, at the end of the fit (or on Ctrl-C): a file synced to disk per epoch would
        cost more than the forward pass itself."""
        if self.folder is not None and self.saved:
            self._write()

    on_interrupt = after_fit

    def _write(self) -> None:
        arrays = {k: np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v) for k, v in self.saved.items()}
        buffer = io.BytesIO()
        np.savez(buffer, index=np.asarray(self.index), turned=np.asarray([int(self.turned)]), **arrays)
        atomic_write(self.folder.file(SHOWCASE), lambda f: f.write(buffer.getvalue()))
