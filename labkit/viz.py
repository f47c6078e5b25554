"""Pure figure builders: arrays or tensors in, a `plotly.graph_objects.Figure` out.

Nothing here trains, loads data or holds state; notebooks and widgets call these builders with numbers the library
computed. `setup_notebook()` is the one helper with an effect: it picks the plotly renderer that keeps figures
visible both in JupyterLab and in the HTML copy of an executed notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    # ---- notebook figures (issue 3): static pictures of the lab's results ----
    "setup_notebook", "NOTEBOOK_RENDERER", "view_grid", "joint_label_grid", "confusion_heatmaps",
    "accuracy_bars", "accuracy_vs_cost", "history_curves", "to_display_images",
    # ---- end notebook figures ----
]


# =====================================================================================================================
# Notebook figures (issue 3): views of images, joint labels, confusion matrices, method comparisons, histories.
# Every builder takes plain numbers (numpy arrays, tensors, lists or the rows of `labkit.report.summarize`).
# =====================================================================================================================

# `plotly_mimetype` lets JupyterLab draw the figure with its plotly extension; `notebook` adds a text/html copy with
# plotly.js embedded once per notebook, which is what nbconvert's HTML keeps, so the HTML needs no network.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"  # labkit.runner sets the same as PLOTLY_RENDERER for its kernels
_METHOD_COLORS = {"baseline": "#868e96", "da": "#1c7ed6", "mt": "#7048e8", "sla": "#2f9e44", "sla+sd": "#e8590c"}
_MODE_PATTERNS = {"single": "", "aggregated": "/", "distilled": "."}
_MODE_SYMBOLS = {"single": "circle", "aggregated": "square", "distilled": "diamond"}


def setup_notebook(renderer: str = NOTEBOOK_RENDERER) -> str:
    """Make `fig.show()` and a figure as a cell's value render in JupyterLab and in exported HTML."""
    import plotly.io as pio

    pio.renderers.default = renderer
    return renderer


def _numpy(x: Any) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def to_display_images(images: Any) -> np.ndarray:
    """(..., C, H, W) with C = 1 or 3 and values in [0, 1] -> (..., H, W, 3) uint8 for `go.Image`.

    Grey images are drawn as dark ink on white paper (1 = ink = black), the way digits are printed.
    """
    x = np.clip(_numpy(images), 0.0, 1.0)
    x = np.moveaxis(x, -3, -1)  # (..., C, H, W) -> (..., H, W, C)
    if x.shape[-1] == 1:
        x = np.repeat(1.0 - x, 3, axis=-1)
    return np.round(255 * x).astype(np.uint8)


def view_grid(images: Any, col_names: Sequence[str], row_names: Sequence[str] | None = None,
              title: str = "", panel_px: int = 110) -> go.Figure:
    """A grid of images: (R, V, C, H, W) or (V, C, H, W) in [0, 1]; columns named by view, rows by image."""
    pixels = to_display_images(images)
    if pixels.ndim == 4:  # one row: (V, H, W, 3) -> (1, V, H, W, 3)
        pixels = pixels[None]
    R, V = pixels.shape[:2]
    row_names = list(row_names) if row_names is not None else [""] * R
    titles = [f"{row_names[r]} {col_names[v]}".strip() for r in range(R) for v in range(V)]
    fig = make_subplots(R, V, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.08 / max(R, 1))
    for r in range(R):
        for v in range(V):
            fig.add_trace(go.Image(z=pixels[r, v], hoverinfo="skip"), r + 1, v + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=title, width=max(320, panel_px * V + 40), height=panel_px * R + 90,
                      margin=dict(l=10, r=10, t=70 if title else 30, b=10))
    return fig


def joint_label_grid(classes: Sequence[str], view_names: Sequence[str], highlight: int | None = None,
                     title: str = "Joint labels (i, j) -> i*M + j") -> go.Figure:
    """The N×M grid of joint labels, each cell showing its index i*M + j; `highlight` marks one class's row."""
    N, M = len(classes), len(view_names)
    index = np.arange(N * M).reshape(N, M)  # row i = class i, column j = transformation j
    shade = np.zeros((N, M)) if highlight is None else (np.arange(N)[:, None] == highlight) * np.ones((1, M))
    fig = go.Figure(go.Heatmap(z=shade, x=list(view_names), y=list(classes), text=index, texttemplate="%{text}",
                               colorscale=[[0, "#f1f3f5"], [1, "#a5d8ff"]], showscale=False, xgap=2, ygap=2,
                               hovertemplate="class %{y}, view %{x}: joint label %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="class i", type="category")
    fig.update_xaxes(title="transformation j", side="top", type="category")
    fig.update_layout(title=title, width=max(480, 140 + 70 * M), height=140 + 30 * N, margin=dict(t=110))
    return fig


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
            fig.add_shape(type="rect", x0=b - 0.5, x1=b + 0.5, y0=a - 0.5, y1=a + 0.5, line=dict(color="#e8590c",
                          width=3), row=1, col=k + 1)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", title="predicted")
    fig.update_yaxes(title="true", col=1)
    fig.update_layout(title=title, width=min(1000, 60 + 310 * len(names)), height=400)
    return fig


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
            marker_pattern_shape=_MODE_PATTERNS.get(mode, ""),
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
                marker=dict(size=12, color=_METHOD_COLORS.get(method), symbol=_MODE_SYMBOLS.get(r["mode"], "x")),
                hovertemplate=f"{method} {r['mode']}: %{{y:.2f}}%, cost {r[cost]}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axis_title, yaxis_title="test accuracy (%)", width=760, height=430,
                      legend_title="method, inference mode")
    return fig


def history_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str] = ("train_loss",),
                   title: str = "Training history") -> go.Figure:
    """One panel per history key (e.g. train_loss, val_acc_single), one line per named run, x = epoch."""
    keys = list(keys)
    fig = make_subplots(1, len(keys), subplot_titles=keys, horizontal_spacing=0.1)
    for name, history in histories.items():
        color = _METHOD_COLORS.get(name.split(" ")[0])
        for k, key in enumerate(keys):
            points = [(h["epoch"], h[key]) for h in history if key in h]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=k == 0,
                                     line=dict(color=color)), 1, k + 1)
    fig.update_xaxes(title="epoch")
    fig.update_layout(title=title, width=min(980, max(480, 330 * len(keys))), height=400)
    return fig
