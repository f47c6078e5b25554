"""The live explorer's canvas: a figure's base merged with an update, in Python and (the same rule) in the page."""

from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.figures import panel
from labkit.figures.panel import FigurePanel, merge, plain


def _bars(y, title="t"):
    return go.Figure([go.Bar(x=["a", "b"], y=y, name="p"), go.Bar(x=["a", "b"], y=[0, 0], name="q")],
                     layout=dict(title=title, width=300, height=200))


def test_plain_decodes_plotlys_typed_arrays_and_numpy():
    z = np.arange(6, dtype=np.float64).reshape(2, 3)
    typed = {"dtype": "f8", "bdata": base64.b64encode(z.tobytes()).decode(), "shape": "2, 3"}
    assert plain({"z": typed}) == {"z": z.tolist()}
    flat = {"dtype": "u1", "bdata": base64.b64encode(bytes([1, 2, 255])).decode()}
    assert plain([flat, np.float32(0.5), (np.int64(3),)]) == [[1, 2, 255], 0.5, [3]]


def test_merge_replaces_keys_one_level_deep_and_keeps_the_rest():
    base = panel.figure_json(_bars([0.2, 0.8], title="before"))
    update = {"data": [{"y": [0.9, 0.1], "name": "p → a"}], "layout": {"title": {"text": "after"}}}
    fig = merge(base, update)
    assert fig["data"][0]["y"] == [0.9, 0.1] and fig["data"][0]["name"] == "p → a"
    assert fig["data"][0]["x"] == ["a", "b"] and fig["data"][1] == base["data"][1]  # untouched keys and traces
    assert fig["layout"]["title"] == {"text": "after"} and fig["layout"]["width"] == 300
    assert base["data"][0]["y"] == [0.2, 0.8]  # the base is never changed
    assert merge(base, {}) == base


def test_merge_refuses_an_update_with_more_traces_than_the_figure():
    base = panel.figure_json(_bars([0.2, 0.8]))
    with pytest.raises(ValueError, match="3 traces cannot apply to a figure of 2"):
        merge(base, {"data": [{}, {}, {}]})


def test_panel_shows_base_then_updates():
    panel = FigurePanel([_bars([0.2, 0.8]), _bars([0.5, 0.5], title="second")])
    assert panel.updates == [{}, {}]
    np.testing.assert_array_equal(panel.figure(0).data[0].y, [0.2, 0.8])
    panel.updates = [{"data": [{"y": [0.6, 0.4]}]}, {}]
    np.testing.assert_array_equal(panel.figure(0).data[0].y, [0.6, 0.4])
    assert panel.figure(1).layout.title.text == "second"
    assert "window.Plotly = Plotly" in panel._esm and "labkitMerge" in panel._esm  # plotly.js, then the panel
