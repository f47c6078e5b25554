"""A widget that shows a list of plotly figures and redraws them all from one message: the live explorer's canvas.

Each figure is sent once, in full, as its *base*. Afterwards the kernel sends only *updates*: per figure, the
trace attributes (`z`, `y`, `name`, ...) and the layout parts (`title`, `shapes`, `annotations`) that replace the
base's. The browser merges each update into its base and draws it with `Plotly.react`, and nothing comes back.

Why not plotly's `FigureWidget`: it answers every redraw with the whole computed layout and trace data (which
the kernel then validates), carries its own 5 MB of JavaScript per figure, and makes the kernel rebuild figures
through plotly's validating Python objects. Here one click is one message of numbers, and one task in the page.

    panel = FigurePanel([fig_a, fig_b])              # the bases, drawn at once
    panel.updates = [{"data": [{"z": z}]}, {}]        # redraw fig_a with new z (numpy or lists); fig_b as it was
    panel.figure(0)                                   # what the page shows, as a plain go.Figure (for tests)

`merge` (Python) and `MERGE_JS` (the browser; the static explorer uses it too) are the one rule: each key of
an update replaces the base's key, one level deep, and an update never changes the number of traces.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

__all__ = ["FigurePanel", "merge", "plain", "figure_json", "is_typed_array", "typed_values", "typed_array",
           "MERGE_JS"]

MERGE_JS = """function labkitMerge(base, update) {
  const copy = o => JSON.parse(JSON.stringify(o === undefined ? {} : o));
  const data = (update && update.data) || [];
  return {data: base.data.map((t, i) => Object.assign(copy(t), copy(data[i]))),
          layout: Object.assign(copy(base.layout), copy(update && update.layout))};
}"""

# After plotly.js (which sets window.Plotly). Each figure sits in a box of its own size with `contain: strict`, so
# redrawing one makes the browser lay out that box, not the whole notebook around it.
_PANEL_JS = MERGE_JS + """
const Plotly = window.Plotly;
const CONFIG = {displayModeBar: "hover", displaylogo: false};
export default {
  render({ model, el }) {
    const bases = model.get("figures");
    el.classList.add("labkit-figure-panel");
    const divs = bases.map((fig) => {
      const div = document.createElement("div");
      if (fig.layout.width && fig.layout.height) {
        Object.assign(div.style, {contain: "strict", width: fig.layout.width + "px",
                                  height: fig.layout.height + "px"});
      }
      return el.appendChild(div);
    });
    let draws = 0;
    function draw() {
      const start = performance.now(), updates = model.get("updates");
      divs.forEach((div, k) => {
        const fig = labkitMerge(bases[k], updates[k]);
        Plotly.react(div, fig.data, fig.layout, CONFIG);
      });
      // for tests and benchmarks: how many redraws, when the last began and how long it took (ms, page clock)
      Object.assign(el.dataset, {draws: ++draws, drawStart: start.toFixed(1),
                                 drawMs: (performance.now() - start).toFixed(1)});
    }
    draw();
    model.on("change:updates", draw);
    return () => divs.forEach((div) => Plotly.purge(div));
  },
};
"""


@functools.cache
def _module_source() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs() + "\n" + _PANEL_JS  # about 4.8 MB, sent once per panel (FigureWidget sent it per figure)


class FigurePanel(anywidget.AnyWidget):
    """Plotly figures, one below the other, redrawn in the browser from `updates` (see the module's docstring)."""

    figures = traitlets.List(help="each figure's plotly JSON as first drawn (arrays as lists)").tag(sync=True)
    updates = traitlets.List(help="per figure: {'data': [trace attributes], 'layout': {layout parts}}").tag(sync=True)

    @property
    def _esm(self) -> str:
        return _module_source()

    @traitlets.validate("updates")
    def _as_json(self, proposal) -> list:
        return plain(proposal["value"])  # numpy arrays in, lists out: what the message can carry

    def __init__(self, figures: Sequence[go.Figure], **kwargs: Any) -> None:
        bases = [figure_json(f) for f in figures]
        super().__init__(figures=bases, updates=[{} for _ in bases], **kwargs)

    def figure(self, k: int) -> go.Figure:
        """Figure k as the page draws it now: its base merged with its update."""
        return go.Figure(merge(self.figures[k], self.updates[k]))


def figure_json(fig: go.Figure) -> dict:
    """plotly's JSON of `fig` with arrays as plain lists (what a widget trait can carry)."""
    return plain(json.loads(pio.to_json(fig, validate=False)))


def plain(obj: Any) -> Any:
    """JSON-ready copy: numpy arrays and plotly's base64 typed arrays ({dtype, bdata, shape}) become lists."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if is_typed_array(obj):
        return typed_values(obj).tolist()
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def is_typed_array(obj: Any) -> bool:
    """Whether `obj` is plotly's base64 typed array: {"dtype": "f8", "bdata": "...", "shape": "10, 4"}."""
    return isinstance(obj, Mapping) and "bdata" in obj and "dtype" in obj


def typed_values(spec: Mapping) -> np.ndarray:
    """The numpy array a base64 typed array holds (shape "10, 4"; none for 1-D)."""
    values = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    shape = spec.get("shape")
    return values.reshape([int(n) for n in str(shape).split(",")]) if shape else values


def typed_array(values: np.ndarray) -> dict:
    """A numpy array as plotly writes it in a figure's JSON: the inverse of `typed_values`."""
    spec = {"dtype": values.dtype.str.lstrip("<>|="), "bdata": base64.b64encode(values.tobytes()).decode("ascii")}
    return spec | ({"shape": ", ".join(map(str, values.shape))} if values.ndim > 1 else {})


def merge(base: Mapping, update: Mapping) -> dict:
    """A figure's JSON from its base and an update: each trace's and the layout's keys replaced, one level deep
    (the Python twin of MERGE_JS)."""
    data = list(update.get("data", []))
    if len(data) > len(base["data"]):
        raise ValueError(f"an update for {len(data)} traces cannot apply to a figure of {len(base['data'])}")
    data += [{}] * (len(base["data"]) - len(data))
    layout = {**base["layout"], **update.get("layout", {})}
    return {"data": [{**t, **d} for t, d in zip(base["data"], data, strict=True)],
            "layout": {k: v for k, v in layout.items() if v != []}}  # no marks: as plotly writes it, no key
