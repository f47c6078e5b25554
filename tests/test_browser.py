"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, notebook 04 run in headless Chromium
(Debian's package, driven by Playwright), the explorer rendered and driven, screenshots under runs/browser/.

Nothing in the repository is touched except runs/browser/: the notebook is copied into a temporary root (with
EPOCHS=1 and OUT_DIR pointing into that temporary folder), training goes to a temporary LABKIT_CACHE, and Jupyter's
config, runtime and settings folders are temporary too. The server is stopped in a `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "04_joint_probabilities.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = REPO / "runs" / "browser"
RUN_ALL_TIMEOUT_MS = 600_000  # training two tiny runs on 2 busy CPU cores can take minutes
UI_TIMEOUT_MS = 120_000
EPOCHS = 8  # with the notebook's TRAIN_FRACTION, enough for the models to be sure of many views (~1 min on 2 CPUs)


def _require_browser():
    """Skip on a developer machine without Chromium or Playwright; in CI their absence is a failure."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _jupyter_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_RUNTIME_DIR": "runtime", "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces", "IPYTHONDIR": "ipython", "LABKIT_CACHE": "cache"}
    for var, sub in dirs.items():
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp / sub)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # no news pop-up over the screenshots, and no update check (the test never uses the network)
    labconfig = tmp / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    return env


def _start_lab(root: Path, tmp: Path, port: int, token: str) -> subprocess.Popen:
    log = open(tmp / "jupyter.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    return subprocess.Popen(cmd, cwd=root, env=_jupyter_env(tmp), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: the kernels die with it


def _wait_for_server(proc: subprocess.Popen, port: int, token: str, log: Path, timeout: float = 120.0) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode} before serving:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on 127.0.0.1:{port} within {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


# JavaScript run in the page: the explorer's live plotly figure called `key` (its layout.meta), and its numbers.
_FIND = "(key) => Array.from(document.querySelectorAll('.js-plotly-plot')).find(" \
        "gd => gd.layout && gd.layout.meta && gd.layout.meta.explorer === key)"
_Z0 = f"(key) => {{ const gd = ({_FIND})(key); return gd && gd.data && gd.data.length ? gd.data[0].z : null; }}"


_STARTED = ("() => Array.from(document.querySelectorAll('.jp-InputPrompt'))"
            ".some(e => /\\[(\\d+|\\*)\\]/.test(e.textContent))")


_STATUS_HAS = "(text) => document.querySelector('.labkit-explorer-status').innerText.includes(text)"


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, again if no cell started (a click before the kernel is connected does nothing)."""
    for _ in range(attempts):
        _click(page, page.locator(".lm-MenuBar-item", has_text="Run").first)
        _click(page, page.locator('.lm-Menu-item[data-command="runmenu:run-all"]'))
        try:
            page.wait_for_function(_STARTED, timeout=60_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    page.screenshot(path=str(SHOTS / "failed_run_all.png"))
    pytest.fail(f"Run All Cells started no cell in {attempts} tries; see {SHOTS / 'failed_run_all.png'}")


def _click(page, target, tries: int = 10) -> None:
    """Click `target`, accepting any dialog that covers it (see `_dismiss_dialogs`) between short tries."""
    for _ in range(tries):
        _dismiss_dialogs(page)
        try:
            target.click(timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: something covers the target, or it is not there yet
            continue
    target.click()  # a last try with the page's default timeout: its error says what blocks the click


def _dismiss_dialogs(page) -> None:
    """Accept any modal JupyterLab opened on its own (a kernel chooser on a fresh machine, a notice), saying which:
    it would otherwise swallow every click. Its default button keeps the notebook's own kernel."""
    dialogs = page.locator(".jp-Dialog")
    for _ in range(3):
        if not dialogs.count():
            return
        text = " ".join(dialogs.first.inner_text().split())
        print(f"JupyterLab dialog accepted: {text[:200]!r}")
        page.screenshot(path=str(SHOTS / "dialog.png"))
        dialogs.first.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(1000)


def _errors_in_notebook(page) -> list[str]:
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()


def _explorer_shot(page, name: str) -> Path:
    box = page.locator(".labkit-explorer").first
    box.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # let plotly finish drawing
    path = SHOTS / name
    box.screenshot(path=str(path))
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; closed afterwards whatever happens."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def lab_page(root: Path, work: Path, height: int, timeout_ms: int) -> Iterator[tuple[Any, int, str]]:
    """JupyterLab serving `root` (state under `work`) and a headless Chromium page on it: (page, port, token).
    The server is stopped and its runtime folder removed afterwards; its log's tail is printed (pytest shows it on
    failure)."""
    port, token = _free_port(), secrets.token_hex(16)
    proc = _start_lab(root, work, port, token)
    try:
        _wait_for_server(proc, port, token, work / "jupyter.log")
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page, port, token
    finally:
        _stop(proc)
        print(f"--- end of the JupyterLab log ---\n{_tail(work / 'jupyter.log')}")
        shutil.rmtree(work / "runtime", ignore_errors=True)


def test_notebook_04_explorer_in_jupyterlab(tmp_path):
    _require_browser()
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    _smoke_copy(root, tmp_path / "out")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with lab_page(root, work, 3600, UI_TIMEOUT_MS) as (page, port, token):
        _drive(page, port, token, tmp_path)


def _drive(page, port: int, token: str, tmp_path: Path) -> None:
    """Run notebook 04 (METHODS mt, sla, sla+sd), then drive the explorer's controls and watch SLA's heatmap."""
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    _run_all_cells(page)
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

    _click(page, page.locator(".widget-button", has_text="9s").first)  # change the image choice: the first 9
    page.wait_for_function(f"(old) => JSON.stringify(({_Z0})('joint sla')) !== JSON.stringify(old)", arg=before)
    after = page.evaluate(_Z0, "joint sla")
    assert len(after) == 10 and len(after[0]) == 4, "the heatmap should be N=10 classes by M=4 rotations"
    assert abs(sum(map(sum, after)) - 1.0) < 1e-3, "view 0's joint table should sum to 1"
    assert after != before, "choosing another image did not change SLA's joint heatmap"
    page.wait_for_function(_STATUS_HAS, arg="true label 9")
    _explorer_shot(page, "explorer_after_9s.png")

    views_before = page.evaluate(_Z0, "views")
    _click(page, page.locator(".widget-toggle-buttons button", has_text="180°").first)  # turn the 9 by hand
    page.wait_for_function(f"(old) => JSON.stringify(({_Z0})('views')) !== JSON.stringify(old)", arg=views_before)
    page.wait_for_function(_STATUS_HAS, arg="rotated by hand by 180°")
    _explorer_shot(page, "explorer_9_turned_180.png")
    # the notebook's static figures (what an executed copy shows): the 6 turned by hand
    page.locator(".jp-MarkdownOutput h2", has_text="A 6 turned by hand").first.evaluate("e => e.scrollIntoView()")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "static_6_turned_180.png"))
