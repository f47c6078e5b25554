"""What a lab notebook asks of the library right after its parameters cell: checked parameters, and the configs
they describe.

    P = notebook.parameters("02_invariance_six_nine", globals())
    comparison = report.compare(P.configs(), progress=PROGRESS)   # one run per method in METHODS × seed in SEEDS

`parameters` takes from the namespace only the names the notebook's `parameters` cell declares, checks each
against its annotation with the runner's own check (so JupyterLab, plain papermill and `labkit notebooks` refuse
the same values with the same one-line message), and resolves OUT_DIR. A parameter whose upper-case name is a
`TrainConfig` field's (DATASET, TRANSFORM, EPOCHS, TRAIN_FRACTION, DEVICE, MODEL, LR, BATCH_SIZE, ...) sets that
field in `P.config()`, on top of the recipe a RECIPE parameter names (`labkit.config.RECIPES`; none: the schema's
defaults); METHODS and SEEDS are the default grid of `P.configs()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import TrainConfig, recipe
from .runner import check_parameters, find_notebook, notebook_parameters, resolve_out_dir

__all__ = ["NotebookParameters", "parameters", "config_field_of"]

_GRID = {"METHODS": "method", "SEEDS": "seed"}  # list parameters that span the runs of a notebook


def config_field_of(parameter: str) -> str | None:
    """The TrainConfig field a notebook parameter sets: its name, upper-cased (EPOCHS -> epochs, T -> T)."""
    return {f.name.upper(): f.name for f in fields(TrainConfig)}.get(parameter)


@dataclass(frozen=True)
class NotebookParameters:
    """A notebook's checked parameters (read as attributes, P.EPOCHS) and the folder its numbers go to."""

    notebook: str
    values: Mapping[str, Any]
    out: Path  # OUT_DIR, resolved: where `labkit.results.record` writes

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"notebook {self.notebook} has no parameter {name}") from None

    def config(self, **changes: Any) -> TrainConfig:
        """The TrainConfig the parameters describe: the RECIPE parameter's recipe, every parameter named like a field
        on top of it, and `changes` on top of those."""
        given = {config_field_of(k): v for k, v in self.values.items() if config_field_of(k)}
        return recipe(self.values.get("RECIPE", "labkit"), **{**given, **changes})

    def configs(self, **grid: Any) -> list[TrainConfig]:
        """One config per point of the grid, method-major: method over METHODS × seed over SEEDS unless `grid`
        says otherwise (a list spans its values, a single value is fixed)."""
        default = {field: self.values[p] for p, field in _GRID.items() if p in self.values}
        axes = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in {**default, **grid}.items()}
        return [self.config(**dict(zip(axes, point, strict=True))) for point in itertools.product(*axes.values())]


def parameters(notebook: str, namespace: Mapping[str, Any]) -> NotebookParameters:
    """The notebook's declared parameters, taken from `namespace` (its globals) and checked; raises a one-line
    LabkitError naming a parameter of the wrong type and what it must be."""
    declared = notebook_parameters(find_notebook(notebook))
    values = check_parameters({k: namespace[k] for k in declared if k in namespace}, declared, notebook)
    return NotebookParameters(notebook, values, resolve_out_dir(values.get("OUT_DIR", ""), notebook))
