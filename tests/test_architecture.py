"""labkit's shape: one schema for every setting, one registry entry per method and dataset, names resolved once,
no import cycles, one palette. Each property is shown by adding something in one place and seeing it everywhere."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.cli.commands import build_parser
from labkit.cli.flags import add_config_arguments, config_from_args, parse_config
from labkit.core.device import autocast, uses_bf16
from labkit.core.errors import LabkitError
from labkit.data import datasets
from labkit.data.splits import subsample
from labkit.figures import theme, viz
from labkit.sla import methods, modes, objectives, transforms
from labkit.sla.methods import Method
from labkit.training.config import TrainConfig, option
from labkit.training.resolve import resolve
from tests.support import TINY_ARGS, one_thread, run_cli

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
def _summed_sla(out, y, M):
    """The official code's --with-large-loss: Σ_j CE over the M views instead of 1/M Σ_j."""
    return M * objectives.sla_loss(out, y, M)


@pytest.fixture
def toy_method():
    method = methods.register(Method("sla-sum", heads=("joint",), expands=True, modes=("single", "aggregated"),
                                     loss=_summed_sla, color=theme.PALETTE["orange"]))
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
    torch.testing.assert_close(toy_method.bind({})(out_, y, 4), 4 * sla.bind(TrainConfig().to_dict())(out_, y, 4))
    assert viz.method_color("sla-sum") == theme.PALETTE["orange"]
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
    def load(spec, train_fraction, data_dir, image_size):  # the digits, renamed: any loader will do
        return subsample(dataclasses.replace(datasets.load_data("digits"), name=spec.name), train_fraction)

    dataset = datasets.register(datasets.Dataset("digits-copy", load, default_model="resnet20"))
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
# The layers of docs/architecture.md, bottom up: a module may import its own layer and the layers below, never one
# above; `sla` and `data` stand side by side and never import each other.
LAYERS = {"core": 0, "sla": 1, "data": 1, "training": 2, "figures": 3, "lab": 4, "cli": 5}
KERNEL_SIDE = {"lab.notebook", "lab.record", "lab.exercises", "lab.sandbox", "lab.worked"}
DRIVER_SIDE = {"lab.runner", "lab.watch", "lab.grading", "lab.handout"}


def _module_name(path: Path) -> str:
    """labkit/sla/joint.py -> "sla.joint"; labkit/cli/__init__.py -> "cli"."""
    parts = path.relative_to(LABKIT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _labkit_imports(path: Path) -> set[str]:
    """Every labkit module `path` imports, anywhere in it (functions and TYPE_CHECKING blocks included), as
    "package.module" names; `from ..sla import joint` counts as sla.joint."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "labkit":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                target = ".".join([*base, alias.name])
                found.add(target if (LABKIT / Path(*target.split("."))).with_suffix(".py").exists()
                          else ".".join(base))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("labkit.") for a in node.names if a.name.startswith("labkit."))
    return {f for f in found if f and f != "__version__"} - {_module_name(path)}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _labkit_imports(p) for p in sorted(LABKIT.rglob("*.py")) if p.parent != LABKIT}


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_every_module_sits_in_a_layer_and_imports_only_downwards():
    loose = sorted(p.name for p in LABKIT.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in LABKIT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS)
    upward = [(m, d) for m, deps in _graph().items() for d in deps
              if LAYERS[_layer(d)] > LAYERS[_layer(m)] or {_layer(m), _layer(d)} == {"sla", "data"}]
    assert not upward, f"imports that run up or across the layers: {upward}"


def test_the_kernel_half_of_the_lab_never_imports_the_driver_half():
    graph = _graph()
    crossing = [(m, d) for m in KERNEL_SIDE for d in graph[m] if d in DRIVER_SIDE]
    assert not crossing, crossing


def test_the_import_graph_has_no_cycle_not_even_through_type_checking():
    graph = _graph()
    assert not [p for p in LABKIT.rglob("*.py") if "TYPE_CHECKING" in p.read_text()], "no imports for types only"
    done, visiting = set(), []

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

    for module in graph:
        visit(module)


def test_the_layer_check_catches_an_import_that_runs_up(tmp_path, monkeypatch):
    """The check above can fail: a copy of labkit where sla imports training is refused."""
    import shutil

    copy = tmp_path / "labkit"
    shutil.copytree(LABKIT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    joint = copy / "sla" / "joint.py"
    joint.write_text(joint.read_text() + "\nfrom ..training import config  # noqa\n")
    monkeypatch.setattr(sys.modules[__name__], "LABKIT", copy)
    with pytest.raises(AssertionError, match=r"\('sla.joint', 'training.config'\)"):
        test_every_module_sits_in_a_layer_and_imports_only_downwards()
    with pytest.raises(AssertionError, match="import cycle: .*sla.joint"):  # config -> methods -> ... -> joint
        test_the_import_graph_has_no_cycle_not_even_through_type_checking()


def test_the_architecture_page_names_every_layer_in_order():
    page = (LABKIT.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `labkit\.(\w+)` \|", page, re.M)
    assert rows == sorted(LAYERS, key=lambda k: (-LAYERS[k], k)), rows


def test_importing_labkit_loads_nothing_heavy():
    code = ("import sys, labkit; heavy = [m for m in ('torch', 'plotly', 'torchvision', 'labkit.training') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=LABKIT.parent)
    assert out.stdout.strip() == "[]"
    import labkit

    for name in labkit.__all__:
        assert getattr(labkit, name) is not None, name


def test_names_are_resolved_once():
    """Below `labkit.training.resolve` (and the places a user's name enters: config, cli, notebook helpers,
    imports), modules take method objects, transformation sets and devices, never their names."""
    below = ["training/engine.py", "training/callbacks.py", "sla/inference.py", "sla/objectives.py",
             "figures/explore.py", "figures/viz.py", "training/report.py", "data/splits.py", "training/distributed.py"]
    for module in below:
        source = (LABKIT / module).read_text()
        for call in ("transforms.get(", "methods.get(", "get_method(", "resolve_device(", "load_data("):
            assert call not in source or module.endswith("distributed.py") and call == "resolve_device(", (module, call)


# -------------------------------------------------------------------------------------------------- the palette
def test_one_colour_blind_safe_palette_and_the_true_label_colour_is_nobody_elses():
    colours = [m.color for m in methods.METHODS.values()]
    assert len(set(colours)) == len(colours) and set(colours) <= set(theme.PALETTE.values())
    mode_colours = [m.color for m in modes.MODES.values()]
    assert len(set(mode_colours)) == len(mode_colours) and set(mode_colours) <= set(theme.PALETTE.values())
    assert theme.TRUE_COLOR not in colours + mode_colours and theme.TRUE_COLOR not in theme.SERIES_COLORS
    for module in ("figures/viz.py", "figures/theme.py", "figures/explore.py", "figures/static_explorer.py"):
        literals = set(re.findall(r'"(#[0-9A-Fa-f]{6})"', (LABKIT / module).read_text()))
        assert literals <= set(theme.PALETTE.values()), (module, literals - set(theme.PALETTE.values()))
    assert not hasattr(viz, "views_figure"), "one view-grid builder"


# ------------------------------------------------------------------------------------- an inference mode, a pair
def _mean_probabilities(out, M):
    """Aggregation by averaging probabilities instead of logits (log of the mean of the M conditionals)."""
    from labkit.sla.joint import conditional_probabilities

    return conditional_probabilities(out["joint"], M).mean(dim=1).log()


@pytest.fixture
def toy_mode():
    mode = modes.register(modes.Mode("prob-mean", "SLA+AG (probabilities)", expands=True, readout=_mean_probabilities,
                                     needs=("joint",), color=theme.PALETTE["reddish purple"], symbol="x"))
    method = methods.register(Method("sla-pm", heads=("joint",), expands=True, modes=("single", "prob-mean"),
                                     loss=objectives.sla_loss, color=theme.PALETTE["black"]))
    yield mode, method
    methods.METHODS.pop("sla-pm")
    modes.MODES.pop("prob-mean")


@pytest.mark.slow
def test_an_inference_mode_registered_in_one_place_is_evaluated_tabled_and_drawn(toy_mode, tmp_path):
    from labkit.training.report import compare

    with one_thread():
        comparison = compare([TrainConfig(method="sla-pm", epochs=1, batch_size=16, train_fraction=0.1,
                                          device="cpu")], root=tmp_path)
    metrics = comparison.runs[0]
    assert set(metrics["test_acc"]) == {"single", "prob-mean"} and metrics["forwards_per_image"]["prob-mean"] == 4
    assert "| sla-pm | prob-mean |" in comparison.table
    bars = viz.accuracy_bars(comparison.rows)
    assert [t.name for t in bars.data] == ["single", "prob-mean"] and bars.data[1].marker.color == "#CC79A7"


def test_a_showcase_pair_is_one_field_of_a_dataset(tmp_path):
    """A dataset whose pair is 3 and 8: the metrics count 3↔8 and the table names it; the digits keep 6↔9."""
    from labkit.training.experiment import evaluate_run
    from labkit.training.report import format_table, summarize

    def load(spec, train_fraction, data_dir, image_size):
        return subsample(dataclasses.replace(datasets.load_data("digits"), name=spec.name), train_fraction)

    datasets.register(datasets.Dataset("digits-38", load, default_model="smallcnn", showcase=(3, 8)))
    try:
        metrics = evaluate_run(resolve(TrainConfig(dataset="digits-38", train_fraction=0.1, device="cpu")))
    finally:
        datasets.DATASETS.pop("digits-38")
    c = metrics["confusion"]["single"]
    assert metrics["pair"] == ["3", "8"] and metrics["pair_confused"]["single"] == c[3][8] + c[8][3]
    assert "3↔8 confused" in format_table(summarize([{**metrics, "train_seconds": 0.0}]))
    assert datasets.load_data("digits").showcase == (6, 9)
