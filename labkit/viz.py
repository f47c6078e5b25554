"""Pure figure builders: arrays or tensors in, a `plotly.graph_objects.Figure` out.

Nothing here trains, loads data or holds state; notebooks, the explorer and the static explorer call these
builders with numbers the library computed. Ordered by subject:

| subject         | builders                                                                   |
|-----------------|----------------------------------------------------------------------------|
| setup, palette  | setup_notebook, PALETTE, TRUE_COLOR, method_color                          |
| views           | view_grid, to_display_images                                               |
| joint tables    | joint_label_grid, joint_heatmap, conditional_bars                          |
| predictions     | prediction_bars, multitask_heads, confusion_heatmaps                       |
| marks           | joint_outlines, true_class_bands, true_label_notes, head_outlines, ...     |
| comparisons     | accuracy_bars, accuracy_vs_cost                                            |
| training curves | history_curves                                                             |

One palette throughout: Okabe & Ito's eight colour-blind-safe colours. Vermillion marks the true label and
nothing else; each method has its own colour (`labkit.methods`), probabilities run white to blue over [0, 1].
The marks (outlines, bands, notes, legend names that depend on the true label or a prediction) are helpers of
their own, so the live explorer can redraw a figure from its data and marks without rebuilding it.
`setup_notebook()` is the one helper with an effect: it picks the plotly renderer that keeps figures visible both
in JupyterLab and in the HTML copy of an executed notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import methods

__all__ = ["setup_notebook", "NOTEBOOK_RENDERER", "TITLE_BELOW_MODEBAR", "PALETTE", "TRUE_COLOR", "PROB_COLORSCALE",
           "method_color",
           "view_grid", "to_display_images",
           "joint_label_grid", "joint_heatmap", "conditional_bars",
           "prediction_bars", "multitask_heads", "confusion_heatmaps",
           "joint_outlines", "true_class_bands", "true_label_notes", "head_outlines", "prediction_series_name",
           "title_with_key", "PREDICTIONS_KEY",
           "accuracy_bars", "accuracy_vs_cost",
           "history_curves"]


# ============================================================================================ setup and palette
# `plotly_mimetype` lets JupyterLab draw the figure with its plotly extension; `notebook` adds a text/html copy with
# plotly.js embedded once per notebook, which is what nbconvert's HTML keeps, so the HTML needs no network.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"  # labkit.runner gives its kernels the same as PLOTLY_RENDERER

PALETTE = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
           "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
           "grey": "#7F7F7F"}  # Okabe & Ito's eight, and a neutral grey for the baseline
TRUE_COLOR = PALETTE["vermillion"]  # the true label, everywhere, and nothing else
PROB_COLORSCALE = "Blues"  # white = probability 0, dark blue = 1
# colours for series that are not methods (models · modes, inference modes): the palette without vermillion
_SERIES_COLORS = tuple(c for name, c in PALETTE.items() if name not in ("vermillion", "yellow")) + (PALETTE["yellow"],)
_MODE_COLORS = {"single": PALETTE["blue"], "aggregated": PALETTE["orange"], "distilled": PALETTE["bluish green"]}
_MODE_PATTERNS = {"single": "", "aggregated": "/", "distilled": "."}
_MODE_SYMBOLS = {"single": "circle", "aggregated": "square", "distilled": "diamond"}
_FONT = dict(size=12)


# plotly's mode bar (shown while the pointer is over a figure) is about 25 px tall at the top right, where a long
# title runs under it: titles start this far below the figure's top edge instead, whatever the figure's height.
TITLE_BELOW_MODEBAR = dict(yref="container", y=1.0, yanchor="top", pad=dict(t=32))


def setup_notebook(renderer: str = NOTEBOOK_RENDERER) -> str:
    """Make `fig.show()` and a figure as a cell's value render in JupyterLab and in exported HTML, with every
    title below the mode bar (plotly's default template plus TITLE_BELOW_MODEBAR)."""
    import plotly.io as pio

    pio.renderers.default = renderer
    pio.templates["labkit"] = go.layout.Template(layout=dict(title=TITLE_BELOW_MODEBAR))
    pio.templates.default = "plotly+labkit"
    return renderer


def method_color(name: str) -> str | None:
    """A registered method's colour ("sla" or "sla seed 0"); None for other names (plotly then picks one)."""
    first = name.split(" ")[0]
    return methods.METHODS[first].color if first in methods.METHODS else None


def _tint(colour: str, alpha: float) -> str:
    """A palette colour, see-through: "#56B4E9", 0.5 -> "rgba(86, 180, 233, 0.5)"."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _numpy(x: Any) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _panel_grid(count: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, count))
    return -(-count // cols), cols  # (rows, cols), rows rounded up


def _panel_cell(k: int, cols: int) -> tuple[int, int]:
    """1-based (row, col) of the k-th subplot, filled row by row."""
    return k // cols + 1, k % cols + 1


def _axis_suffix(axis: int) -> str:
    return "" if axis == 1 else str(axis)


def _cell_outline(row: int, col: int, axis: int, color: str = TRUE_COLOR) -> dict:
    """A rectangle around heatmap cell (row, col) of subplot `axis` (1-based), in data coordinates."""
    suffix = _axis_suffix(axis)
    return dict(type="rect", xref=f"x{suffix}", yref=f"y{suffix}", x0=col - 0.5, x1=col + 0.5, y0=row - 0.5,
                y1=row + 0.5, line=dict(color=color, width=3), fillcolor="rgba(0,0,0,0)")


# ======================================================================================================== views
def to_display_images(images: Any) -> np.ndarray:
    """(..., C, H, W) with C = 1 or 3 and values in [0, 1] -> (..., H, W, 3) uint8 for `go.Image`.

    Grey images are drawn as dark ink on white paper (1 = ink = black), the way digits are printed.
    """
    x = np.clip(_numpy(images), 0.0, 1.0)
    x = np.moveaxis(x, -3, -1)  # (..., C, H, W) -> (..., H, W, C)
    if x.shape[-1] == 1:
        x = np.repeat(1.0 - x, 3, axis=-1)
    return np.round(255 * x).astype(np.uint8)


def view_grid(images: Any, names: Sequence[str], row_names: Sequence[str] | None = None, title: str = "",
              panel_px: int = 110, cols: int | None = None) -> go.Figure:
    """A grid of images in [0, 1], C = 1 (grey) or 3 (RGB), one titled panel each.

    images: (R, V, C, H, W), rows named by `row_names` and columns by `names`; or (V, C, H, W), the V views of one
    image named by `names`, in one row, or wrapped into rows of `cols` panels.
    """
    pixels = to_display_images(images)
    if pixels.ndim == 4:  # (V, H, W, 3): panel k is view k
        R, V = _panel_grid(len(pixels), cols or len(pixels))
        titles, cells = list(names), [_panel_cell(k, V) for k in range(len(pixels))]
    else:  # (R, V, H, W, 3)
        R, V = pixels.shape[:2]
        rows = list(row_names) if row_names is not None else [""] * R
        titles = [f"{rows[r]} {names[v]}".strip() for r in range(R) for v in range(V)]
        cells = [(r + 1, v + 1) for r in range(R) for v in range(V)]
        pixels = pixels.reshape(R * V, *pixels.shape[2:])
    title_px = 26  # room above each row for its panel titles, so none overlaps an image
    top = 76 + 22 * title.count("<br>") if title else 30  # the title below the mode bar, then row 1's panel titles
    height = R * (panel_px + title_px) + top
    fig = make_subplots(R, V, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=title_px / max(height - top, 1) if R > 1 else 0.0)
    for img, name, cell in zip(pixels, titles, cells, strict=True):
        fig.add_trace(go.Image(z=img, name=name, hovertemplate="row %{y}, col %{x}<extra></extra>"), *cell)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=title, width=max(320, panel_px * V + 40), height=height + 10,
                      margin=dict(l=10, r=10, t=top, b=10), showlegend=False)
    return fig


# ================================================================================================= joint tables
def joint_label_grid(classes: Sequence[str], view_names: Sequence[str], highlight: int | None = None,
                     title: str = "Joint labels (i, j) -> i*M + j") -> go.Figure:
    """The N×M grid of joint labels, each cell showing its index i*M + j; `highlight` marks one class's row."""
    N, M = len(classes), len(view_names)
    index = np.arange(N * M).reshape(N, M)  # row i = class i, column j = transformation j
    shade = np.zeros((N, M)) if highlight is None else (np.arange(N)[:, None] == highlight) * np.ones((1, M))
    fig = go.Figure(go.Heatmap(z=shade, x=list(view_names), y=list(classes), text=index, texttemplate="%{text}",
                               colorscale=[[0, _tint(PALETTE["grey"], 0.1)], [1, _tint(PALETTE["sky blue"], 0.5)]],
                               showscale=False, xgap=2, ygap=2,
                               hovertemplate="class %{y}, view %{x}: joint label %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="class i", type="category")
    fig.update_xaxes(title="transformation j", side="top", type="category")
    fig.update_layout(title=title, width=max(480, 140 + 70 * M), height=140 + 30 * N, margin=dict(t=110))
    return fig


def joint_heatmap(joint: np.ndarray, classes: Sequence[str], transform_names: Sequence[str],
                  view_names: Sequence[str] | None = None, true_label: int | None = None,
                  title: str = "SLA's joint probabilities P(i, j | x̃) for each view", cols: int = 4) -> go.Figure:
    """Heatmaps of the N×M joint probabilities: rows classes i, columns transformations j, one panel per view.

    joint: (N, M) for one view or (V, N, M) for V views (V = M when every view is shown; panel v is view v).
    With `true_label`, panel v outlines the cell (true class, transformation v): the joint label SLA learned
    for that view of an upright image.
    """
    joint = np.asarray(joint, dtype=np.float64)
    joint = joint[None] if joint.ndim == 2 else joint  # (N, M) -> (1, N, M)
    V = len(joint)
    view_names = list(view_names) if view_names is not None else list(transform_names)[:V]
    rows, cols = _panel_grid(V, cols)
    fig = make_subplots(rows, cols, subplot_titles=[f"input: view {v} ({n})" for v, n in enumerate(view_names)],
                        horizontal_spacing=0.06, vertical_spacing=0.16 if rows > 1 else 0.1)
    hover = "class %{y}, transformation %{x}<br>P(i, j | x̃) = %{z:.3f}<extra></extra>"
    for v in range(V):
        fig.add_trace(go.Heatmap(z=joint[v], x=list(transform_names), y=list(classes), coloraxis="coloraxis",
                                 hovertemplate=hover, name=view_names[v]), *_panel_cell(v, cols))
    for shape in joint_outlines(true_label, V, joint.shape[2]):
        fig.add_shape(shape)
    fig.update_yaxes(autorange="reversed", title_text="class i", col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="transformation j", row=rows)
    fig.update_layout(coloraxis=dict(colorscale=PROB_COLORSCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="P(i, j | x̃)", side="right"), thickness=14)),
                      title=title_with_key(title, true_label, "outlined: true class at the view's own transformation"),
                      height=120 + 300 * rows, width=min(900, 230 * cols + 140), font=_FONT,
                      margin=dict(l=60, r=20, t=110, b=50))
    return fig


def joint_outlines(true_label: int | None, V: int, M: int) -> list[dict]:
    """`joint_heatmap`'s marks: in panel v (view v, v < M), the cell (true class, transformation v)."""
    return [] if true_label is None else [_cell_outline(true_label, v, v + 1) for v in range(min(V, M))]


def title_with_key(title: str, true_label: int | None, key: str) -> str:
    return title if true_label is None else f"{title}<br><sup>{key}</sup>"


def _category_band(position: int, axis: int, color: str = TRUE_COLOR) -> dict:
    """A shaded vertical band behind category `position` of subplot `axis`, full height."""
    suffix = _axis_suffix(axis)
    return dict(type="rect", xref=f"x{suffix}", yref=f"y{suffix} domain", x0=position - 0.5, x1=position + 0.5,
                y0=0, y1=1, fillcolor=color, opacity=0.18, line=dict(width=0), layer="below")


def true_class_bands(true_label: int | None, panels: int) -> list[dict]:
    """`conditional_bars`' and `prediction_bars`' marks: the true class shaded in each of `panels` subplots."""
    return [] if true_label is None else [_category_band(true_label, k + 1) for k in range(panels)]


def conditional_bars(conditional: np.ndarray, classes: Sequence[str], view_names: Sequence[str],
                     true_label: int | None = None,
                     title: str = "SLA's conditionals P(i | x̃_j, j): each view's own column, renormalised",
                     cols: int = 4) -> go.Figure:
    """One bar chart per view j of P(i | x̃_j, j) over the N classes; the true class is shaded.

    conditional: (M, N), row j for view j.
    """
    conditional = np.asarray(conditional, dtype=np.float64)
    M = len(conditional)
    rows, cols = _panel_grid(M, cols)
    fig = make_subplots(rows, cols, subplot_titles=[f"P(i | view {j}: {n})" for j, n in enumerate(view_names)],
                        horizontal_spacing=0.05, vertical_spacing=0.18 if rows > 1 else 0.1, shared_yaxes=True)
    for j in range(M):
        fig.add_trace(go.Bar(x=list(classes), y=conditional[j], marker_color=PALETTE["blue"], name=view_names[j],
                             hovertemplate="class %{x}: %{y:.3f}<extra></extra>"), *_panel_cell(j, cols))
    for shape in true_class_bands(true_label, M):
        fig.add_shape(shape)
    fig.update_yaxes(range=[0, 1])
    fig.update_yaxes(title_text="probability", col=1)
    fig.update_xaxes(title_text="class i", type="category", row=rows)
    fig.update_xaxes(type="category")
    fig.update_layout(title=title_with_key(title, true_label, "shaded: the true class"), showlegend=False,
                      height=100 + 240 * rows, width=min(900, 230 * cols + 80), font=_FONT,
                      margin=dict(l=60, r=20, t=100, b=50), bargap=0.15)
    return fig


# ================================================================================================== predictions
PREDICTIONS_KEY = "legend: model · inference mode → its predicted class"


def prediction_bars(predictions: Mapping[str, np.ndarray], classes: Sequence[str], true_label: int | None = None,
                    title: str = "Predicted class probabilities") -> go.Figure:
    """Grouped bars of P(i | x), one colour per model and inference mode; the true class is shaded.

    predictions: name (e.g. "sla · aggregated") -> (N,) probabilities.
    """
    fig = go.Figure()
    for k, (name, probs) in enumerate(predictions.items()):
        fig.add_trace(go.Bar(x=list(classes), y=np.asarray(probs, dtype=np.float64),
                             name=prediction_series_name(name, probs, classes),
                             marker_color=_SERIES_COLORS[k % len(_SERIES_COLORS)],
                             hovertemplate=f"{name}<br>class %{{x}}: %{{y:.3f}}<extra></extra>"))
    for shape in true_class_bands(true_label, 1):
        fig.add_shape(shape)
    for note in true_label_notes(true_label, classes):
        fig.add_annotation(note)
    fig.update_xaxes(title_text="class i", type="category")
    fig.update_yaxes(title_text="probability", range=[0, 1])
    fig.update_layout(title=title_with_key(title, true_label, PREDICTIONS_KEY),
                      barmode="group", height=380, width=900, font=_FONT, legend_title_text="prediction",
                      margin=dict(l=60, r=20, t=100, b=50))
    return fig


def prediction_series_name(name: str, probs: Any, classes: Sequence[str]) -> str:
    """A `prediction_bars` legend entry: "sla · aggregated → 9", the series and its predicted class."""
    return f"{name} → {classes[int(np.argmax(probs))]}"


def true_label_notes(true_label: int | None, classes: Sequence[str]) -> list[dict]:
    """`prediction_bars`' annotation over the shaded true class, "true label: 6" (none without a true label)."""
    if true_label is None:
        return []
    return [dict(x=true_label, y=1.0, yref="y domain", text=f"true label: {classes[true_label]}", showarrow=False,
                 yanchor="bottom", font=dict(color=TRUE_COLOR, size=13))]


def multitask_heads(view_class: np.ndarray, view_transform: np.ndarray | None, classes: Sequence[str],
                    view_names: Sequence[str], true_label: int | None = None,
                    title: str = "MT: its class head on every view, and its transformation head's guess") -> go.Figure:
    """Left: the N-way class head on each view, P(i | x̃_j) (rows views, columns classes), the true class
    outlined. Right (when there is a transformation head): its guess P(j' | x̃_j) (rows the view shown, columns
    the guessed transformation), the view's own transformation outlined.

    view_class: (M, N); view_transform: (M, M) or None.
    """
    view_class = np.asarray(view_class, dtype=np.float64)
    M = len(view_class)
    panels = ["class head P(i | x̃_j)"] + (["transformation head P(j' | x̃_j)"] if view_transform is not None else [])
    fig = make_subplots(1, len(panels), subplot_titles=panels, horizontal_spacing=0.18,
                        column_widths=[len(classes), M][:len(panels)])
    labels = [f"view {j}: {n}" for j, n in enumerate(view_names)]
    fig.add_trace(go.Heatmap(z=view_class, x=list(classes), y=labels, coloraxis="coloraxis", name="class head",
                             hovertemplate="%{y}<br>class %{x}: %{z:.3f}<extra></extra>"), 1, 1)
    if view_transform is not None:
        fig.add_trace(go.Heatmap(z=np.asarray(view_transform, dtype=np.float64), x=list(view_names), y=labels,
                                 coloraxis="coloraxis", name="transformation head",
                                 hovertemplate="%{y}<br>guess %{x}: %{z:.3f}<extra></extra>"), 1, 2)
    for shape in head_outlines(true_label, M, view_transform is not None):
        fig.add_shape(shape)
    if view_transform is not None:
        fig.update_xaxes(title_text="guessed transformation j'", type="category", row=1, col=2)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text="class i", type="category", row=1, col=1)
    key = "outlined: the true class (left) and each view's own transformation (right)"
    fig.update_layout(coloraxis=dict(colorscale=PROB_COLORSCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="probability", side="right"), thickness=14)),
                      title=title_with_key(title, true_label, key), height=160 + 34 * M + 120, width=900,
                      font=_FONT, margin=dict(l=110, r=20, t=110, b=60))
    return fig


def head_outlines(true_label: int | None, M: int, has_transform: bool) -> list[dict]:
    """`multitask_heads`' marks: the true class in each view's row (left), each view's own transformation
    (right, when there is a transformation head)."""
    marks = [] if true_label is None else [_cell_outline(j, true_label, 1) for j in range(M)]
    return marks + ([_cell_outline(j, j, 2) for j in range(M)] if has_transform else [])


def confusion_heatmaps(confusions: Mapping[str, Any], classes: Sequence[str],
                       title: str = "Confusion matrices (rows: true class, columns: predicted)",
                       pair: tuple[int, int] | None = None) -> go.Figure:
    """One heatmap per named (N, N) confusion matrix, side by side; `pair` (a, b) outlines cells (a, b), (b, a)."""
    names = list(confusions)
    fig = make_subplots(1, len(names), subplot_titles=names, horizontal_spacing=0.06)
    labels = [str(c) for c in classes]
    for k, name in enumerate(names):
        counts = _numpy(confusions[name])
        fig.add_trace(go.Heatmap(z=counts, x=labels, y=labels, text=counts.astype(int), texttemplate="%{text}",
                                 colorscale="Blues", zmin=0, showscale=False,
                                 hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"), 1, k + 1)
        for a, b in ([pair, pair[::-1]] if pair else []):
            fig.add_shape(_cell_outline(a, b, k + 1, color=PALETTE["black"]))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", title="predicted")
    fig.update_yaxes(title="true", col=1)
    fig.update_layout(title=title, width=min(1000, 60 + 310 * len(names)), height=400)
    return fig


# ================================================================================================== comparisons
def accuracy_bars(rows: Sequence[Mapping[str, Any]], value: str = "acc", scale: float = 100.0,
                  axis_title: str = "test accuracy (%)", title: str = "Accuracy by method and inference mode "
                  "(mean ± std over seeds)") -> go.Figure:
    """Grouped bars of `{value}_mean` ± `{value}_std` from `labkit.report.summarize` rows, one bar per mode."""
    fig = go.Figure()
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        fig.add_trace(go.Bar(
            name=mode, x=[r["method"] for r in mine], y=[scale * r[f"{value}_mean"] for r in mine],
            error_y=dict(type="data", array=[scale * r.get(f"{value}_std", 0.0) for r in mine], visible=True),
            marker_pattern_shape=_MODE_PATTERNS.get(mode, ""), marker_color=_MODE_COLORS.get(mode),
            text=[f"{scale * r[f'{value}_mean']:.1f}" for r in mine], textposition="outside"))
    fig.update_layout(barmode="group", title=title, yaxis_title=axis_title, xaxis_title="method",
                      legend_title="inference mode", width=760, height=430)
    if value == "acc":  # differences of a point or two matter: start the axis near the lowest bar, and say so
        lows = [scale * (r["acc_mean"] - r.get("acc_std", 0.0)) for r in rows]
        low = max(0.0, min(lows) - max(2.0, 0.3 * (scale - min(lows))))
        fig.update_yaxes(range=[low, scale * 1.005], title=f"{axis_title}, axis from {low:.0f}")
    return fig


def accuracy_vs_cost(rows: Sequence[Mapping[str, Any]], cost: str = "forwards_per_image",
                     axis_title: str = "backbone forward passes per test image",
                     title: str = "Accuracy against inference cost") -> go.Figure:
    """One marker per (method, mode) row: x its inference cost, y its accuracy (%), error bars over seeds.

    Colour is the method, the symbol the mode; methods are nudged apart along x so equal points stay visible.
    """
    fig = go.Figure()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    span = max(r[cost] for r in rows) - min(r[cost] for r in rows) or 1.0
    for k, method in enumerate(methods):
        nudge = 0.02 * span * (k - (len(methods) - 1) / 2)
        for r in (r for r in rows if r["method"] == method):
            fig.add_trace(go.Scatter(
                name=f"{method} {r['mode']}", legendgroup=method, x=[r[cost] + nudge], y=[100 * r["acc_mean"]],
                mode="markers", error_y=dict(type="data", array=[100 * r.get("acc_std", 0.0)], visible=True),
                marker=dict(size=12, color=method_color(method), symbol=_MODE_SYMBOLS.get(r["mode"], "x")),
                hovertemplate=f"{method} {r['mode']}: %{{y:.2f}}%, cost {r[cost]}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axis_title, yaxis_title="test accuracy (%)", width=760, height=430,
                      legend_title="method, inference mode")
    return fig


# ============================================================================================== training curves
def history_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str] = ("train_loss",),
                   title: str = "Training history") -> go.Figure:
    """One panel per history key (e.g. train_loss, val_acc_single), one line per named run, x = epoch."""
    keys = list(keys)
    fig = make_subplots(1, len(keys), subplot_titles=keys, horizontal_spacing=0.1)
    for name, history in histories.items():
        color = method_color(name)
        for k, key in enumerate(keys):
            points = [(h["epoch"], h[key]) for h in history if key in h]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=k == 0,
                                     line=dict(color=color)), 1, k + 1)
    fig.update_xaxes(title="epoch")
    fig.update_layout(title=title, width=min(980, max(480, 330 * len(keys))), height=400)
    return fig
