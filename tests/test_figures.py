"""The notebooks' static figure builders: numbers in, plotly Figures out, nothing else."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from labkit.figures import theme, viz

ROWS = [  # the shape of labkit.report.summarize rows
    {"method": "da", "mode": "single", "acc_mean": 0.9, "acc_std": 0.01, "forwards_per_image": 1,
     "pair_confused_mean": 3.0, "pair_confused_std": 1.0},
    {"method": "da", "mode": "aggregated", "acc_mean": 0.92, "acc_std": 0.0, "forwards_per_image": 4,
     "pair_confused_mean": 2.0, "pair_confused_std": 0.0},
    {"method": "sla", "mode": "single", "acc_mean": 0.95, "acc_std": 0.02, "forwards_per_image": 1,
     "pair_confused_mean": 0.0, "pair_confused_std": 0.0},
]


def test_display_images_turn_grey_ink_dark_and_keep_rgb():
    grey = torch.zeros(2, 1, 3, 3)
    grey[0, 0, 1, 1] = 1.0  # one pixel of full ink
    px = viz.to_display_images(grey)
    assert px.shape == (2, 3, 3, 3) and px.dtype == np.uint8
    assert (px[0, 1, 1] == 0).all() and (px[0, 0, 0] == 255).all()
    rgb = np.zeros((1, 3, 2, 2))
    rgb[0, 0] = 1.0  # pure red
    assert viz.to_display_images(rgb)[0, 0, 0].tolist() == [255, 0, 0]


def test_view_grid_has_one_image_per_view_and_row():
    fig = viz.view_grid(torch.rand(2, 4, 3, 8, 8), ["a", "b", "c", "d"], row_names=["x", "y"])
    assert isinstance(fig, go.Figure) and len(fig.data) == 8
    assert all(isinstance(t, go.Image) for t in fig.data)
    assert [a.text for a in fig.layout.annotations][:2] == ["x a", "x b"]
    assert len(viz.view_grid(torch.rand(3, 1, 8, 8), ["p", "q", "r"]).data) == 3


def test_joint_label_grid_numbers_cells_in_class_blocks():
    fig = viz.joint_label_grid([str(i) for i in range(10)], ["r0", "r90", "r180", "r270"], highlight=6)
    text = np.asarray(fig.data[0].text)
    assert text.shape == (10, 4) and text[6, 2] == 6 * 4 + 2 and text[9, 3] == 39
    assert np.asarray(fig.data[0].z)[6].sum() == 4 and np.asarray(fig.data[0].z).sum() == 4


def test_confusion_heatmaps_one_panel_each_and_outline_the_pair():
    c = np.eye(10, dtype=int) * 5
    c[6, 9] = 2
    fig = viz.confusion_heatmaps({"da": c, "sla": torch.as_tensor(np.eye(10) * 7)}, list("0123456789"), pair=(6, 9))
    assert len(fig.data) == 2 and np.asarray(fig.data[0].z)[6, 9] == 2
    assert len(fig.layout.shapes) == 4  # two outlined cells per panel


def test_accuracy_bars_group_by_mode_with_error_bars():
    fig = viz.accuracy_bars(ROWS)
    assert [t.name for t in fig.data] == ["single", "aggregated"]
    single = fig.data[0]
    assert list(single.x) == ["da", "sla"] and np.allclose(single.y, [90.0, 95.0])
    assert np.allclose(single.error_y.array, [1.0, 2.0])
    counts = viz.accuracy_bars(ROWS, value="pair_confused", scale=1.0)
    assert np.allclose(counts.data[0].y, [3.0, 0.0])


def test_accuracy_vs_cost_places_each_mode_at_its_cost():
    fig = viz.accuracy_vs_cost(ROWS)
    assert [t.name for t in fig.data] == ["da single", "da aggregated", "sla single"]
    da_single, da_agg, sla_single = fig.data
    assert abs(da_single.x[0] - 1) < 0.2 and abs(da_agg.x[0] - 4) < 0.2 and np.allclose(da_agg.y, [92.0])
    assert da_single.x[0] != sla_single.x[0]  # same cost, nudged apart so both stay visible
    assert da_single.marker.symbol != da_agg.marker.symbol and da_single.marker.color == da_agg.marker.color


def test_accuracy_axis_starts_near_the_lowest_bar_and_says_so():
    fig = viz.accuracy_bars(ROWS)
    low, high = fig.layout.yaxis.range
    assert 0 < low < 89 and high >= 100 and f"axis from {low:.0f}" in fig.layout.yaxis.title.text
    assert viz.accuracy_bars(ROWS, value="pair_confused", scale=1.0).layout.yaxis.range is None


def test_history_curves_one_panel_per_key_one_legend_entry_per_run():
    hist = [{"epoch": 1, "train_loss": 2.0, "val_acc": {"single": 0.5}}, {"epoch": 2, "train_loss": 1.0}]
    fig = viz.history_curves({"seed 0": hist}, ["train_loss", "val_acc.single"], colors={"seed 0": "#009E73"})
    assert len(fig.data) == 2 and list(fig.data[0].y) == [2.0, 1.0] and list(fig.data[1].x) == [1]
    assert [t.showlegend for t in fig.data] == [True, False] and fig.data[0].line.color == "#009E73"


def test_setup_notebook_picks_a_renderer_that_embeds_plotly_js():
    import plotly.io as pio

    before = pio.renderers.default
    try:
        assert theme.setup_notebook() == "plotly_mimetype+notebook" == pio.renderers.default
    finally:
        pio.renderers.default = before


def test_accuracy_by_labels_one_line_per_method_and_mode_on_a_log_axis():
    rows = [{**r, "images_per_class": k, "acc_mean": r["acc_mean"] - 0.1 * (k == 5)} for k in (50, 5) for r in ROWS]
    fig = viz.accuracy_by_labels(rows, x_labels={50: "all"})
    assert [t.name for t in fig.data] == ["da single", "da aggregated", "sla single"]
    sla = fig.data[2]
    assert list(sla.x) == [5, 50] and np.allclose(sla.y, [85.0, 95.0]) and np.allclose(sla.error_y.array, [2.0, 2.0])
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["5", "all"]
    assert sla.line.color == viz.method_color("sla")
    with_intervals = [{**r, "acc_lo": r["acc_mean"] - 0.03, "acc_hi": r["acc_mean"] + 0.01} for r in rows]
    bars = viz.accuracy_by_labels(with_intervals).data[0].error_y
    assert bars.symmetric is False and np.allclose(bars.array, [1.0, 1.0]) and np.allclose(bars.arrayminus, [3.0, 3.0])
    pairs = viz.accuracy_by_labels(rows, value="pair_confused", scale=1.0)
    assert np.allclose(pairs.data[0].y, [3.0, 3.0])


def test_accuracy_by_class_size_one_panel_per_setting_classes_ordered_by_size():
    counts = [12, 122, 43]
    seeds = np.array([[0.5, 1.0, 0.75], [0.7, 1.0, 0.85]])
    fig = viz.accuracy_by_class_size({"R = 10": (counts, {"sla": seeds, "baseline": seeds[0]}),
                                      "R = 50": (counts, {"sla": seeds})}, classes=["a", "b", "c"],
                                     thresholds=(20, 100))
    assert [t.name for t in fig.data] == ["sla", "baseline", "sla"]
    assert [t.showlegend for t in fig.data] == [True, True, False]  # one legend entry per series
    sla = fig.data[0]
    assert list(sla.x) == [12, 43, 122] and list(sla.text) == ["a", "c", "b"]
    assert np.allclose(sla.y, [60.0, 80.0, 100.0]) and np.allclose(sla.error_y.array, [np.std([50, 70], ddof=1),
                                                                                        np.std([75, 85], ddof=1), 0])
    assert fig.data[0].line.color == fig.data[2].line.color == viz.method_color("sla")
    assert len(fig.layout.shapes) == 4  # the few/medium and medium/many borders in each panel
    assert [s.x0 for s in fig.layout.shapes] == [20, 100, 20, 100]  # a shape sits at the value on a log axis,
    notes = [a for a in fig.layout.annotations if "|" in a.text]  # its label at the log10 of it
    assert [a.x for a in notes] == pytest.approx([np.log10(20), np.log10(100)] * 2)
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"
