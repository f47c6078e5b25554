"""The explorer without a kernel: precomputed explorer figures for chosen test images, switched by inline controls.

Notebook 04's live `labkit.explore.Explorer` needs a running kernel; an HTML copy or a file sent to a class does
not have one. Here the same figures (`explore.figures_for`, built by `labkit.viz`, once) and, for a chosen set of
test images each at the four hand rotations, their updates (`explore.updates_for`, as the live explorer sends
them) are computed ahead of time; one page of HTML holds them with two controls (an image list with previous /
next buttons, and the rotation) and about 40 lines of inline JavaScript that merge an update into its figure
(`figure_panel.MERGE_JS`, the live explorer's rule) and draw it with `Plotly.react`. Nothing is loaded from the
network: the standalone file embeds plotly.js once, the notebook's copy uses the plotly.js its page already holds.

    chosen = explore.choose_images(y_test, classes, results["sla"]["aggregated"], data.showcase, limit=40)
    pages = collect(models, data, tset, x_test, y_test, chosen)      # runs the models: M views per image, 4 turns
    html = explorer_html(pages, title="...")                         # pure: figures in, one HTML string out
    export(run_dirs, "explorer.html")                                 # all three, from trained run folders

Bytes: each figure is stored once in full, every page only as its updates (trace numbers and names, titles,
true-label marks), with number arrays as base64 (float32 for probabilities), and the plotly.js that the standalone
file embeds once is 4.8 MB: images add little beside it (docs/benchmarks.md has the sizes measured).
"""

from __future__ import annotations

import html
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.json import to_json_plotly
from torch import Tensor

from ..core.errors import LabkitError
from ..core.files import write_text
from ..data.splits import DataBundle
from ..sla.transforms import TransformSet
from . import explore
from .panel import MERGE_JS, is_typed_array, typed_array, typed_values
from .theme import TITLE_BELOW_MODEBAR

__all__ = ["Page", "Precomputed", "collect", "explorer_html", "export", "DEFAULT_IMAGES", "SCORING_NOTE"]

DEFAULT_IMAGES = 40  # images in an export unless asked otherwise
SCORING_NOTE = ("A test image turned by hand is scored as the pair (its class, the transformation the turn is): a 6 "
                "turned by 180° is (6, rot180), which looks like an upright 9. SLA's verdict is its joint argmax, "
                "class and transformation; MT's is its class head with its transformation head; DA and the baseline "
                "have only a class. The class readouts (single, aggregated, distilled) read every input as upright, "
                "so on a turned image they are shown unmarked. An invariant class head must give one class to an "
                "upright 9 and to a turned 6, which look alike, so somewhere it calls a 9 \"6\" (or a turned 6 "
                "\"9\"); the joint labels (9, rot0) and (6, rot180) are different targets, which keeps them apart.")
_DECIMALS = 4  # probabilities in the figures' JSON: float32 holds about 7 digits; bars and heatmaps need 3


@dataclass(frozen=True)
class Page:
    """One test image: why it was chosen, and per hand rotation ("0°", ...) its status line and figure updates."""

    index: int
    reason: str
    status: dict[str, str]  # rotation label -> the explorer's status line (true label, each prediction ✓/✗)
    updates: dict[str, dict[str, dict]]  # rotation label -> figure key ("views", ...) -> explore.figure_updates'


@dataclass(frozen=True)
class Precomputed:
    """The explorer's figures, built once (for the first page at the first rotation), and every page as updates
    of them: each page's figures are `figure_panel.merge(figures[key], update)`."""

    figures: dict[str, go.Figure]
    pages: list[Page]

    def __len__(self) -> int:
        return len(self.pages)


# ------------------------------------------------------------------------------------------------ computing
def collect(models: Sequence[explore.TrainedModel], data: DataBundle, tset: TransformSet, x_test: Tensor,
            y_test: Tensor, chosen: Mapping[int, str]) -> Precomputed:
    """Every explorer figure of every chosen image at every hand rotation (only 0° for non-square images): the
    figures built once, then each (image, rotation) as `explore.updates_for` (no figure built per page)."""
    if not chosen:
        raise LabkitError("the static explorer needs at least one image")
    C, H, W = data.shape
    rotations = explore.HAND_ROTATIONS if H == W else {"0°": 0}
    pages, figures = [], {}
    for index, reason in chosen.items():
        status, updates = {}, {}
        for label, turns in rotations.items():
            explanations, updates[label] = explore.updates_for(models, data, tset, x_test, y_test, index, turns)
            status[label] = explore.status_line(explanations, list(data.classes), index, int(y_test[index]), turns,
                                                transform_names=tset.names,
                                                true_turn=explore.hand_truth(tset, x_test[index], turns))
            figures = figures or explore.figures_for(models, data, tset, x_test, y_test, index, turns,
                                                     explanations=explanations)[1]
        pages.append(Page(index, reason, status, updates))
    return Precomputed(figures, pages)


# ----------------------------------------------------------------------------------------------------- HTML
def explorer_html(pages: Precomputed, title: str = "Static explorer", include_plotlyjs: bool = True,
                  note: str = "", element_id: str = "labkit-static-explorer") -> str:
    """One HTML fragment (a `<div>` with its controls, data and script) that switches between the pages' figures
    without a kernel. `include_plotlyjs` embeds plotly.js (a standalone file); without it the page must already
    hold plotly.js (a notebook's HTML copy does)."""
    payload = _payload(pages)
    options = "".join(f"<option value='{k}'>#{p.index} · {html.escape(p.reason)}</option>"
                      for k, p in enumerate(pages.pages))
    turns = "".join(f"<button type='button' data-turn='{k}'>{html.escape(r)}</button>"
                    for k, r in enumerate(payload["rotations"]))
    divs = "".join(f"<div class='labkit-static-figure' data-key='{html.escape(k)}'></div>" for k in payload["keys"])
    plotly_js = f"<script type='text/javascript'>{_plotly_js()}</script>" if include_plotlyjs else ""
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")  # no "</script>" inside the data
    return (f"{plotly_js}<div id='{element_id}' class='labkit-static-explorer'>{_CSS}"
            f"<h3>{html.escape(title)}</h3><p class='note'>{note}</p>"
            f"<div class='controls'><label>image <select class='image'>{options}</select></label>"
            f"<button type='button' class='prev'>◀ previous</button><button type='button' class='next'>next ▶"
            f"</button><span class='turns'>rotate by hand {turns}</span></div>"
            f"<p class='status'></p>{divs}"
            f"<script type='application/json' class='payload'>{data}</script>"
            f"<script type='text/javascript'>{_script(element_id)}</script></div>")


def _script(element_id: str) -> str:
    return _SCRIPT.replace("__ID__", element_id).replace("__MERGE__", MERGE_JS.replace("\n", "\n  "))


def standalone_html(fragment: str, title: str) -> str:
    """A whole HTML document around `explorer_html`'s fragment."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"</head><body style='font-family: sans-serif; margin: 1em 2em'>{fragment}</body></html>")


def _payload(pages: Precomputed) -> dict:
    """The figures in full, once; every page as its updates of them."""
    keys = list(pages.figures)
    rotations = list(pages.pages[0].updates)
    base = {k: _figure_json(pages.figures[k]) for k in keys}
    out = [{"index": p.index, "reason": p.reason, "status": [p.status[r] for r in rotations],
            "diffs": [{k: _unlike(base[k], _update_json(p.updates[r][k])) for k in keys} for r in rotations]}
           for p in pages.pages]
    return {"keys": keys, "rotations": rotations, "base": base, "pages": out}


def _unlike(base: dict, update: dict) -> dict:
    """The parts of `update` that differ from `base` (the rest would merge to the same figure): fewer bytes."""
    data = [{k: v for k, v in d.items() if t.get(k) != v} for t, d in zip(base["data"], update["data"], strict=True)]
    layout = {k: v for k, v in update.get("layout", {}).items() if base["layout"].get(k) != v}
    return {"data": data, "layout": layout}


def _figure_json(fig: go.Figure) -> dict:
    """plotly's JSON of `fig`, float arrays as base64 float32 rounded to _DECIMALS (the template, about 8 kB, is
    kept once: every page only updates these figures)."""
    return _shrink(_below_modebar(json.loads(pio.to_json(fig, validate=False))))


def _update_json(update: dict) -> dict:
    """An `explore.figure_updates` update as `_figure_json` writes the same numbers in a figure."""
    return _shrink(_below_modebar(json.loads(to_json_plotly(_typed_arrays(update)))))


def _typed_arrays(obj):
    """numpy arrays as plotly's base64 typed arrays, as plotly writes a figure's."""
    if isinstance(obj, np.ndarray):
        return typed_array(obj)
    if isinstance(obj, dict):
        return {k: _typed_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_typed_arrays(v) for v in obj]
    return obj


def _below_modebar(d: dict) -> dict:
    """Titles start below plotly's mode bar, as notebooks show them (theme.setup_notebook's template)."""
    if "title" in d.get("layout", {}):
        d["layout"]["title"] = {**TITLE_BELOW_MODEBAR, **d["layout"]["title"]}
    return d


def _shrink(obj):
    if is_typed_array(obj) and obj["dtype"] == "f8":
        return typed_array(typed_values(obj).round(_DECIMALS).astype(np.float32))
    if isinstance(obj, dict):
        return {k: _shrink(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shrink(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, _DECIMALS)
    return obj


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


# --------------------------------------------------------------------------------------------------- export
def export(run_dirs: Sequence[str | Path], out: str | Path, images: int = DEFAULT_IMAGES, overwrite: bool = False,
           device: str = "cpu") -> Path:
    """One self-contained HTML file exploring the trained runs' test images offline; returns its path."""
    out = Path(out)
    if not run_dirs:
        raise LabkitError("export-explorer needs at least one run folder (--runs RUN_DIR ...)")
    if images < 1:
        raise LabkitError(f"--images must be at least 1, got {images}")
    _check_out_file(out, overwrite)
    models, data, tset = _load(run_dirs, device)
    x, y = explore.test_tensors(data)
    test = explore.test_results(models, tset, x, y, data.N)
    model, mode = _reference(models)
    showcase = explore.showcase_images(models, y, list(data.classes), test, data.showcase)
    chosen = explore.choose_images(y, list(data.classes), test[model][mode], data.showcase, images, first=showcase)
    pages = collect(models, data, tset, x, y, chosen)
    names = ", ".join(m.name for m in models)
    title = f"Explorer: what {names} see in each view ({data.name}, {tset.name}, {len(pages)} test images)"
    pair = " and ".join(f"{data.classes[c]}s" for c in data.showcase or ())
    failing = (f"the {len(showcase)} upright images that a forced-invariance model gets wrong and SLA right, "
               if showcase else "")
    first = f"the first {pair}, " if pair else ""
    note = (f"Precomputed for {len(pages)} of {len(y)} test images: {failing}{first}"
            f"the most and least confident and every mistake of {html.escape(explore.prediction_label(model, mode))}, "
            f"in that order, at most {images}. {SCORING_NOTE} Hover a figure for its values; the mode bar appears on "
            f"hover.")
    _write(out, standalone_html(explorer_html(pages, title, include_plotlyjs=True, note=note), title))
    return out


def _load(run_dirs: Sequence[str | Path], device: str) -> tuple[list[explore.TrainedModel], DataBundle,
                                                                  TransformSet]:
    """The runs' models, named by the method each trained ("sla", "mt"), or "sla (folder)" when two share one."""
    models, data, tset = explore.load_models({str(k): Path(p) for k, p in enumerate(run_dirs)}, device)
    methods = [m.method.name for m in models]
    named = [explore.TrainedModel(m.method.name if methods.count(m.method.name) == 1 else
                                  f"{m.method.name} ({Path(p).name})", m.model, m.method)
             for m, p in zip(models, run_dirs, strict=True)]
    return named, data, tset


def _reference(models: Sequence[explore.TrainedModel]) -> tuple[str, str]:
    """The (model, mode) whose mistakes and confidence choose the images: SLA's aggregate if a model has it."""
    for mode in ("aggregated", "single"):
        for m in models:
            if mode in m.method.modes and ("joint" in m.method.heads or mode == "single"):
                return m.name, mode
    return models[0].name, models[0].method.modes[0]


def _check_out_file(out: Path, overwrite: bool) -> None:
    """Refuse before any work: a folder, an existing file without `overwrite`, a folder that is missing or where
    no file can be created (tried with a temporary file, removed at once)."""
    if out.is_dir():
        raise LabkitError(f"--out {out} is a folder; give the path of an .html file")
    if out.suffix.lower() not in (".html", ".htm"):
        raise LabkitError(f"--out {out} must end in .html")
    if out.exists() and not overwrite:
        raise LabkitError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    parent = out.parent
    if not parent.is_dir():
        raise LabkitError(f"cannot write {out}: the folder {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise LabkitError(f"cannot write {out}: {e.strerror or e}") from None


def _write(out: Path, text: str) -> None:
    try:
        write_text(out, text)  # atomic: never half a file at `out`
    except OSError as e:
        raise LabkitError(f"cannot write {out}: {e.strerror or e}") from None


_CSS = """<style>
.labkit-static-explorer .controls { display: flex; gap: .6em; align-items: center; flex-wrap: wrap; }
.labkit-static-explorer .controls button[aria-pressed='true'] { background: #0072B2; color: white; }
.labkit-static-explorer .status .true { color: #D55E00; }
.labkit-static-explorer .note { color: #555; max-width: 60em; }
</style>"""

# Inline, no network: reads the payload, rebuilds each figure of the chosen (image, rotation) from the first page's
# figure and that page's differences (figure_panel.MERGE_JS, the live explorer's rule), and draws it with
# Plotly.react (in place, no flicker).
_SCRIPT = """(function () {
  const root = document.getElementById('__ID__');
  const D = JSON.parse(root.querySelector('script.payload').textContent);
  const select = root.querySelector('select.image'), status = root.querySelector('.status');
  const turns = Array.from(root.querySelectorAll('button[data-turn]'));
  const divs = {};
  root.querySelectorAll('.labkit-static-figure').forEach(d => { divs[d.dataset.key] = d; });
  const state = {page: 0, turn: 0};
  __MERGE__
  const figure = key => labkitMerge(D.base[key], D.pages[state.page].diffs[state.turn][key]);
  function draw() {
    select.value = String(state.page);
    turns.forEach((b, k) => b.setAttribute('aria-pressed', String(k === state.turn)));
    status.innerHTML = D.pages[state.page].status[state.turn];
    for (const key of D.keys) {
      const f = figure(key);
      window.Plotly.react(divs[key], f.data, f.layout, {displayModeBar: 'hover', displaylogo: false});
    }
    root.dataset.index = D.pages[state.page].index;  // for tests and screen readers: the test image shown
    root.dataset.drawn = state.page + ':' + state.turn;
  }
  function go(page, turn) { state.page = page; state.turn = turn; draw(); }
  select.addEventListener('change', () => go(Number(select.value), state.turn));
  root.querySelector('.prev').addEventListener('click',
    () => go((state.page + D.pages.length - 1) % D.pages.length, state.turn));
  root.querySelector('.next').addEventListener('click', () => go((state.page + 1) % D.pages.length, state.turn));
  turns.forEach((b, k) => b.addEventListener('click', () => go(state.page, k)));
  let tries = 0;
  (function start() {  // a notebook's copy draws with the page's plotly.js, which may still be loading
    if (window.Plotly) { draw(); return; }
    if (++tries < 100) { setTimeout(start, 50); return; }
    status.textContent = 'plotly.js is not on this page: open the HTML copy of the notebook, or use the live ' +
                         'explorer below';
  })();
})();"""
