"""Numbers a notebook records, under one key scheme, so tests and summaries read values, never printed text.

    record.comparison(P.out, comparison)              # every row of a report.Comparison
    record.comparison(P.out, sla_sd_T4, setting="T=4")
    record.test_results(P.out, results)               # {model: {mode: ModeResult}}: accuracies
    record.value(P.out, key("exercises", "aggregate"), 1)
    record.read(P.out)                                # {"acc.sla.aggregated.mean": 0.97, ...}

Keys are dot-joined parts, from the quantity to the particular: `QUANTITY.GROUP.MODE[.STATISTIC]`.

| key                                  | value                                                         |
|--------------------------------------|---------------------------------------------------------------|
| acc.GROUP.MODE.mean / .std           | test accuracy in [0, 1], mean and sample std over seeds        |
| pair_confused.GROUP.MODE.mean / .std | test images of the showcase pair called the other (6↔9)        |
| pair_expected.GROUP.MODE.mean / .std | Σ P(other | x) over the pair's test images                     |
| balanced_acc.GROUP.MODE.mean / .std  | mean per-class test accuracy (every run has it)                 |
| many_acc / medium_acc / few_acc.GROUP.MODE.mean / .std | a shot group's accuracy, when no run's group is empty |
| forwards_per_image.GROUP.MODE        | backbone forward passes per test image                         |
| train_seconds.GROUP.mean             | training wall time per run, s                                  |
| seeds.GROUP                          | runs averaged                                                  |
| acc.MODEL.MODE                       | one trained model's test accuracy (`test_results`)             |

GROUP is a method (`sla+sd`), or a method and a setting the notebook names (`sla+sd.T=4`). A key is a name to
read, never to parse: nothing splits it again. Everything is written to OUT_DIR/results.json atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError
from ..core.files import write_json
from ..sla.inference import ModeResult
from ..training.report import Comparison

__all__ = ["key", "value", "values", "comparison", "test_results", "read", "RESULTS_FILE"]

RESULTS_FILE = "results.json"


def key(*parts: Any) -> str:
    """The key of a recorded number: its parts joined by dots (`key("acc", "sla", "single")`)."""
    if not parts or any(str(p) == "" for p in parts):
        raise LabkitError(f"a recorded number's key needs non-empty parts, got {parts!r}")
    return ".".join(str(p) for p in parts)


def value(out_dir: str | Path, name: str, number: float) -> float:
    """Store `number` under `name` in out_dir/results.json (atomic read-modify-write); returns the number."""
    values(out_dir, {name: number})
    return number


def values(out_dir: str | Path, numbers: Mapping[str, float]) -> dict[str, float]:
    """Store several numbers in one write; returns them."""
    for name, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise LabkitError(f"record({name!r}) takes a finite number, got {number!r}")
    recorded = {**read(out_dir), **{name: float(number) for name, number in numbers.items()}}
    write_json(Path(out_dir) / RESULTS_FILE, recorded)
    return dict(numbers)


def comparison(out_dir: str | Path, comp: Comparison, setting: str | None = None) -> dict[str, float]:
    """Every row of a comparison under the key scheme above (GROUP = method, or method.setting); returns the
    numbers recorded."""
    numbers: dict[str, float] = {}
    for row in comp.rows:
        group = row["method"] if setting is None else key(row["method"], setting)
        for quantity in ("acc", "pair_confused", "pair_expected", "balanced_acc", "many_acc", "medium_acc",
                         "few_acc"):
            if f"{quantity}_mean" in row:
                numbers[key(quantity, group, row["mode"], "mean")] = row[f"{quantity}_mean"]
                numbers[key(quantity, group, row["mode"], "std")] = row[f"{quantity}_std"]
        numbers[key("forwards_per_image", group, row["mode"])] = row["forwards_per_image"]
        numbers[key("train_seconds", group, "mean")] = row["train_seconds_mean"]
        numbers[key("seeds", group)] = row["seeds"]
    return values(out_dir, numbers)


def test_results(out_dir: str | Path, results: Mapping[str, Mapping[str, ModeResult]]) -> dict[str, float]:
    """Each model's test accuracy per inference mode, `acc.MODEL.MODE`."""
    return values(out_dir, {key("acc", model, mode): r.accuracy for model, by_mode in results.items()
                            for mode, r in by_mode.items()})


def read(out_dir: str | Path) -> dict[str, float]:
    """Every number recorded in out_dir so far."""
    path = Path(out_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}

