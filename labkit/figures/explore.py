"""What trained models say about one test image and its M views, and the explorer widget that shows it live.

The pure part: `explain(model, method, tset, x)` runs ONE forward pass over the M views of one image and returns
everything the figures need (SLA's N×M joint probabilities per view, its conditionals, the single, aggregated and
distilled predictions, MT's class head per view and its transformation head's guess); `explanation_figures`
turns explanations into `labkit.viz` figures. The shell: `Explorer` holds the controls, caches one explanation
per (image, hand transformation), builds the figures once and, per change, sends only their new numbers and
marks (`figure_updates`) to a `figure_panel.FigurePanel`, which redraws them in the page.

    models, data, tset = load_models({"mt": mt_run, "sla": sla_run}, device="cpu")   # run folders
    Explorer(models, data, tset)          # the last expression of a cell shows the widget
"""

from __future__ import annotations

import contextlib
import html
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from ..core.device import eval_mode
from ..core.errors import LabkitError
from ..data.splits import DataBundle, split_tensors
from ..sla.inference import ModeResult, evaluate
from ..sla.joint import conditional_probabilities, joint_probabilities, view_labels
from ..sla.methods import Method
from ..sla.modes import mode_logits
from ..sla.transforms import TransformSet, channel_order, rotation
from ..training.experiment import load_run
from . import viz
from .panel import FigurePanel
from .theme import TRUE_COLOR

__all__ = ["TrainedModel", "Explanation", "explain", "hand_transform", "HAND_ROTATIONS", "colour_orders",
           "Verdict", "hand_truth", "view_truths", "verdicts", "forced_invariance", "showcase_images", "verdict_text",
           "load_models", "test_tensors", "test_results", "transformation_accuracy", "image_sets", "choose_images",
           "first_of", "display_images", "figure_specs", "explanation_figures", "figure_updates", "figures_for",
           "updates_for", "turn_text", "predictions_said", "prediction_label", "status_line", "Explorer"]

HAND_ROTATIONS = {"0°": 0, "90°": 1, "180°": 2, "270°": 3}  # label -> counter-clockwise quarter turns


@dataclass(frozen=True)
class TrainedModel:
    """A trained model (eval mode, on its device) under the name the figures use, e.g. "sla"."""

    name: str
    model: nn.Module
    method: Method


@dataclass(frozen=True)
class Explanation:
    """What one model says about the M views of one image; every tensor is on the CPU, float32.

    modes: inference mode -> (N,) class probabilities (single, aggregated, distilled, as the method has them).
    joint: (M, N, M), joint[v, i, j] = P(i, j | x̃_v), the joint head on view v (SLA only).
    conditional: (M, N), conditional[j, i] = P(i | x̃_j, j) (SLA only).
    view_class: (M, N), the N-way class head on each view (methods without a joint head: baseline, da, mt).
    view_transform: (M, M), view_transform[v, j] = P(j | x̃_v), MT's transformation head.
    """

    modes: dict[str, Tensor]
    joint: Tensor | None = None
    conditional: Tensor | None = None
    view_class: Tensor | None = None
    view_transform: Tensor | None = None


def hand_transform(x: Tensor, quarter_turns: int = 0, order: Sequence[int] | None = None) -> Tensor:
    """Rotate a (C, H, W) image counter-clockwise by quarter_turns × 90°, then reorder its channels."""
    x = rotation(quarter_turns % 4)(x) if quarter_turns % 4 else x
    return channel_order(order)(x) if order is not None else x


def hand_truth(tset: TransformSet, x: Tensor, quarter_turns: int = 0, order: Sequence[int] | None = None
               ) -> int | None:
    """The transformation j of `tset` that the hand transformation of the (C, H, W) image x is (rot180 for a half
    turn), or None when the set has none that equals it (a quarter turn under rotation2)."""
    return view_truths(tset, x, quarter_turns, order)[0]


@dataclass(frozen=True)
class Verdict:
    """What one model can say about an input, scored against the truth it can know.

    readout: "joint argmax" (a joint head: class and transformation), "class and transformation heads" (MT) or
    "class head" (baseline, DA). turn is None for a model that cannot name a transformation; right compares the
    class, and the transformation when the model names one."""

    model: str
    readout: str
    label: int
    turn: int | None
    right: bool


def verdicts(explanations: Mapping[str, Explanation], true_class: int, true_turn: int | None) -> list[Verdict]:
    """Each model's verdict on the input whose M views the explanations hold (view 0 is the input as given):
    SLA's joint argmax (class i, transformation j) on it, MT's class head with its transformation head, a plain
    class head's class. The truth of a test image turned by hand is the pair (its class, the transformation the turn
    is); a model that names a transformation is right only when it names both."""
    said = []
    for name, e in explanations.items():
        if e.joint is not None:
            table = e.joint[0]  # (N, M): P(i, j | the input)
            i, j = divmod(int(table.argmax()), table.shape[1])
            said.append(Verdict(name, "joint argmax", i, j, i == true_class and j == true_turn))
        elif e.view_class is not None:
            i = int(e.view_class[0].argmax())
            if e.view_transform is not None:
                j = int(e.view_transform[0].argmax())
                said.append(Verdict(name, "class and transformation heads", i, j, i == true_class and j == true_turn))
            else:
                said.append(Verdict(name, "class head", i, None, i == true_class))
    return said


def verdict_text(v: Verdict, classes: Sequence[str], transform_names: Sequence[str]) -> str:
    """"sla (joint argmax): 6 turned rot180 ✓" (HTML-safe)."""
    what = classes[v.label] if v.turn is None else f"{classes[v.label]} at {transform_names[v.turn]}"
    return f"{html.escape(v.model)} ({v.readout}): <b>{html.escape(what)}</b> {'✓' if v.right else '✗'}"


def forced_invariance(method: Method) -> bool:
    """Whether the method's class head must give one class for every transformed view (da, mt)."""
    return method.expands and "joint" not in method.heads


def colour_orders() -> dict[str, tuple[int, int, int]]:
    """All 6 channel orders of an RGB image, by name: {"RGB": (0, 1, 2), "RBG": (0, 2, 1), ...}."""
    return {"".join("RGB"[c] for c in order): order for order in itertools.permutations(range(3))}


@torch.no_grad()
def explain(model: nn.Module, method: Method, tset: TransformSet, x: Tensor) -> Explanation:
    """One forward pass over the M views of the (C, H, W) image x (normalised, any device)."""
    device = next(model.parameters()).device
    views = tset.expand(x[None].to(device))  # (1, C, H, W) -> (M, C, H, W), view 0 the identity
    with eval_mode(model):  # batch norm on running statistics: each view's output is independent of the others
        out = {name: logits.float() for name, logits in model(views).items()}
    M = tset.M
    plain = {name: logits[:1] for name, logits in out.items()}  # view 0 is the image itself: (1, ·)
    modes = {mode: mode_logits(out if mode == "aggregated" else plain, M, mode)[0].softmax(-1)
             for mode in method.modes}
    parts: dict = {"modes": modes}
    if "joint" in out:  # (M, N*M): row v is view v's logits over every joint label (i, j)
        parts.update(joint=joint_probabilities(out["joint"], M), conditional=conditional_probabilities(out["joint"],
                                                                                                        M)[0])
    elif "class" in out:  # (M, N), the class head on every view
        parts["view_class"] = out["class"].softmax(-1)
    if "transform" in out:
        parts["view_transform"] = out["transform"].softmax(-1)
    return Explanation(**{k: _cpu(v) for k, v in parts.items()})


def _cpu(value):
    if isinstance(value, dict):
        return {k: v.detach().cpu() for k, v in value.items()}
    return value.detach().cpu()


def prediction_label(model_name: str, mode: str) -> str:
    return f"{model_name} · {mode}"


def load_models(run_dirs: Mapping[str, str | os.PathLike], device: str = "auto"
                ) -> tuple[list[TrainedModel], DataBundle, TransformSet]:
    """Trained run folders by display name -> (models, their shared data, their shared transformation set)."""
    models, data, first = [], None, None
    for name, path in run_dirs.items():
        run = load_run(path, device, data)
        config, data = run.config, run.data
        first = first or run
        if (config.dataset, config.transform) != (first.config.dataset, first.config.transform):
            raise LabkitError(f"the explorer compares runs on one dataset and transformation set, but {path} is "
                              f"{config.dataset}/{config.transform} and the first is {first.config.dataset}/"
                              f"{first.config.transform}")
        models.append(TrainedModel(name, run.model, run.method))
    if not models:
        raise LabkitError("load_models needs at least one run folder")
    return models, data, first.tset


def test_tensors(data: DataBundle) -> tuple[Tensor, Tensor]:
    """The whole test split as (n, C, H, W) images and (n,) labels (on the data's device; folder data on the CPU)."""
    return split_tensors(data.test, torch.device("cpu"))


Results = Mapping[str, Mapping[str, ModeResult]]  # model name -> inference mode -> its result on the test split


def test_results(models: Sequence[TrainedModel], tset: TransformSet, x: Tensor, y: Tensor,
                 N: int) -> dict[str, dict[str, ModeResult]]:
    """Every model's every inference mode on the test split: model name -> mode -> result."""
    return {m.name: evaluate(m.model, tset, x, y, N, m.method.modes) for m in models}


@torch.no_grad()
def transformation_accuracy(model: TrainedModel, tset: TransformSet, x: Tensor, batch_size: int = 256) -> float:
    """How often the model names the transformation of a view: SLA's joint head summed over classes,
    Σ_i P(i, j | x̃), or MT's transformation head, over all M views of every image in x (n, C, H, W)."""
    if not {"joint", "transform"} & set(model.method.heads):
        raise LabkitError(f"{model.name} ({model.method.name}) has no head that names the transformation")
    hits = 0
    with eval_mode(model.model):
        for start in range(0, len(x), batch_size):
            out = model.model(tset.expand(x[start:start + batch_size]))  # (b*M, ...), sample-major
            if "joint" in out:
                guess = joint_probabilities(out["joint"], tset.M).sum(dim=-2).argmax(-1)  # (b*M, N, M) -> (b*M,)
            else:
                guess = out["transform"].argmax(-1)
            hits += int((guess == view_labels(len(guess) // tset.M, tset.M, guess.device)).sum())
    return hits / (len(x) * tset.M)


def image_sets(y: Tensor, classes: Sequence[str], results: Results) -> dict[str, np.ndarray]:
    """Named lists of test indices to browse: all, each class, and the images each prediction gets wrong."""
    y = np.asarray(y.cpu())
    sets = {"all test images": np.arange(len(y))}
    for c, name in enumerate(classes):
        sets[f"class {name}"] = np.flatnonzero(y == c)
    for model, by_mode in results.items():
        for mode, r in by_mode.items():
            sets[f"misclassified by {prediction_label(model, mode)}"] = np.flatnonzero(np.asarray(r.predictions) != y)
    return sets


def showcase_images(models: Sequence[TrainedModel], y: Tensor, classes: Sequence[str], results: Results,
                    showcase: tuple[int, int] | None = None) -> dict[int, str]:
    """Upright test images where forced invariance fails: some class readout of a forced-invariance model (da,
    mt) gets them wrong while every readout of every joint-head model (sla, sla+sd) gets them right. The showcase
    pair's images first (6s and 9s), then by how many invariant readouts are wrong, then by test index; each with
    its reason ("a 9: mt · single, mt · aggregated say 6"). Empty without both kinds of model."""
    invariant = [m.name for m in models if forced_invariance(m.method)]
    joint_models = [m.name for m in models if "joint" in m.method.heads]
    if not invariant or not joint_models:
        return {}
    y = y.cpu()
    preds = {(n, mode): r.predictions.cpu() for n in [*invariant, *joint_models] for mode, r in results[n].items()}
    right = torch.stack([preds[n, mode] == y for n in joint_models for mode in results[n]]).all(0)  # (n_test,)
    found = []
    for i in torch.nonzero(right).flatten().tolist():
        wrong = [(n, mode) for n in invariant for mode in results[n] if preds[n, mode][i] != y[i]]
        if wrong:
            first = 0 if showcase and int(y[i]) in showcase else 1
            said = ", ".join(prediction_label(n, mode) for n, mode in wrong)
            calls = sorted({classes[int(preds[key][i])] for key in wrong})
            found.append(((first, -len(wrong), i), i, f"a {classes[int(y[i])]}: {said} say {' or '.join(calls)}"))
    return {i: reason for _, i, reason in sorted(found)}


CONFIDENT = 3  # choose_images: the reference's most and least confident images
FAILING = "where forced invariance fails"  # the live explorer's first image set (showcase_images)


def choose_images(y: Tensor, classes: Sequence[str], reference: ModeResult, showcase: tuple[int, int] | None,
                  limit: int, per_class: int = 10, first: Mapping[int, str] | None = None) -> dict[int, str]:
    """Test indices worth a close look, in order, each with the reason it was chosen: `first` (e.g.
    `showcase_images`: where forced invariance fails), the first `per_class` images of each showcase class ("a 6",
    "a 9"), the reference prediction's most confident right answers, every image it gets wrong (least confident
    first), then its least confident right answers; at most `limit` in all. The one choice behind the notebooks'
    examples and both explorers' image lists."""
    if limit < 1:
        raise LabkitError(f"choose at least one image, got a limit of {limit}")
    y = y.cpu()
    chosen: dict[int, str] = dict(first or {})
    for c in showcase or ():
        for i in torch.nonzero(y == c).flatten()[:per_class].tolist():
            chosen.setdefault(i, f"a {classes[c]}")
    confidence, pred = reference.probabilities.max(dim=1)
    order = confidence.argsort(descending=True).tolist()
    right = [i for i in order if pred[i] == y[i]]
    for i in right[:CONFIDENT]:
        chosen.setdefault(i, "most confident")
    for i in [i for i in order[::-1] if pred[i] != y[i]]:
        chosen.setdefault(i, "wrong")
    for i in right[::-1][:CONFIDENT]:
        chosen.setdefault(i, "least confident")
    return dict(list(chosen.items())[:limit])


def first_of(chosen: Mapping[int, str]) -> dict[str, int]:
    """The first image chosen for each reason: {"a 6": 12, "most confident": 40, "wrong": 7, ...}."""
    firsts: dict[str, int] = {}
    for index, reason in chosen.items():
        firsts.setdefault(reason, index)
    return firsts


def display_images(views: Tensor, data: DataBundle) -> np.ndarray:
    """(M, C, H, W) normalised -> (M, C, H, W) pixel values in [0, 1], for `viz.view_grid`."""
    return data.denormalize(views.cpu()).numpy()


def _views_title(M: int, caption: str) -> str:
    subtitle = f"<br><sup>{caption.removeprefix(' — ')}</sup>" if caption else ""  # a narrow figure: own line
    return f"The {M} views the models see{subtitle}"


def _predictions_title(caption: str) -> str:
    return f"Predicted class probabilities{caption}"


def _predictions(explanations: Mapping[str, Explanation]) -> dict[str, np.ndarray]:
    """"model · mode" -> (N,) class probabilities, every model's every inference mode."""
    return {prediction_label(n, mode): p.numpy() for n, e in explanations.items() for mode, p in e.modes.items()}


def view_truths(tset: TransformSet, x: Tensor, quarter_turns: int = 0, order: Sequence[int] | None = None
                ) -> list[int | None]:
    """For each view v of the (C, H, W) image x turned by hand: the transformation j of the set that view v is of
    the upright x (v itself without a hand turn; rot180 + v for a half turn), None where none is."""
    turned = hand_transform(x, quarter_turns, order)
    if turned.shape == x.shape and torch.equal(turned, x):
        return list(range(tset.M))
    truths = []
    for v in range(tset.M):
        view = tset.apply(turned[None], v)[0]
        truths.append(next((j for j in range(tset.M) if torch.equal(tset.apply(x[None], j)[0], view)), None))
    return truths


def figure_specs(explanations: Mapping[str, Explanation], classes: Sequence[str], tset: TransformSet,
                 true_label: int | None, images: np.ndarray, caption: str = "",
                 true_turns: Sequence[int | None] | None = None) -> dict[str, viz.FigureSpec]:
    """The explorer's figures for one image, as builder calls: "views", "predictions", then per model
    "joint NAME", "conditional NAME" (SLA) or "heads NAME" (baseline, da, mt). The one description behind the
    built figures (`explanation_figures`) and a click's redraw (`figure_updates`). `true_turns` (`view_truths`)
    for an image turned by hand: the outlines mark the truth, and the class readouts, which read every input as
    upright, are shown without a true class."""
    names = list(tset.names)
    views = [f"view {j}: {n}" for j, n in enumerate(names)]
    turned = true_turns is not None and list(true_turns) != list(range(tset.M))
    readouts = "Class readouts, each reading the input as upright" if turned else "Predicted class probabilities"
    line = f"<br>{caption.removeprefix(' — ')}" if caption else ""  # the image on a line of its own: narrow pages
    specs = {"views": viz.FigureSpec(viz.view_grid, images=images, names=views, panel_px=150, cols=6,
                                     title=_views_title(tset.M, caption)),
             "predictions": viz.FigureSpec(viz.prediction_bars, predictions=_predictions(explanations),
                                           classes=classes, true_label=None if turned else true_label,
                                           title=readouts + line)}
    for name, e in explanations.items():
        if e.joint is not None:
            specs[f"joint {name}"] = viz.FigureSpec(
                viz.joint_heatmap, joint=e.joint.numpy(), classes=classes, transform_names=names,
                true_label=true_label, title=f"{name}: joint probabilities P(i, j | x̃) on each view{line}",
                true_turns=true_turns)
            specs[f"conditional {name}"] = viz.FigureSpec(
                viz.conditional_bars, conditional=e.conditional.numpy(), classes=classes, view_names=names,
                true_label=None if turned else true_label,
                title=f"{name}: conditionals P(i | x̃<sub>j</sub>, j), each view's own column renormalised")
        if e.view_class is not None:
            transform = None if e.view_transform is None else e.view_transform.numpy()
            head = "class head on every view" + (", transformation head's guess" if transform is not None else "")
            specs[f"heads {name}"] = viz.FigureSpec(
                viz.multitask_heads, view_class=e.view_class.numpy(), view_transform=transform, classes=classes,
                view_names=names, true_label=true_label, title=f"{name}: {head}{line}", true_turns=true_turns)
    return specs


def explanation_figures(explanations: Mapping[str, Explanation], classes: Sequence[str], tset: TransformSet,
                        true_label: int | None, images: np.ndarray, caption: str = "",
                        true_turns: Sequence[int | None] | None = None) -> dict[str, go.Figure]:
    """Every explorer figure for one image (see `figure_specs`), built."""
    specs = figure_specs(explanations, classes, tset, true_label, images, caption, true_turns)
    return {key: spec.figure() for key, spec in specs.items()}


def figure_updates(explanations: Mapping[str, Explanation], classes: Sequence[str], tset: TransformSet,
                   true_label: int | None, images: np.ndarray, caption: str = "",
                   true_turns: Sequence[int | None] | None = None) -> dict[str, dict]:
    """What changes in `explanation_figures` from one image to the next, per figure (`viz.UPDATES`), without
    building a figure: merged into figures built once (`panel.merge`) they are this image's figures, so a click
    sends numbers and never rebuilds a figure through plotly's validating objects."""
    specs = figure_specs(explanations, classes, tset, true_label, images, caption, true_turns)
    return {key: spec.update() for key, spec in specs.items()}


def turn_text(quarter_turns: int = 0, order: Sequence[int] | None = None) -> str:
    """" (rotated by hand by 180°, channels BGR)" for a hand transformation; "" for none."""
    parts = [f"rotated by hand by {90 * quarter_turns}°"] if quarter_turns % 4 else []
    if order is not None and tuple(order) != (0, 1, 2):
        parts.append("channels " + "".join("RGB"[c] for c in order))
    return f" ({', '.join(parts)})" if parts else ""


def predictions_said(explanations: Mapping[str, Explanation], classes: Sequence[str], true: int,
                     marked: bool = True) -> str:
    """HTML: what each model says in each inference mode (each a class readout), marked ✓ or ✗ against the true
    class `true` when `marked` (an upright input), else as what it reads the input as, upright."""
    said = []
    for name, e in explanations.items():
        for mode, p in e.modes.items():
            guess = int(p.argmax())
            mark = (" ✓" if guess == true else " ✗") if marked else ""
            said.append(f"{prediction_label(name, mode)} <b>{html.escape(classes[guess])}</b>{mark}")
    return "; ".join(said)


def status_line(explanations: Mapping[str, Explanation], classes: Sequence[str], index: int, true: int,
                quarter_turns: int = 0, order: Sequence[int] | None = None, of: int | None = None,
                transform_names: Sequence[str] | None = None, true_turn: int | None = 0) -> str:
    """HTML: the image shown (its test index, of how many), its truth (class, and the transformation a hand turn
    is), each model's verdict marked ✓/✗ (`verdicts`), then the class readouts: marked against the class on an
    upright image, shown as "read as upright" on a turned one. The one status line of both explorers."""
    count = f" of {of}" if of is not None else ""
    names = list(transform_names) if transform_names is not None else []
    turned = bool(turn_text(quarter_turns, order))
    truth = html.escape(classes[true])
    if names:
        at = names[true_turn] if true_turn is not None else "a transformation outside the set"
        truth = f"({truth}, {html.escape(at)})"
    line = (f"Test image <b>#{index}</b>{count}, truth <b class='true' style='color:{TRUE_COLOR}'>{truth}</b>"
            f"{turn_text(quarter_turns, order)}.<br>")
    if names:
        judged = verdicts(explanations, true, true_turn)
        line += "Verdicts: " + "; ".join(verdict_text(v, classes, names) for v in judged) + ".<br>"
    readouts = predictions_said(explanations, classes, true, marked=not turned)
    return line + (f"Class readouts, each reading the input as upright: {readouts}" if turned
                   else f"Class readouts: {readouts}")


def figures_for(models: Sequence[TrainedModel], data: DataBundle, tset: TransformSet, x_test: Tensor,
                y_test: Tensor, index: int, quarter_turns: int = 0, order: Sequence[int] | None = None,
                explanations: Mapping[str, Explanation] | None = None) -> tuple[dict[str, Explanation],
                                                                                dict[str, go.Figure]]:
    """Every model's explanation of test image `index` (turned by hand), and every explorer figure of it: what
    the explorer shows for that choice, and what a notebook or a static page shows without a kernel."""
    explanations, true, caption, images, truths = _explained(models, data, tset, x_test, y_test, index,
                                                             quarter_turns, order, explanations)
    return explanations, explanation_figures(explanations, list(data.classes), tset, true, images, caption, truths)


def updates_for(models: Sequence[TrainedModel], data: DataBundle, tset: TransformSet, x_test: Tensor,
                y_test: Tensor, index: int, quarter_turns: int = 0, order: Sequence[int] | None = None,
                explanations: Mapping[str, Explanation] | None = None) -> tuple[dict[str, Explanation],
                                                                                dict[str, dict]]:
    """As `figures_for`, but each figure as its `figure_updates` update instead of a built figure."""
    explanations, true, caption, images, truths = _explained(models, data, tset, x_test, y_test, index,
                                                             quarter_turns, order, explanations)
    return explanations, figure_updates(explanations, list(data.classes), tset, true, images, caption, truths)


def _explained(models: Sequence[TrainedModel], data: DataBundle, tset: TransformSet, x_test: Tensor, y_test: Tensor,
               index: int, quarter_turns: int, order: Sequence[int] | None,
               explanations: Mapping[str, Explanation] | None
               ) -> tuple[dict[str, Explanation], int, str, np.ndarray, list[int | None]]:
    """What the figures of test image `index` turned by hand need: every model's explanation (computed unless
    given), the true label, the figures' caption, the M views' pixels (M, C, H, W) in [0, 1], and the truth of
    each view (`view_truths`)."""
    x = hand_transform(x_test[index], quarter_turns, order)
    if explanations is None:
        explanations = {m.name: explain(m.model, m.method, tset, x) for m in models}
    true = int(y_test[index])
    truths = view_truths(tset, x_test[index], quarter_turns, order)
    truth = (f"truth ({data.classes[true]}, {tset.names[truths[0]]})" if truths[0] is not None
             else f"class {data.classes[true]}")
    caption = f" — test image #{index}, {truth}{turn_text(quarter_turns, order)}"
    return dict(explanations), true, caption, display_images(tset.expand(x[None]), data), truths


class Explorer:
    """Pick a test image (by index, class, or among misclassified ones), turn it by hand, and see every model's
    view of it. The figures are built once (`explanation_figures`) into one `FigurePanel`; a control change sends
    only their new numbers and marks (`figure_updates`), which the page redraws on its own."""

    def __init__(self, models: Sequence[TrainedModel], data: DataBundle, tset: TransformSet,
                 results: Results | None = None) -> None:
        if not models:
            raise LabkitError("the explorer needs at least one trained model")
        self.models, self.data, self.tset = list(models), data, tset
        self.classes = list(data.classes)
        self.x, self.y = test_tensors(data)
        self.results = results if results is not None else test_results(self.models, tset, self.x, self.y, data.N)
        failing = showcase_images(self.models, self.y, self.classes, self.results, data.showcase)
        self.sets = {**({FAILING: np.array(list(failing), dtype=np.int64)} if failing else {}),
                     **image_sets(self.y, self.classes, self.results)}  # where forced invariance fails: first
        self._cache: dict[tuple, dict[str, Explanation]] = {}
        self._quiet = False  # True while one control moves another, so one change updates the figures once
        self._build_controls([self.classes[c] for c in data.showcase or ()])
        # meta names each live figure, so a browser test can find it among the notebook's static copies
        first = self.static_figures()
        self.keys = list(first)
        self.panel = FigurePanel([fig.update_layout(meta={"explorer": key}) for key, fig in first.items()])
        self.widget = self._layout()
        self._refresh_status()

    @classmethod
    def from_runs(cls, run_dirs: Mapping[str, str | Path], device: str = "auto", **kwargs) -> Explorer:
        """An explorer over trained run folders, keyed by the names the figures should use."""
        models, data, tset = load_models(run_dirs, device)
        return cls(models, data, tset, **kwargs)

    # ---- state ----------------------------------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The test index of the image shown."""
        return int(self.sets[self.image_set.value][self.position.value])

    @property
    def quarter_turns(self) -> int:
        return self.rotation.value if self.rotation is not None else 0

    @property
    def order(self) -> tuple[int, ...] | None:
        return self.colour.value if self.colour is not None else None

    def image(self) -> Tensor:
        """The (C, H, W) image shown, after the hand transformation (normalised, on the data's device)."""
        return hand_transform(self.x[self.index], self.quarter_turns, self.order)

    def explanations(self) -> dict[str, Explanation]:
        """Every model's explanation of the image shown; computed once per (image, hand transformation)."""
        key = (self.index, self.quarter_turns, self.order)
        if key not in self._cache:
            x = self.image()
            self._cache[key] = {m.name: explain(m.model, m.method, self.tset, x) for m in self.models}
        return self._cache[key]

    def static_figures(self) -> dict[str, go.Figure]:
        """The explorer's figures for the current choice as plain Figures (what an executed notebook shows)."""
        return figures_for(self.models, self.data, self.tset, self.x, self.y, self.index, self.quarter_turns,
                           self.order, self.explanations())[1]

    @property
    def true_label(self) -> int:
        return int(self.y[self.index])

    @property
    def figures(self) -> dict[str, go.Figure]:
        """What the page draws now, figure key -> plain Figure (built on each call: for tests and inspection)."""
        return {key: self.panel.figure(k) for k, key in enumerate(self.keys)}

    # ---- controls -------------------------------------------------------------------------------------------------

    def _build_controls(self, quick_classes: Sequence[str]) -> None:
        import ipywidgets as w

        C, H, W = self.data.shape
        self.image_set = w.Dropdown(options=[(f"{k} ({len(v)})", k) for k, v in self.sets.items() if len(v)],
                                    value=next(iter(self.sets)), description="images",
                                    layout=w.Layout(width="380px"))
        first = self.sets[self.image_set.value]
        self.position = w.IntSlider(0, 0, max(len(first) - 1, 0), description="image no.", continuous_update=False)
        self.test_index = w.BoundedIntText(0, min=0, max=len(self.x) - 1, description="test index",
                                           layout=w.Layout(width="180px"))
        self.quick = [w.Button(description=f"{c}s", tooltip=f"browse the test images of class {c}",
                               layout=w.Layout(width="60px")) for c in quick_classes if c in self.classes]
        self.rotation = (w.ToggleButtons(options=list(HAND_ROTATIONS.items()), description="rotate by hand",
                                         style=dict(button_width="52px", description_width="initial"))
                         if H == W else None)
        self.colour = (w.Dropdown(options=list(colour_orders().items()), description="channels")
                       if C == 3 else None)
        self.status = w.HTML()
        self.status.add_class("labkit-explorer-status")  # CSS hooks for the browser test
        self.image_set.observe(self._on_set, "value")
        self.position.observe(self._on_position, "value")
        self.test_index.observe(self._on_index, "value")
        for button in self.quick:
            button.on_click(lambda b: setattr(self.image_set, "value", f"class {b.description[:-1]}"))
        for control in (self.rotation, self.colour):
            if control is not None:
                control.observe(lambda _: self.update(), "value")

    def _layout(self):
        import ipywidgets as w

        title = w.HTML(f"<h3>Explorer: what {', '.join(m.name for m in self.models)} see in each view of one test "
                       f"image</h3>Choose an image, or turn it by hand; every figure follows.")
        hand = [c for c in (self.rotation, self.colour) if c is not None]
        rows = [title, w.HBox([self.image_set, self.position, self.test_index]),
                w.HBox([w.Label("jump to:"), *self.quick, *hand]), self.status]
        box = w.VBox([*rows, self.panel])
        box.add_class("labkit-explorer")
        return box

    def _on_set(self, change) -> None:
        with self._hold():
            self.position.max = max(len(self.sets[change["new"]]) - 1, 0)
            self.position.value = 0
        self._after_image_change()

    def _on_position(self, change) -> None:
        if not self._quiet:
            self._after_image_change()

    def _on_index(self, change) -> None:
        if self._quiet:
            return
        index = change["new"]
        with self._hold():
            if index not in self.sets[self.image_set.value]:
                self.image_set.value = "all test images"
                self.position.max = len(self.x) - 1
            self.position.value = int(np.flatnonzero(self.sets[self.image_set.value] == index)[0])
        self.update()

    def _after_image_change(self) -> None:
        with self._hold():
            self.test_index.value = self.index
        self.update()

    @contextlib.contextmanager
    def _hold(self):
        """Move controls without redrawing: the caller redraws once afterwards."""
        before, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = before

    # ---- drawing --------------------------------------------------------------------------------------------------

    def update(self) -> None:
        """Redraw every figure for the current controls: one message with their new numbers and marks."""
        if self._quiet:
            return
        updates = updates_for(self.models, self.data, self.tset, self.x, self.y, self.index, self.quarter_turns,
                              self.order, self.explanations())[1]
        self.panel.updates = [updates[key] for key in self.keys]
        self._refresh_status()

    def _refresh_status(self) -> None:
        self.status.value = status_line(self.explanations(), self.classes, self.index, self.true_label,
                                        self.quarter_turns, self.order, of=len(self.x),
                                        transform_names=self.tset.names,
                                        true_turn=hand_truth(self.tset, self.x[self.index], self.quarter_turns,
                                                             self.order))

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, with a note for viewers that cannot run it (an executed copy, a plain browser)."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        note = ("the interactive explorer needs a live kernel: open this notebook in JupyterLab (make lab) to use "
                "it; the static figures above show the same numbers")
        bundle["text/plain"] = f"Explorer over {', '.join(m.name for m in self.models)}: {note}"
        bundle["text/html"] = f"<p><b>Explorer over {', '.join(m.name for m in self.models)}</b>: {note}.</p>"
        return bundle

