"""A notebook's parameters cell: what it declares, and the checks every way of running it shares.

Each numbered notebook has exactly one cell tagged `parameters` whose lines read `NAME: type = literal  # comment`.
`notebook_parameters` reads it as papermill itself does (`papermill.inspect_notebook`, what `papermill
--help-notebook` prints), so the runner (`labkit.lab.runner`, the driver), plain papermill and the check inside
the kernel (`labkit.lab.notebook`) agree on names, types and defaults.
"""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import LabkitError
from ..core.errors import unknown as unknown_name
from ..core.paths import home, notebook_dir, runs_root
from ..core.workers import check_workers

__all__ = ["Parameter", "notebook_paths", "find_notebook", "notebook_parameters", "check_parameters",
           "resolve_out_dir"]

_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict,
          "tuple": (list, tuple)}


@dataclass(frozen=True)
class Parameter:
    """One line of a notebook's parameters cell: `name: annotation = default  # comment`."""

    name: str
    annotation: str
    default: Any
    comment: str

    def accepts(self, value: Any) -> bool:
        return _conforms(value, ast.parse(self.annotation, mode="eval").body)

    def coerce(self, value: Any) -> Any:
        """A scalar given for a list parameter becomes a one-element list (`-p SEEDS=1` means [1]); a string that
        reads as a YAML list becomes that list (plain `papermill -p METHODS '[da, sla]'` passes the text)."""
        if not self.annotation.startswith("list["):
            return value
        if isinstance(value, str) and value.strip().startswith("["):
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        if not isinstance(value, list) and self.accepts([value]):
            return [value]
        return value


def _conforms(value: Any, ann: ast.expr) -> bool:
    """Does `value` (a YAML/Python literal) match the annotation `ann` (int, float, str, bool, list[X], X | None)?"""
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _conforms(value, ann.left) or _conforms(value, ann.right)
    if isinstance(ann, ast.Constant) and ann.value is None:
        return value is None
    if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name):
        if ann.value.id == "dict":
            return isinstance(value, dict)
        inner = ann.slice.elts[0] if isinstance(ann.slice, ast.Tuple) else ann.slice  # tuple[int, ...] -> int
        return _conforms(value, ann.value) and all(_conforms(v, inner) for v in value)
    if isinstance(ann, ast.Name) and ann.id in _TYPES:
        if ann.id in ("int", "float") and isinstance(value, bool):
            return False
        return isinstance(value, _TYPES[ann.id])
    if isinstance(ann, ast.Name) and ann.id == "None":
        return value is None
    raise LabkitError(f"unsupported parameter annotation {ast.unparse(ann)!r}; use int, float, str, bool, "
                      f"list[...], dict or X | None")


def notebook_paths(only: Sequence[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks `NN_*.ipynb` in order, or just those `only` names (by number, stem or file name)."""
    folder = folder or notebook_dir()
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return paths
    return [find_notebook(ref, folder) for ref in only]


def find_notebook(ref: str | Path, folder: Path | None = None) -> Path:
    """A notebook by number ("02"), stem ("02_invariance_six_nine"), file name or path."""
    folder = folder or notebook_dir()
    path = Path(ref)
    if path.suffix == ".ipynb" and path.is_file():
        return path.resolve()
    ref = str(ref).removesuffix(".ipynb")
    matches = [p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")) if p.stem == ref or p.stem[:2] == ref]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")))
        raise LabkitError(f"no notebook {ref!r} in {folder}; known: {known}")
    return matches[0]


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """The typed parameters of the notebook's one cell tagged `parameters`, as papermill itself reads them
    (`papermill.inspect_notebook`, what `papermill --help-notebook` prints): so `labkit notebooks`, plain
    papermill and the check inside the notebook (`labkit.notebook.parameters`) agree on names and types."""
    import papermill

    nb = json.loads(Path(path).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise LabkitError(f"notebook {Path(path).name} needs exactly one cell tagged 'parameters', has {len(cells)}")
    declared = [n for n in ast.parse("".join(cells[0]["source"])).body]
    found = papermill.inspect_notebook(str(path))
    if len(found) != len(declared) or any(p["inferred_type_name"] in (None, "None") for p in found.values()):
        raise LabkitError(f"notebook {Path(path).name}: every line of the parameters cell must read "
                          f"'NAME: type = literal  # comment' (papermill read {', '.join(found) or 'none'})")
    return {name: Parameter(name, p["inferred_type_name"], _literal(path, name, p["default"]), p["help"] or "")
            for name, p in found.items()}


def _literal(path: Path, name: str, text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise LabkitError(f"notebook {Path(path).name}: parameter {name}'s default {text!r} is not a literal") \
            from None


def check_parameters(values: Mapping[str, Any], params: Mapping[str, Parameter], notebook: str) -> dict[str, Any]:
    """`values` checked against the notebook's parameters (names and types), list-coerced; raises a LabkitError.
    A list parameter is a set of values to try (methods, seeds, temperatures): it may be empty only when its
    default is, and holds no value twice (two seeds of 0 are one run counted twice)."""
    checked = {}
    for key, value in values.items():
        if key not in params:
            raise LabkitError(unknown_name("parameter", key, params, f" for notebook {notebook}"))
        p = params[key]
        value = p.coerce(value)
        if not p.accepts(value):
            raise LabkitError(f"parameter {key} of notebook {notebook} must be {p.annotation}, got {value!r} "
                              f"({type(value).__name__})")
        if isinstance(value, list):
            _check_list(key, value, p, notebook)
        if key == "WORKERS":  # runs trained at once by the notebook's comparisons (labkit.training.grid)
            check_workers(value, f"parameter WORKERS of notebook {notebook}")
        checked[key] = value
    return checked


def _check_list(key: str, value: list, p: Parameter, notebook: str) -> None:
    if not value and p.default:
        raise LabkitError(f"parameter {key} of notebook {notebook} is empty; it needs at least one value (default: "
                          f"{p.default!r})")
    twice = [v for i, v in enumerate(value) if v in value[:i]]
    if twice:
        raise LabkitError(f"parameter {key} of notebook {notebook} has {twice[0]!r} twice; give each value once")


def resolve_out_dir(out_dir: str | Path, notebook: str) -> Path:
    """A notebook's OUT_DIR as a folder that exists: "" means <home>/runs/notebooks/interactive/<notebook>; a
    relative path is under labkit's home (`labkit.paths.home`)."""
    path = Path(out_dir).expanduser() if str(out_dir) else runs_root() / "notebooks" / "interactive" / notebook
    path = path if path.is_absolute() else home() / path
    path.mkdir(parents=True, exist_ok=True)
    return path
