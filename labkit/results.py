"""Numbers a notebook records, so tests and summaries read values, never printed text.

    record(OUT_DIR, "six_nine.da.single", 4)      # appends to OUT_DIR/results.json
    read_results(OUT_DIR)                          # {"six_nine.da.single": 4.0, ...}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import write_json
from .errors import LabkitError

__all__ = ["record", "read_results", "RESULTS_FILE"]

RESULTS_FILE = "results.json"


def record(out_dir: str | Path, name: str, value: float) -> float:
    """Store `value` under `name` in out_dir/results.json (atomic read-modify-write); returns the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabkitError(f"record({name!r}) takes a finite number, got {value!r}")
    path = Path(out_dir) / RESULTS_FILE
    results = read_results(out_dir)
    results[name] = float(value)
    write_json(path, results)
    return value


def read_results(out_dir: str | Path) -> dict[str, float]:
    path = Path(out_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
