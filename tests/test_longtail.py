"""Long tails: the profile and its draw, the long-tail losses against direct loop implementations, deferred
re-weighting, the per-class metrics and the tables.

Each check below is a function that a wrong implementation fails; the `*_rejects_*` tests run it on the wrong
answers it exists for (an off-by-one exponent, a draw from the test split, weights that ignore the effective
number, margins with the wrong power) and see it fail.
"""

from __future__ import annotations

import math
import pickle
import struct
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from labkit.core.device import resolve_device
from labkit.core.errors import LabkitError
from labkit.data.datasets import LONG_TAIL_SEED, load_data
from labkit.data.splits import DataBundle, Split, long_tail, long_tail_counts
from labkit.sla import longtail, objectives
from labkit.sla.joint import aggregate, joint_labels
from labkit.sla.methods import get as get_method
from labkit.sla.models import CosineLinear
from labkit.training import report
from labkit.training.config import TrainConfig, recipe
from labkit.training.engine import Learner, build_optimizer
from labkit.training.experiment import evaluate_run, train_run
from labkit.training.resolve import criteria, drw_step, resolve
from tests.support import SigintAfterOptimizerStep, one_thread, run_cli, tiny_config, write_cifar10

CPU = resolve_device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


# ------------------------------------------------------------------------------------------------- the profile
def direct_profile(n_max: int, R: float, N: int) -> list[int]:
    """n_i = floor(n_max · R^(−i/(N−1))), written out."""
    return [math.floor(n_max * R ** (-i / (N - 1))) for i in range(N)]


def check_profile(profile: Callable[[int, float, int], Sequence[int]]) -> None:
    """The published counts (CIFAR-10-LT and CIFAR-100-LT, Cao et al.) and the formula on other sizes."""
    assert list(profile(5000, 100, 10)) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(profile(5000, 10, 10)) == 20431 and sum(profile(500, 100, 100)) == 10847
    for n_max, R, N in [(122, 10, 10), (122, 50, 10), (60, 2.5, 4), (7, 1, 3), (1000, 200, 6), (31, 7.5, 2)]:
        assert list(profile(n_max, R, N)) == direct_profile(n_max, R, N), (n_max, R, N)


def test_the_profile_is_cao_et_al_s():
    check_profile(long_tail_counts)


def test_the_profile_check_rejects_an_off_by_one_exponent():
    with pytest.raises(AssertionError):
        check_profile(lambda n_max, R, N: [math.floor(n_max * R ** (-i / N)) for i in range(N)])
    with pytest.raises(AssertionError):
        check_profile(lambda n_max, R, N: [math.floor(n_max * R ** (-(i + 1) / (N - 1))) for i in range(N)])


def test_a_ratio_that_leaves_a_class_empty_is_one_line():
    with pytest.raises(LabkitError, match=r"imbalance_ratio 200 leaves the last class no image.*use R <= 100"):
        long_tail_counts(100, 200.0, 10)


# ----------------------------------------------------------------------------------------------------- the draw
def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def check_draw(tail: DataBundle, full: DataBundle, R: float) -> None:
    """`tail`'s training images are images of `full`'s training split (their own class), none of its test split;
    their counts are the profile of full's smallest training class; validation and test splits are untouched."""
    train_rows = {r: int(y) for r, y in zip(map(lambda t: t.numpy().tobytes(), full.train.x), full.train.y,
                                            strict=True)}
    drawn = [t.numpy().tobytes() for t in tail.train.x]
    assert all(r in train_rows for r in drawn), "an image not from the training split"
    assert [train_rows[r] for r in drawn] == tail.train.y.tolist(), "an image with another label"
    assert not set(drawn) & _rows(full.test.x), "an image of the test split in training"
    assert len(set(drawn)) == len(drawn), "an image drawn twice"
    n_max = min(full.train_counts)
    assert tail.train_counts == direct_profile(n_max, R, full.N)
    assert torch.equal(tail.test.x, full.test.x) and torch.equal(tail.test.y, full.test.y)
    assert torch.equal(tail.val.x, full.val.x) and torch.equal(tail.val.y, full.val.y)


def test_the_long_tail_is_drawn_from_the_training_split_and_the_test_split_stays_balanced():
    full, tail = load_data("digits"), load_data("digits", imbalance_ratio=10.0)
    check_draw(tail, full, 10.0)
    assert tail.train_counts == [122, 94, 73, 56, 43, 33, 26, 20, 15, 12]  # digits' smallest class has 122
    assert torch.equal(load_data("digits", imbalance_ratio=10.0).train.x, tail.train.x)  # one fixed draw


def test_the_draw_check_rejects_a_draw_from_the_test_split():
    full = load_data("digits")
    profile = long_tail_counts(min(full.train_counts), 10.0, full.N)
    y = full.test.y.numpy()
    rows = np.concatenate([np.flatnonzero(y == c)[:min(n, int((y == c).sum()))] for c, n in enumerate(profile)])
    from_test = DataBundle(full.name, full.classes, Split(full.test.x[rows], full.test.y[rows]), full.val,
                           full.test, full.shape, full.augment, full.mean, full.std)
    with pytest.raises(AssertionError):
        check_draw(from_test, full, 10.0)
    off_by_one = long_tail(full, 10.0 * 10.0 ** (1 / 9), LONG_TAIL_SEED)  # the profile of exponent i/N in disguise
    with pytest.raises(AssertionError):
        check_draw(off_by_one, full, 10.0)


def test_the_long_tail_follows_the_training_fraction_and_ignores_the_run_seed():
    full, tail = load_data("digits", 0.5), load_data("digits", 0.5, imbalance_ratio=5.0)
    check_draw(tail, full, 5.0)
    runs = [resolve(TrainConfig(imbalance_ratio=5.0, train_fraction=0.5, seed=s, device="cpu")) for s in (0, 1)]
    assert torch.equal(runs[0].data.train.x, runs[1].data.train.x)


def _cifar100(root, n: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, count in (("train", n), ("test", n // 5)):
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "fine_labels": list(rng.integers(0, 100, count)), "coarse_labels": [0] * count}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def _mnist(root, n: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for prefix, count in (("train", n), ("t10k", n // 5)):
        for kind, array, code in (("images-idx3", rng.integers(0, 256, (count, 28, 28)), 0x08),
                                  ("labels-idx1", rng.integers(0, 10, (count,)), 0x08)):
            head = struct.pack(">BBBB", 0, 0, code, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(head + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_the_long_tail_works_on_mnist_and_cifar_files(name, tmp_path, monkeypatch):
    import torchvision

    {"mnist": lambda: _mnist(tmp_path, 600), "cifar10": lambda: write_cifar10(tmp_path, n=120),
     "cifar100": lambda: _cifar100(tmp_path, 3000)}[name]()
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)  # our files' md5 is not the archive's
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    R = 4.0
    full, tail = load_data(name), load_data(name, imbalance_ratio=R)
    check_draw(tail, full, R)
    if name != "mnist":  # with a validation split held out first: n_max is the smallest class of what is left
        check_draw(load_data(name, val_size=50, imbalance_ratio=R), load_data(name, val_size=50), R)


def test_samples_per_class_and_imbalance_ratio_are_refused_together():
    with pytest.raises(LabkitError, match="pass either samples_per_class .* or imbalance_ratio"):
        TrainConfig(samples_per_class=5, imbalance_ratio=10.0)
    with pytest.raises(LabkitError, match="pass either samples_per_class .* or imbalance_ratio"):
        load_data("digits", samples_per_class=5, imbalance_ratio=10.0)


# ---------------------------------------------------------------------------------------- weights and margins
def direct_weights(counts: Sequence[int], beta: float) -> list[float]:
    """(1 − β) / (1 − β^n_i), normalised to sum N, in a loop."""
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [w * len(raw) / sum(raw) for w in raw]


def direct_margins(counts: Sequence[int], largest: float) -> list[float]:
    raw = [n ** -0.25 for n in counts]
    return [largest * m / max(raw) for m in raw]


COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def check_weights(weights: Callable[[Sequence[int], float], torch.Tensor]) -> None:
    for counts in (COUNTS, [122, 94, 73, 56, 43, 33, 26, 20, 15, 12], [40, 40, 3]):
        for beta in (0.0, 0.9, 0.99, 0.999, 0.9999):
            torch.testing.assert_close(torch.as_tensor(weights(counts, beta), dtype=torch.float64),
                                       torch.tensor(direct_weights(counts, beta), dtype=torch.float64))


def check_margins(margins: Callable[[Sequence[int], float], torch.Tensor]) -> None:
    for counts in (COUNTS, [122, 94, 73, 56, 43, 33, 26, 20, 15, 12], [40, 40, 3]):
        for largest in (0.5, 0.3):
            torch.testing.assert_close(torch.as_tensor(margins(counts, largest), dtype=torch.float64),
                                       torch.tensor(direct_margins(counts, largest), dtype=torch.float64))


def test_class_balanced_weights_follow_the_effective_number():
    check_weights(longtail.class_balanced_weights)
    assert torch.allclose(longtail.class_balanced_weights(COUNTS, 0.0), torch.ones(10, dtype=torch.float64))


def test_the_weight_check_rejects_weights_that_ignore_the_effective_number():
    def inverse_frequency(counts, beta):
        inverse = 1.0 / torch.tensor(counts, dtype=torch.float64)
        return inverse / inverse.sum() * len(counts)

    with pytest.raises(AssertionError):
        check_weights(inverse_frequency)
    with pytest.raises(AssertionError):  # the effective number without its inverse
        check_weights(lambda counts, beta: 1.0 / longtail.class_balanced_weights(counts, beta))


def test_ldam_margins_fall_with_the_fourth_root_of_the_class_size():
    check_margins(longtail.ldam_margins)
    assert float(longtail.ldam_margins(COUNTS, 0.5).max()) == pytest.approx(0.5)


def test_the_margin_check_rejects_margins_with_the_wrong_power():
    def square_root(counts, largest):
        m = torch.tensor(counts, dtype=torch.float64) ** -0.5
        return m * largest / m.max()

    with pytest.raises(AssertionError):
        check_margins(square_root)


# ------------------------------------------------------------------------------ the losses, against a loop
def loop_ce(logits: torch.Tensor, labels: torch.Tensor, M: int, weights: Sequence[float] | None,
            margins: Sequence[float] | None, scale: float) -> float:
    """Σ_b w_c ℓ_b / Σ_b w_c, ℓ_b = logsumexp(z') − z'_t with z'_t = z_t − s·Δ_c, c = t // M: row by row."""
    total = norm = 0.0
    for z, t in zip(logits.double().tolist(), labels.tolist(), strict=True):
        c = t // M
        z = list(z)
        if margins is not None:
            z[t] -= scale * margins[c]
        top = max(z)
        loss = top + math.log(sum(math.exp(v - top) for v in z)) - z[t]
        w = 1.0 if weights is None else weights[c]
        total, norm = total + w * loss, norm + w
    return total / norm


def loop_kl(student: torch.Tensor, teacher: torch.Tensor, T: float) -> float:
    total = 0.0
    for s, t in zip(student.double().tolist(), teacher.double().tolist(), strict=True):
        ps = [math.exp(v / T) for v in s]
        pt = [math.exp(v / T) for v in t]
        ps, pt = [p / sum(ps) for p in ps], [p / sum(pt) for p in pt]
        total += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt, strict=True))
    return total / len(student) * T * T


def loop_loss(method: str, out: dict[str, torch.Tensor], y: torch.Tensor, M: int, weights, margins, scale,
              T: float = 2.0, beta: float = 0.5) -> float:
    """Each method's loss written from its definition, every class-label cross-entropy through loop_ce."""
    B = len(y)

    def ce(logits, labels, per_class=1):
        return loop_ce(logits, labels, per_class, weights, margins, scale)

    if method == "baseline":
        return ce(out["class"], y)
    if method == "da":
        return ce(out["class"], y.repeat_interleave(M))
    if method == "mt":
        views = torch.arange(M).repeat(B)
        return ce(out["class"], y.repeat_interleave(M)) + loop_ce(out["transform"], views, 1, None, None, 1.0)
    joint = ce(out["joint"], joint_labels(y, M), M)
    if method == "sla":
        return joint
    student = out["class"][::M]
    return joint + loop_kl(student, aggregate(out["joint"], M), T) + beta * ce(student, y)


def _outputs(method: str, B: int, N: int, M: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = B if method == "baseline" else B * M
    sizes = {"class": N, "transform": M, "joint": N * M}
    out = {h: torch.randn(rows, sizes[h], generator=g, dtype=torch.float64) * 3
           for h in get_method(method).heads}
    return out, torch.randint(0, N, (B,), generator=g)


SETTINGS = {  # what the config asks for: class_balanced, ldam
    "class-balanced": dict(class_balanced=True, cb_beta=0.99),
    "ldam": dict(ldam=True, ldam_margin=0.5, ldam_scale=30.0),
    "ldam + class-balanced": dict(ldam=True, class_balanced=True, cb_beta=0.999, ldam_margin=0.4, ldam_scale=10.0),
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("method", ["baseline", "da", "mt", "sla", "sla+sd"])
def test_every_method_with_each_long_tail_loss_equals_a_loop_implementation(method, setting):
    counts = [122, 94, 73, 56, 43, 33, 26, 20, 15, 12]
    config = TrainConfig(method=method, T=2.0, beta=0.5, **SETTINGS[setting])
    criterion, _ = criteria(config, counts)
    out, y = _outputs(method, B=6, N=10, M=4)
    got = float(get_method(method).bind(config.to_dict(), criterion)(out, y, 4))
    weights = direct_weights(counts, config.cb_beta) if config.class_balanced else None
    margins = direct_margins(counts, config.ldam_margin) if config.ldam else None
    want = loop_loss(method, out, y, 4, weights, margins, config.ldam_scale if config.ldam else 1.0)
    assert got == pytest.approx(want, rel=1e-5)


def test_the_joint_label_carries_its_class_weight_and_margin():
    """One joint row of class 2, view 3: the loss moves with class 2's weight and margin, not label 11's."""
    counts, M = [50, 40, 5], 4
    crit = longtail.ClassCrossEntropy(longtail.class_balanced_weights(counts, 0.9), longtail.ldam_margins(counts, 0.5),
                                      scale=5.0)
    logits = torch.zeros(2, 3 * M, dtype=torch.float64)
    labels = torch.tensor([2 * M + 3, 0 * M + 1])
    margins = direct_margins(counts, 0.5)
    assert float(crit(logits, labels, M)) == pytest.approx(
        loop_ce(logits, labels, M, direct_weights(counts, 0.9), margins, 5.0))
    lowered = 5.0 * margins[2]  # zero logits, the true one lowered by s·Δ_2: log(11 + e^(−sΔ)) + sΔ
    assert float(crit(logits[:1], labels[:1], M)) == pytest.approx(math.log(3 * M - 1 + math.exp(-lowered)) + lowered)


def test_without_weights_or_margins_the_loss_is_the_plain_one_bit_for_bit():
    out, y = _outputs("sla+sd", B=5, N=10, M=4)
    config = TrainConfig(method="sla+sd")
    assert criteria(config, [10] * 10) == (None, None)
    plain = objectives.sla_sd_loss(out, y, 4, 1.0, 1.0)
    assert torch.equal(get_method("sla+sd").bind(config.to_dict())(out, y, 4), plain)
    assert torch.equal(objectives.sla_sd_loss(out, y, 4, 1.0, 1.0, criterion=longtail.ClassCrossEntropy()), plain)


def test_a_method_without_a_criterion_is_refused_with_long_tail_losses():
    from labkit.sla.methods import Method

    toy = Method("toy", ("joint",), expands=True, modes=("single",), loss=lambda out, y, M: out["joint"].sum())
    with pytest.raises(LabkitError, match="method 'toy' has a loss without class weights or margins"):
        toy.bind({}, longtail.ClassCrossEntropy(margins=torch.ones(3)))


def test_ldam_makes_the_class_and_joint_heads_scaled_cosines():
    run = resolve(TrainConfig(method="sla+sd", ldam=True, ldam_scale=7.0, train_fraction=0.1, device="cpu"))
    heads = run.model.heads
    assert isinstance(heads["class"], CosineLinear) and isinstance(heads["joint"], CosineLinear)
    with torch.no_grad():
        out = run.model.eval()(run.tset.expand(run.data.test.x[:4]))
    assert all(float(v.abs().max()) <= 7.0 + 1e-4 for v in out.values())
    mt = resolve(TrainConfig(method="mt", ldam=True, train_fraction=0.1, device="cpu"))
    assert isinstance(mt.model.heads["transform"], torch.nn.Linear) and mt.model.heads["transform"].bias is not None


# --------------------------------------------------------------------------------- deferred re-weighting
def test_drw_switches_the_weights_on_at_its_step():
    config = tiny_config(imbalance_ratio=4.0, train_fraction=1.0, class_balanced=True, drw_at=0.5)
    run = resolve(config, CPU)
    total = 40
    switch = drw_step(config, total)
    assert switch == 20
    out, y = _outputs("sla", B=6, N=10, M=4)
    counts = run.data.train_counts
    plain, weighted = (loop_ce(out["joint"], joint_labels(y, 4), 4, w, None, 1.0)
                       for w in (None, direct_weights(counts, config.cb_beta)))
    for step, want in ((0, plain), (switch - 1, plain), (switch, weighted), (total - 1, weighted)):
        assert float(run.loss_at(step, total)(out, y, 4)) == pytest.approx(want, rel=1e-6), step
    assert plain != pytest.approx(weighted)
    no_drw = resolve(config.replace(drw_at=None), CPU)
    assert float(no_drw.loss_at(0, total)(out, y, 4)) == pytest.approx(weighted, rel=1e-6)


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


def test_a_run_interrupted_before_the_drw_switch_resumes_to_the_same_weights(tmp_path):
    """LDAM-DRW on a long tail, 2 epochs, the switch at the start of epoch 2: Ctrl-C two steps before, resume."""
    from labkit.training.callbacks import Checkpointer
    from labkit.training.run_folder import RunFolder

    config = tiny_config(imbalance_ratio=5.0, class_balanced=True, drw_at=0.5, ldam=True, ldam_scale=10.0,
                         train_fraction=0.3, log_every=1)
    data = load_data("digits", config.train_fraction, imbalance_ratio=config.imbalance_ratio)
    reference = Learner(*_model_and_run(config, data))
    reference.fit()
    switch = drw_step(config, reference.total_steps)
    assert switch == reference.steps_per_epoch > 3
    first = Learner(*_model_and_run(config, data), [Checkpointer(RunFolder(tmp_path)),
                                                    SigintAfterOptimizerStep(at=switch - 2)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = Learner(*_model_and_run(config, data))
    resumed.load_state_dict(RunFolder(tmp_path).checkpoint())
    resumed.fit()
    for k, v in _weights(reference).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in (reference.history, resumed.history)]
    assert strip[0] == strip[1]


def _model_and_run(config, data):
    run = resolve(config, CPU, data)
    return run.model, run


# ------------------------------------------------------------------------------------------- the schedule
def test_the_ldam_drw_recipe_schedule_equals_the_ldam_drw_code_epoch_by_epoch():
    """With one step per epoch, 200 epochs: lr·e/5 for epochs e = 1..5, lr until 160, ×0.01, ×0.0001 after 180."""
    config = recipe("ldam-drw")
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, config, total_steps=200)
    got = []
    for _ in range(200):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    def ldam_drw(epoch: int) -> float:  # the LDAM-DRW code's adjust_learning_rate, epoch counted from 0
        epoch += 1
        return 0.1 * epoch / 5 if epoch <= 5 else 0.1 * 0.0001 if epoch > 180 else 0.1 * 0.01 if epoch > 160 else 0.1

    assert got == pytest.approx([ldam_drw(e) for e in range(200)], rel=1e-12)
    assert drw_step(config, 200) == 160


def test_without_warmup_and_with_the_default_decay_the_schedule_is_unchanged():
    config = TrainConfig(milestones=(0.5, 0.75))
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), config, total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.1 * 0.1 ** sum(s >= m for m in (4, 6)) for s in range(8)]


# ----------------------------------------------------------------------------------------------- metrics
def test_metrics_hold_train_counts_per_class_balanced_and_shot_accuracy_for_every_mode():
    config = TrainConfig(method="sla+sd", imbalance_ratio=10.0, device="cpu", many_shot=100, few_shot=20)
    run = resolve(config)
    metrics = evaluate_run(run)
    assert metrics["train_counts"] == [122, 94, 73, 56, 43, 33, 26, 20, 15, 12] == run.data.train_counts
    assert metrics["shot_groups"] == {"many": [0], "medium": [1, 2, 3, 4, 5, 6, 7], "few": [8, 9]}
    assert metrics["imbalance_ratio"] == 10.0
    for mode in ("single", "aggregated", "distilled"):
        confusion = metrics["confusion"][mode]
        per_class = [row[i] / sum(row) for i, row in enumerate(confusion)]  # a loop, from the counts
        assert metrics["per_class_acc"][mode] == pytest.approx(per_class)
        assert metrics["balanced_acc"][mode] == pytest.approx(sum(per_class) / 10)
        assert metrics["shot_acc"][mode] == pytest.approx(
            {"many": per_class[0], "medium": sum(per_class[1:8]) / 7, "few": (per_class[8] + per_class[9]) / 2})


def test_every_run_records_its_train_counts(tiny_runs):
    metrics = tiny_runs("mt").metrics()
    data = load_data("digits", 0.1)
    assert metrics["train_counts"] == data.train_counts and sum(metrics["train_counts"]) == len(data.train)
    assert metrics["imbalance_ratio"] is None and set(metrics["balanced_acc"]) == {"single", "aggregated"}


def test_a_group_without_classes_has_no_accuracy():
    groups = longtail.shot_groups([30, 25, 21], many=100, few=20)
    assert groups == {"many": [], "medium": [0, 1, 2], "few": []}
    assert longtail.group_accuracy([0.5, 1.0, None], groups) == {"many": None, "medium": 0.75, "few": None}


README_HEADER = "| method | mode | test acc (%) | 6↔9 confused | 6↔9 expected | forwards/image |"


def test_tables_of_balanced_runs_keep_their_columns_and_long_tails_add_theirs(tiny_runs):
    runs = [tiny_runs(m).metrics() for m in ("baseline", "sla")]
    table = report.format_table(report.summarize(runs))
    assert table.splitlines()[0] == README_HEADER
    assert report.format_table(report.summarize(runs), long_tail=False) == table
    tailed = [{**r, "imbalance_ratio": 10.0} for r in runs]
    rows = report.summarize(tailed)
    head = report.format_table(rows).splitlines()[0]
    assert "balanced acc (%)" in head and "many / medium / few (%)" in head
    sla = next(r for r in rows if (r["method"], r["mode"]) == ("sla", "aggregated"))
    assert sla["balanced_acc_mean"] == pytest.approx(runs[1]["balanced_acc"]["aggregated"])


def test_the_cli_trains_a_long_tailed_ldam_drw_run_and_prints_its_groups(tmp_path):
    rc, out, err = run_cli("train", "--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
                           "--imbalance-ratio", "10", "--ldam", "--class-balanced", "--drw-at", "0.5",
                           "--out", str(tmp_path / "run"), "--no-progress")
    assert rc == 0, err
    assert "training images per class (R=10): 122 94 73 56 43 33 26 20 15 12" in out
    assert "balanced acc" in out and "many: 0; medium: 1, 2, 3, 4, 5, 6, 7; few: 8, 9" in out


# ------------------------------------------------------------------------------------------------ bookkeeping
def _few_shot_config(**changes) -> TrainConfig:
    """5 images per class, batch 64: every epoch is one step."""
    return TrainConfig(**{**dict(dataset="digits", method="baseline", samples_per_class=5, epochs=12,
                                 device="cpu"), **changes})


class _Logs:
    """Counts the after_log calls and the steps they happen at."""

    def __init__(self, pause: float = 0.0) -> None:
        self.steps: list[int] = []
        self.pause = pause

    def after_log(self, learner: Learner) -> None:
        import time

        self.steps.append(learner.step)
        time.sleep(self.pause)


def test_log_every_sets_the_bookkeeping_steps_and_the_last_epoch_always_has_one(tmp_path):
    logs = _Logs()
    run = train_run(_few_shot_config(log_every=5), tmp_path / "run", progress=False, callbacks=(logs,))
    history = run.history()
    assert len(history) == 12 and logs.steps == [5, 10, 12]
    assert [r["epoch"] for r in history if "val_acc" in r] == [5, 10, 12]
    assert run.checkpoint()["next_log_step"] == 17


def test_automatic_bookkeeping_skips_epochs_that_are_short_next_to_it(tmp_path):
    """Bookkeeping made slow (0.3 s a time) against one-step epochs: far fewer than one per epoch."""
    logs = _Logs(pause=0.3)
    run = train_run(_few_shot_config(epochs=40), tmp_path / "run", progress=False, callbacks=(logs,))
    assert logs.steps[0] == 1 and logs.steps[-1] == 40 and len(logs.steps) <= 6, logs.steps
    assert len(run.history()) == 40


def test_the_gap_keeps_bookkeeping_at_its_share():
    from labkit.training.engine import LOG_SHARE

    learner = Learner(*_model_and_run(_few_shot_config(), load_data("digits", samples_per_class=5)))
    learner._loop_seconds, learner._loop_steps = 0.5, 50  # 10 ms a step
    gap = learner._log_gap(0.1)  # 100 ms of bookkeeping
    assert gap == math.ceil(10 * (1 - LOG_SHARE) / LOG_SHARE)
    assert 0.1 / (0.1 + gap * 0.01) <= LOG_SHARE + 1e-9


def test_the_schedule_of_bookkeeping_does_not_change_the_training(tmp_path):
    every = train_run(_few_shot_config(log_every=1), tmp_path / "every", progress=False)
    auto = train_run(_few_shot_config(), tmp_path / "auto", progress=False)
    a, b = every.checkpoint(), auto.checkpoint()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert every.metrics()["test_acc"] == auto.metrics()["test_acc"]
    losses = [[r["train_loss"] for r in run.history()] for run in (every, auto)]
    assert losses[0] == losses[1]
    val = {r["epoch"]: r["val_acc"] for r in every.history()}
    assert all(val[r["epoch"]] == r["val_acc"] for r in auto.history() if "val_acc" in r)


def test_a_dataset_read_from_disk_refuses_a_long_tail():
    from labkit.data.splits import FolderSplit

    full = load_data("digits")
    on_disk = DataBundle("photos", full.classes, FolderSplit(None, full.train.y), full.val, full.test, full.shape,
                         False, full.mean, full.std)
    with pytest.raises(LabkitError, match="imbalance_ratio needs a dataset held in memory; photos is read from disk"):
        long_tail(on_disk, 10.0, LONG_TAIL_SEED)


def test_a_comparison_gives_the_figures_their_numbers(tiny_runs):
    folders = [tiny_runs(m) for m in ("baseline", "sla")]
    runs = [f.metrics() for f in folders]
    rows = report.summarize(runs)
    comparison = report.Comparison([], folders, runs, rows, report.format_table(rows))
    assert [r["images_per_class"] for r in comparison.rows_with(images_per_class=12)] == [12] * len(rows)
    counts, accs = comparison.per_class("sla", "aggregated")
    assert counts == runs[1]["train_counts"] and accs == [runs[1]["per_class_acc"]["aggregated"]]


def test_automatic_bookkeeping_resumes_to_the_same_weights_and_keeps_its_schedule(tmp_path):
    from labkit.training.callbacks import Checkpointer
    from labkit.training.run_folder import RunFolder

    config = _few_shot_config(epochs=15)
    data = load_data("digits", samples_per_class=5)
    reference = Learner(*_model_and_run(config, data))
    reference.fit()
    first = Learner(*_model_and_run(config, data), [Checkpointer(RunFolder(tmp_path)), SigintAfterOptimizerStep(at=9)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    state = RunFolder(tmp_path).checkpoint()
    resumed = Learner(*_model_and_run(config, data))
    resumed.load_state_dict(state)
    assert resumed.next_log_step == first.next_log_step == state["next_log_step"]
    resumed.fit()
    for k, v in _weights(reference).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["train_loss"] for r in reference.history] == [r["train_loss"] for r in resumed.history]
