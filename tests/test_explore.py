"""The explorer without a browser: set its controls, check its figures hold the right numbers; and its builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from labkit.data.datasets import load_data
from labkit.data.splits import DataBundle, Split
from labkit.figures import explore, panel, viz
from labkit.sla import inference, transforms
from labkit.sla import joint as jl
from labkit.sla.methods import get as get_method
from labkit.sla.models import build_model
from labkit.training.config import TrainConfig
from labkit.training.resolve import resolve

ROT = transforms.get("rotation")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def models(digits):
    """Untrained but seeded mt and sla+sd models: every number the explorer shows is still a function of them."""
    out = []
    for name in ("mt", "sla+sd"):
        model = resolve(TrainConfig(method=name, device="cpu", seed=1), torch.device("cpu"), digits).model
        out.append(explore.TrainedModel(name, model.eval(), get_method(name)))
    return out


@pytest.fixture(scope="module")
def results(models, digits):
    return explore.test_results(models, ROT, digits.test.x, digits.test.y, digits.N)


@pytest.fixture
def explorer(models, digits, results):
    return explore.Explorer(models, digits, ROT, results=results)


def _sla(models):
    return next(m for m in models if m.name == "sla+sd")


def _z(widget, k=0):
    return np.asarray(widget.data[k].z, dtype=np.float64)


def _joint_of(model, x):
    with torch.no_grad():
        logits = model.model(ROT.expand(x[None]))["joint"]
    return jl.joint_probabilities(logits, ROT.M).numpy()  # (M, N, M)


# ---- explain: one forward, the library's numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mt", "sla+sd"])
def test_explain_matches_the_library_modes(models, digits, name):
    m = next(m for m in models if m.name == name)
    x = digits.test.x[7]
    e = explore.explain(m.model, m.method, ROT, x)
    assert list(e.modes) == list(m.method.modes)
    for mode, probs in e.modes.items():
        with torch.no_grad():
            expected = inference.predict(m.model, x[None], ROT, mode).softmax(-1)[0]
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)


def test_explain_joint_and_conditionals(models, digits):
    m = _sla(models)
    x = digits.test.x[3]
    e = explore.explain(m.model, m.method, ROT, x)
    with torch.no_grad():
        logits = m.model(ROT.expand(x[None]))["joint"]
    torch.testing.assert_close(e.joint, jl.joint_probabilities(logits, ROT.M))
    torch.testing.assert_close(e.conditional, jl.conditional_probabilities(logits, ROT.M)[0])
    # the conditional of view j is the joint's column j on view j, renormalised over classes
    for j in range(ROT.M):
        column = e.joint[j, :, j]
        torch.testing.assert_close(e.conditional[j], column / column.sum())
    assert e.view_class is None and e.view_transform is None


def test_explain_multitask_heads(models, digits):
    m = models[0]
    x = digits.test.x[3]
    e = explore.explain(m.model, m.method, ROT, x)
    with torch.no_grad():
        out = m.model(ROT.expand(x[None]))
    torch.testing.assert_close(e.view_transform, out["transform"].softmax(-1))
    torch.testing.assert_close(e.view_class, out["class"].softmax(-1))
    assert e.joint is None and e.view_transform.shape == (ROT.M, ROT.M)


def test_hand_transform_rotates_and_reorders():
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).view(3, 4, 4)
    assert torch.equal(explore.hand_transform(x, 1), torch.rot90(x, 1, dims=(1, 2)))
    assert torch.equal(explore.hand_transform(x, 4), x)
    assert torch.equal(explore.hand_transform(x, 0, (2, 0, 1)), x[[2, 0, 1]])
    assert explore.colour_orders()["BGR"] == (2, 1, 0) and len(explore.colour_orders()) == 6


# ---- the widget, driven through its controls -------------------------------------------------------------------------

def test_heatmap_equals_the_joint_probabilities_of_the_chosen_image(explorer, models, digits):
    sla = _sla(models)
    explorer.test_index.value = 42
    assert explorer.index == 42 and explorer.image_set.value == "all test images"
    expected = _joint_of(sla, digits.test.x[42])
    heat = explorer.figures["joint sla+sd"]
    for v in range(ROT.M):
        np.testing.assert_allclose(_z(heat, v), expected[v], atol=1e-6)
    before = _z(heat).copy()
    explorer.image_set.value = "class 9"
    first_nine = int(torch.nonzero(digits.test.y == 9)[0])
    assert explorer.index == first_nine and explorer.true_label == 9 and explorer.test_index.value == first_nine
    heat = explorer.figures["joint sla+sd"]
    np.testing.assert_allclose(_z(heat), _joint_of(sla, digits.test.x[first_nine])[0], atol=1e-6)
    assert not np.allclose(_z(heat), before)
    # the true label's outline moved to row 9 in every panel
    assert {int(round(s.y0 + 0.5)) for s in heat.layout.shapes} == {9}


def test_position_slider_walks_the_chosen_set(explorer, digits):
    explorer.image_set.value = "class 6"
    sixes = torch.nonzero(digits.test.y == 6).flatten().tolist()
    assert explorer.position.max == len(sixes) - 1
    explorer.position.value = 3
    assert explorer.index == sixes[3] and explorer.test_index.value == sixes[3]
    assert "truth <b" in explorer.status.value and ">(6, rot0)</b>" in explorer.status.value


def test_quick_buttons_jump_to_sixes_and_nines(explorer, digits):
    buttons = {b.description: b for b in explorer.quick}
    assert set(buttons) == {"6s", "9s"}
    buttons["9s"].click()
    assert explorer.image_set.value == "class 9" and explorer.true_label == 9
    buttons["6s"].click()
    assert explorer.image_set.value == "class 6" and explorer.true_label == 6
    assert explorer.index == int(torch.nonzero(digits.test.y == 6)[0])


def test_hand_rotation_changes_the_views_and_every_prediction(explorer, models, digits):
    explorer.test_index.value = 11
    upright = [np.asarray(t.z).copy() for t in explorer.figures["views"].data]
    preds_before = [np.asarray(t.y).copy() for t in explorer.figures["predictions"].data]
    explorer.rotation.value = 2  # 180° by hand
    turned = [np.asarray(t.z) for t in explorer.figures["views"].data]
    # view j of the turned image is view j+2 of the upright one (rotations compose)
    for j in range(ROT.M):
        np.testing.assert_array_equal(turned[j], upright[(j + 2) % ROT.M])
    assert not np.array_equal(turned[0], upright[0])
    x = torch.rot90(digits.test.x[11], 2, dims=(1, 2))
    np.testing.assert_allclose(_z(explorer.figures["joint sla+sd"]), _joint_of(_sla(models), x)[0], atol=1e-6)
    preds_after = [np.asarray(t.y) for t in explorer.figures["predictions"].data]
    assert any(not np.allclose(a, b) for a, b in zip(preds_before, preds_after, strict=True))
    assert "rotated by hand by 180°" in explorer.status.value
    assert "rotated by hand by 180°" in explorer.figures["views"].layout.title.text


def test_multitask_figure_follows_the_image(explorer, models, digits):
    mt = models[0]
    explorer.test_index.value = 5
    with torch.no_grad():
        out = mt.model(ROT.expand(digits.test.x[5][None]))
    heads = explorer.figures["heads mt"]
    np.testing.assert_allclose(_z(heads, 0), out["class"].softmax(-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(_z(heads, 1), out["transform"].softmax(-1).numpy(), atol=1e-6)


def test_widgets_hold_the_static_builders_numbers(explorer):
    explorer.image_set.value = "class 3"
    explorer.position.value = 2
    static = explorer.static_figures()
    assert set(static) == set(explorer.figures)
    for key, fig in static.items():
        for live, still in zip(explorer.figures[key].data, fig.data, strict=True):
            for attr in ("z", "y"):
                if getattr(still, attr, None) is not None and not isinstance(getattr(still, attr), tuple | str):
                    np.testing.assert_array_equal(np.asarray(getattr(live, attr)), np.asarray(getattr(still, attr)))


@pytest.mark.parametrize("index, turns", [(42, 0), (11, 2), (300, 1), (5, 3)])
def test_a_click_redraws_exactly_the_figures_the_builders_make(explorer, index, turns):
    """The fast path (figure_updates merged into the figures built once) draws, key for key, the JSON that
    explanation_figures builds for that image and turn: any drift between the two fails here."""
    explorer.test_index.value = index
    explorer.rotation.value = turns
    _, built = explore.figures_for(explorer.models, explorer.data, ROT, explorer.x, explorer.y, index, turns)
    assert list(built) == explorer.keys
    for k, key in enumerate(explorer.keys):
        want = panel.figure_json(built[key].update_layout(meta={"explorer": key}))
        assert panel.merge(explorer.panel.figures[k], explorer.panel.updates[k]) == want, key


def test_a_click_sends_numbers_and_builds_no_figure(explorer, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a click rebuilt the figures")

    monkeypatch.setattr(explore, "explanation_figures", refuse)
    monkeypatch.setattr(viz.FigureSpec, "figure", refuse)  # every explorer figure is built through a FigureSpec
    sent = []
    explorer.panel.observe(lambda change: sent.append(change["new"]), "updates")
    explorer.rotation.value = 1
    explorer.test_index.value = 77
    assert len(sent) == 2 and all(len(u) == len(explorer.keys) for u in sent)  # one message per change


def test_explanations_are_cached_per_image_and_hand_transform(explorer, monkeypatch):
    calls = []
    real = explore.explain
    monkeypatch.setattr(explore, "explain", lambda *a: calls.append(1) or real(*a))
    explorer.test_index.value = 20
    n = len(calls)
    assert n == 2  # one forward per model for the new image
    explorer.test_index.value = 21
    explorer.test_index.value = 20  # back to a cached image: no new forward
    assert len(calls) == n + 2


def test_misclassified_sets_are_right(explorer, models, digits):
    y = digits.test.y
    for m in models:
        for mode in m.method.modes:
            with torch.no_grad():
                pred = inference.predict(m.model, digits.test.x, ROT, mode).argmax(-1)
            expected = torch.nonzero(pred != y).flatten().numpy()
            label = f"misclassified by {explore.prediction_label(m.name, mode)}"
            np.testing.assert_array_equal(explorer.sets[label], expected)
    label = "misclassified by sla+sd · aggregated"
    if len(explorer.sets[label]):
        explorer.image_set.value = label
        assert explorer.index == explorer.sets[label][0]
        assert "sla+sd · aggregated <b>" in explorer.status.value
        said = explorer.status.value.split("sla+sd · aggregated <b>")[1].split(";")[0]
        assert "✗" in said


def _result(probs: torch.Tensor) -> inference.ModeResult:
    return inference.ModeResult(0.0, torch.zeros(3, 3), probs, 0.0)


def test_image_sets_and_examples_on_known_predictions():
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    probs = torch.tensor([[.9, .05, .05], [.2, .7, .1], [.1, .6, .3], [.1, .8, .1], [.4, .5, .1], [.1, .1, .8]])
    sets = explore.image_sets(y, ["a", "b", "c"], {"m": {"single": _result(probs)}})
    np.testing.assert_array_equal(sets["class b"], [1, 3])
    np.testing.assert_array_equal(sets["misclassified by m · single"], [2, 4])
    chosen = explore.choose_images(y, ["a", "b", "c"], _result(probs), showcase=(2, 1), limit=20, per_class=1)
    assert explore.first_of(chosen) == {"a c": 2, "a b": 1, "most confident": 0, "wrong": 4}


def test_choose_images_shows_the_showcase_pair_first_then_confidence_then_mistakes():
    y = torch.tensor([6, 9, 0, 6, 1, 9, 2, 0])
    probs = torch.full((8, 10), 0.05)
    for i, (guess, p) in enumerate([(6, .9), (9, .5), (0, .95), (0, .4), (1, .8), (9, .7), (3, .3), (0, .6)]):
        probs[i, guess] = p
    classes = [str(c) for c in range(10)]
    chosen = explore.choose_images(y, classes, _result(probs), showcase=(6, 9), limit=20, per_class=1)
    assert list(chosen)[:2] == [0, 1] and chosen[0] == "a 6" and chosen[1] == "a 9"  # the first 6, the first 9
    assert chosen[2] == "most confident" and chosen[6] == "wrong" and chosen[7] == "least confident"
    assert list(chosen).index(6) < list(chosen).index(3), "the least confident mistake first"
    wrong = [i for i in range(8) if int(probs[i].argmax()) != int(y[i])]
    assert set(wrong) <= set(chosen), "every mistake is shown while the limit allows"
    assert list(explore.choose_images(y, classes, _result(probs), (6, 9), limit=3, per_class=1)) == [0, 1, 2]
    with pytest.raises(Exception, match="choose at least one image"):
        explore.choose_images(y, classes, _result(probs), (6, 9), limit=0)


class _FixedTransformHead(nn.Module):
    """A fake model whose transformation head names view (j + shift) mod M of each sample-major expansion."""

    def __init__(self, M: int, shift: int) -> None:
        super().__init__()
        self.M, self.shift, self.w = M, shift, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        j = (torch.arange(len(x)) + self.shift) % self.M
        return {"class": torch.zeros(len(x), 10), "transform": 10 * nn.functional.one_hot(j, self.M).float()}


def test_transformation_accuracy_can_be_right_and_wrong():
    x = torch.randn(5, 1, 8, 8)
    mt = get_method("mt")
    assert explore.transformation_accuracy(explore.TrainedModel("f", _FixedTransformHead(4, 0), mt), ROT, x) == 1.0
    assert explore.transformation_accuracy(explore.TrainedModel("f", _FixedTransformHead(4, 1), mt), ROT, x) == 0.0


def test_rgb_data_gets_a_channel_control():
    torch.manual_seed(0)
    tset = transforms.get("color_perm3")
    split = Split(torch.randn(12, 3, 8, 8), torch.arange(12) % 3)
    data = DataBundle("toy", ("a", "b", "c"), split, split, split, (3, 8, 8), False, (0.5,) * 3, (0.25,) * 3)
    model = build_model("smallcnn", 3, 3, tset.M, get_method("sla").heads).eval()
    ex = explore.Explorer([explore.TrainedModel("sla", model, get_method("sla"))], data, tset)
    assert ex.colour is not None and ex.quick == []
    before = np.asarray(ex.figures["views"].data[0].z).copy()
    ex.colour.value = explore.colour_orders()["BGR"]
    after = np.asarray(ex.figures["views"].data[0].z)
    np.testing.assert_array_equal(after, before[..., ::-1])
    e = explore.explain(model, get_method("sla"), tset, split.x[0][[2, 1, 0]])
    np.testing.assert_allclose(_z(ex.figures["joint sla"]), e.joint[0].numpy(), atol=1e-6)


# ---- builders --------------------------------------------------------------------------------------------------------

CLASSES = [str(c) for c in range(10)]


def test_joint_heatmap_builder():
    rng = np.random.default_rng(0)
    joint = rng.dirichlet(np.ones(40), size=4).reshape(4, 10, 4)
    fig = viz.joint_heatmap(joint, CLASSES, ROT.names, true_label=6)
    assert len(fig.data) == 4
    for v in range(4):
        np.testing.assert_allclose(np.asarray(fig.data[v].z), joint[v])
        assert list(fig.data[v].x) == list(ROT.names) and list(fig.data[v].y) == CLASSES
    # one outline per panel, at (true class, the panel's own transformation)
    assert sorted((s.x0 + 0.5, s.y0 + 0.5) for s in fig.layout.shapes) == [(v, 6) for v in range(4)]
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    assert [a.text for a in fig.layout.annotations] == [f"input: view {v} ({n})" for v, n in enumerate(ROT.names)]
    assert fig.layout.yaxis.title.text == "class i" and fig.layout.xaxis.title.text == "transformation j"
    single = viz.joint_heatmap(joint[1], CLASSES, ROT.names)
    assert len(single.data) == 1 and not single.layout.shapes


def test_conditional_and_prediction_bars_mark_the_true_label():
    cond = np.full((4, 10), 0.1)
    cond[:, 3] = 0.5
    fig = viz.conditional_bars(cond, CLASSES, ROT.names, true_label=2)
    assert len(fig.data) == 4 and all(np.allclose(t.y, cond[0]) for t in fig.data)
    assert [s.x0 + 0.5 for s in fig.layout.shapes] == [2] * 4
    preds = {"sla · aggregated": np.eye(10)[9], "mt · single": np.eye(10)[6]}
    bars = viz.prediction_bars(preds, CLASSES, true_label=6)
    assert [t.name for t in bars.data] == ["sla · aggregated → 9", "mt · single → 6"]
    assert bars.layout.shapes[0].x0 + 0.5 == 6
    assert any(a.text == "true label: 6" for a in bars.layout.annotations)
    assert bars.layout.yaxis.range == (0, 1)


def test_view_grid_of_one_image_and_multitask_heads():
    images = np.zeros((4, 1, 8, 8))
    images[:, 0, 0, 0] = 1.0  # one ink pixel
    fig = viz.view_grid(images, [f"view {j}: {n}" for j, n in enumerate(ROT.names)], cols=3)
    assert [a.text for a in fig.layout.annotations] == [f"view {j}: {n}" for j, n in enumerate(ROT.names)]
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3"), ("x4", "y4")]
    assert fig.layout.xaxis4.domain == fig.layout.xaxis.domain  # view 3 wraps to the second row, first column
    z = np.asarray(fig.data[0].z)
    assert z.shape == (8, 8, 3) and z[0, 0].tolist() == [0, 0, 0] and z[1, 1].tolist() == [255, 255, 255]
    rgb = viz.to_display_images(np.stack([np.full((2, 2), v) for v in (1.0, 0.5, 0.0)])[None])  # (1, 3, 2, 2)
    assert rgb.shape == (1, 2, 2, 3) and rgb[0, 0, 0].tolist() == [255, 128, 0]
    heads = viz.multitask_heads(np.full((4, 10), 0.1), np.eye(4), CLASSES, ROT.names, true_label=1)
    assert len(heads.data) == 2 and np.allclose(np.asarray(heads.data[1].z), np.eye(4))
    no_transform = viz.multitask_heads(np.full((4, 10), 0.1), None, CLASSES, ROT.names)
    assert len(no_transform.data) == 1


def test_notebook_04_is_committed_clean_with_one_parameters_cell():
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "04_joint_probabilities.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and code.index(params[0]) == 0
    source = "".join(params[0]["source"])
    for key in ("DATASET", "TRANSFORM", "METHODS", "EPOCHS", "SEEDS", "DEVICE", "OUT_DIR", "PROGRESS"):
        line = next((ln for ln in source.splitlines() if ln.startswith(f"{key}:")), None)
        assert line is not None and "=" in line and "#" in line, f"{key} needs a typed literal with a comment"


# ---------------------------------------------------------------------------- scoring what a model can know
def _explanation(joint=None, view_class=None, view_transform=None, modes=None) -> explore.Explanation:
    return explore.Explanation(modes=modes or {}, joint=joint, view_class=view_class, view_transform=view_transform)


def _peak(shape, *at) -> torch.Tensor:
    t = torch.full(shape, 0.001)
    t[at] = 0.9
    return t


def test_a_turned_six_is_scored_as_the_pair_each_model_can_name():
    """A 6 turned by 180° is (6, rot180): SLA is right when its joint argmax is that pair, MT when its class head
    says 6 and its transformation head rot180, DA (a class head alone) when it says 6. A class-head answer "9" is
    wrong for DA; a joint answer (9, rot0) is wrong for SLA."""
    six = torch.zeros(1, 8, 8)
    six[0, :2] = 1.0  # any image whose half turn differs from itself
    truth = explore.hand_truth(ROT, six, quarter_turns=2)
    assert truth == ROT.names.index("rot180")
    assert explore.hand_truth(transforms.get("rotation2"), six, quarter_turns=1) is None  # a turn outside the set
    assert explore.view_truths(ROT, six, 2) == [2, 3, 0, 1]
    said = explore.verdicts({
        "sla": _explanation(joint=_peak((4, 10, 4), 0, 6, 2)),  # view 0: (6, rot180)
        "sla-wrong": _explanation(joint=_peak((4, 10, 4), 0, 9, 0)),  # view 0: (9, rot0), what it looks like
        "mt": _explanation(view_class=_peak((4, 10), 0, 6), view_transform=_peak((4, 4), 0, 2)),
        "mt-upright": _explanation(view_class=_peak((4, 10), 0, 6), view_transform=_peak((4, 4), 0, 0)),
        "da": _explanation(view_class=_peak((4, 10), 0, 6)),
        "baseline": _explanation(view_class=_peak((4, 10), 0, 9)),
    }, true_class=6, true_turn=truth)
    assert {v.model: v.right for v in said} == {"sla": True, "sla-wrong": False, "mt": True, "mt-upright": False,
                                                "da": True, "baseline": False}
    assert [(v.label, v.turn) for v in said][:2] == [(6, 2), (9, 0)] and said[4].turn is None


def test_a_turned_image_shows_its_class_readouts_as_read_upright():
    e = {"sla": _explanation(joint=_peak((4, 10, 4), 0, 6, 2), modes={"single": _peak((10,), 9)})}
    classes = [str(c) for c in range(10)]
    turned = explore.status_line(e, classes, 5, 6, quarter_turns=2, transform_names=ROT.names, true_turn=2)
    assert "(6, rot180)" in turned and "sla (joint argmax): <b>6 at rot180</b> ✓" in turned
    assert "reading the input as upright: sla · single <b>9</b>;" not in turned  # one readout: no separator
    assert turned.endswith("sla · single <b>9</b>") and "9</b> ✗" not in turned, "a turned input's readouts unmarked"
    upright = explore.status_line(e, classes, 5, 9, transform_names=ROT.names, true_turn=0)
    assert upright.endswith("sla · single <b>9</b> ✓")


def test_showcase_images_are_where_forced_invariance_fails_and_sla_is_right():
    """From known predictions: image 3 (a 9 that mt calls 6, every sla readout 9) and image 1 (a 2 that da calls
    3) qualify; image 2 (sla wrong too) and images 0 and 4 (everyone right) do not; the showcase pair comes
    first."""
    y = torch.tensor([6, 2, 9, 9, 0])

    def said(*labels):
        return _result(torch.nn.functional.one_hot(torch.tensor(labels), 10).float())

    models = [explore.TrainedModel(n, None, get_method(n)) for n in ("da", "mt", "sla")]
    results = {"da": {"single": said(6, 3, 9, 9, 0)}, "mt": {"single": said(6, 2, 6, 6, 0),
                                                              "aggregated": said(6, 2, 6, 9, 0)},
               "sla": {"single": said(6, 2, 9, 9, 0), "aggregated": said(6, 2, 8, 9, 0)}}
    classes = [str(c) for c in range(10)]
    chosen = explore.showcase_images(models, y, classes, results, showcase=(6, 9))
    assert list(chosen) == [3, 1], chosen
    assert chosen[3] == "a 9: mt · single say 6" and chosen[1] == "a 2: da · single say 3"
    first = explore.choose_images(y, classes, results["sla"]["aggregated"], (6, 9), limit=10, first=chosen)
    assert list(first)[:2] == [3, 1]
    assert explore.showcase_images(models[2:], y, classes, results, (6, 9)) == {}, "no invariant model: none"
