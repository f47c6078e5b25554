"""Every equation of the paper, checked against a direct implementation written from the formulas
(explicit loops over samples and views, -log of a softmax entry), on random inputs, for every transform set."""

import math

import pytest
import torch

from labkit.sla import inference, objectives, transforms
from labkit.sla import joint as jl
from labkit.sla.methods import METHODS
from labkit.sla.methods import get as get_method
from labkit.training.config import TrainConfig

N = 5
SETS = transforms.available()


def _softmax(v):
    e = [math.exp(a - max(v)) for a in v]
    return [a / sum(e) for a in e]


def _ce(logits_row, target):
    return -math.log(_softmax(logits_row.tolist())[target])


def _random_outputs(B, M, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"class": torch.randn(B * M, N, generator=g, dtype=torch.float64),
            "transform": torch.randn(B * M, M, generator=g, dtype=torch.float64),
            "joint": torch.randn(B * M, N * M, generator=g, dtype=torch.float64)}, torch.randint(0, N, (B,),
                                                                                                 generator=g)


@pytest.mark.parametrize("name", SETS)
def test_joint_labels_are_y_times_M_plus_j(name):
    M = transforms.get(name).M
    y = torch.tensor([0, 3, 1])
    expected = [y_b * M + j for y_b in y.tolist() for j in range(M)]
    assert jl.joint_labels(y, M).tolist() == expected
    assert jl.view_labels(3, M).tolist() == [j for _ in range(3) for j in range(M)]


@pytest.mark.parametrize("name", SETS)
def test_aggregation_averages_each_views_own_column(name):
    M = transforms.get(name).M
    out, _ = _random_outputs(3, M)
    joint = out["joint"]
    s = jl.aggregate(joint, M)
    for b in range(3):
        for i in range(N):
            direct = sum(joint[b * M + j, i * M + j].item() for j in range(M)) / M  # s_i = 1/M Σ_j w_ij·z̃_j
            assert s[b, i].item() == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("name", SETS)
def test_joint_and_conditional_probabilities(name):
    M = transforms.get(name).M
    out, _ = _random_outputs(2, M)
    joint = out["joint"]
    P = jl.joint_probabilities(joint, M)
    cond = jl.conditional_probabilities(joint, M)
    for r in range(2 * M):
        sm = _softmax(joint[r].tolist())
        for i in range(N):
            for j in range(M):
                assert P[r, i, j].item() == pytest.approx(sm[i * M + j], rel=1e-6)
    for b in range(2):
        for j in range(M):  # P(i | x̃_j, j) = exp(w_ij·z̃_j) / Σ_k exp(w_kj·z̃_j)
            column = [joint[b * M + j, k * M + j].item() for k in range(N)]
            torch.testing.assert_close(cond[b, j].double(), torch.tensor(_softmax(column), dtype=torch.float64))
    torch.testing.assert_close(P.sum(dim=(-2, -1)), torch.ones(2 * M))


@pytest.mark.parametrize("name", SETS)
def test_da_mt_sla_losses(name):
    M = transforms.get(name).M
    out, y = _random_outputs(3, M, seed=1)
    B = len(y)
    da = sum(_ce(out["class"][b * M + j], y[b].item()) for b in range(B) for j in range(M)) / (B * M)
    mt_extra = sum(_ce(out["transform"][b * M + j], j) for b in range(B) for j in range(M)) / (B * M)
    sla = sum(_ce(out["joint"][b * M + j], y[b].item() * M + j) for b in range(B) for j in range(M)) / (B * M)
    assert _loss("da", out, y, M).item() == pytest.approx(da, rel=1e-9)
    assert _loss("mt", out, y, M).item() == pytest.approx(da + mt_extra, rel=1e-9)
    assert _loss("sla", out, y, M).item() == pytest.approx(sla, rel=1e-9)


def _loss(method: str, out, y, M: int, T: float = 1.0, beta: float = 1.0):
    """The registered method's loss, as training computes it (options from a config)."""
    return get_method(method).bind(TrainConfig(T=T, beta=beta).to_dict())(out, y, M)


def test_baseline_loss():
    out, y = _random_outputs(4, 1, seed=2)
    direct = sum(_ce(out["class"][b], y[b].item()) for b in range(4)) / 4
    assert _loss("baseline", out, y, 1).item() == pytest.approx(direct, rel=1e-9)


def _direct_sd(out, y, M, T, beta):
    B = len(y)
    sla = sum(_ce(out["joint"][b * M + j], y[b].item() * M + j) for b in range(B) for j in range(M)) / (B * M)
    kl = ce = 0.0
    for b in range(B):
        s = [sum(out["joint"][b * M + j, i * M + j].item() for j in range(M)) / M for i in range(N)]
        p_agg = _softmax([v / T for v in s])
        student = out["class"][b * M].tolist()  # the identity view's row
        q = _softmax([v / T for v in student])
        kl += sum(p * math.log(p / qq) for p, qq in zip(p_agg, q, strict=True))  # KL(P_agg ‖ σ)
        ce += _ce(out["class"][b * M], y[b].item())
    return sla + T * T * kl / B + beta * ce / B


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("T,beta", [(1.0, 1.0), (4.0, 0.5), (0.5, 0.0)])
def test_self_distillation_loss(name, T, beta):
    M = transforms.get(name).M
    out, y = _random_outputs(3, M, seed=3)
    got = _loss("sla+sd", out, y, M, T=T, beta=beta).item()
    assert got == pytest.approx(_direct_sd(out, y, M, T, beta), rel=1e-6)



@pytest.mark.parametrize("name", ["rotation", "color_perm"])
def test_large_loss_sums_the_joint_term_over_the_views(name):
    """The official --with-large-loss: sla's loss is Σ_j CE instead of 1/M Σ_j; in sla+sd only the joint term grows
    (distillation and the class head's cross-entropy stay as they are)."""
    M = transforms.get(name).M
    out, y = _random_outputs(3, M, seed=4)
    B = len(y)
    summed = sum(_ce(out["joint"][b * M + j], y[b].item() * M + j) for b in range(B) for j in range(M)) / B
    large = TrainConfig(large_loss=True)
    assert get_method("sla").bind(large.to_dict())(out, y, M).item() == pytest.approx(summed, rel=1e-9)
    sd_large = get_method("sla+sd").bind(large.replace(method="sla+sd").to_dict())(out, y, M).item()
    assert sd_large == pytest.approx(_direct_sd(out, y, M, 1.0, 1.0) + (M - 1) * summed / M, rel=1e-6)  # fp32 KL


def test_large_loss_needs_a_joint_head():
    with pytest.raises(Exception, match="method 'mt' has no joint head .use it with: sla, sla\\+sd"):
        TrainConfig(method="mt", large_loss=True)

def test_distillation_teacher_is_detached_and_kl_direction():
    M = 4
    out, y = _random_outputs(2, M, seed=4)
    joint = out["joint"].clone().requires_grad_(True)
    student = out["class"][::M].clone().requires_grad_(True)
    loss = objectives.distillation_loss(student, jl.aggregate(joint, M), T=1.0)
    loss.backward()
    assert joint.grad is None or torch.count_nonzero(joint.grad) == 0, "gradient reached the teacher"
    assert torch.count_nonzero(student.grad) > 0
    # KL(P‖Q) ≠ KL(Q‖P) in general: the library must compute the first.
    p = torch.softmax(jl.aggregate(out["joint"], M), -1)
    q = torch.softmax(out["class"][::M], -1)
    forward = (p * (p / q).log()).sum(-1).mean()
    reverse = (q * (q / p).log()).sum(-1).mean()
    got = objectives.distillation_loss(out["class"][::M], jl.aggregate(out["joint"], M), T=1.0).double()
    torch.testing.assert_close(got, forward)
    assert not torch.isclose(got, reverse)


def test_inference_modes_per_method():
    assert {m: METHODS[m].modes for m in METHODS} == {
        "baseline": ("single",), "da": ("single", "aggregated"), "mt": ("single", "aggregated"),
        "sla": ("single", "aggregated"), "sla+sd": ("single", "aggregated", "distilled")}


class _Heads(torch.nn.Module):
    """A fake model: logits are fixed functions of the input, so each mode's output can be written by hand."""

    def __init__(self, N, M):
        super().__init__()
        self.N, self.M = N, M
        self.proj = torch.randn(16, N * M, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        z = x.flatten(1) @ self.proj
        return {"joint": z, "class": z[:, : self.N]}


def test_predict_modes_against_direct_definitions():
    tset = transforms.get("rotation")
    model = _Heads(N, tset.M)
    x = torch.randn(3, 1, 4, 4)
    single = inference.predict(model, x, tset, "single")
    torch.testing.assert_close(single, model(x)["joint"].view(3, N, 4)[:, :, 0])  # identity column
    agg = inference.predict(model, x, tset, "aggregated")
    views = [model(torch.rot90(x, k, (2, 3)))["joint"].view(3, N, 4)[:, :, k] for k in range(4)]
    torch.testing.assert_close(agg, torch.stack(views).mean(0))
    class_only = lambda views: {"class": model(views)["class"]}  # noqa: E731  (an mt-like model: no joint head)
    tta = inference.predict(class_only, x, tset, "aggregated")
    torch.testing.assert_close(tta, torch.stack([model(torch.rot90(x, k, (2, 3)))["class"] for k in range(4)]).mean(0))
    torch.testing.assert_close(inference.predict(model, x, tset, "distilled"), model(x)["class"])
    with pytest.raises(Exception, match="unknown inference mode 'distiled'; did you mean 'distilled'"):
        inference.predict(model, x, tset, "distiled")
    with pytest.raises(Exception, match="no inference mode 'distilled'; allowed: single, aggregated"):
        get_method("sla").check_mode("distilled")


def test_confusion_and_pair_counts():
    y = torch.tensor([6, 6, 9, 9, 1])
    pred = torch.tensor([9, 6, 6, 9, 1])
    c = inference.confusion_matrix(y, pred, 10)
    assert c[6, 9] == 1 and c[9, 6] == 1 and c.sum() == 5
    assert inference.pair_confusions(c, 6, 9) == 2
    probs = torch.zeros(5, 10)
    probs[[0, 1, 2, 3, 4], [9, 6, 6, 9, 1]] = 1.0
    assert inference.expected_pair_confusions(probs, y, 6, 9) == 2.0
