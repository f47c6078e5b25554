"""The static explorer (labkit.static_explorer, `python -m labkit export-explorer`): which images it chooses, how
its pages are packed, the export's one-line errors, and, in headless Chromium with the network blocked, an exported
file whose controls switch the figures to the numbers `explore.explain` gives for the image and rotation chosen.
Screenshots go to runs/screenshots/."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest

from labkit.core import paths
from labkit.figures import explore, static_explorer
from labkit.figures.panel import merge
from labkit.training.experiment import train_run
from tests.support import assert_one_line_error, one_thread, run_cli, tiny_config

SHOTS = paths.runs_root() / "screenshots"


# ------------------------------------------------------------------------------------------------- packing
@pytest.fixture
def runs(tiny_runs) -> dict[str, Path]:
    """The session's tiny trained sla and mt runs on the digits."""
    return {method: tiny_runs(method).path for method in ("sla", "mt")}


def test_pages_rebuild_every_figure_the_builders_make(runs):
    """Each page (image, rotation) merged into the figures built once is, byte for byte, the JSON of the figures
    `explore.figures_for` builds for it."""
    models, data, tset = static_explorer._load([runs["sla"], runs["mt"]], "cpu")
    x, y = explore.test_tensors(data)
    pages = static_explorer.collect(models, data, tset, x, y, {3: "three", 11: "eleven"})
    assert [m.name for m in models] == ["sla", "mt"] and len(pages) == 2
    payload = static_explorer._payload(pages)
    assert payload["rotations"] == list(explore.HAND_ROTATIONS) and len(payload["pages"]) == 2
    assert payload["keys"] == ["views", "predictions", "joint sla", "conditional sla", "heads mt"]
    for p, page in enumerate(pages.pages):
        for r, (rotation, turns) in enumerate(explore.HAND_ROTATIONS.items()):
            built = explore.figures_for(models, data, tset, x, y, page.index, turns)[1]
            for key in payload["keys"]:
                rebuilt = merge(payload["base"][key], payload["pages"][p]["diffs"][r][key])
                assert rebuilt == static_explorer._figure_json(built[key]), (p, rotation, key)
    joint = merge(payload["base"]["joint sla"], payload["pages"][1]["diffs"][2]["joint sla"])
    e = explore.explain(models[0].model, models[0].method, tset, explore.hand_transform(x[11], 2))
    np.testing.assert_allclose(_decode(joint["data"][2]["z"]), e.joint[2].numpy(), atol=1e-4)


def _decode(typed: dict) -> np.ndarray:
    """plotly's base64 typed array (float32 here) as numpy."""
    assert typed["dtype"] == "f4"
    shape = tuple(int(s) for s in typed["shape"].split(","))
    return np.frombuffer(base64.b64decode(typed["bdata"]), dtype=np.float32).reshape(shape)


def test_export_refuses_bad_input_in_one_line(runs, tmp_path):
    rc, _, err = run_cli("export-explorer", "--out", str(tmp_path / "e.html"))
    assert_one_line_error(rc, err, "needs at least one run folder")
    existing = tmp_path / "there.html"
    existing.write_text("keep me")
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), "--out", str(existing))
    assert_one_line_error(rc, err, "already exists", "--overwrite")
    assert existing.read_text() == "keep me"
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), "--out", str(tmp_path / "no" / "e.html"))
    assert_one_line_error(rc, err, "cannot write", "does not exist")
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), "--out", "/proc/e.html")
    assert_one_line_error(rc, err, "cannot write /proc/e.html")
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), "--out", str(tmp_path))
    assert_one_line_error(rc, err, "is a folder")
    rc, _, err = run_cli("export-explorer", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "e.html"))
    assert_one_line_error(rc, err, "nope")
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), "--out", str(tmp_path / "e.html"),
                         "--images", "0")
    assert_one_line_error(rc, err, "--images must be at least 1")
    assert not (tmp_path / "e.html").exists()


@pytest.mark.slow
def test_export_refuses_runs_on_different_transformations(runs, tmp_path):
    with one_thread():
        train_run(tiny_config(transform="rotation2", epochs=1), tmp_path / "r2", progress=False)
    rc, _, err = run_cli("export-explorer", "--runs", str(runs["sla"]), str(tmp_path / "r2"), "--out",
                         str(tmp_path / "e.html"))
    assert_one_line_error(rc, err, "one dataset and transformation set", "rotation2")


# ------------------------------------------------------------------------------------------------- browser
_ROOT = "document.querySelector('.labkit-static-explorer')"
_Z = ("(key) => { const gd = document.querySelector(`.labkit-static-figure[data-key=\"${key}\"]`);"
      " return gd._fullData.map(t => Array.from(t.z, row => Array.from(row))); }")  # what plotly drew, decoded


@pytest.mark.slow
@pytest.mark.browser
def test_exported_file_switches_image_and_rotation_offline(runs, tmp_path, chromium_browser):
    out = tmp_path / "explorer.html"
    rc, said, err = run_cli("export-explorer", "--runs", str(runs["sla"]), str(runs["mt"]), "--out", str(out),
                            "--images", "6")
    assert rc == 0, err
    assert "wrote" in said and "</script>" in out.read_text() and "<script src" not in out.read_text()
    models, data, tset = static_explorer._load([runs["sla"], runs["mt"]], "cpu")
    x, _ = explore.test_tensors(data)
    sla = models[0]
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser = chromium_browser
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requests = []
    page.route("**/*", lambda r: requests.append(r.request.url) or (
        r.continue_() if r.request.url.startswith("file:") else r.abort()))
    start = time.perf_counter()
    page.goto(out.as_uri())
    page.wait_for_function(f"() => {_ROOT}.dataset.drawn === '0:0'")
    print(f"export: {out.stat().st_size / 1e6:.2f} MB, drawn {time.perf_counter() - start:.2f} s after load")
    assert all(u.startswith("file:") for u in requests), requests

    def shown(turns: int) -> None:
        index = int(page.evaluate(f"() => {_ROOT}.dataset.index"))
        e = explore.explain(sla.model, sla.method, tset, explore.hand_transform(x[index], turns))
        np.testing.assert_allclose(np.array(page.evaluate(_Z, "joint sla")), e.joint.numpy(), atol=1e-4)

    shown(0)
    before = page.evaluate(_Z, "joint sla")
    page.select_option("select.image", "3")  # the image control
    page.wait_for_function(f"() => {_ROOT}.dataset.drawn === '3:0'")
    assert page.evaluate(_Z, "joint sla") != before
    shown(0)
    page.locator(".labkit-static-explorer").screenshot(path=str(SHOTS / "static_explorer_image.png"))
    before = page.evaluate(_Z, "joint sla")
    page.click("button[data-turn='2']")  # the rotation control: 180° by hand
    page.wait_for_function(f"() => {_ROOT}.dataset.drawn === '3:2'")
    assert page.evaluate(_Z, "joint sla") != before
    shown(2)
    assert "rotated by hand by 180°" in page.inner_text(".labkit-static-explorer .status")
    page.locator(".labkit-static-explorer").screenshot(path=str(SHOTS / "static_explorer_180.png"))
    page.click(".labkit-static-explorer .next")  # next image, the rotation kept
    page.wait_for_function(f"() => {_ROOT}.dataset.drawn === '4:2'")
    shown(2)
