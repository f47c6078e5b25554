"""Models and heads, the learning-rate schedule, and reproducible CPU training."""

import pytest
import torch

from labkit.data.datasets import load_data
from labkit.sla.methods import METHODS
from labkit.sla.models import MODELS, build_model
from labkit.training.config import TrainConfig
from labkit.training.engine import Learner
from labkit.training.resolve import resolve


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)])
def test_cifar_resnets_have_the_papers_size(name, params):
    model = build_model(name, 3, 10, 4, METHODS["baseline"].heads)
    n = sum(p.numel() for p in model.backbone.parameters())
    assert abs(n - params) / params < 0.01  # option A shortcuts: no weights beyond the paper's count


@pytest.mark.parametrize("name", list(MODELS))
def test_every_backbone_gives_every_methods_heads(name):
    shape = (1, 8, 8) if name == "smallcnn" else (3, 32, 32)
    x = torch.randn(2, *shape)
    for method in METHODS.values():
        model = build_model(name, shape[0], 10, 4, method.heads).eval()
        out = model(x)
        sizes = {"class": 10, "transform": 4, "joint": 40}
        assert {k: v.shape for k, v in out.items()} == {h: (2, sizes[h]) for h in method.heads}


def _learner(method="sla", seed=3, **kw):
    config = TrainConfig(method=method, epochs=2, train_fraction=0.1, batch_size=16, seed=seed, device="cpu", **kw)
    run = resolve(config, torch.device("cpu"), load_data("digits", 0.1))
    return Learner(run.model, run)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # no training here
def test_learning_rate_drops_tenfold_at_half_and_three_quarters():
    learner = _learner()
    lrs = []
    for _ in range(learner.total_steps):
        lrs.append(learner.optimizer.param_groups[0]["lr"])
        learner.scheduler.step()
    T = learner.total_steps
    assert lrs[0] == pytest.approx(0.1) and lrs[round(0.5 * T)] == pytest.approx(0.01)
    assert lrs[round(0.75 * T)] == pytest.approx(0.001)


@pytest.mark.parametrize("method", ["mt", "sla+sd"])
def test_same_seed_same_weights_on_cpu(method):
    a, b = _learner(method), _learner(method)
    ha, hb = a.fit(), b.fit()
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    c = _learner(method, seed=4)
    c.fit()
    assert not torch.equal(c.model.backbone.features[0][0].weight, a.model.backbone.features[0][0].weight)


def test_history_has_one_record_per_epoch_with_validation():
    learner = _learner()
    history = learner.fit()
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["step"] for r in history] == [learner.steps_per_epoch, 2 * learner.steps_per_epoch]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[-1]["val_acc"]) == {"single", "aggregated"}
    assert all(0 <= acc <= 1 for acc in history[-1]["val_acc"].values())


def test_max_steps_stops_early():
    learner = _learner(max_steps=3)
    learner.fit()
    assert learner.step == 3 and len(learner.history) == 1
