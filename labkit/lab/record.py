"""Numbers a notebook records, under one key scheme, so tests and summaries read values, never printed text.

    record.comparison(P.out, comparison)              # every row of a report.Comparison
    record.comparison(P.out, sla_sd_T4, setting="T=4")
    record.test_results(P.out, results)               # {model: {mode: ModeResult}}: accuracies
    record.value(P.out, key("exercises", "aggregate"), 1)
    record.difference(P.out, "sla.aggregated", "sla.single", interval)   # a labkit.training.stats.Interval
    record.read(P.out)                                # {"acc.sla.aggregated.mean": 0.97, ...}
    record.recap(P.out, "SLA's aggregate: {acc.sla.aggregated.mean:.1%}")   # Markdown, filled from the numbers

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
| diff.QUANTITY.A.vs.B.mean            | the difference A - B (A, B each `GROUP.MODE`; accuracy in [-1, 1]) |
| diff.QUANTITY.A.vs.B.lo / .hi        | its 95 % interval (`labkit.training.stats`; absent with one seed)  |
| diff.QUANTITY.A.vs.B.n               | seeds (paired t) or test images (bootstrap) behind the interval    |
| diff.QUANTITY.A.vs.B.beyond_noise    | 1 when the interval excludes 0, else 0                             |
| diff.QUANTITY.A.vs.B.bootstrap       | 1 for a bootstrap over test images, 0 for a paired t over seeds    |

GROUP is a method (`sla+sd`), or a method and a setting the notebook names (`sla+sd.T=4`). A key is a name to
read, never to parse: nothing splits it again, except `findings`, which reads the `diff.` keys back to write the
sentences after a table from the recorded numbers themselves (A and B never hold ".vs."). Everything is written to
OUT_DIR/results.json atomically.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import LabkitError
from ..core.files import write_json
from ..sla.inference import ModeResult
from ..training.report import Comparison
from ..training.stats import Interval, describe

__all__ = ["key", "value", "values", "comparison", "test_results", "difference", "difference_keys", "intervals",
           "findings", "recap", "Recap", "MISSING", "read", "RESULTS_FILE", "UNITS"]

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
        if "acc_diff" in row:  # report.with_differences: the row against its reference
            ref_method, ref_mode = row["acc_diff_vs"]
            ref_group = ref_method if setting is None else key(ref_method, setting)
            numbers.update(difference_keys(key(group, row["mode"]), key(ref_group, ref_mode), row["acc_diff"]))
    return values(out_dir, numbers)


def difference_keys(a: str, b: str, interval: Interval, quantity: str = "acc") -> dict[str, float]:
    """The numbers of an interval of a - b under `diff.QUANTITY.A.vs.B.*` (bounds only when it has them)."""
    base = key("diff", quantity, a, "vs", b)
    numbers = {key(base, "mean"): interval.mean, key(base, "n"): interval.n,
               key(base, "beyond_noise"): int(interval.finite and interval.excludes_zero),
               key(base, "bootstrap"): int(interval.method.startswith("bootstrap"))}
    if interval.finite:
        numbers.update({key(base, "lo"): interval.lo, key(base, "hi"): interval.hi})
    return numbers


def difference(out_dir: str | Path, a: str, b: str, interval: Interval, quantity: str = "acc") -> Interval:
    """Record the interval of a - b (`difference_keys`); returns it."""
    values(out_dir, difference_keys(a, b, interval, quantity))
    return interval


def test_results(out_dir: str | Path, results: Mapping[str, Mapping[str, ModeResult]]) -> dict[str, float]:
    """Each model's test accuracy per inference mode, `acc.MODEL.MODE`."""
    return values(out_dir, {key("acc", model, mode): r.accuracy for model, by_mode in results.items()
                            for mode, r in by_mode.items()})


UNITS = {"acc": (100.0, "pp"), "pair_confused": (1.0, "test images")}  # quantity -> (scale, unit) in sentences


def intervals(out_dir: str | Path) -> dict[tuple[str, str, str], Interval]:
    """Every recorded difference, read back: (quantity, A, B) -> its Interval, in the order recorded."""
    numbers, found = read(out_dir), {}
    for name in numbers:
        if name.startswith("diff.") and name.endswith(".mean"):
            quantity, _, rest = name[len("diff."):-len(".mean")].partition(".")
            a, _, b = rest.partition(".vs.")
            base = key("diff", quantity, a, "vs", b)
            n = int(numbers[key(base, "n")])
            lo, hi = numbers.get(key(base, "lo"), -math.inf), numbers.get(key(base, "hi"), math.inf)
            method = ("one seed, no interval" if not math.isfinite(lo) else
                      f"bootstrap over {n} test images" if numbers.get(key(base, "bootstrap")) else
                      f"paired t over {n} seeds")
            found[quantity, a, b] = Interval(numbers[name], lo, hi, n, method)
    return found


def findings(out_dir: str | Path, quantity: str | None = None, among: set[str] | None = None) -> list[str]:
    """The sentences after a table, written by `stats.describe` from the recorded differences alone (of
    `quantity`, and with A in `among` when given): beyond-noise ones first. What the notebook prints is this, so
    its text cannot contradict its numbers."""
    said = []
    for (q, a, b), interval in intervals(out_dir).items():
        if (quantity is None or q == quantity) and (among is None or a in among):
            scale, unit = UNITS.get(q, (1.0, ""))
            text = describe(_spoken(a), _spoken(b), interval, scale=scale, unit=unit)
            said.append((not (interval.finite and interval.excludes_zero), text))
    return [text for _, text in sorted(said, key=lambda item: item[0])]


def _spoken(side: str) -> str:
    """"sla+sd.T=0.5.single" -> "sla+sd T=0.5 single": the key's dots as spaces, a number's decimal point kept."""
    return re.sub(r"(?<!\d)\.|\.(?!\d)", " ", side)


class Recap(str):
    """Markdown text that a notebook shows as its cell's value."""

    def _repr_markdown_(self) -> str:
        return str(self)


MISSING = "—"  # what a recap shows for a number this execution did not record


class _RecordedFormatter(string.Formatter):
    """`{acc.sla.single.mean:.1%}`: the whole field name is one recorded key (keys hold dots), its spec a number's."""

    def __init__(self, numbers: Mapping[str, float]) -> None:
        self.numbers, self.missing = numbers, []

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name not in self.numbers:
            self.missing.append(field_name)
            return None, field_name
        return self.numbers[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return MISSING if value is None else format(value, format_spec)


def recap(out_dir: str | Path, template: str) -> Recap:
    """The recap at the end of a notebook, its numbers filled in from what this execution recorded:
    `record.recap(P.out, "SLA's aggregate reached {acc.sla.aggregated.mean:.1%}")`. A key not recorded (another
    METHODS, say) shows as "—" and is listed after the text, so a recap never shows a number of another run."""
    formatter = _RecordedFormatter(read(out_dir))
    text = formatter.format(template)
    if formatter.missing:
        text += f"\n\n({MISSING}: not recorded in this execution: {', '.join(sorted(set(formatter.missing)))})"
    return Recap(text)


def read(out_dir: str | Path) -> dict[str, float]:
    """Every number recorded in out_dir so far."""
    path = Path(out_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}

