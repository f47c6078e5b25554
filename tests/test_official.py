"""The official CIFAR ResNet (option A shortcuts) and importing checkpoints written by the official SLA code.

The official-layout model below is written from the checkpoint format (module names and shapes), not copied: a
`base_model` Sequential [conv, bn, relu, stage_1, stage_2, stage_3, avgpool, reshape] of blocks with
conv_a/bn_a/conv_b/bn_b and the option-A shortcut, and a `classifiers` ModuleList, saved through nn.DataParallel.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.cli import main
from labkit.core.errors import LabkitError
from labkit.sla.methods import METHODS
from labkit.sla.methods import get as get_method
from labkit.sla.models import build_model
from labkit.training.checkpoint import load_checkpoint, save_checkpoint
from labkit.training.config import TrainConfig
from labkit.training.experiment import evaluate_run, load_run
from labkit.training.official import CIFAR_CLASSES, import_official
from tests.support import RunsShell, fake_cifar, official_args, official_checkpoint, snapshot

# ---------------------------------------------------------------------------------------------------------------
# Task A: option A CIFAR ResNets


def _params_by_hand(depth: int, K: int) -> int:
    """He et al.'s CIFAR ResNet with option A shortcuts and a K-way linear head, counted layer by layer."""
    n = (depth - 2) // 6  # blocks per stage

    def conv(c_in: int, c_out: int) -> int:  # 3×3, no bias
        return 9 * c_in * c_out

    def bn(c: int) -> int:  # weight and bias; running mean/var are buffers, not parameters
        return 2 * c

    total, c_in = conv(3, 16) + bn(16), 16
    for width in (16, 32, 64):
        for _ in range(n):  # two conv+BN per block; the option-A shortcut has no parameters
            total += conv(c_in, width) + bn(width) + conv(width, width) + bn(width)
            c_in = width
    return total + 64 * K + K  # linear head on the 64-d embedding, with bias


@pytest.mark.parametrize("name,N,expected", [
    ("resnet20", 10, 271_672), ("resnet20", 100, 295_072), ("resnet32", 10, 466_104), ("resnet32", 100, 489_504),
    ("resnet56", 10, 854_968), ("resnet56", 100, 878_368), ("resnet110", 10, 1_729_912),
    ("resnet110", 100, 1_753_312)])
def test_option_a_resnets_have_exactly_the_hand_counted_parameters(name, N, expected):
    depth = int(name.removeprefix("resnet"))
    assert _params_by_hand(depth, N * 4) == expected  # the pinned number is the architecture's
    model = build_model(name, 3, N, 4, METHODS["sla"].heads)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.heads["joint"].out_features == N * 4


def test_option_a_has_no_1x1_convs_and_option_b_adds_two_projections():
    a = build_model("resnet32", 3, 10, 4, METHODS["sla"].heads)
    b = build_model("resnet32b", 3, 10, 4, METHODS["sla"].heads)
    assert not [m for m in a.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len([m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]) == 2
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1×1 conv + BN at the two stage changes
    assert sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters()) == projections


def test_option_a_shortcut_subsamples_and_appends_zero_channels():
    model = build_model("resnet20", 3, 10, 4, METHODS["baseline"].heads).eval()
    block = model.backbone.features[4]  # stem, 3 blocks of stage 1, then stage 2's first block: 16 -> 32, stride 2
    x = torch.randn(2, 16, 32, 32)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))  # (2, 16, 16, 16) -> (2, 32, 16, 16), zeros last
    torch.testing.assert_close(block.shortcut(x), expected, rtol=0, atol=0)
    assert torch.equal(expected[:, 16:], torch.zeros(2, 16, 16, 16))
    torch.testing.assert_close(block(x), torch.relu(block.body(x) + expected))


# ---------------------------------------------------------------------------------------------------------------
# Task B: an official-layout model and its checkpoint


def _open(out: Path) -> tuple[nn.Module, dict]:
    """The labkit model of an imported run, built by hand and loaded strictly, and its checkpoint."""
    state = out.checkpoint()
    config = TrainConfig.from_dict(out.config())
    assert config.to_dict() == state["config"]
    model = build_model(config.model, 3, state["N"], state["M"], get_method(config.method).heads)
    model.load_state_dict(state["model"])  # strict: every tensor, every shape
    return model.eval(), state


CASES = [  # method, depth, N, transform, the official classifiers' sizes, the labkit heads they are
    ("sla", 32, 10, "rotation", [40], ("joint",)),
    ("sla", 20, 100, "rotation", [400], ("joint",)),
    ("sla+sd", 20, 100, "rotation", [400, 100], ("joint", "class")),
    ("sla+sd", 32, 10, "color_perm", [60, 10], ("joint", "class")),
    ("mt", 20, 10, "rotation", [10, 4], ("class", "transform")),
    ("mt", 32, 100, "color_perm3", [100, 3], ("class", "transform")),
    ("baseline", 32, 100, None, [100], ("class",)),
    ("baseline", 20, 10, None, [10], ("class",)),
    ("da", 20, 10, "rotation", [10], ("class",)),
]


@pytest.mark.parametrize("method,depth,N,aug,outputs,heads", CASES)
def test_imported_model_gives_the_official_logits(method, depth, N, aug, outputs, heads, tmp_path):
    dataset = f"cifar{N}"
    args = official_args(method, aug, depth, dataset)
    official = official_checkpoint(tmp_path / "model-best.pth", depth, outputs, args, seed=depth)
    out = import_official(tmp_path / "model-best.pth", None, None, tmp_path / "run")  # dataset and --aug from args
    model, state = _open(out)
    config = state["config"]
    assert (config["method"], config["model"], config["dataset"]) == (method, f"resnet{depth}", dataset)
    assert config["transform"] == (aug or "rotation")
    assert tuple(model.heads) == heads
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = official(x)
        got = model(x)
        got_nhwc = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    for head, logits in zip(heads, want, strict=True):
        torch.testing.assert_close(got[head], logits)
        torch.testing.assert_close(got_nhwc[head], logits, rtol=1e-4, atol=1e-4)  # as resolve() builds it
    assert state["N"] == N and len(state["classes"]) == N and state["shape"] == [3, 32, 32]
    assert state["history"] == [] and state["world_size"] == 1
    assert json.loads((out / "history.json").read_text()) == []
    source = state["source"]
    assert (source["official"], source["iteration"], source["epoch"], source["best"]) == (
        str(tmp_path / "model-best.pth"), 1000, 3, 0.9)
    assert source["args"]["mode"] == method and source["input_normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize("method,outputs", [("sla+sd", [40, 10]), ("mt", [10, 4])])
def test_load_run_opens_the_imported_run_and_evaluates_it(method, outputs, tmp_path):
    official = official_checkpoint(tmp_path / "m.pth", 20, outputs, official_args(method, depth=20))
    data = fake_cifar(10)
    run = load_run(import_official(tmp_path / "m.pth", None, None, tmp_path / "run"), "cpu", data=data)
    model, config = run.model, run.config
    assert (config.method, config.model) == (method, "resnet20")
    with torch.no_grad():
        got, want = model(data.test.x), official(data.test.x)
    for head, logits in zip(get_method(method).heads, want, strict=True):
        torch.testing.assert_close(got[head], logits, rtol=1e-4, atol=1e-4)  # channels_last, as resolve() builds it
    metrics = evaluate_run(run)
    assert set(metrics["test_acc"]) == set(get_method(method).modes)


def test_the_shortcut_padding_side_matters(tmp_path):
    """Guard against a vacuous equality: padding the zero channels on both sides gives other logits."""
    official = official_checkpoint(tmp_path / "m.pth", 20, [40], official_args(depth=20))
    model, _ = _open(import_official(tmp_path / "m.pth", None, None, tmp_path / "run"))
    for m in model.modules():
        if type(m).__name__ == "_ShortcutA":
            m.forward = lambda x, e=m.extra: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, e // 2, e - e // 2))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x)["joint"], official(x)[0], atol=1e-3)


@pytest.mark.parametrize("outputs,method", [([40], "sla"), ([40, 10], "sla+sd"), ([10, 4], "mt"), ([10], "baseline")])
def test_method_is_read_off_the_heads_withoutofficial_args(outputs, method, tmp_path):
    official = official_checkpoint(tmp_path / "m.pth", 20, outputs, None)
    model, state = _open(import_official(tmp_path / "m.pth", "cifar10", "rotation", tmp_path / "run"))
    assert state["config"]["method"] == method and state["source"]["args"] is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for head, logits in zip(model.heads, official(x), strict=True):
            torch.testing.assert_close(model(x)[head], logits)


def test_cli_entry_imports_and_says_where(tmp_path, capsys):
    official_checkpoint(tmp_path / "model-best.pth", 20, [40], official_args(depth=20))
    assert main(["import-official", str(tmp_path / "model-best.pth"), "--dataset", "cifar10", "--transform",
                 "rotation", "--out", str(tmp_path / "run")]) == 0
    assert str(tmp_path / "run") in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["method"] == "sla"


def test_cifar100_names_are_its_hundred_labels_in_order():
    names = CIFAR_CLASSES["cifar100"]
    assert len(set(names)) == 100 and list(names) == sorted(names)  # the meta file lists them alphabetically
    assert (names[0], names[30], names[99]) == ("apple", "dolphin", "worm")


# ---------------------------------------------------------------------------------------------------------------
# Refusals: one line each, nothing run, nothing written


def _refused(tmp_path: Path, *args, **kwargs) -> str:
    with pytest.raises(LabkitError) as e:
        import_official(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    assert not (tmp_path / "run").exists()
    return message


def test_a_pickled_call_in_the_args_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    args = official_args(depth=20, note=RunsShell(marker))  # a Namespace is allowed, os.system is not
    official_checkpoint(path, 20, [40], args)
    message = _refused(tmp_path, path, "cifar10", "rotation", tmp_path / "run")
    assert message == (f"refused to load {path}: it would import {os.name}.system, so it may carry code; labkit "
                       f"loads only tensors and plain data and ran nothing from it")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file really carries the call: an unsafe load runs it
    assert marker.exists()


def test_any_other_global_is_refused_by_name(tmp_path):
    path = tmp_path / "dated.pth"
    official_checkpoint(path, 20, [40], official_args(depth=20), saved_on=datetime.date(2020, 7, 12))
    assert _refused(tmp_path, path, None, None, tmp_path / "run") == (
        f"refused to load {path}: it would import datetime.date, so it may carry code; labkit loads only tensors "
        f"and plain data and ran nothing from it")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.99])
def test_a_truncated_file_is_refused(keep, tmp_path):
    official_checkpoint(tmp_path / "m.pth", 20, [40], official_args(depth=20))
    data = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:int(len(data) * keep)])
    message = _refused(tmp_path, tmp_path / "cut.pth", None, None, tmp_path / "run")
    assert message.startswith(f"checkpoint {tmp_path / 'cut.pth'} is truncated or corrupted (")


def test_a_missing_file_and_a_labkit_checkpoint_are_refused(tmp_path):
    assert _refused(tmp_path, tmp_path / "nope.pth", None, None, tmp_path / "run") == (
        f"checkpoint {tmp_path / 'nope.pth'} does not exist")
    save_checkpoint(tmp_path / "labkit.pt", {"config": {}, "model": {}, "N": 10, "M": 4})
    assert "is a labkit checkpoint already" in _refused(tmp_path, tmp_path / "labkit.pt", None, None, tmp_path / "run")


@pytest.mark.parametrize("outputs,args,dataset,transform,message", [
    ([40], None, "cifar10", "color_perm",
     "the checkpoint's joint head has 40 outputs = N·M with M=4, but --transform color_perm has M=6"),
    ([40], official_args(depth=20), None, "color_perm",
     "the checkpoint was trained with --aug rotation but --transform color_perm was given"),
    ([40], official_args(depth=20), "cifar100", None,
     "the checkpoint was trained with --dataset cifar10 but --dataset cifar100 was given"),
    ([40], argparse.Namespace(mode="sla"), "cifar100", "rotation",
     "the checkpoint's joint head has 40 outputs, not a multiple of N=100 (--dataset cifar100)"),
    ([10, 4], argparse.Namespace(mode="mt"), "cifar100", "rotation",
     "the checkpoint's class head has 10 outputs but --dataset cifar100 has N=100"),
    ([10, 4], None, "cifar100", "rotation",
     "the checkpoint's heads have [10, 4] outputs, which fit no labkit method with N=100: baseline [N], sla [N·M], "
     "mt [N, M], sla+sd [N·M, N]"),
    ([10, 6], None, "cifar10", "rotation",
     "the checkpoint's transform head has 6 outputs = M, but --transform rotation has M=4"),
    ([40, 10], official_args("sla", depth=20), None, None,
     "the checkpoint has 2 head(s) ([40, 10] outputs) but its method has 1 (joint)"),
    ([40], official_args("sla+random", depth=20), None, None,
     "the checkpoint was trained with --mode 'sla+random', which labkit has no method for; it imports: baseline, da, "
     "mt, sla, sla+sd"),
    ([40], argparse.Namespace(mode="sla", aug="rotation", model="resnet18", dataset="cifar10"), None, None,
     "the checkpoint holds a resnet18; labkit imports the official CIFAR ResNets only (cresnet20, cresnet32, "
     "cresnet44, cresnet56, cresnet110)"),
    ([40], argparse.Namespace(mode="sla", aug="rotation", model="cresnet56", dataset="cifar10"), None, None,
     "the checkpoint says --model cresnet56 but its stages hold 3 blocks each (cresnet20)"),
    ([40], None, None, "rotation", "the checkpoint does not name its dataset; pass --dataset (cifar10, cifar100)"),
    ([40], official_args(depth=20, dataset="imagenet"), None, None,
     "labkit imports official CIFAR ResNets only: --dataset must be one of cifar10, cifar100, got 'imagenet'"),
])
def test_contradictions_are_refused_in_one_line(outputs, args, dataset, transform, message, tmp_path):
    official_checkpoint(tmp_path / "m.pth", 20, outputs, args)
    assert _refused(tmp_path, tmp_path / "m.pth", dataset, transform, tmp_path / "run") == message


def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path):
    official_checkpoint(tmp_path / "a.pth", 20, [40], official_args(depth=20), seed=1)
    official_checkpoint(tmp_path / "b.pth", 20, [40], official_args(depth=20), seed=2)
    out = import_official(tmp_path / "a.pth", None, None, tmp_path / "run")
    (out / "metrics.json").write_text("{}")  # as if the imported run had been evaluated
    before = snapshot(out.path)
    with pytest.raises(LabkitError) as e:
        import_official(tmp_path / "b.pth", None, None, out)
    assert str(e.value) == (f"{out} already holds a run (config.json, history.json, checkpoint.pt, metrics.json); "
                            f"pass --overwrite to replace it, or choose another --out")
    assert snapshot(out.path) == before
    import_official(tmp_path / "b.pth", None, None, out, overwrite=True)
    assert load_checkpoint(out / "checkpoint.pt")["source"]["official"] == str(tmp_path / "b.pth")
    assert not (out / "metrics.json").exists()  # the old model's metrics went with it
