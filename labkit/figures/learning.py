"""Watch it learn: what a joint-label model (SLA) and a multi-task model (MT) say about the showcase images, epoch
by epoch, live while they train and on a slider afterwards.

Every run records, after each epoch, its heads on the showcase classes' test images, upright and turned by 180°
(`labkit.training.callbacks.ShowcaseRecorder`, in the run folder as showcase.npz). Two views read it:

    view = LearningView(data, tset, epochs=30)          # in JupyterLab: the figure panel, updated once per epoch
    runs = {m: cached_run(config(m), callbacks=(view.recorder(m),)) for m in ("sla", "mt")}
    view.finish(runs)                                    # the panel at the last epoch, however the runs came
    learning_figure(runs, data, tset, inputs)           # the same figure with plotly's slider over the epochs

The live panel is a `labkit.figures.panel.FigurePanel`: a cell that trains sends it one update per epoch while it
runs. The slider figure (`viz.learning_view`) holds every epoch as a plotly frame, so an HTML copy moves through
the epochs with no kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from ..data.splits import DataBundle, split_tensors
from ..sla.transforms import TransformSet
from ..training.callbacks import ShowcaseRecorder, showcase_indices
from ..training.run_folder import RunFolder
from . import viz
from .explore import hand_transform, hand_truth
from .panel import FigurePanel

__all__ = ["Input", "default_inputs", "input_name", "learning_from_runs", "learning_figure", "LearningView"]

Input = tuple[int, bool]  # (test index, turned by 180°)
HALF_TURN = 2  # quarter turns


def default_inputs(data: DataBundle) -> list[Input]:
    """The first showcase image of the second class upright and the first of the first class turned by 180° (on
    the digits: a 9 upright, a 6 turned, which look alike)."""
    index, y = showcase_indices(data), data.test.y.cpu()
    if not index:
        return []
    first, second = data.showcase
    a = next(i for i in index if int(y[i]) == first)
    b = next((i for i in index if int(y[i]) == second), a)
    return [(b, False), (a, True)]


def input_name(data: DataBundle, item: Input) -> str:
    index, turned = item
    return f"#{index}: a {data.classes[int(data.test.y[index])]}{', turned by 180°' if turned else ', upright'}"


def _position(index: list[int], item: Input) -> int:
    """Where an input sits in a recording: (K upright, then K turned)."""
    if item[0] not in index:
        raise ValueError(f"test image #{item[0]} is not among the recorded showcase images")
    return index.index(item[0]) + (len(index) if item[1] else 0)


def _pixels_and_truths(data: DataBundle, tset: TransformSet, inputs: Sequence[Input]
                       ) -> tuple[np.ndarray, list[tuple[int, int | None]]]:
    x = split_tensors(data.test, torch.device("cpu"))[0]
    shown = [hand_transform(x[i], HALF_TURN if turned else 0) for i, turned in inputs]
    pixels = data.denormalize(torch.stack(shown)).numpy()
    truths = [(int(data.test.y[i]), hand_truth(tset, x[i], HALF_TURN if turned else 0)) for i, turned in inputs]
    return pixels, truths


def _empty(data: DataBundle, tset: TransformSet, inputs: Sequence[Input], epochs: int,
           names: tuple[str, str]) -> viz.Learning:
    N, M, P = data.N, tset.M, len(inputs)
    pixels, truths = _pixels_and_truths(data, tset, inputs)
    return viz.Learning(np.arange(1, epochs + 1), np.zeros((epochs, P, N, M)), np.zeros((epochs, P, N)),
                        np.zeros((epochs, P, M)), pixels, [input_name(data, i) for i in inputs], truths, names,
                        {n: {"loss": np.zeros(0), "val acc": np.zeros(0)} for n in names}, dict.fromkeys(names, 0))


def _fill(learning: viz.Learning, name: str, frames: Mapping[str, Any], positions: list[int], role: str,
          upto: int | None = None) -> viz.Learning:
    """The learning with run `name`'s recorded epochs (arrays over epochs: showcase.npz's names) in `role`:
    "joint" (its joint head) or "heads" (its class and transformation heads)."""
    E = len(frames["epoch"]) if upto is None else upto
    if role == "joint":
        learning.joint[:E] = np.asarray(frames["joint"][:E], dtype=np.float64)[:, positions]
    else:
        learning.class_head[:E] = np.asarray(frames["class"][:E], dtype=np.float64)[:, positions]
        learning.transform_head[:E] = np.asarray(frames["transform"][:E], dtype=np.float64)[:, positions]
    curves = {"loss": np.asarray(frames["loss"][:E], dtype=np.float64),
              "val acc": np.asarray(frames.get("val single", np.full(E, np.nan))[:E], dtype=np.float64)}
    return viz.Learning(learning.epochs, learning.joint, learning.class_head, learning.transform_head,
                        learning.images, learning.inputs, learning.truths, learning.names,
                        {**learning.curves, name: curves}, {**learning.done, name: E})


def learning_from_runs(runs: Mapping[str, RunFolder], data: DataBundle, tset: TransformSet,
                       inputs: Sequence[Input] | None = None) -> viz.Learning:
    """What the two runs (`runs`: the joint-head run first, then the multi-task one, by display name) recorded
    about `inputs` (default: `default_inputs`), over their epochs."""
    (joint_name, joint_run), (heads_name, heads_run) = list(runs.items())[:2]
    inputs = list(inputs or default_inputs(data))
    recorded = {name: RunFolder(run).showcase() for name, run in runs.items()}
    epochs = max(len(r.get("epoch", [])) for r in recorded.values())
    learning = _empty(data, tset, inputs, epochs, (joint_name, heads_name))
    for name, role in ((joint_name, "joint"), (heads_name, "heads")):
        frames = recorded[name]
        if frames:
            positions = [_position(list(frames["index"]), item) for item in inputs]
            learning = _fill(learning, name, frames, positions, role)
    return learning


def learning_figure(runs: Mapping[str, RunFolder], data: DataBundle, tset: TransformSet,
                    inputs: Sequence[Input] | None = None, title: str = "Watch it learn") -> go.Figure:
    """The slider figure over the runs' recorded epochs (see the module docstring)."""
    learning = learning_from_runs(runs, data, tset, inputs)
    return viz.learning_view(learning, list(data.classes), list(tset.names), slider=True, title=title)


class LearningView:
    """The live view: a figure panel that a training cell updates once per epoch through `recorder(name)`."""

    def __init__(self, data: DataBundle, tset: TransformSet, epochs: int, names: tuple[str, str] = ("sla", "mt"),
                 inputs: Sequence[Input] | None = None, title: str = "Watch it learn") -> None:
        self.data, self.tset, self.names, self.title = data, tset, names, title
        self.inputs = list(inputs or default_inputs(data))
        self.index = showcase_indices(data)
        self.positions = [_position(self.index, item) for item in self.inputs]
        self.learning = _empty(data, tset, self.inputs, epochs, names)
        self.frames: dict[str, dict[str, list]] = {n: {} for n in names}
        figure = viz.learning_view(self.learning, list(data.classes), list(tset.names), slider=False, title=title)
        self.panel = FigurePanel([figure.update_layout(meta={"learning": "live"})])
        self.updates = 0  # sent to the panel so far

    def recorder(self, name: str) -> ShowcaseRecorder:
        """The callback that records run `name` (one of `names`) and redraws the panel after each of its epochs."""
        return ShowcaseRecorder(listeners=[lambda frame: self._epoch(name, frame)])

    def _epoch(self, name: str, frame: Mapping[str, Any]) -> None:
        for key, value in frame.items():
            self.frames[name].setdefault(key, []).append(value)
        role = "joint" if name == self.names[0] else "heads"
        upto = len(self.frames[name]["epoch"])
        self.learning = _fill(self.learning, name, self.frames[name], self.positions, role, upto)
        self._draw(max(self.learning.done.values()) - 1)  # each model at its own last epoch

    def _draw(self, e: int) -> None:
        update = viz.learning_view_update(self.learning, min(e, len(self.learning.epochs) - 1), self.title)
        self.panel.updates = [update]
        self.updates += 1

    def finish(self, runs: Mapping[str, RunFolder]) -> None:
        """Show the runs' last epoch, whether they trained in this cell or came from the cache."""
        self.learning = learning_from_runs(runs, self.data, self.tset, self.inputs)
        self._draw(len(self.learning.epochs) - 1)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The panel's widget view, with a note for viewers that cannot run it (a saved copy)."""
        bundle = self.panel._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)  # anywidget gives (data, metadata)
        note = ("the live view needs a running kernel (JupyterLab); the figure further down shows the same epochs "
                "with a slider")
        data = {**data, "text/plain": f"Watch it learn: {note}", "text/html": f"<p><b>Watch it learn</b>: {note}.</p>"}
        return (data, meta) if meta is not None else data
