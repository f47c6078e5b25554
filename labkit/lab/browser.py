"""Headless Chromium for the lab: open pages offline, take screenshots, print PDFs (`print_pdf`), and drive a
JupyterLab served on 127.0.0.1 with a token.

Debian's Chromium (`apt-get install chromium`), driven through Playwright's Python package; nothing is
downloaded. The HTML copies, the PDF handouts, the browser tests and the explorer benchmark all go through here.

    with chromium() as browser:                     # closed afterwards, whatever happens
        page = browser.new_page()
    with lab_page(root, work) as (page, url):       # JupyterLab on loopback serving `root`, and a page on it
        page.goto(url + "lab/tree/04_joint_probabilities.ipynb")
        run_all_cells(page)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError
from ..core.paths import kernel_pythonpath

__all__ = ["CHROMIUM", "missing", "chromium", "jupyterlab", "lab_page", "run_all_cells", "click",
           "dismiss_dialogs", "FIND_FIGURE", "A4_PX", "PRINT_MARGIN_PX", "Printed", "print_pdf", "pdf_pages"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# JavaScript run in a page: the plotly figure whose layout.meta.explorer is `key` (the live explorer's figures)
FIND_FIGURE = ("(key) => Array.from(document.querySelectorAll('.js-plotly-plot')).find("
               "gd => gd.layout && gd.layout.meta && gd.layout.meta.explorer === key)")
_STARTED = ("() => Array.from(document.querySelectorAll('.jp-InputPrompt'))"
            ".some(e => /\\[(\\d+|\\*)\\]/.test(e.textContent))")


def missing() -> list[str]:
    """What this machine lacks to drive Chromium, as install hints (empty when nothing is missing)."""
    lacking = [] if Path(CHROMIUM).exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        lacking.append("the playwright Python package (pip install playwright)")
    return lacking


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; closed afterwards whatever happens."""
    if missing():
        raise LabkitError("headless Chromium needs " + " and ".join(missing()))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# -------------------------------------------------------------------------------------------------- JupyterLab
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jupyter_env(work: Path, extra: dict[str, str]) -> dict[str, str]:
    """Jupyter's config, runtime and settings under `work`, this labkit first on PYTHONPATH, no news pop-up."""
    env = dict(os.environ)
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_RUNTIME_DIR": "runtime", "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces", "IPYTHONDIR": "ipython"}
    for var, sub in dirs.items():
        (work / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(work / sub)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, kernel_pythonpath()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    labconfig = work / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    return {**env, **extra}


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


def _wait_for_server(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabkitError(f"JupyterLab exited with {proc.returncode} before serving:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise LabkitError(f"JupyterLab did not answer at {url} within {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def jupyterlab(root: Path, work: Path, env: dict[str, str] | None = None, timeout: float = 120.0,
               args: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """JupyterLab serving `root` on 127.0.0.1 (a free port, a fresh token), its state under `work` (its kernels'
    connection files in `work/runtime`), with `args` added to its command line (`make lab`'s flags, say):
    yields (base URL, token). Stopped afterwards, with its kernels; the log's tail is printed."""
    port, token = _free_port(), secrets.token_hex(16)
    log_path = work / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    cmd += list(args)
    work.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=_jupyter_env(work, env or {}), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # own group: kernels die with it
    try:
        base = f"http://127.0.0.1:{port}/"
        _wait_for_server(proc, f"{base}api/status?token={token}", log_path, timeout)
        yield base, token
    finally:
        _stop(proc)
        print(f"--- end of the JupyterLab log ---\n{_tail(log_path)}")
        shutil.rmtree(work / "runtime", ignore_errors=True)


@contextlib.contextmanager
def lab_page(root: Path, work: Path, height: int = 1000, timeout_ms: int = 120_000,
             env: dict[str, str] | None = None) -> Iterator[tuple[Any, str, str]]:
    """`jupyterlab(root, work)` and a headless Chromium page on it: yields (page, base URL, token)."""
    with jupyterlab(root, work, env) as (base, token), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.set_default_timeout(timeout_ms)
        yield page, base, token


def run_all_cells(page: Any, attempts: int = 3) -> None:
    """Run > Run All Cells, again if no cell started (a click before the kernel is connected does nothing)."""
    for _ in range(attempts):
        click(page, page.locator(".lm-MenuBar-item", has_text="Run").first)
        click(page, page.locator('.lm-Menu-item[data-command="runmenu:run-all"]'))
        try:
            page.wait_for_function(_STARTED, timeout=60_000)
            return
        except Exception:  # playwright's TimeoutError
            page.keyboard.press("Escape")
    raise LabkitError(f"Run All Cells started no cell in {attempts} tries")


def click(page: Any, target: Any, tries: int = 10) -> None:
    """Click `target`, accepting any dialog that covers it (see `dismiss_dialogs`) between short tries."""
    for _ in range(tries):
        dismiss_dialogs(page)
        try:
            target.click(timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: something covers the target, or it is not there yet
            continue
    target.click()  # a last try with the page's default timeout: its error says what blocks the click


def dismiss_dialogs(page: Any) -> None:
    """Accept any modal JupyterLab opened on its own (a kernel chooser on a fresh machine, a notice), saying which:
    it would otherwise swallow every click. Its default button keeps the notebook's own kernel."""
    dialogs = page.locator(".jp-Dialog")
    for _ in range(3):
        if not dialogs.count():
            return
        print(f"JupyterLab dialog accepted: {' '.join(dialogs.first.inner_text().split())[:200]!r}")
        dialogs.first.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(1000)


# ------------------------------------------------------------------------------------------------------ printing
A4_PX = 794  # an A4 page's width, 210 mm, in CSS pixels (96 per inch)
PRINT_MARGIN_PX = 38  # 10 mm each side: what is left for the content is A4_PX - 2 * PRINT_MARGIN_PX = 718 px
# JavaScript run in a page: every element that a figure or formula is drawn in, with how far right it reaches
_DRAWN = ".js-plotly-plot, .jp-RenderedImage img, .jp-OutputArea-output svg, math[display=block]"
_MEASURE = """() => Array.from(document.querySelectorAll('""" + _DRAWN + """'))
  .filter(e => !e.closest('.js-plotly-plot') || e.classList.contains('js-plotly-plot'))
  .map(e => { const r = e.getBoundingClientRect();
              return {kind: e.classList.contains('js-plotly-plot') ? 'figure' : e.tagName.toLowerCase(),
                      title: ((e.layout && e.layout.title && (e.layout.title.text || e.layout.title)) || '') + '',
                      width: Math.round(r.width), height: Math.round(r.height), right: Math.round(r.right)}; })"""
# On paper nothing scrolls: long code and output lines wrap instead of being cut at the cell's edge, and a cell is
# not split across two pages where it fits on one. The page's own margin is the only margin, and the In/Out prompt
# column goes, so a figure has the whole printed width.
_PRINT_CSS = """
body { margin: 0 !important; padding: 0 !important; }
.jp-InputPrompt, .jp-OutputPrompt, .jp-OutputArea-prompt { display: none !important; }
.jp-InputArea-editor pre, .jp-OutputArea-output pre, .highlight pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.jp-Cell { break-inside: avoid; }
"""
_PLOTS_DRAWN = ("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".every(gd => gd._fullLayout && gd.querySelector('.main-svg'))")


@dataclass(frozen=True)
class Printed:
    """A PDF written from an HTML page: its page count, and each figure, image or display formula laid out on the
    page (kind, title, width and height in px, how far right it reaches), and those reaching past the content
    width."""

    pdf: Path
    pages: int
    drawn: tuple[dict, ...]
    content_px: int

    @property
    def too_wide(self) -> list[dict]:
        return [d for d in self.drawn if d["right"] > self.content_px + 1]


def print_pdf(page_file: Path, pdf: Path, browser: Any | None = None, timeout_ms: int = 60_000) -> Printed:
    """`page_file` (an HTML copy, labkit.lab.runner.write_html) printed to the A4 PDF `pdf` by headless Chromium,
    with the network blocked: laid out at the printed width first, so each figure is drawn at the size it is
    printed, and measured. A figure wider than the page is clipped in print: `Printed.too_wide` names it."""
    if browser is None:
        with chromium() as own:
            return print_pdf(page_file, pdf, own, timeout_ms)
    content = A4_PX - 2 * PRINT_MARGIN_PX
    page = browser.new_page(viewport={"width": content, "height": 1100})
    try:
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                   else route.abort())
        page.emulate_media(media="print")
        page.goto(Path(page_file).resolve().as_uri(), wait_until="load", timeout=timeout_ms)
        page.wait_for_function(_PLOTS_DRAWN, timeout=timeout_ms)
        page.add_style_tag(content=_PRINT_CSS)
        drawn = tuple(page.evaluate(_MEASURE))
        pdf.parent.mkdir(parents=True, exist_ok=True)
        margin = f"{PRINT_MARGIN_PX}px"
        data = page.pdf(format="A4", print_background=True,
                        margin={"top": margin, "bottom": margin, "left": margin, "right": margin})
    finally:
        page.close()
    pdf.write_bytes(data)
    return Printed(pdf, pdf_pages(data), drawn, content)


def pdf_pages(data: bytes) -> int:
    """The number of pages of a PDF Chromium wrote (its page objects: `/Type /Page`, not `/Pages`)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
