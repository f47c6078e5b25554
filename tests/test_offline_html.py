"""HTML copies that read offline (labkit.offline_html): TeX becomes MathML and no script loads from the network.

Fast tests check the converter on strings and every notebook's markdown; browser tests open copies in headless
Chromium with the network blocked: one exported from the notebooks' real equation cells (a screenshot goes to
runs/screenshots/maths.png), and notebook 04 executed with the smoke preset.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

from labkit.core import paths
from labkit.core.errors import LabkitError
from labkit.lab import runner
from labkit.lab.offline_html import is_remote, notebook_to_html, tex_to_mathml

NOTEBOOKS = runner.notebook_paths()
SHOTS = paths.runs_root() / "screenshots"
# what raw TeX looks like on a page: delimiters, or a command the notebooks use
RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$|\\(mid|tilde|frac|sum|text|mathcal|mathrm|big|Big|"
                     r"operatorname|times|top|sigma|beta)\b")
MATHS_IN_SOURCE = re.compile(r"\$\$.+?\$\$|\$.+?\$", re.S)


def _markdown_notebook(*sources: str, code: str = "") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) for s in sources]
    if code:
        cell = nbformat.v4.new_code_cell(code, execution_count=1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=code)]
        nb.cells.append(cell)
    return nb


def _equation_cells(paths: list[Path]) -> list[str]:
    """The repository's markdown cells that hold maths, as written."""
    cells = [c for p in paths for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"]
    return [c.source for c in cells if "$" in c.source]


def _maths_count(sources: list[str]) -> int:
    """How many formulas the markdown holds (inline code spans cannot hold any)."""
    return sum(len(MATHS_IN_SOURCE.findall(re.sub(r"`[^`\n]*`", "", s))) for s in sources)


def _visible_text(page: str) -> str:
    """The text a reader sees outside maths and code, as BeautifulSoup reads it."""
    soup = BeautifulSoup(page, features="html.parser")
    for tag in soup(["script", "style", "math", "code", "pre"]):
        tag.decompose()
    return soup.get_text(" ")


def _remote_scripts(page: str) -> list[str]:
    soup = BeautifulSoup(page, features="html.parser")
    return [s["src"] for s in soup.find_all("script", src=True) if is_remote(s["src"])]


# --------------------------------------------------------------------------------------------------- converter
def test_tex_becomes_inline_or_display_mathml():
    inline = tex_to_mathml(r"N \times M")
    assert inline.startswith('<math display="inline">') and "<mo>×</mo>" in inline and "xmlns" not in inline
    display = tex_to_mathml(r"\frac{1}{M}\sum_{j=1}^{M} w_{ij}^\top f(\tilde x_j)", display=True)
    assert display.startswith('<math display="block">') and "<mfrac>" in display
    assert "<munderover><mo>∑</mo>" in display, "a display sum takes its limits under and over it"
    assert '<mover accent="true"><mi>x</mi>' in display, r"\tilde is an accent on x"
    assert "<mi>ℒ</mi>" in tex_to_mathml(r"\mathcal L"), "MathML Core ignores mathvariant=script"
    assert "<mi>softmax</mi>" in tex_to_mathml(r"\operatorname{softmax}_i")
    assert "&lt;" in tex_to_mathml(r"\text{a<b}"), "a < in text stays escaped"


def test_tex_the_converter_cannot_read_is_a_one_line_error():
    with pytest.raises(LabkitError, match=r"cannot convert the TeX 'x\^'"):
        tex_to_mathml("x^")
    with pytest.raises(LabkitError, match=r"unknown command \\nosuchcommand"):
        tex_to_mathml(r"\nosuchcommand x")


def test_markdown_maths_converts_but_code_and_escaped_dollars_stay():
    code = 'price = "$5 $\\frac{1}{2}$"  # $x$'
    page = notebook_to_html(_markdown_notebook(
        r"Inline $a_i$, then $$\frac{1}{M}$$ and `$x$ costs \frac` in code; it costs \$5 or \$6.", code=code))
    soup = BeautifulSoup(page, features="html.parser")
    markdown = soup.select_one(".jp-MarkdownCell")
    assert [m["display"] for m in markdown.find_all("math")] == ["inline", "block"]
    assert markdown.find("code").get_text() == r"$x$ costs \frac", "a code span keeps its dollars"
    assert "it costs $5 or $6." in markdown.get_text(), r"an escaped \$ is a dollar sign, not maths"
    code_cell = soup.select_one(".jp-CodeCell")
    assert not code_cell.find_all("math")
    assert code_cell.select_one(".jp-InputArea").get_text().count(code) == 1, "code cells are left alone"
    assert code in code_cell.select_one(".jp-OutputArea").get_text(), "outputs are left alone"


def test_no_script_loads_from_another_machine():
    nb = _markdown_notebook("$x$")
    figure = nbformat.v4.new_code_cell("fig", execution_count=1)  # what plotly's notebook renderer writes
    figure.outputs = [nbformat.v4.new_output("display_data", data={"text/html": (
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/tex-svg.min.js"></script>'
        '<script type="text/javascript">window.PLOTLYENV = {};</script><div id="fig">figure</div>')})]
    nb.cells.append(figure)
    page = notebook_to_html(nb)
    assert not _remote_scripts(page) and "window.PLOTLYENV" in page and 'id="fig"' in page
    assert "mathjax" not in page.lower() and "require.min.js" not in page
    assert is_remote("https://cdn.example/x.js") and is_remote("//cdn.example/x.js")
    assert not any(map(is_remote, ["file:///tmp/x.js", "x.js", "data:text/javascript,1"]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_formula_in_the_notebooks_converts(path):
    sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    page = notebook_to_html(_markdown_notebook(*sources))  # raises on TeX latex2mathml cannot read
    assert page.count("<math ") == _maths_count(sources)
    text = _visible_text(page)
    assert not RAW_TEX.search(text), f"raw TeX left in {path.name}: {RAW_TEX.search(text)[0]!r}"


# ---------------------------------------------------------------------------------------- headless Chromium
def _open_offline(browser, path: Path):
    """A page showing `path` whose every request off the machine fails (and is recorded), as on a plane."""
    context = browser.new_context(viewport={"width": 1100, "height": 1400}, device_scale_factor=2)
    context.set_offline(True)
    page = context.new_page()
    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith("file:"):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    return page, blocked


def _check_rendered_maths(page, blocked: list[str], expected: int) -> None:
    text = page.evaluate("document.body.innerText")
    assert not RAW_TEX.search(text), f"raw TeX on the page: {RAW_TEX.search(text)[0]!r}"
    assert page.locator("math").count() >= expected
    assert page.evaluate("[...document.scripts].filter(s => s.src && !s.src.startsWith('file:')).length") == 0
    assert not blocked, f"the page asked the network for {blocked[:3]}"
    fraction = page.locator('math[display="block"]:has(mfrac)').first.bounding_box()
    line = page.locator('math[display="inline"]').first.bounding_box()
    assert fraction["width"] > 0 and fraction["height"] > 1.5 * line["height"], "a fraction stacks, taller than a line"


@pytest.mark.browser
def test_equations_render_offline_in_chromium(tmp_path, chromium_browser):
    sources = _equation_cells(NOTEBOOKS)
    html = tmp_path / "maths.html"
    html.write_text(notebook_to_html(_markdown_notebook(*sources)), encoding="utf-8")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser = chromium_browser
    page, blocked = _open_offline(browser, html)
    _check_rendered_maths(page, blocked, _maths_count(sources))
    section = page.locator(".jp-MarkdownCell", has=page.locator("h2", has_text="Aggregate")).first
    section.screenshot(path=str(SHOTS / "maths.png"))


@pytest.mark.browser
@pytest.mark.slow
def test_executed_notebook_04_reads_offline(tmp_path, monkeypatch, chromium_browser):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))  # train for real (one smoke epoch, ~40 s)
    summary = runner.run_notebooks("smoke", only=["04"], out_root=tmp_path, log=lambda _: None)
    html = Path(summary["notebooks"]["04_joint_probabilities"]["html"])
    assert not _remote_scripts(html.read_text())
    browser = chromium_browser
    page, blocked = _open_offline(browser, html)
    _check_rendered_maths(page, blocked, _maths_count(_equation_cells([runner.find_notebook("04")])))
    page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
    # printed on A4 (794 px wide at 96 dpi), every figure fits the page: none has a fixed width over
    # viz.MAX_WIDTH, and the others are redrawn at the page's width before printing
    page.set_viewport_size({"width": 794, "height": 1123})
    page.emulate_media(media="print")
    page.wait_for_timeout(1500)
    widths = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.getBoundingClientRect()"
                           ".right)")
    assert widths and max(widths) <= 794, f"a figure reaches {max(widths):.0f} px on a 794 px page"


def test_no_figure_builder_fixes_a_width_wider_than_a_printed_page():
    import numpy as np

    from labkit.figures import viz

    rows = [{"method": m, "mode": "single", "acc_mean": 0.9, "acc_std": 0.01, "forwards_per_image": 1, "seeds": 3}
            for m in ("baseline", "sla")]
    classes, names = [str(c) for c in range(10)], ["rot0", "rot90", "rot180", "rot270"]
    figures = [viz.view_grid(np.zeros((24, 1, 8, 8)), [str(k) for k in range(24)], cols=24),
               viz.joint_label_grid(classes, names), viz.joint_heatmap(np.zeros((4, 10, 4)), classes, names),
               viz.conditional_bars(np.zeros((4, 10)), classes, names),
               viz.prediction_bars({"a": np.zeros(10)}, classes),
               viz.multitask_heads(np.zeros((4, 10)), np.zeros((4, 4)), classes, names),
               viz.confusion_heatmaps({"a": np.zeros((10, 10)), "b": np.zeros((10, 10)), "c": np.zeros((10, 10))},
                                      classes),
               viz.accuracy_bars(rows), viz.accuracy_vs_cost(rows), viz.history_curves({}, ["train_loss"] * 3),
               viz.accuracy_by_labels([{**r, "images_per_class": k} for r in rows for k in (5, 126)]),
               viz.accuracy_by_class_size({f"R = {r}": ([100, 50, 10], {"baseline": [0.9, 0.8, 0.5],
                                                                         "sla": [0.9, 0.8, 0.6]})
                                           for r in (10, 50, 100)})]
    for fig in figures:
        assert fig.layout.width is None or fig.layout.width <= viz.MAX_WIDTH, (fig.layout.title.text, fig.layout.width)
