"""What a lab notebook asks of the library right after its parameters cell: checked parameters, and the configs
they describe.

    P = notebook.parameters("02_invariance_six_nine", globals())
    comparison = report.compare(P.configs(), progress=PROGRESS)   # one run per method in METHODS × seed in SEEDS
    record.comparison(P.out, comparison)                           # its numbers, under labkit.lab.record's keys

`parameters` takes from the namespace only the names the notebook's `parameters` cell declares (read by
`papermill.inspect_notebook`, as `papermill --help-notebook` prints them; `labkit.lab.parameters`), checks each
against its annotation with the runner's own check and each value a `TrainConfig` field takes against that
field's check (so JupyterLab, plain papermill, a hosted service and `labkit notebooks` refuse the same values with
the same one-line message naming the parameter and the allowed values), refuses a name papermill injected that
the notebook does not declare (`papermill -p EPOCH 3`), writes the checked values back (a scalar given for a list
becomes a one-element list, so `-p SEEDS 1` works in every later cell) and resolves OUT_DIR. A parameter whose
upper-case name is a `TrainConfig` field's (DATASET, TRANSFORM, EPOCHS, TRAIN_FRACTION, DEVICE, MODEL, LR,
BATCH_SIZE, ...) sets that field in `P.config()`, on top of the recipe a RECIPE parameter names
(`labkit.training.config.RECIPES`; none: the schema's defaults); METHODS and SEEDS are the default grid of
`P.configs()`.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError, unknown
from ..training.config import TrainConfig, check_field, recipe
from .parameters import Parameter, check_parameters, find_notebook, notebook_parameters, resolve_out_dir

__all__ = ["NotebookParameters", "ParameterError", "parameters", "config_field_of"]

_GRID = {"METHODS": "method", "SEEDS": "seed"}  # list parameters that span the runs of a notebook
_FIELDS = {f.name: f for f in fields(TrainConfig)}


def config_field_of(parameter: str) -> str | None:
    """The TrainConfig field a notebook parameter sets: its name, upper-cased (EPOCHS -> epochs, T -> T)."""
    return {f.name.upper(): f.name for f in fields(TrainConfig)}.get(parameter)


@dataclass(frozen=True)
class NotebookParameters:
    """A notebook's checked parameters (read as attributes, P.EPOCHS) and the folder its numbers go to."""

    notebook: str
    values: Mapping[str, Any]
    out: Path  # OUT_DIR, resolved: where `labkit.lab.record` writes

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

    def each(self, name: str, field: str | None = None, check: Callable[[Any], Any] | None = None,
             allow: tuple[Any, ...] = ()) -> list[Any]:
        """List parameter `name`'s values, each checked as TrainConfig's `field` takes it and by `check` (a function
        that raises a LabkitError on a wrong value, e.g. `long_tail_loss`); values in `allow` pass as they are (0
        for "all", say). A wrong one raises a one-line `ParameterError` naming the parameter."""
        values = list(getattr(self, name))
        for v in (v for v in values if v not in allow):
            try:
                if field is not None:
                    check_field(_FIELDS[field], v)
                if check is not None:
                    check(v)
            except LabkitError as e:
                also = f"; {' or '.join(map(repr, allow))} is allowed too" if allow else ""
                raise ParameterError(f"parameter {name}: {e}{also}") from None
        return values


class ParameterError(LabkitError):
    """A notebook parameter of the wrong name, type or range. IPython shows it as its one line, no traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook: these lines replace the traceback
        return [f"{type(self).__name__}: {self}"]


def parameters(notebook: str, namespace: Mapping[str, Any]) -> NotebookParameters:
    """The notebook's declared parameters, taken from `namespace` (its globals), checked, and written back into
    it when it is writable; raises a one-line `ParameterError` naming the parameter and what is allowed."""
    declared = notebook_parameters(find_notebook(notebook))
    try:
        _refuse_undeclared(namespace, declared, notebook)
        values = check_parameters({k: namespace[k] for k in declared if k in namespace}, declared, notebook)
        _check_ranges(values, declared)
    except ParameterError:
        raise
    except LabkitError as e:
        raise ParameterError(str(e)) from None
    if isinstance(namespace, MutableMapping):
        namespace.update(values)
    return NotebookParameters(notebook, values, resolve_out_dir(values.get("OUT_DIR", ""), notebook))


def _refuse_undeclared(namespace: Mapping[str, Any], declared: Mapping[str, Parameter], notebook: str) -> None:
    """Refuse names in the cell papermill injected (`# Parameters`, IPython's input history `_ih`) that the
    parameters cell does not declare: papermill itself only warns about them."""
    injected = [src for src in namespace.get("_ih", []) if src.lstrip().startswith("# Parameters")]
    if not injected:
        return
    for node in ast.parse(injected[-1]).body:
        for target in getattr(node, "targets", []):
            if isinstance(target, ast.Name) and target.id not in declared:
                raise ParameterError(unknown("parameter", target.id, declared, f" for notebook {notebook}"))


def _check_ranges(values: Mapping[str, Any], declared: Mapping[str, Parameter]) -> None:
    """Each value that sets a TrainConfig field passes that field's own check (range, allowed names), unless it is
    the notebook's own default (a notebook may give a default a meaning of its own, e.g. 0 for "derived")."""
    for name, value in values.items():
        field = config_field_of(name) or _GRID.get(name)
        if field is None or value == declared[name].default:
            continue
        for v in value if name in _GRID and isinstance(value, list) else [value]:
            try:
                check_field(_FIELDS[field], v)
            except LabkitError as e:
                raise ParameterError(f"parameter {name}: {e}") from None
