"""Pure figure builders: arrays or tensors in, a `plotly.graph_objects.Figure` out.

Nothing here trains, loads data or holds state; notebooks, the explorer and the static explorer call these
builders with numbers the library computed. Ordered by subject:

| subject         | builders                                                                   |
|-----------------|----------------------------------------------------------------------------|
| colours         | method_color (the palette itself: labkit.figures.theme)                    |
| views           | view_grid, to_display_images                                               |
| joint tables    | joint_label_grid, joint_heatmap, conditional_bars                          |
| predictions     | prediction_bars, multitask_heads, confusion_heatmaps                       |
| marks           | joint_outlines, true_class_bands, true_label_notes, head_outlines, ...     |
| comparisons     | accuracy_bars, difference_plot, accuracy_vs_cost                           |
| scarce, skewed  | accuracy_by_labels, accuracy_by_class_size                                 |
| training curves | history_curves                                                             |
| watch it learn  | learning_view, learning_view_update (epochs on a plotly slider, or live)   |

The figures the explorers redraw (view_grid, joint_heatmap, conditional_bars, prediction_bars, multitask_heads)
are each two halves: a frame (axes, panels, colours: what stays when the image changes) and an *update*
(`UPDATES[builder]`, same arguments as the builder: the numbers and marks that change, as
`{"data": [per trace], "layout": {...}}`). The builder draws the frame and applies its own update, so a figure
built once and merged with the update for another image (`labkit.figures.panel.merge`) is exactly the figure the
builder draws for that image: the explorers' redraws cannot drift from the figures. `FigureSpec` holds one
builder call, for both halves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..sla import methods, modes
from .theme import FONT, PALETTE, PROB_COLORSCALE, SERIES_COLORS, TRUE_COLOR

__all__ = ["method_color", "FigureSpec", "apply_update",
           "view_grid", "to_display_images",
           "joint_label_grid", "joint_heatmap", "conditional_bars",
           "prediction_bars", "multitask_heads", "confusion_heatmaps", "UPDATES", "view_grid_update",
           "joint_heatmap_update", "conditional_bars_update", "prediction_bars_update", "multitask_heads_update",
           "joint_outlines", "true_class_bands", "true_label_notes", "head_outlines", "prediction_series_name",
           "title_with_key", "PREDICTIONS_KEY",
           "accuracy_bars", "difference_plot", "accuracy_vs_cost", "MAX_WIDTH",
           "accuracy_by_labels", "accuracy_by_class_size",
           "history_curves", "history_value", "Learning", "learning_view", "learning_view_update"]


_FONT = FONT
# The widest a figure with a fixed width may be: a printed A4 page is 794 px wide at 96 dpi, less its margins.
# Wider figures leave out `width`: plotly then fills their container (the page, the output area, the panel).
MAX_WIDTH = 700


def method_color(name: str) -> str | None:
    """A registered method's colour; None for other names (plotly then picks one)."""
    return methods.METHODS[name].color if name in methods.METHODS else None


def _mode(name: str) -> modes.Mode | None:
    """A registered inference mode (its colour, bar pattern and marker symbol), read when a figure is drawn."""
    return modes.MODES.get(name)


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


def apply_update(fig: go.Figure, update: Mapping) -> go.Figure:
    """Set an update's trace attributes and layout parts on `fig`, each replacing what was there: the rule that
    `labkit.figures.panel.merge` applies to a figure's JSON. Returns `fig`."""
    data = list(update.get("data", []))
    if len(data) != len(fig.data):
        raise ValueError(f"an update for {len(data)} traces cannot apply to a figure of {len(fig.data)}")
    for trace, attributes in zip(fig.data, data, strict=True):
        trace.update(attributes, overwrite=True)
    fig.update_layout(update.get("layout", {}), overwrite=True)
    return fig


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
    shape = np.shape(images)
    if len(shape) == 4:  # (V, C, H, W): panel k is view k
        R, V = _panel_grid(shape[0], cols or shape[0])
        titles, cells = list(names), [_panel_cell(k, V) for k in range(shape[0])]
    else:  # (R, V, C, H, W)
        R, V = shape[:2]
        rows = list(row_names) if row_names is not None else [""] * R
        titles = [f"{rows[r]} {names[v]}".strip() for r in range(R) for v in range(V)]
        cells = [(r + 1, v + 1) for r in range(R) for v in range(V)]
    panel_px = min(panel_px, (MAX_WIDTH - 40) // V)  # the figure fits a printed page's width
    title_px = 26  # room above each row for its panel titles, so none overlaps an image
    top = 76 + 22 * title.count("<br>") if title else 30  # the title below the mode bar, then row 1's panel titles
    height = R * (panel_px + title_px) + top
    fig = make_subplots(R, V, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=title_px / max(height - top, 1) if R > 1 else 0.0)
    for name, cell in zip(titles, cells, strict=True):
        fig.add_trace(go.Image(name=name, hovertemplate="row %{y}, col %{x}<extra></extra>"), *cell)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(width=max(320, panel_px * V + 40), height=height + 10, margin=dict(l=10, r=10, t=top, b=10),
                      showlegend=False)
    return apply_update(fig, view_grid_update(images, names, row_names, title, panel_px, cols))


def view_grid_update(images: Any, names: Sequence[str], row_names: Sequence[str] | None = None, title: str = "",
                     panel_px: int = 110, cols: int | None = None) -> dict:
    """`view_grid`'s update: the pixels of every panel and the title."""
    pixels = to_display_images(images)
    pixels = pixels.reshape(-1, *pixels.shape[-3:])  # (R*V or V, H, W, 3), panel k in order
    return {"data": [{"z": z} for z in pixels], "layout": {"title": {"text": title}}}


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
    fig.update_layout(title=title, width=min(MAX_WIDTH, max(480, 140 + 70 * M)), height=140 + 30 * N,
                      margin=dict(t=110))
    return fig


def joint_heatmap(joint: np.ndarray, classes: Sequence[str], transform_names: Sequence[str],
                  view_names: Sequence[str] | None = None, true_label: int | None = None,
                  title: str = "SLA's joint probabilities P(i, j | x̃) for each view", cols: int = 4,
                  true_turns: Sequence[int | None] | None = None) -> go.Figure:
    """Heatmaps of the N×M joint probabilities: rows classes i, columns transformations j, one panel per view.

    joint: (N, M) for one view or (V, N, M) for V views (V = M when every view is shown; panel v is view v).
    With `true_label`, panel v outlines the cell (true class, transformation v): the joint label SLA learned
    for that view of an upright image; `true_turns[v]` replaces v for an image turned by hand (view v of a 6
    turned by 180° is the 6 at rot180 + v; None: no transformation of the set).
    """
    V = len(_views(joint))
    view_names = list(view_names) if view_names is not None else list(transform_names)[:V]
    rows, cols = _panel_grid(V, cols)
    fig = make_subplots(rows, cols, subplot_titles=[f"input: view {v} ({n})" for v, n in enumerate(view_names)],
                        horizontal_spacing=0.06, vertical_spacing=0.16 if rows > 1 else 0.1)
    hover = "class %{y}, transformation %{x}<br>P(i, j | x̃) = %{z:.3f}<extra></extra>"
    for v in range(V):
        fig.add_trace(go.Heatmap(x=list(transform_names), y=list(classes), coloraxis="coloraxis",
                                 hovertemplate=hover, name=view_names[v]), *_panel_cell(v, cols))
    fig.update_yaxes(autorange="reversed", title_text="class i", col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="transformation j", row=rows)
    fig.update_layout(coloraxis=dict(colorscale=PROB_COLORSCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="P(i, j | x̃)", side="right"), thickness=14)),
                      height=140 + 300 * rows, font=_FONT,
                      margin=dict(l=60, r=20, t=130, b=50))
    return apply_update(fig, joint_heatmap_update(joint, classes, transform_names, view_names, true_label, title,
                                                  cols, true_turns))


def joint_heatmap_update(joint: np.ndarray, classes: Sequence[str], transform_names: Sequence[str],
                         view_names: Sequence[str] | None = None, true_label: int | None = None,
                         title: str = "SLA's joint probabilities P(i, j | x̃) for each view", cols: int = 4,
                         true_turns: Sequence[int | None] | None = None) -> dict:
    """`joint_heatmap`'s update: each view's table, the true-label outlines and the title."""
    joint = _views(joint)
    key = ("outlined: the truth, true class at the view's own transformation" if true_turns is None else
           "outlined: the truth, true class at the transformation each view is of the upright image")
    return {"data": [{"z": z} for z in joint],
            "layout": {"shapes": joint_outlines(true_label, len(joint), joint.shape[2], true_turns),
                       "title": {"text": title_with_key(title, true_label, key)}}}


def _views(joint: Any) -> np.ndarray:
    """(N, M) or (V, N, M) -> (V, N, M) float64."""
    joint = np.asarray(joint, dtype=np.float64)
    return joint[None] if joint.ndim == 2 else joint


def joint_outlines(true_label: int | None, V: int, M: int, true_turns: Sequence[int | None] | None = None
                   ) -> list[dict]:
    """`joint_heatmap`'s marks: in panel v (view v, v < M), the cell (true class, transformation true_turns[v],
    by default v); none where true_turns[v] is None."""
    turns = list(true_turns) if true_turns is not None else list(range(M))
    return [] if true_label is None else [_cell_outline(true_label, turns[v], v + 1) for v in range(min(V, M))
                                          if turns[v] is not None]


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


CONDITIONALS_TITLE = "SLA's conditionals P(i | x̃<sub>j</sub>, j): each view's own column, renormalised"


def conditional_bars(conditional: np.ndarray, classes: Sequence[str], view_names: Sequence[str],
                     true_label: int | None = None,
                     title: str = CONDITIONALS_TITLE,
                     cols: int = 4) -> go.Figure:
    """One bar chart per view j of P(i | x̃_j, j) over the N classes; the true class is shaded.

    conditional: (M, N), row j for view j.
    """
    M = len(conditional)
    rows, cols = _panel_grid(M, cols)
    fig = make_subplots(rows, cols, subplot_titles=[f"P(i | view {j}: {n})" for j, n in enumerate(view_names)],
                        horizontal_spacing=0.05, vertical_spacing=0.18 if rows > 1 else 0.1, shared_yaxes=True)
    for j in range(M):
        fig.add_trace(go.Bar(x=list(classes), marker_color=PALETTE["blue"], name=view_names[j],
                             hovertemplate="class %{x}: %{y:.3f}<extra></extra>"), *_panel_cell(j, cols))
    fig.update_yaxes(range=[0, 1])
    fig.update_yaxes(title_text="probability", col=1)
    fig.update_xaxes(title_text="class i", type="category", row=rows)
    fig.update_xaxes(type="category")
    fig.update_layout(showlegend=False, height=100 + 240 * rows, font=_FONT,
                      margin=dict(l=60, r=20, t=100, b=50), bargap=0.15)
    return apply_update(fig, conditional_bars_update(conditional, classes, view_names, true_label, title, cols))


def conditional_bars_update(conditional: np.ndarray, classes: Sequence[str], view_names: Sequence[str],
                            true_label: int | None = None,
                            title: str = CONDITIONALS_TITLE,
                            cols: int = 4) -> dict:
    """`conditional_bars`' update: each view's bars, the true class's bands and the title."""
    conditional = np.asarray(conditional, dtype=np.float64)
    return {"data": [{"y": c} for c in conditional],
            "layout": {"shapes": true_class_bands(true_label, len(conditional)),
                       "title": {"text": title_with_key(title, true_label, "shaded: the true class")}}}


# ================================================================================================== predictions
PREDICTIONS_KEY = "legend: model · inference mode → its predicted class"


def prediction_bars(predictions: Mapping[str, np.ndarray], classes: Sequence[str], true_label: int | None = None,
                    title: str = "Predicted class probabilities") -> go.Figure:
    """Grouped bars of P(i | x), one colour per model and inference mode; the true class is shaded.

    predictions: name (e.g. "sla · aggregated") -> (N,) probabilities.
    """
    fig = go.Figure()
    for k, name in enumerate(predictions):
        fig.add_trace(go.Bar(x=list(classes), marker_color=SERIES_COLORS[k % len(SERIES_COLORS)],
                             hovertemplate=f"{name}<br>class %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title_text="class i", type="category")
    fig.update_yaxes(title_text="probability", range=[0, 1])
    fig.update_layout(barmode="group", height=400, font=_FONT, legend_title_text="prediction",
                      margin=dict(l=60, r=20, t=125, b=50))
    return apply_update(fig, prediction_bars_update(predictions, classes, true_label, title))


def prediction_bars_update(predictions: Mapping[str, np.ndarray], classes: Sequence[str],
                           true_label: int | None = None, title: str = "Predicted class probabilities") -> dict:
    """`prediction_bars`' update: each series' bars and legend name, the true class's band and note, the title."""
    return {"data": [{"y": np.asarray(p, dtype=np.float64), "name": prediction_series_name(name, p, classes)}
                     for name, p in predictions.items()],
            "layout": {"title": {"text": title_with_key(title, true_label, PREDICTIONS_KEY)},
                       "shapes": true_class_bands(true_label, 1),
                       "annotations": true_label_notes(true_label, classes)}}


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
                    title: str = "MT: its class head on every view, and its transformation head's guess",
                    true_turns: Sequence[int | None] | None = None) -> go.Figure:
    """Left: the N-way class head on each view, P(i | x̃_j) (rows views, columns classes), the true class
    outlined. Right (when there is a transformation head): its guess P(j' | x̃_j) (rows the view shown, columns
    the guessed transformation), the view's own transformation outlined.

    view_class: (M, N); view_transform: (M, M) or None.
    """
    M = len(view_class)
    panels = ["class head P(i | x̃<sub>j</sub>)"] + (["transformation head P(j' | x̃<sub>j</sub>)"]
                                                  if view_transform is not None else [])
    fig = make_subplots(1, len(panels), subplot_titles=panels, horizontal_spacing=0.18,
                        column_widths=[len(classes), M][:len(panels)])
    labels = [f"view {j}: {n}" for j, n in enumerate(view_names)]
    fig.add_trace(go.Heatmap(x=list(classes), y=labels, coloraxis="coloraxis", name="class head",
                             hovertemplate="%{y}<br>class %{x}: %{z:.3f}<extra></extra>"), 1, 1)
    if view_transform is not None:
        fig.add_trace(go.Heatmap(x=list(view_names), y=labels, coloraxis="coloraxis", name="transformation head",
                                 hovertemplate="%{y}<br>guess %{x}: %{z:.3f}<extra></extra>"), 1, 2)
        fig.update_xaxes(title_text="guessed transformation j'", type="category", row=1, col=2)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text="class i", type="category", row=1, col=1)
    fig.update_layout(coloraxis=dict(colorscale=PROB_COLORSCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="probability", side="right"), thickness=14)),
                      height=180 + 34 * M + 120, font=_FONT, margin=dict(l=110, r=20, t=130, b=60))
    return apply_update(fig, multitask_heads_update(view_class, view_transform, classes, view_names, true_label,
                                                    title, true_turns))


def multitask_heads_update(view_class: np.ndarray, view_transform: np.ndarray | None, classes: Sequence[str],
                           view_names: Sequence[str], true_label: int | None = None,
                           title: str = "MT: its class head on every view, and its transformation head's guess",
                           true_turns: Sequence[int | None] | None = None) -> dict:
    """`multitask_heads`' update: both heads' tables, their outlines and the title."""
    heads = [view_class] + ([view_transform] if view_transform is not None else [])
    key = ("outlined: the true class" + (" (left) and the transformation each view is (right)"
                                         if view_transform is not None else ""))
    return {"data": [{"z": np.asarray(z, dtype=np.float64)} for z in heads],
            "layout": {"shapes": head_outlines(true_label, len(view_class), view_transform is not None, true_turns),
                       "title": {"text": title_with_key(title, true_label, key)}}}


def head_outlines(true_label: int | None, M: int, has_transform: bool,
                  true_turns: Sequence[int | None] | None = None) -> list[dict]:
    """`multitask_heads`' marks: the true class in each view's row (left), the transformation each view is
    (right, when there is a transformation head: view j's own, or true_turns[j] for an image turned by hand)."""
    turns = list(true_turns) if true_turns is not None else list(range(M))
    marks = [] if true_label is None else [_cell_outline(j, true_label, 1) for j in range(M)]
    return marks + ([_cell_outline(j, turns[j], 2) for j in range(M) if turns[j] is not None]
                    if has_transform else [])


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
    fig.update_layout(title=title, height=400)
    return fig


# ================================================================================================== comparisons
def accuracy_bars(rows: Sequence[Mapping[str, Any]], value: str = "acc", scale: float = 100.0,
                  axis_title: str = "test accuracy (%)", title: str = "Accuracy by method and inference mode "
                  "(mean ± std over seeds)", x_title: str = "method") -> go.Figure:
    """Grouped bars of `{value}_mean` ± `{value}_std` from `labkit.report.summarize` rows, one bar per mode. Each
    bar's value is written inside it, at its base, where no error bar crosses it."""
    fig = go.Figure()
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine, look = [r for r in rows if r["mode"] == mode], _mode(mode)
        fig.add_trace(go.Bar(
            name=mode, x=[r["method"] for r in mine], y=[scale * r[f"{value}_mean"] for r in mine],
            error_y=dict(type="data", array=[scale * r.get(f"{value}_std", 0.0) for r in mine], visible=True),
            marker_pattern_shape=look.pattern if look else "", marker_color=look.color if look else None,
            text=[f"{scale * r[f'{value}_mean']:.1f}" for r in mine], textposition="inside",
            insidetextanchor="start", textangle=-90, textfont=dict(color="white")))
    fig.update_layout(barmode="group", title=title, yaxis_title=axis_title, xaxis_title=x_title,
                      legend_title="inference mode", height=430, uniformtext=dict(minsize=9, mode="hide"))
    if value == "acc":  # differences of a point or two matter: start the axis near the lowest bar, and say so
        lows = [scale * (r["acc_mean"] - r.get("acc_std", 0.0)) for r in rows]
        low = max(0.0, min(lows) - max(2.0, 0.3 * (scale - min(lows))))
        fig.update_yaxes(range=[low, scale * 1.005], title=f"{axis_title}, axis from {low:.0f}")
    return fig


def difference_plot(differences: Mapping[str, Any], scale: float = 100.0, unit: str = "pp",
                    title: str = "Differences and their 95 % intervals") -> go.Figure:
    """One row per named difference (a `labkit.training.stats.Interval`, or anything with mean, lo, hi): a dot at
    its mean and a bar over its interval, a line at 0. A bar that crosses 0 is within noise; rows with no interval
    (one seed) show the dot alone."""
    names = list(differences)
    d = [differences[n] for n in names]
    finite = [np.isfinite(x.lo) and np.isfinite(x.hi) for x in d]
    colours = [PALETTE["blue"] if f and (x.lo > 0 or x.hi < 0) else PALETTE["grey"] for x, f in zip(d, finite,
                                                                                                    strict=True)]
    fig = go.Figure(go.Scatter(
        x=[scale * x.mean for x in d], y=names, mode="markers", marker=dict(size=10, color=colours),
        error_x=dict(type="data", symmetric=False, visible=True,
                     array=[scale * (x.hi - x.mean) if f else 0 for x, f in zip(d, finite, strict=True)],
                     arrayminus=[scale * (x.mean - x.lo) if f else 0 for x, f in zip(d, finite, strict=True)]),
        hovertemplate=f"%{{y}}: %{{x:+.2f}} {unit}<extra></extra>"))
    fig.add_vline(x=0, line=dict(color=PALETTE["black"], width=1, dash="dot"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(title=f"{title}<br><sup>blue: beyond noise (the interval excludes 0); grey: within noise</sup>",
                      xaxis_title=f"difference ({unit})", height=140 + 34 * len(names), showlegend=False,
                      margin=dict(l=260, r=30, t=90, b=50))
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
                marker=dict(size=12, color=method_color(method), symbol=getattr(_mode(r["mode"]), "symbol", "x")),
                hovertemplate=f"{method} {r['mode']}: %{{y:.2f}}%, cost {r[cost]}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axis_title, yaxis_title="test accuracy (%)", height=430 + 22 * (
        -(-len(fig.data) // 4)), legend=dict(title="method, inference mode", orientation="h", y=-0.2, yanchor="top"))
    return fig


# =============================================================================== scarce labels and long tails
def accuracy_by_labels(rows: Sequence[Mapping[str, Any]], x: str = "images_per_class", value: str = "acc",
                       scale: float = 100.0, x_labels: Mapping[Any, str] | None = None,
                       axis_title: str = "test accuracy (%)",
                       title: str = "Accuracy against labelled images per class") -> go.Figure:
    """One line per (method, mode) over `rows[x]` (labelled training images per class, a log axis): y is
    `{value}_mean` (× scale); error bars from `{value}_lo` / `{value}_hi` when the rows have them (an interval),
    else ± `{value}_std` over seeds.

    rows: `labkit.report.summarize` rows, each with its setting's `x` added. Colour is the method, the marker
    the mode (as in `accuracy_vs_cost`); `x_labels` names ticks, e.g. {126: "all (126)"}. With value="pair_confused",
    scale=1 it draws the showcase pair's confusions as the data shrinks.
    """
    fig = go.Figure()
    for method, mode in dict.fromkeys((r["method"], r["mode"]) for r in rows):
        mine = sorted((r for r in rows if (r["method"], r["mode"]) == (method, mode)), key=lambda r: r[x])
        mean = [scale * r[f"{value}_mean"] for r in mine]
        fig.add_trace(go.Scatter(
            name=f"{method} {mode}", legendgroup=method, x=[r[x] for r in mine], y=mean, mode="lines+markers",
            error_y=_error_bars(mine, value, scale, mean), line=dict(color=method_color(method)),
            marker=dict(size=9, symbol=getattr(_mode(mode), "symbol", "circle")),
            hovertemplate=f"{method} {mode}: %{{y:.2f}} at %{{x}} per class<extra></extra>"))
    ticks = sorted({r[x] for r in rows})
    fig.update_xaxes(type="log", title="labelled training images per class (log scale)", tickvals=ticks,
                     ticktext=[(x_labels or {}).get(t, str(t)) for t in ticks])
    fig.update_layout(title=title, yaxis_title=axis_title, width=MAX_WIDTH, height=450, legend_title="method, mode")
    return fig


def _error_bars(rows: Sequence[Mapping[str, Any]], value: str, scale: float, mean: Sequence[float]) -> dict:
    """Plotly error bars: an interval's ends (`{value}_lo`, `{value}_hi`) when every row has them, else ± std."""
    if all(f"{value}_lo" in r and f"{value}_hi" in r for r in rows):
        return dict(type="data", symmetric=False, visible=True,
                    array=[scale * r[f"{value}_hi"] - m for r, m in zip(rows, mean, strict=True)],
                    arrayminus=[m - scale * r[f"{value}_lo"] for r, m in zip(rows, mean, strict=True)])
    return dict(type="data", array=[scale * r.get(f"{value}_std", 0.0) for r in rows], visible=True)


def accuracy_by_class_size(panels: Mapping[str, tuple[Sequence[int], Mapping[str, Any]]],
                           classes: Sequence[str] | None = None, thresholds: tuple[int, int] | None = None,
                           colors: Mapping[str, str] | None = None,
                           title: str = "Per-class test accuracy against the class's training images") -> go.Figure:
    """One panel per named setting (e.g. a long tail's ratio): for each series, every class's test accuracy (%)
    against its training images (a log axis), mean and ± std over seeds.

    panels: name -> (counts (N,), {series: per-class accuracy in [0, 1], (N,) or (seeds, N)}). A series keeps its
    colour and legend entry in every panel (`colors`, else the method's colour when the series is a method's
    name, else the palette). `thresholds` (few_shot, many_shot) draws the shot groups' borders.
    """
    names = list(panels)
    fig = make_subplots(1, len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.04)
    palette = _series_colors([s for _, series in panels.values() for s in series], colors)
    for k, name in enumerate(names):
        counts, series = panels[name]
        order = np.argsort(np.asarray(counts), kind="stable")
        for label, accuracies in series.items():
            fig.add_trace(_class_size_trace(label, np.asarray(counts)[order], _numpy(accuracies)[..., order],
                                            [(classes or range(len(counts)))[i] for i in order], palette[label],
                                            k == 0), 1, k + 1)
        for x, text in zip(thresholds or (), ("few | medium", "medium | many"), strict=False):
            _log_axis_border(fig, x, text, k + 1)
    counts_seen = [c for counts, _ in panels.values() for c in counts if c > 0]
    ticks = [t for t in _LOG_TICKS if min(counts_seen, default=1) / 2 <= t <= 2 * max(counts_seen, default=1)]
    fig.update_xaxes(type="log", title="training images of the class (log scale)", tickvals=ticks,
                     ticktext=[str(t) for t in ticks])  # plotly's own log ticks label 20 as "2"
    fig.update_yaxes(range=[-3, 108])
    fig.update_yaxes(title="test accuracy of the class (%)", col=1)
    fig.update_layout(title=title, width=MAX_WIDTH, height=420 + 22 * len(palette), legend_title="series",
                      legend=dict(orientation="h", y=-0.22, yanchor="top"))  # below the panels: they keep the width
    return fig


_LOG_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]  # images, 1-2-5 on a log axis


def _log_axis_border(fig: go.Figure, x: float, text: str, col: int) -> None:
    """A dotted vertical line at x in panel `col` with its label at the foot. On a log axis plotly places a shape
    at the value itself but an annotation at its log10."""
    suffix = _axis_suffix(col)
    fig.add_shape(type="line", xref=f"x{suffix}", yref=f"y{suffix} domain", x0=x, x1=x, y0=0, y1=1,
                  line=dict(color=PALETTE["grey"], dash="dot", width=1))
    fig.add_annotation(xref=f"x{suffix}", yref=f"y{suffix} domain", x=float(np.log10(x)), y=0.02, text=text,
                       showarrow=False, font=dict(size=10, color=PALETTE["grey"]), bgcolor="rgba(255,255,255,0.7)")


def _series_colors(labels: Sequence[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    """A colour per series label: the given one, the method's, or the next of the palette."""
    out: dict[str, str] = {}
    for label in dict.fromkeys(labels):
        out[label] = (colors or {}).get(label) or method_color(label) or SERIES_COLORS[len(out) % len(SERIES_COLORS)]
    return out


def _class_size_trace(label: str, counts: np.ndarray, accuracies: np.ndarray, names: Sequence[Any], color: str,
                      legend: bool) -> go.Scatter:
    """Classes ordered by size: mean accuracy (%) over the seeds' rows, ± their sample std."""
    per_seed = np.atleast_2d(accuracies) * 100.0  # (seeds, N)
    spread = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(per_seed.shape[1])
    return go.Scatter(name=label, legendgroup=label, showlegend=legend, x=counts, y=per_seed.mean(axis=0),
                      mode="lines+markers", line=dict(color=color), marker=dict(size=8),
                      error_y=dict(type="data", array=spread, visible=True), text=[str(n) for n in names],
                      hovertemplate=f"{label}, class %{{text}}: %{{y:.1f}}% with %{{x}} images<extra></extra>")


# ============================================================================================== training curves
def history_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = ("train_loss",),
                   title: str = "Training history", colors: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per history key, one line per named run, x = epoch. A key reaches into history.json's records:
    "train_loss", or "val_acc.single" for the validation accuracy of one inference mode. `colors`: run name ->
    colour (default: plotly's)."""
    keys = list(keys)
    fig = make_subplots(1, len(keys), subplot_titles=keys, horizontal_spacing=0.1)
    for name, history in histories.items():
        for k, key in enumerate(keys):
            points = [(h["epoch"], v) for h in history if (v := history_value(h, key)) is not None]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=k == 0,
                                     line=dict(color=(colors or {}).get(name))), 1, k + 1)
    fig.update_xaxes(title="epoch")
    fig.update_layout(title=title, height=400)
    return fig


def history_value(record: Mapping[str, Any], key: str) -> float | None:
    """One number of a history record: "train_loss", or "val_acc.single" (dots reach into nested dicts); None if
    absent."""
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


# ================================================================================================ watch it learn
@dataclass(frozen=True)
class Learning:
    """What two models said about P inputs after each of E epochs, for `learning_view` (arrays, any epochs may be
    missing for a model still to train: its arrays then hold zeros and its curves are empty).

    joint: (E, P, N, M), the joint model's P(i, j | input); heads: (E, P, N) the class head and (E, P, M) the
    transformation head of the multi-task model; curves: run name -> {"loss": (E,), "val acc": (E,)}; images:
    (P, C, H, W) in [0, 1]; truths: (class, transformation index) per input; done: run name -> epochs recorded."""

    epochs: np.ndarray
    joint: np.ndarray
    class_head: np.ndarray
    transform_head: np.ndarray
    images: np.ndarray
    inputs: Sequence[str]
    truths: Sequence[tuple[int, int | None]]
    names: tuple[str, str] = ("sla", "mt")
    curves: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    done: Mapping[str, int] = field(default_factory=dict)


def learning_view(learning: Learning, classes: Sequence[str], transform_names: Sequence[str],
                  slider: bool = True, title: str = "Watch it learn") -> go.Figure:
    """One column per input: the image, the joint model's N×M table P(i, j | input), the multi-task model's class
    head and its transformation head; below, each model's training loss and validation accuracy per epoch. The
    truth of each input (its class, and the transformation it is of the upright image) is outlined or coloured.
    With `slider`, plotly's own slider (`layout.sliders`, one frame per epoch) moves through the epochs in any
    page that shows the figure, no kernel needed; without, the figure shows the last epoch and is redrawn from
    `learning_view_update` (the live view)."""
    P, (sla, mt) = len(learning.inputs), learning.names
    cols = max(P, 2)

    def row(titles: Sequence[str]) -> list[str]:
        return [*titles, *[""] * (cols - len(titles))]

    fig = make_subplots(5, cols, vertical_spacing=0.07, horizontal_spacing=0.12,
                        row_heights=[0.12, 0.3, 0.17, 0.17, 0.24],
                        subplot_titles=row(list(learning.inputs)) + row([f"{sla}: P(i, j | input)"] * P)
                        + row([f"{mt}: class head P(i | input)"] * P)
                        + row([f"{mt}: transformation head P(j | input)"] * P)
                        + row(["training loss", "validation accuracy (single)"]))
    for p in range(P):
        fig.add_trace(go.Image(z=to_display_images(learning.images[p]), hoverinfo="skip"), 1, p + 1)
        fig.add_trace(go.Heatmap(x=list(transform_names), y=list(classes), coloraxis="coloraxis", name=sla,
                                 hovertemplate="class %{y}, %{x}: %{z:.3f}<extra></extra>"), 2, p + 1)
        fig.add_trace(go.Bar(x=list(classes), name=f"{mt} class", showlegend=False,
                             marker_color=_bar_colours(len(classes), learning.truths[p][0])), 3, p + 1)
        turn = learning.truths[p][1]
        fig.add_trace(go.Bar(x=list(transform_names), name=f"{mt} transformation", showlegend=False,
                             marker_color=_bar_colours(len(transform_names), turn)), 4, p + 1)
    for name in learning.names:
        colour = method_color(name)
        fig.add_trace(go.Scatter(mode="lines+markers", name=name, line=dict(color=colour), legendgroup=name), 5, 1)
        fig.add_trace(go.Scatter(mode="lines+markers", name=name, line=dict(color=colour), legendgroup=name,
                                 showlegend=False, connectgaps=True), 5, 2)  # validated at bookkeeping epochs
    for p in range(P):
        fig.update_xaxes(visible=False, row=1, col=p + 1)
        fig.update_yaxes(visible=False, row=1, col=p + 1)
        fig.update_yaxes(autorange="reversed", type="category", row=2, col=p + 1)
        fig.update_xaxes(type="category", row=2, col=p + 1)
        fig.update_xaxes(type="category", row=3, col=p + 1)
        fig.update_xaxes(type="category", row=4, col=p + 1)
        fig.update_yaxes(range=[0, 1], row=3, col=p + 1)
        fig.update_yaxes(range=[0, 1], row=4, col=p + 1)
        if learning.truths[p][1] is not None:
            fig.add_shape(_cell_outline(learning.truths[p][0], learning.truths[p][1], _axis_of(fig, 2, p + 1)))
    last = float(learning.epochs.max()) if len(learning.epochs) else 1.0
    fig.update_xaxes(title_text="epoch", range=[0.5, last + 0.5], row=5, col=1)
    fig.update_xaxes(title_text="epoch", range=[0.5, last + 0.5], row=5, col=2)
    fig.update_yaxes(range=[0, 1.02], row=5, col=2)
    fig.update_layout(coloraxis=dict(colorscale=PROB_COLORSCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="P", side="right"), thickness=12, len=0.3,
                                                   y=0.72)),
                      height=1050, font=_FONT, showlegend=True, margin=dict(l=50, r=30, t=120, b=40),
                      legend=dict(orientation="h", x=0.01, xanchor="left", y=0.01, yanchor="bottom",
                                  bgcolor="rgba(255, 255, 255, 0.7)"))
    E = len(learning.epochs)
    fig = apply_update(fig, learning_view_update(learning, E - 1 if E else -1, title))
    if slider and E > 1:
        names = [str(int(n)) for n in learning.epochs]
        updates = [learning_view_update(learning, e, title) for e in range(E)]
        moving = [k for k, t in enumerate(fig.data) if t.type != "image"]  # a frame names the traces it changes
        fig.frames = [go.Frame(name=n, traces=moving, layout=u["layout"],
                               data=[{"type": fig.data[k].type, **u["data"][k]} for k in moving])
                      for n, u in zip(names, updates, strict=True)]
        jump = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
        fig.update_layout(sliders=[dict(active=E - 1, currentvalue=dict(prefix="after epoch ", font=dict(size=13)),
                                        pad=dict(t=50), len=1.0,
                                        steps=[dict(label=n, method="animate", args=[[n], jump]) for n in names])])
    return fig


def _axis_of(fig: go.Figure, row: int, col: int) -> int:
    """The 1-based axis number of subplot (row, col)."""
    ref = fig.get_subplot(row, col)
    name = ref.xaxis.plotly_name  # "xaxis", "xaxis7"
    return int(name[5:] or 1)


def _bar_colours(n: int, true: int | None) -> list[str]:
    return [TRUE_COLOR if k == true else PALETTE["blue"] for k in range(n)]


def learning_view_update(learning: Learning, e: int, title: str = "Watch it learn") -> dict:
    """The numbers of `learning_view` after epoch index e (-1: nothing yet), trace by trace, and its title. A model
    that has trained fewer epochs (the second model while the first is done, in the live view) shows its last."""
    first, second = learning.names

    def at(name: str) -> int:  # the epoch index a model is shown at; -1 before its first epoch
        return min(e, learning.done.get(name, 0) - 1)

    j, h = at(first), at(second)
    data: list[dict] = []
    for p in range(len(learning.inputs)):
        data.append({})  # the image does not change
        data.append({"z": learning.joint[j, p].astype(np.float64) if j >= 0 else np.zeros(learning.joint.shape[2:])})
        data.append({"y": learning.class_head[h, p].astype(np.float64) if h >= 0
                     else np.zeros(learning.class_head.shape[2])})
        data.append({"y": learning.transform_head[h, p].astype(np.float64) if h >= 0
                     else np.zeros(learning.transform_head.shape[2])})
    for name in learning.names:
        curves, upto = learning.curves.get(name, {}), at(name) + 1
        for key in ("loss", "val acc"):
            data.append({"x": learning.epochs[:upto].astype(np.float64),
                         "y": np.asarray(curves.get(key, []), dtype=np.float64)[:upto]})
    states = ", ".join(f"{n} after epoch {int(learning.epochs[at(n)])}" if at(n) >= 0 else f"{n} not trained yet"
                       for n in learning.names)
    return {"data": data, "layout": {"title": {"text": f"{title}: {states} (of {len(learning.epochs)})<br><sup>"
                                                      f"outlined / orange: the truth of each input, its class and "
                                                      f"the transformation it is</sup>"}}}


# ================================================================================================ specifications
UPDATES = {view_grid: view_grid_update, joint_heatmap: joint_heatmap_update,
           conditional_bars: conditional_bars_update, prediction_bars: prediction_bars_update,
           multitask_heads: multitask_heads_update}  # builder -> its update, called with the same arguments


class FigureSpec:
    """One builder call, kept as a description: `figure()` draws it, `update()` gives only what changes from
    one image to the next (see the module docstring)."""

    def __init__(self, builder: Any, **kwargs: Any) -> None:
        if builder not in UPDATES:
            takes = ", ".join(b.__name__ for b in UPDATES)
            raise ValueError(f"{builder.__name__} has no update; FigureSpec takes {takes}")
        self.builder, self.kwargs = builder, kwargs

    def figure(self) -> go.Figure:
        return self.builder(**self.kwargs)

    def update(self) -> dict:
        return UPDATES[self.builder](**self.kwargs)
