"""Issue 11, faithful to the paper at full scale: the official optimiser, the 45k/5k protocol with a selected
checkpoint, normalisation that commutes with colour permutations, the paper recipe in one flag, and importing the
official checkpoints through the CLI. Each fact about the official code (github.com/hankook/SLA) is named where
it is tested."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
import torch

from labkit.cli.commands import build_parser
from labkit.cli.flags import parse_config
from labkit.core.errors import LabkitError
from labkit.data import datasets
from labkit.data.datasets import load_data
from labkit.data.splits import DataBundle, Split, normalise, random_crop_flip
from labkit.sla import transforms
from labkit.training.checkpoint import load_checkpoint
from labkit.training.config import TrainConfig, recipe
from labkit.training.engine import Learner
from labkit.training.experiment import evaluate_run, load_run, train_run
from labkit.training.official import import_official
from labkit.training.resolve import resolve
from tests.support import (
    SigintAfterOptimizerStep,
    fake_cifar,
    official_args,
    official_checkpoint,
    run_cli,
    write_cifar10,
)


# ------------------------------------------------------------------------------------------------- 2. optimiser
@pytest.mark.parametrize("nesterov", [True, False])
def test_nesterov_is_a_config_field_and_reaches_the_optimiser(nesterov):
    config = TrainConfig(nesterov=nesterov, device="cpu", train_fraction=0.1)
    run = resolve(config)
    group = Learner(run.model, run).optimizer.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (nesterov, 0.9, 5e-4)
    assert TrainConfig().nesterov  # labkit's default, so the digits results do not move


# --------------------------------------------------------------------------------- 4. normalisation, padding
@pytest.fixture
def cifar_files(tmp_path, monkeypatch):
    """CIFAR-10 files in the real format (tests/test_data.py's writer) under the data root; returns the raw pixels
    of (train, test) as (n, 3, 32, 32) floats in [0, 1], in file order."""
    import torchvision

    write_cifar10(tmp_path, n=20)
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)  # our files' md5
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    batches = [pickle.loads((folder / f"data_batch_{i}").read_bytes()) for i in range(1, 6)]
    test = pickle.loads((folder / "test_batch").read_bytes())
    pixels = [np.concatenate([b["data"] for b in batches]), test["data"]]  # (n, 3072): R plane, G plane, B plane
    return [torch.as_tensor(p.reshape(-1, 3, 32, 32), dtype=torch.float32) / 255.0 for p in pixels]


def test_every_dataset_normalises_every_channel_alike():
    for spec in datasets.DATASETS.values():
        assert spec.normalisation is None or all(len(set(v)) == 1 for v in spec.normalisation), spec.name
    official = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the official CIFAR transform: ToTensor, Normalize(0.5, 0.5)
    assert datasets.get("cifar10").normalisation == datasets.get("cifar100").normalisation == official
    with pytest.raises(LabkitError, match=r"normalisation mean \(0.485, 0.456, 0.406\) differs between channels"):
        imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # per channel: would not commute with permutations
        datasets.Dataset("photos", lambda *a: None, default_model="resnet18", normalisation=imagenet)


@pytest.mark.parametrize("name", ["color_perm", "rot_color_perm24"])
def test_a_colour_permuted_normalised_cifar_image_is_the_normalised_permuted_image_exactly(cifar_files, name):
    raw_train, raw_test = cifar_files
    bundle = load_data("cifar10")
    torch.testing.assert_close(bundle.test.x, (raw_test - 0.5) / 0.5, rtol=0, atol=0)  # the official input
    tset = transforms.get(name)
    for j in range(tset.M):
        permuted = tset.apply(raw_train, j).permute(0, 2, 3, 1).numpy()  # (n, H, W, C), as the loader reads
        want, _, _ = normalise(permuted, slice(None), datasets.get("cifar10").normalisation)
        assert torch.equal(tset.apply(bundle.train.x, j), want), tset.names[j]


def test_statistics_of_the_data_itself_are_pooled_over_channels_so_they_commute_too():
    rng = np.random.default_rng(0)
    rgb = rng.random((6, 5, 5, 3)).astype(np.float32) * np.array([1.0, 0.5, 0.2], dtype=np.float32)
    x, mean, std = normalise(rgb, slice(0, 4))
    assert len(set(mean)) == len(set(std)) == 1
    for order in itertools.permutations(range(3)):
        permuted, _, _ = normalise(rgb[..., list(order)], slice(0, 4), (mean, std))  # the dataset's statistics
        assert torch.equal(x[:, list(order)], permuted)
    grey = rng.random((6, 5, 5, 1)).astype(np.float32)  # 1 channel (digits, MNIST): its own mean and std as before
    _, mean1, std1 = normalise(grey, slice(0, 4))
    t = torch.as_tensor(grey[:4])
    assert mean1 == pytest.approx((float(t.mean()),)) and std1 == pytest.approx((float(t.std()),))


def test_imagefolder_uses_one_value_for_every_channel(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    bundle = load_data("imagefolder", data_dir=str(tmp_path), image_size=8)
    assert (bundle.mean, bundle.std) == ((0.5,) * 3, (0.5,) * 3)


def test_crop_padding_is_black_in_raw_pixels(cifar_files):
    """A white CIFAR image, normalised, then cropped by the learner: every pixel is white (1) or black (-1)."""
    bundle = load_data("cifar10")
    white = Split(torch.ones_like(bundle.train.x), bundle.train.y)
    bundle = DataBundle(bundle.name, bundle.classes, white, bundle.val, bundle.test, bundle.shape, True,
                        bundle.mean, bundle.std)
    assert bundle.black == -1.0
    run = resolve(TrainConfig(dataset="cifar10", model="resnet20", device="cpu", batch_size=50), data=bundle)
    x, _ = next(iter(Learner(run.model, run)._batches()))
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    # the same crops of the raw image padded with 0, then normalised: the same tensor
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    raw = cifar_files[0][:8]
    cropped_raw = random_crop_flip(raw, g1)  # zero padding in raw pixels
    assert torch.equal(random_crop_flip((raw - 0.5) / 0.5, g2, fill=bundle.black), (cropped_raw - 0.5) / 0.5)


def test_an_imported_official_model_sees_the_official_input_through_labkits_loader(cifar_files, tmp_path):
    official = official_checkpoint(tmp_path / "model-best.pth", 20, [40], official_args(depth=20))
    run = load_run(import_official(tmp_path / "model-best.pth", None, None, tmp_path / "run"), "cpu")
    raw_test = cifar_files[1]
    official_input = (raw_test - 0.5) / 0.5  # the official test transform: ToTensor, Normalize(0.5, 0.5)
    assert torch.equal(run.data.test.x, official_input)
    with torch.no_grad():
        torch.testing.assert_close(run.model(run.data.test.x)["joint"], official(official_input)[0], rtol=1e-4,
                                   atol=1e-4)  # channels_last, as resolve() builds it
    assert evaluate_run(run)["n_test"] == len(raw_test)


# ------------------------------------------------------------------------------------------------ 3. protocol
def test_val_size_holds_out_a_stratified_split_before_the_training_fraction(cifar_files):
    full = load_data("cifar10")
    bundle = load_data("cifar10", val_size=30)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (70, 30, 20)
    assert torch.equal(torch.cat([bundle.train.y, bundle.val.y]).sort().values, full.train.y.sort().values)
    counts, val_counts = torch.bincount(full.train.y, minlength=10), torch.bincount(bundle.val.y, minlength=10)
    assert ((val_counts - 0.3 * counts).abs() <= 1).all()  # stratified: each class in proportion
    again = load_data("cifar10", val_size=30, train_fraction=0.5)
    assert torch.equal(again.val.x, bundle.val.x) and len(again.train) < 70  # the same validation split


def test_val_indices_reads_a_file_of_training_indices(cifar_files, tmp_path):
    full = load_data("cifar10")
    rows = np.array([5, 0, 17, 99, 42])
    np.save(tmp_path / "val_idx.npy", rows)
    bundle = load_data("cifar10", val_indices=str(tmp_path / "val_idx.npy"))
    assert torch.equal(bundle.val.x, full.train.x[np.sort(rows)]) and len(bundle.train) == 95
    np.save(tmp_path / "bad.npy", np.array([1, 1, 100]))
    with pytest.raises(LabkitError, match=r"distinct indices in \[0, 100\)"):
        load_data("cifar10", val_indices=str(tmp_path / "bad.npy"))


def test_samples_per_class_draws_k_images_of_every_class(cifar_files):
    bundle = load_data("digits", samples_per_class=7)
    assert torch.bincount(bundle.train.y).tolist() == [7] * 10
    assert torch.equal(load_data("digits", samples_per_class=7).train.x, bundle.train.x)  # one fixed draw
    with pytest.raises(LabkitError, match="samples_per_class 900 is more than"):
        load_data("digits", samples_per_class=900)


def test_the_validation_options_are_checked_on_construction():
    with pytest.raises(LabkitError, match="dataset 'digits' has a fixed validation split of its own"):
        TrainConfig(val_size=100)
    with pytest.raises(LabkitError, match="either val_size"):
        TrainConfig(dataset="cifar10", val_size=100, val_indices="v.npy")
    with pytest.raises(LabkitError, match="val_size must be a non-negative integer"):
        TrainConfig(dataset="cifar10", val_size=-1)
    with pytest.raises(LabkitError, match="cifar10 has no validation split here"):
        fake = fake_cifar(10)
        no_val = DataBundle(fake.name, fake.classes, fake.train, Split(fake.train.x[:0], fake.train.y[:0]), fake.test,
                            fake.shape, False, fake.mean, fake.std)
        resolve(TrainConfig(dataset="cifar10", val_every=10, device="cpu"), data=no_val)


SELECT = dict(dataset="digits", transform="rotation", batch_size=32, device="cpu", val_every=10, steps=40, seed=0)


def test_val_every_selects_the_step_of_best_validation_accuracy_and_saves_it(tmp_path):
    metrics = train_run(TrainConfig(**SELECT), tmp_path / "run", progress=False).metrics()
    evaluations, selected = metrics["evaluations"], metrics["selected"]
    assert [e["step"] for e in evaluations] == [10, 20, 30, 40] and metrics["steps"] == 40
    best = max(evaluations, key=lambda e: e["val_acc"]["single"])  # max() keeps the first of equals, as official
    assert (selected["step"], selected["val_acc"], selected["test_acc"]) == (best["step"], best["val_acc"],
                                                                             best["test_acc"])
    assert metrics["val_acc"] == evaluations[-1]["val_acc"]
    assert metrics["test_acc"] == evaluations[-1]["test_acc"]  # today's keys still mean the last step
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["selected"]["step"] == selected["step"]
    reopened = evaluate_run(load_run(tmp_path / "run" / "best.pt", "cpu"))
    assert reopened["test_acc"] == selected["test_acc"]  # best.pt is the selected step's model


def _timeless(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_a_run_stopped_by_ctrl_c_and_resumed_selects_as_the_uninterrupted_one(tmp_path):
    whole = train_run(TrainConfig(**SELECT), tmp_path / "whole", progress=False).metrics()
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**SELECT), tmp_path / "part", progress=False, callbacks=(SigintAfterOptimizerStep(25),))
    state = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert state["step"] == 25 and [e["step"] for e in state["evaluations"]] == [10, 20]
    resumed = train_run(None, tmp_path / "part", resume=True, progress=False).metrics()
    assert _timeless(resumed["evaluations"]) == _timeless(whole["evaluations"])
    assert _timeless([resumed["selected"]]) == _timeless([whole["selected"]])
    a, b = (load_checkpoint(tmp_path / run / "best.pt")["model"] for run in ("whole", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------------------- 5. recipe
def test_the_paper_recipe_is_the_official_cifar_setting():
    c = recipe("paper")
    assert (c.dataset, c.resolved_model, c.batch_size, c.steps, c.lr, c.milestones) == (
        "cifar10", "resnet32", 128, 80000, 0.1, (0.5, 0.75))
    assert (c.momentum, c.nesterov, c.weight_decay, c.val_size, c.val_every, c.precision) == (
        0.9, False, 1e-4, 5000, 1000, "fp32")
    assert not c.large_loss and c.samples_per_class is None  # the official CIFAR command uses neither
    assert recipe("labkit") == TrainConfig()


def test_explicit_flags_override_the_recipe_and_configs_round_trip_without_it():
    c = parse_config(["--recipe", "paper", "--dataset", "cifar100", "--precision", "bf16", "--nesterov"])
    assert c == recipe("paper", dataset="cifar100", precision="bf16", nesterov=True)
    assert parse_config(c.to_argv()) == c  # config.json and to_argv need no recipe
    with pytest.raises(SystemExit):
        parse_config(["--recipe", "fast"])
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "labkit (the default): quick runs, CIFAR 30 epochs, batch 64, weight decay 5e-4" in help_text
    assert "paper: the official CIFAR setting" in help_text


def test_the_paper_recipe_steps_and_decays_per_iteration():
    data = fake_cifar(10)
    labels = torch.zeros(45000, dtype=torch.long)  # 45,000 training images (no pixels needed) -> 351 steps per epoch
    run = resolve(recipe("paper", model="resnet20", device="cpu"), data=data)
    run.data = DataBundle(data.name, data.classes, Split(labels[:, None], labels), data.val, data.test, data.shape,
                          False, data.mean, data.std)
    learner = Learner(run.model, run)
    assert (learner.steps_per_epoch, learner.total_steps) == (351, 80000)
    decay = learner.scheduler.lr_lambdas[0]
    assert [decay(s) for s in (0, 39999, 40000, 59999, 60000, 79999)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    group = learner.optimizer.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (False, 0.9, 1e-4)


def test_steps_train_past_the_epochs_and_stop_at_the_step(tmp_path):
    config = TrainConfig(steps=50, epochs=1, batch_size=32, device="cpu")
    metrics = train_run(config, tmp_path / "run", progress=False).metrics()
    assert metrics["steps"] == 50 and metrics["epochs_run"] == 2  # 39 steps per epoch: the second epoch stops at 50


# ---------------------------------------------------------------------------------- import-official (the CLI)
def test_import_official_through_the_cli_then_eval(cifar_files, tmp_path):
    official_checkpoint(tmp_path / "model-best.pth", 20, [40, 10], official_args("sla+sd", depth=20))
    out = tmp_path / "run"
    rc, stdout, err = run_cli("import-official", str(tmp_path / "model-best.pth"), "--dataset", "cifar10",
                              "--transform", "rotation", "--out", str(out))
    assert rc == 0, err
    assert f"imported {tmp_path / 'model-best.pth'} into {out}" in stdout
    assert json.loads((out / "config.json").read_text())["method"] == "sla+sd"
    rc, stdout, err = run_cli("eval", "--checkpoint", str(out), "--device", "cpu", "--json")
    assert rc == 0, err
    assert json.loads(stdout)["n_test"] == 20
    rc, _, err = run_cli("import-official", str(tmp_path / "model-best.pth"), "--out", str(out))
    assert rc == 2 and "already holds a run" in err and "--overwrite" in err
    rc, _, err = run_cli("import-official", str(tmp_path / "model-best.pth"), "--out", str(out), "--overwrite")
    assert rc == 0, err


def test_recipe_table_is_built_from_the_config_it_describes():
    from labkit.training import report

    table = report.recipe_table(recipe("paper", model="resnet20", steps=4))
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert lines["model"] == "| model | resnet32 | resnet20 | changed here |"
    assert lines["nesterov"] == "| nesterov | False | False | paper |"
    assert lines["train_fraction"].endswith("| labkit's default (not in the recipe) |")
    changed = report.recipe_table(recipe("paper", train_fraction=0.3))  # a preset's value is no default
    assert "| train_fraction | 1.0 | 0.3 | changed here |" in changed
