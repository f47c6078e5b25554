"""labkit's shape: one schema for every setting, one registry entry per method and dataset, names resolved once,
no import cycles, one palette. Each property is shown by adding something in one place and seeing it everywhere."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from labkit import datasets, methods, objectives, transforms, viz
from labkit.cli import add_config_arguments, build_parser, config_from_args, parse_config
from labkit.config import TrainConfig, option
from labkit.data import subsample
from labkit.device import autocast, uses_bf16
from labkit.errors import LabkitError
from labkit.experiment import resolve
from labkit.methods import Method
from tests._reliability import TINY_ARGS, one_thread, run_cli

LABKIT = Path(__file__).resolve().parent.parent / "labkit"


# ------------------------------------------------------------------------------------------------- the schema
def _with_field() -> type:
    """A copy of the schema with one more field, written once, as a new setting would be."""
    def check(name, value):
        if not isinstance(value, int) or value < 0:
            raise LabkitError(f"{name} must be a non-negative integer, got {value!r}")

    return dataclasses.make_dataclass(
        "Extended", [("warmup_steps", int, option(0, "linear learning-rate warm-up, in steps", check))],
        bases=(TrainConfig,), frozen=True)


def test_a_new_field_reaches_the_parser_the_argv_and_the_json():
    Extended = _with_field()
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Extended)
    text = parser.format_help()
    assert "--warmup-steps" in text and "linear learning-rate warm-up, in steps (default: 0)" in " ".join(text.split())
    config = config_from_args(parser.parse_args(["--warmup-steps", "5", "--method", "mt"]), Extended)
    assert isinstance(config, Extended) and (config.warmup_steps, config.method) == (5, "mt")
    assert config.to_argv() == ["--method", "mt", "--warmup-steps", "5"]
    assert json.loads(json.dumps(config.to_dict()))["warmup_steps"] == 5
    with pytest.raises(LabkitError, match="warmup_steps must be a non-negative integer, got -1"):
        config_from_args(parser.parse_args(["--warmup-steps", "-1"]), Extended)


def test_every_field_has_a_flag_with_its_default_in_the_help():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: " ".join((a.help or "").split()) for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in helps, f"no flag for {f.name}"
        assert "(default: " in helps[f.name] and helps[f.name].startswith(f.metadata["help"].split(";")[0][:20])
    assert "(default: 0.9)" in helps["momentum"] and "(default: 0.5 0.75)" in helps["milestones"]


@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(method="sla+sd", momentum=0.8, milestones=(0.3, 0.6, 0.9), max_steps=7, compile=True, T=4.0),
    TrainConfig(dataset="cifar10", model="resnet20", batch_size=128, weight_decay=1e-4, precision="fp32",
                sync_bn=True, seed=3, train_fraction=0.25),
    TrainConfig(dataset="imagefolder", data_dir="photos", image_size=32, lr=0.05, beta=0.0),
])
def test_to_argv_round_trips_through_the_train_parser(config):
    assert parse_config(config.to_argv()) == config
    assert parse_config(config.to_argv(every=True)) == config


def test_defaults_can_be_switched_back_from_the_command_line():
    on = parse_config(["--compile", "--max-steps", "3"])
    assert parse_config([*on.to_argv(), "--no-compile", "--max-steps", "none"]) == TrainConfig()


# ------------------------------------------------------------------------------------------------ the methods
def _summed_sla(out, y, M, options):
    """The official code's --with-large-loss: Σ_j CE over the M views instead of 1/M Σ_j."""
    return M * objectives.sla_loss(out, y, M)


@pytest.fixture
def toy_method():
    method = methods.register(Method("sla-sum", heads=("joint",), expands=True, modes=("single", "aggregated"),
                                     loss=_summed_sla, color=viz.PALETTE["orange"]))
    yield method
    methods.METHODS.pop("sla-sum")


@pytest.mark.slow
def test_a_method_registered_in_one_place_trains_and_evaluates_through_the_cli(toy_method, tmp_path):
    with one_thread():
        rc, out, err = run_cli("train", "--method", "sla-sum", *TINY_ARGS, "--out", str(tmp_path / "run"),
                               "--no-progress")
        assert rc == 0, err
        rc, again, err = run_cli("eval", "--checkpoint", str(tmp_path / "run"), "--json", "--device", "cpu")
    assert rc == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "sla-sum" and set(metrics["test_acc"]) == {"single", "aggregated"}
    assert json.loads(again)["test_acc"] == metrics["test_acc"]
    sla = methods.get("sla")
    out_, y = {"joint": torch.randn(8, 40)}, torch.randint(0, 10, (2,))
    torch.testing.assert_close(toy_method.loss(out_, y, 4, TrainConfig()), 4 * sla.loss(out_, y, 4, TrainConfig()))
    assert viz.method_color("sla-sum") == viz.PALETTE["orange"]
    assert "sla-sum" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()


def test_unknown_methods_are_refused_without_fallback():
    with pytest.raises(LabkitError, match=r"^unknown method 'sla-sd'; did you mean 'sla\+sd'\? "
                                          r"allowed: baseline, da, mt, sla, sla\+sd$"):
        methods.get("sla-sd")
    with pytest.raises(LabkitError, match="unknown method"):
        TrainConfig(method="sla-sd")
    with pytest.raises(LabkitError, match="already registered"):
        methods.register(methods.get("sla"))
    with pytest.raises(LabkitError, match="aggregated mode needs a method trained on the M views"):
        Method("odd", ("class",), expands=False, modes=("single", "aggregated"), loss=_summed_sla)


# ----------------------------------------------------------------------------------------------- the datasets
@pytest.fixture
def toy_dataset():
    def load(spec, train_fraction, data_dir, image_size, download):  # the digits, renamed: any loader will do
        return subsample(dataclasses.replace(datasets.load_data("digits"), name=spec.name), train_fraction)

    dataset = datasets.register(datasets.Dataset("digits-copy", load, N=10, default_model="resnet20"))
    yield dataset
    datasets.DATASETS.pop("digits-copy")


def test_a_dataset_registered_in_one_place_is_a_config_choice_and_resolves(toy_dataset):
    config = TrainConfig(dataset="digits-copy", train_fraction=0.1, device="cpu")
    assert config.resolved_model == "resnet20" and config.to_dict()["model"] == "resnet20"
    run = resolve(config)
    assert run.data.name == "digits-copy" and run.data.N == 10 and run.method is methods.get("sla")
    assert run.tset is transforms.get("rotation") and run.device == torch.device("cpu")
    assert type(run.model.backbone).__name__ == "CifarResNet" and run.model.heads["joint"].out_features == 40
    with pytest.raises(LabkitError,
                       match="unknown dataset 'digits-cpy'; did you mean 'digits-copy'\\? allowed: .*digits-copy"):
        TrainConfig(dataset="digits-cpy")


# ------------------------------------------------------------------------------------------ precision, device
def test_precision_is_a_config_field():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not uses_bf16(cpu, "auto") and uses_bf16(cuda, "auto") and uses_bf16(cpu, "bf16")
    assert not uses_bf16(cuda, "fp32")
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(LabkitError, match=r"unknown precision 'fp16'; did you mean 'bf16'\? allowed: auto, bf16, fp32"):
        TrainConfig(precision="fp16")


# -------------------------------------------------------------------------------------------- the module graph
def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(labkit modules imported at module level, those imported inside functions); TYPE_CHECKING blocks skipped."""
    top, lazy = set(), set()

    def visit(node, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                names = [child.module] if child.module else [a.name for a in child.names]
                (lazy if inside_function else top).update(n.split(".")[0] for n in names)
            visit(child, inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return top, lazy


def test_the_import_graph_has_no_cycle_and_config_imports_nothing_lazily():
    graph = {}
    for path in sorted(LABKIT.glob("*.py")):
        top, lazy = _imports(path)
        graph[path.stem] = top | lazy  # a lazy import that closed a cycle would still be a cycle
    assert not _imports(LABKIT / "config.py")[1], "config.py imports labkit modules inside functions"
    order, done, visiting = [], set(), []

    def visit(module: str) -> None:
        if module in visiting:
            raise AssertionError(f"import cycle: {' -> '.join([*visiting[visiting.index(module):], module])}")
        if module in done or module not in graph:
            return
        visiting.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        visiting.pop()
        done.add(module)
        order.append(module)

    for module in graph:
        visit(module)
    assert order.index("config") < order.index("experiment") < order.index("cli")


def test_names_are_resolved_once():
    """Below `experiment.resolve` (and the places a user's name enters: config, cli, notebook helpers, imports),
    modules take method objects, transformation sets and devices, never their names."""
    for module in ("train", "inference", "objectives", "explore", "viz", "report", "data", "distributed"):
        source = (LABKIT / f"{module}.py").read_text()
        for call in ("transforms.get(", "methods.get(", "get_method(", "resolve_device(", "load_data("):
            assert call not in source or module == "distributed" and call == "resolve_device(", (module, call)


# -------------------------------------------------------------------------------------------------- the palette
def test_one_colour_blind_safe_palette_and_the_true_label_colour_is_nobody_elses():
    colours = [m.color for m in methods.METHODS.values()]
    assert len(set(colours)) == len(colours) and set(colours) <= set(viz.PALETTE.values())
    assert viz.TRUE_COLOR not in colours and viz.TRUE_COLOR not in viz._SERIES_COLORS
    literals = set(re.findall(r'"(#[0-9A-Fa-f]{6})"', (LABKIT / "viz.py").read_text()))
    assert literals <= set(viz.PALETTE.values()), literals - set(viz.PALETTE.values())
    assert not hasattr(viz, "views_figure"), "one view-grid builder"
