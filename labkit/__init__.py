"""labkit: a lab for Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020).

The layers, from the bottom up (docs/architecture.md): `labkit.core` (errors, registries, paths, files, device),
`labkit.sla` (the paper's transformations, joint labels, losses, methods, models and inference modes),
`labkit.data` (datasets and batching), `labkit.training` (config, engine, run folders, cache, comparisons),
`labkit.figures` (figure builders and explorers), `labkit.lab` (what notebooks call, and the notebook runner) and
`labkit.cli` (the command line).

What a notebook uses is reachable from here, `from labkit import compare, record, viz`: each name below is loaded
on first use (PEP 562), so `import labkit` itself stays light and nothing runs at import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> "module" (the module itself) or "module:attribute"
_PUBLIC = {
    # modules a notebook reads by name
    "transforms": "labkit.sla.transforms", "joint": "labkit.sla.joint", "objectives": "labkit.sla.objectives",
    "methods": "labkit.sla.methods", "modes": "labkit.sla.modes", "inference": "labkit.sla.inference",
    "longtail": "labkit.sla.longtail",
    "datasets": "labkit.data.datasets", "viz": "labkit.figures.viz", "theme": "labkit.figures.theme",
    "explore": "labkit.figures.explore", "static_explorer": "labkit.figures.static_explorer",
    "learning": "labkit.figures.learning", "stats": "labkit.training.stats",
    "notebook": "labkit.lab.notebook", "record": "labkit.lab.record", "exercises": "labkit.lab.exercises",
    "report": "labkit.training.report", "paths": "labkit.core.paths",
    # the objects and functions notebooks call most
    "TrainConfig": "labkit.training.config:TrainConfig", "recipe": "labkit.training.config:recipe",
    "long_tail_loss": "labkit.training.config:long_tail_loss",
    "RunFolder": "labkit.training.run_folder:RunFolder", "cached_run": "labkit.training.cache:cached_run",
    "compare": "labkit.training.report:compare", "train_run": "labkit.training.experiment:train_run",
    "load_run": "labkit.training.experiment:load_run", "load_data": "labkit.data.datasets:load_data",
    "LabkitError": "labkit.core.errors:LabkitError",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'labkit' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
