"""Watch it learn: the recorder's numbers and cost, the live view's one update per epoch, the slider figure.

The cost test times the recorder inside the same fit it records (side by side, one process): its share of the
fit's wall time must stay at or under 5 %. Browser tests of the live view and of the slider are in test_browser.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from labkit.data.datasets import load_data
from labkit.figures import learning, viz
from labkit.sla import transforms
from labkit.training.callbacks import ShowcaseRecorder, showcase_indices
from labkit.training.config import TrainConfig
from labkit.training.experiment import train_run
from tests.support import one_thread

ROT = transforms.get("rotation")
SHORT = dict(dataset="digits", train_fraction=0.3, epochs=3, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", 0.3)


@pytest.fixture(scope="module")
def watched(tmp_path_factory, digits):
    """sla and mt trained 3 epochs with a live view attached: (view, run folders)."""
    view = learning.LearningView(digits, ROT, epochs=3)
    root = tmp_path_factory.mktemp("watched")
    with one_thread():
        runs = {m: train_run(TrainConfig(method=m, **SHORT), root / m, progress=False, callbacks=(view.recorder(m),))
                for m in ("sla", "mt")}
    return view, runs


def test_every_run_records_its_heads_on_the_showcase_images(tmp_path, digits):
    """Without a view, train_run records anyway: every 6 and 9 of the test split, upright then turned by 180°."""
    with one_thread():
        run = train_run(TrainConfig(method="sla", **SHORT), tmp_path / "run", progress=False)
    saved = run.showcase()
    K = len(showcase_indices(digits))
    assert list(saved["index"]) == showcase_indices(digits) and K == int(sum((digits.test.y == c).sum()
                                                                              for c in (6, 9)))
    assert saved["joint"].shape == (3, 2 * K, digits.N, ROT.M) and saved["joint"].dtype == np.float16
    assert list(saved["epoch"]) == [1, 2, 3] and saved["turned"][0] == 1
    np.testing.assert_allclose(saved["joint"].astype(np.float64).sum(axis=(2, 3)), 1.0, atol=5e-3)
    assert np.allclose(saved["loss"], [h["train_loss"] for h in run.history()])


def test_the_recorder_costs_at_most_five_percent_of_training(tmp_path):
    """Timed inside the fit it records: the recorder's seconds over the fit's wall seconds (metrics.json's
    train_seconds), on the default preset's setting (digits, 30 % of the split), 10 epochs."""
    spent: list[float] = []

    class Timed(ShowcaseRecorder):
        def after_epoch(self, learner):
            start = time.perf_counter()
            super().after_epoch(learner)
            spent.append(time.perf_counter() - start)

        def after_fit(self, learner):
            start = time.perf_counter()
            super().after_fit(learner)
            spent.append(time.perf_counter() - start)

    shares = {}
    for method in ("sla", "mt"):
        spent.clear()
        with one_thread():
            run = train_run(TrainConfig(method=method, **{**SHORT, "epochs": 10}), tmp_path / method,
                            progress=False, callbacks=(Timed(),))
        shares[method] = sum(spent) / run.metrics()["train_seconds"]
    print(f"recorder's share of training: {', '.join(f'{m} {100 * s:.1f}%' for m, s in shares.items())}")
    assert max(shares.values()) <= 0.05, shares


def test_the_live_view_gets_one_update_per_epoch(watched):
    view, runs = watched
    assert view.updates == 6  # 3 epochs of sla, then 3 of mt
    title = view.panel.updates[0]["layout"]["title"]["text"]
    assert "sla after epoch 3, mt after epoch 3 (of 3)" in title
    live = view.panel.figure(0)
    assert np.asarray(live.data[1].z).sum() == pytest.approx(1.0, abs=5e-3)  # the joint table of input 0


def test_the_slider_figure_holds_every_epoch_as_a_frame(watched, digits):
    view, runs = watched
    fig = learning.learning_figure(runs, digits, ROT, view.inputs)
    assert [f.name for f in fig.frames] == ["1", "2", "3"]
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2", "3"] and all(s.method == "animate" for s in steps)
    saved = runs["sla"].showcase()
    first = learning._position(list(saved["index"]), view.inputs[0])
    np.testing.assert_allclose(np.asarray(fig.frames[1].data[0].z), saved["joint"][1, first].astype(np.float64))
    # the truth of the turned input is outlined at (its class, rot180)
    turned = [p for p, (_, t) in enumerate(view.inputs) if t][0]
    cls, turn = view.learning.truths[turned]
    assert ROT.names[turn] == "rot180" and cls == int(digits.test.y[view.inputs[turned][0]])
    assert any(s.y0 == cls - 0.5 and s.x0 == turn - 0.5 for s in fig.layout.shapes)


def test_a_view_of_cached_runs_shows_their_last_epoch(watched, digits):
    view, runs = watched
    again = learning.LearningView(digits, ROT, epochs=3)
    again.finish(runs)
    assert again.updates == 1 and "mt after epoch 3" in again.panel.updates[0]["layout"]["title"]["text"]
    empty = viz.learning_view_update(again.learning, -1)
    assert float(np.asarray(empty["data"][1]["z"]).sum()) == 0.0


def test_while_the_second_model_trains_the_first_shows_its_last_epoch(digits):
    """Live, sla has trained its 3 epochs and mt 1: sla's panels and curves stay at its epoch 3."""
    view = learning.LearningView(digits, ROT, epochs=3)
    K = len(showcase_indices(digits))
    frame = {"loss": 1.0, "val single": 0.5, "joint": np.zeros((2 * K, digits.N, ROT.M)),
             "class": np.zeros((2 * K, digits.N)), "transform": np.zeros((2 * K, ROT.M))}
    for epoch in (1, 2, 3):
        frame["joint"] = np.full((2 * K, digits.N, ROT.M), epoch / 100)
        view._epoch("sla", {**frame, "epoch": epoch})
    view._epoch("mt", {**frame, "epoch": 1})
    update = view.panel.updates[0]
    assert "sla after epoch 3, mt after epoch 1" in update["layout"]["title"]["text"]
    assert np.asarray(update["data"][1]["z"]).max() == pytest.approx(0.03)  # sla's epoch 3, not its epoch 1
    assert len(update["data"][-4]["x"]) == 3 and len(update["data"][-2]["x"]) == 1  # sla's loss, mt's loss


def test_default_inputs_are_a_nine_upright_and_a_six_turned(digits):
    (nine, upright), (six, turned) = learning.default_inputs(digits)
    assert int(digits.test.y[nine]) == 9 and not upright and int(digits.test.y[six]) == 6 and turned
    assert learning.input_name(digits, (six, True)) == f"#{six}: a 6, turned by 180°"
    assert torch.equal(digits.test.y[showcase_indices(digits)].unique(), torch.tensor([6, 9]))
