"""Explorer latency, printed as one JSON document: the live explorer in JupyterLab (click to updated figures) and
the static explorer's export (its size and load time), both in headless Chromium on the CPU.

    python benchmarks/explorer_latency.py              # 20 clicks; about 3 minutes on a quiet 2-core machine
    python benchmarks/explorer_latency.py --clicks 8

Two tiny runs (sla and mt, tests/_reliability.py's TINY config) are trained into a temporary folder. Live: a
one-cell notebook shows `explore.Explorer.from_runs` in JupyterLab (tests/test_browser.py's start-up helpers:
token, temporary Jupyter folders, the server stopped afterwards); each click on the hand-rotation buttons is timed
in the page, from the click to the frame after the last figure ("heads mt") holds new data; median over the
clicks (the first visit of a rotation computes its explanations, later ones reuse the cache). To say what the
time is spent on, the page also logs when the panel's message arrived and how long plotly.js took to redraw the
five figures, and the Python side of a click (`Explorer.update`: `figure_updates` and one message) is timed in
this process, without a browser, and the same redraws are timed in a bare page that holds only plotly.js (what
plotly.js itself costs here, without JupyterLab). Static: `export-explorer` over the same runs, the
file's size, and the time from navigation to the first drawn page (median over 3 loads, network blocked).
Target: a live click under 150 ms. A script, not a test: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the repo's labkit, without installing

import torch  # noqa: E402

from labkit.figures import explore, panel, static_explorer  # noqa: E402
from labkit.lab.browser import FIND_FIGURE as _FIND  # noqa: E402
from labkit.lab.browser import chromium, lab_page, run_all_cells  # noqa: E402
from labkit.training.config import TrainConfig  # noqa: E402
from labkit.training.experiment import train_run  # noqa: E402

TARGET_MS = 150.0
LAST = "heads mt"  # the explorer's last figure: when it holds new data, every figure does
_CLICK = f"""async (label) => {{
  const find = {_FIND};
  const before = JSON.stringify(find('{LAST}').data[1].z);
  const button = Array.from(document.querySelectorAll('.widget-toggle-buttons button'))
    .find(b => b.textContent.trim() === label);
  const t0 = performance.now();
  button.click();
  while (JSON.stringify(find('{LAST}').data[1].z) === before) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => requestAnimationFrame(r));
  const panel = document.querySelector('.labkit-figure-panel').dataset;
  return {{total: performance.now() - t0, arrived: Number(panel.drawStart) - t0, draw: Number(panel.drawMs)}};
}}"""


def _train(root: Path) -> dict[str, Path]:
    """Tiny sla and mt runs on the digits (2 epochs on 10 % of the split, one thread): models to click through."""
    runs = {m: root / m for m in ("sla", "mt")}
    torch.set_num_threads(1)
    for method, path in runs.items():
        config = TrainConfig(method=method, epochs=2, batch_size=16, train_fraction=0.1, device="cpu")
        train_run(config, path, progress=False)
    return runs


def _notebook(path: Path, runs: dict[str, Path]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from labkit import explore, theme\ntheme.setup_notebook()\n"
        f"explorer = explore.Explorer.from_runs({ {k: str(v) for k, v in runs.items()}!r}, device='cpu')\nexplorer")]
    nbformat.write(nb, path)


def live_clicks(runs: dict[str, Path], work: Path, clicks: int) -> list[dict[str, float]]:
    root = work / "root"
    root.mkdir(parents=True)
    _notebook(root / "explorer.ipynb", runs)
    with lab_page(root, work, 3000, 300_000) as (page, base, token):
        page.goto(f"{base}lab/tree/explorer.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        run_all_cells(page)
        page.wait_for_function(f"() => ({_FIND})('{LAST}') !== undefined")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        labels = list(explore.HAND_ROTATIONS)
        return [page.evaluate(_CLICK, labels[(k + 1) % len(labels)]) for k in range(clicks)]


def python_side(runs: dict[str, Path], clicks: int) -> list[float]:
    """Explorer.update for the same rotation clicks, in this process: what the kernel does per click."""
    ex = explore.Explorer.from_runs(runs, device="cpu")
    times = []
    for k in range(clicks):
        start = time.perf_counter()
        ex.rotation.value = (k + 1) % 4  # observes -> update()
        times.append(1e3 * (time.perf_counter() - start))
    return times


_REDRAW = """async ([bases, updates, clicks]) => {
  const divs = bases.map(() => document.body.appendChild(document.createElement('div')));
  const draw = (u) => divs.forEach((div, k) => {
    const fig = labkitMerge(bases[k], u[k]);
    Plotly.react(div, fig.data, fig.layout, {displayModeBar: 'hover', displaylogo: false});
  });
  draw(updates[0]);
  const times = [];
  for (let c = 1; c <= clicks; c++) {
    const t0 = performance.now();
    draw(updates[c % updates.length]);
    times.push(performance.now() - t0);
    await new Promise(r => requestAnimationFrame(r));
  }
  return times;
}"""


def plotly_alone(runs: dict[str, Path], work: Path, clicks: int) -> list[float]:
    """The same redraws (the explorer's five figures, the updates of the four rotations) in a bare page that holds
    only plotly.js: what plotly.js itself costs per click on this machine, without JupyterLab or a kernel."""
    from plotly.offline import get_plotlyjs

    ex = explore.Explorer.from_runs(runs, device="cpu")
    updates = []
    for turns in range(4):
        ex.rotation.value = turns
        updates.append(ex.panel.updates)
    page_file = work / "plotly_alone.html"
    page_file.write_text(f"<!DOCTYPE html><html><head><script>{get_plotlyjs()}</script><script>"
                         f"{panel.MERGE_JS}</script></head><body></body></html>")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_file.as_uri())
        return page.evaluate(_REDRAW, [ex.panel.figures, updates, clicks])


def static_export(runs: dict[str, Path], work: Path, images: int) -> dict[str, float]:
    out = work / "explorer.html"
    start = time.perf_counter()
    static_explorer.export(list(runs.values()), out, images=images)
    seconds = time.perf_counter() - start
    loads = []
    with chromium() as browser:
        for _ in range(3):
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
            t0 = time.perf_counter()
            page.goto(out.as_uri())
            page.wait_for_function("() => document.querySelector('.labkit-static-explorer').dataset.drawn === '0:0'")
            loads.append(time.perf_counter() - t0)
            page.close()
    return {"images": images, "bytes": out.stat().st_size, "export_s": round(seconds, 1),
            "load_s_median": round(statistics.median(loads), 2), "load_s": [round(t, 2) for t in loads]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--images", type=int, default=static_explorer.DEFAULT_IMAGES)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labkit-latency-"))
    try:
        runs = _train(work / "runs")
        clicks = live_clicks(runs, work / "lab", args.clicks)
        kernel = python_side(runs, args.clicks)
        alone = plotly_alone(runs, work, args.clicks)
        browser = [c["total"] for c in clicks]
        report = {
            "live_click_ms_median": round(statistics.median(browser), 1), "target_ms": TARGET_MS,
            "live_click_ms": [round(t) for t in browser],
            # where a click's time goes, medians: the click until the panel's message arrives in the page (kernel
            # and messages), then plotly.js redrawing the five figures; the rest is the frame that shows them
            "message_arrived_ms_median": round(statistics.median(c["arrived"] for c in clicks), 1),
            "plotly_redraw_ms_median": round(statistics.median(c["draw"] for c in clicks), 1),
            "plotly_alone_redraw_ms_median": round(statistics.median(alone), 1),
            "python_update_ms_median": round(statistics.median(kernel), 1),
            "python_update_ms": [round(t) for t in kernel],
            "static_export": static_export(runs, work, args.images),
        }
        report["live_target_met"] = report["live_click_ms_median"] < TARGET_MS
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
