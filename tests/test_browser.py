"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, notebook 04 run in headless Chromium
(Debian's package, driven by Playwright), the explorer rendered and driven, screenshots under runs/browser/.

Nothing in the repository is touched except runs/browser/: the notebook is copied into a temporary root (with
EPOCHS=1 and OUT_DIR pointing into that temporary folder), training goes to a temporary LABKIT_CACHE, and Jupyter's
config, runtime and settings folders are temporary too. The server is stopped in a `finally`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labkit.core.errors import LabkitError
from labkit.lab.browser import FIND_FIGURE, click, lab_page, run_all_cells

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "04_joint_probabilities.ipynb"
SHOTS = REPO / "runs" / "browser"
RUN_ALL_TIMEOUT_MS = 600_000  # training two tiny runs on 2 busy CPU cores can take minutes
UI_TIMEOUT_MS = 120_000
EPOCHS = 8  # with the notebook's TRAIN_FRACTION, enough for the models to be sure of many views (~1 min on 2 CPUs)


def _smoke_copy(root: Path, out_dir: Path) -> None:
    """Copy notebook 04 into root with its parameters cell set for a quick run."""
    nb = json.loads((REPO / "notebooks" / NOTEBOOK).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).splitlines()
    wanted = {"EPOCHS": str(EPOCHS), "OUT_DIR": repr(str(out_dir)), "DEVICE": repr("cpu"), "STATIC_IMAGES": "4"}
    for i, line in enumerate(lines):
        name = line.split(":")[0].strip()
        if name in wanted:
            lines[i] = f"{line.split('=')[0]}= {wanted.pop(name)}  # set by tests/test_browser.py"
    assert not wanted, f"parameters cell of {NOTEBOOK} lacks {sorted(wanted)}"
    cell["source"] = "\n".join(lines)
    (root / NOTEBOOK).write_text(json.dumps(nb))


# JavaScript run in the page: the numbers of the explorer's live plotly figure called `key` (its layout.meta)
_Z0 = f"(key) => {{ const gd = ({FIND_FIGURE})(key); return gd && gd.data && gd.data.length ? gd.data[0].z : null; }}"


_STATUS_HAS = "(text) => document.querySelector('.labkit-explorer-status').innerText.includes(text)"


def _errors_in_notebook(page) -> list[str]:
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()


def _explorer_shot(page, name: str) -> Path:
    box = page.locator(".labkit-explorer").first
    box.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # let plotly finish drawing
    path = SHOTS / name
    box.screenshot(path=str(path))
    return path


def test_notebook_04_explorer_in_jupyterlab(tmp_path, chromium_ready):
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    _smoke_copy(root, tmp_path / "out")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with lab_page(root, work, 3600, UI_TIMEOUT_MS, env={"LABKIT_CACHE": str(work / "cache")}) as (page, base, token):
        _drive(page, base, token, tmp_path)


def _drive(page, base: str, token: str, tmp_path: Path) -> None:
    """Run notebook 04 (METHODS mt, sla, sla+sd), then drive the explorer's controls and watch SLA's heatmap."""
    page.goto(f"{base}lab/tree/{NOTEBOOK}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    try:
        run_all_cells(page)
    except LabkitError as e:
        page.screenshot(path=str(SHOTS / "failed_run_all.png"))
        pytest.fail(f"{e}; see {SHOTS / 'failed_run_all.png'}")
    try:  # the explorer is the last cell: its heatmap appears once every cell above has run
        page.wait_for_function(f"() => ({_Z0})('joint sla') !== null", timeout=RUN_ALL_TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(SHOTS / "failed_run_all.png"))
        pytest.fail(f"the explorer never rendered; errors shown in the notebook: {_errors_in_notebook(page)}; "
                    f"see {SHOTS / 'failed_run_all.png'}")
    assert not _errors_in_notebook(page), _errors_in_notebook(page)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert 0.0 <= results["acc.sla.aggregated"] <= 1.0
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    _explorer_shot(page, "explorer_initial.png")
    before = page.evaluate(_Z0, "joint sla")

    click(page, page.locator(".widget-button", has_text="9s").first)  # change the image choice: the first 9
    page.wait_for_function(f"(old) => JSON.stringify(({_Z0})('joint sla')) !== JSON.stringify(old)", arg=before)
    after = page.evaluate(_Z0, "joint sla")
    assert len(after) == 10 and len(after[0]) == 4, "the heatmap should be N=10 classes by M=4 rotations"
    assert abs(sum(map(sum, after)) - 1.0) < 1e-3, "view 0's joint table should sum to 1"
    assert after != before, "choosing another image did not change SLA's joint heatmap"
    page.wait_for_function(_STATUS_HAS, arg="(9, rot0)")
    _explorer_shot(page, "explorer_after_9s.png")

    views_before = page.evaluate(_Z0, "views")
    click(page, page.locator(".widget-toggle-buttons button", has_text="180°").first)  # turn the 9 by hand
    page.wait_for_function(f"(old) => JSON.stringify(({_Z0})('views')) !== JSON.stringify(old)", arg=views_before)
    page.wait_for_function(_STATUS_HAS, arg="rotated by hand by 180°")
    _explorer_shot(page, "explorer_9_turned_180.png")
    # the notebook's static figures (what an executed copy shows): the 6 turned by hand
    page.locator(".jp-MarkdownOutput h2", has_text="A 6 turned by hand").first.evaluate("e => e.scrollIntoView()")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "static_6_turned_180.png"))


# ---- watch it learn: notebook 02's live view in JupyterLab, and its slider in an HTML copy ------------------------
WATCH_EPOCHS = 6
_PANEL_DRAWS = ("() => { const p = Array.from(document.querySelectorAll('.labkit-figure-panel')).find("
                "el => el.querySelector('.js-plotly-plot') && el.querySelector('.js-plotly-plot').layout && "
                "el.querySelector('.js-plotly-plot').layout.meta && "
                "el.querySelector('.js-plotly-plot').layout.meta.learning === 'live'); "
                "return p ? Number(p.dataset.draws || 0) : -1; }")
_BUSY = "() => document.querySelector(\".jp-Notebook-ExecutionIndicator[data-status='busy']\") !== null"
_QUEUED = "() => Array.from(document.querySelectorAll('.jp-InputPrompt')).some(e => e.textContent.includes('[*]'))"
_STDERR = ("() => Array.from(document.querySelectorAll(\".jp-OutputArea-output[data-mime-type="
           "'application/vnd.jupyter.stderr']\")).map(e => e.textContent).join('\\n')")


def _wait_for_the_first_draw(page, idle_s: float = 20.0) -> None:
    """Until the watch panel has drawn once. Should no cell be running or queued ([*]) for `idle_s` with no panel (a
    Run All that JupyterLab dropped part of the way), Run All once more; if it stops again, fail with what the cells
    printed to stderr, rather than wait out the whole timeout."""
    deadline, idle_since, tries = time.monotonic() + RUN_ALL_TIMEOUT_MS / 1000, None, 1
    while time.monotonic() < deadline:
        if page.evaluate(_PANEL_DRAWS) >= 1:
            return
        if page.evaluate(_QUEUED):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_s:
            assert tries < 2, f"the cells stopped before the watch cell drew: {page.evaluate(_STDERR)[-2000:]!r}"
            run_all_cells(page)
            idle_since, tries = None, tries + 1
        page.wait_for_timeout(250)
    raise AssertionError(f"the watch panel did not draw in {RUN_ALL_TIMEOUT_MS / 1000:.0f} s")


def _watch_copy(root: Path, out_dir: Path) -> None:
    """Notebook 02 up to and including its "watch it learn" cell, set for a quick run (WATCH_EPOCHS epochs)."""
    nb = json.loads((REPO / "notebooks" / "02_invariance_six_nine.ipynb").read_text())
    end = next(k for k, c in enumerate(nb["cells"]) if "".join(c["source"]).startswith("watch = learning.LearningView"))
    nb["cells"] = nb["cells"][:end + 1]
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    wanted = {"EPOCHS": str(WATCH_EPOCHS), "OUT_DIR": repr(str(out_dir)), "DEVICE": repr("cpu"), "SEEDS": "[0]"}
    lines = "".join(cell["source"]).splitlines()
    for i, line in enumerate(lines):
        name = line.split(":")[0].strip()
        if name in wanted:
            lines[i] = f"{line.split('=')[0]}= {wanted.pop(name)}  # set by tests/test_browser.py"
    assert not wanted
    cell["source"] = "\n".join(lines)
    (root / "02_watch.ipynb").write_text(json.dumps(nb))


def test_watch_it_learn_redraws_live_while_the_cell_trains(tmp_path, chromium_ready, screenshots):
    """The watch cell trains sla and mt (a fresh cache) while JupyterLab shows its figure panel: the panel is
    redrawn at least twice while the kernel is still busy with that cell, one redraw per epoch. The page samples
    (draws, busy) itself every 100 ms, so the record does not depend on how fast the test's round trips are."""
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    _watch_copy(root, tmp_path / "out")
    with lab_page(root, work, 1800, UI_TIMEOUT_MS, env={"LABKIT_CACHE": str(work / "cache")}) as (page, base, token):
        page.goto(f"{base}lab/tree/02_watch.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        page.evaluate(f"() => {{ window.labkitSeen = []; setInterval(() => window.labkitSeen.push("
                      f"[({_PANEL_DRAWS})(), ({_BUSY})()]), 100); }}")
        run_all_cells(page)
        _wait_for_the_first_draw(page)
        shots, deadline = [], time.monotonic() + RUN_ALL_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            draws, busy = page.evaluate(_PANEL_DRAWS), page.evaluate(_BUSY)
            panel = page.locator(".labkit-figure-panel").last
            if busy and draws in (3, 2 * WATCH_EPOCHS - 1) and draws not in shots:
                panel.scroll_into_view_if_needed()
                panel.screenshot(path=str(screenshots / f"watch_live_draw{draws}.png"))
                shots.append(draws)
            if not busy and draws >= 2 * WATCH_EPOCHS:
                break
            page.wait_for_timeout(150)
        panel.screenshot(path=str(screenshots / "watch_live_done.png"))
        seen = [tuple(x) for x in page.evaluate("() => window.labkitSeen")]
    while_busy = [d for d, b in seen if b and d >= 1]
    assert while_busy and max(while_busy) - min(while_busy) >= 2, sorted(set(seen))[-20:]
    assert max(d for d, _ in seen) >= 2 * WATCH_EPOCHS, "one redraw per epoch of each of the two runs"


def test_watch_it_learn_slider_moves_through_the_epochs_in_an_html_copy(tmp_path, chromium_browser, screenshots):
    """The slider figure in an executed copy's HTML, with the network blocked: dragging plotly's slider to its
    start shows epoch 1 (its title and its numbers), with no kernel."""
    import nbformat

    from labkit.lab import runner

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("""
import tempfile, torch
from labkit import learning, load_data, theme, train_run, transforms, TrainConfig
theme.setup_notebook()
torch.set_num_threads(1)
data, tset = load_data("digits", 0.3), transforms.get("rotation")
root = tempfile.mkdtemp()
runs = {m: train_run(TrainConfig(dataset="digits", method=m, epochs=4, train_fraction=0.3, device="cpu"),
                     f"{root}/{m}", progress=False) for m in ("sla", "mt")}
learning.learning_figure(runs, data, tset)
""")]
    path = tmp_path / "watch.ipynb"
    nbformat.write(nb, path)
    import papermill

    papermill.execute_notebook(str(path), str(path), kernel_name="python3", progress_bar=False,
                               kernel_manager_class=runner.quiet_kernel_manager())
    html = runner.write_html(path)
    page = chromium_browser.new_page(viewport={"width": 900, "height": 1300})
    page.route("http*://**", lambda route: route.abort())  # offline: nothing may load from the network
    page.goto(html.as_uri())
    page.wait_for_function("() => document.querySelector('.js-plotly-plot .slider-grip-rect') !== null")
    title = "() => document.querySelector('.js-plotly-plot .gtitle').textContent"
    z0 = "() => JSON.stringify(document.querySelector('.js-plotly-plot').data[1].z)"
    assert "after epoch 4" in page.evaluate(title)
    last = page.evaluate(z0)
    plot = page.locator(".js-plotly-plot").first
    plot.screenshot(path=str(screenshots / "watch_slider_epoch4.png"))
    grip = page.locator(".slider-grip-rect").first.bounding_box()
    rail = page.locator(".slider-rail-rect").first.bounding_box()
    page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    page.mouse.down()
    page.mouse.move(rail["x"] + 2, grip["y"] + grip["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => ({title})().includes('after epoch 1')")
    assert page.evaluate(z0) != last, "the slider moved but the joint table did not change"
    plot.screenshot(path=str(screenshots / "watch_slider_epoch1.png"))
