"""Tables of results: one run's metrics, and methods × inference modes over seeds.

`compare` trains (or reuses, through the run cache `labkit.training.cache`) every config's run and summarises them
over seeds: a `Comparison` holds the run folders, their metrics, one row per (method, mode) and the markdown table.

How large a difference must be to mean something (`labkit.training.stats`): `difference(comparison, a, b)` gives
the interval of a - b for two (method, mode) sides, paired over seeds when both ran on two seeds or more, else a
bootstrap over the test images of the first seed's runs. `with_differences(comparison)` adds to each row its
difference from a reference (another mode of the same method against its `single`, a `single` row against the first
method's `single`), so the table shows it; `findings(comparison)` writes the sentences that go after the table.

Runs on a long-tailed training split (`imbalance_ratio`) get more columns: balanced accuracy (the mean of the
per-class accuracies) and the accuracy of the many-, medium- and few-shot classes. Other tables stay as they were
unless asked (`format_table(rows, long_tail=True)`).

The runs are a grid (`labkit.training.grid.run_grid`): in this process one after another, or `workers` at once on
Ray (`address`: on a Ray cluster).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.files import write_json, write_text
from ..sla import modes
from ..sla.longtail import SHOTS
from .config import RECIPES, TrainConfig, recipe
from .distributed import is_main
from .grid import run_grid
from .run_folder import RunFolder
from .stats import Interval, bootstrap, describe, paired

__all__ = ["format_metrics", "compare", "compare_settings", "Comparison", "summarize", "format_table", "recipe_table",
           "Side", "per_seed", "correctness", "difference", "reference_of", "with_differences", "findings", "join"]


def recipe_table(config: TrainConfig, name: str = "paper",
                 extra: Sequence[str] = ("train_fraction", "samples_per_class", "large_loss")) -> str:
    """Markdown: each field the recipe `name` sets (and `extra` fields), the recipe's value, `config`'s, and where
    the run's value comes from: the recipe, labkit's default (a field the recipe leaves alone), or changed here
    (by the notebook's parameters or a preset)."""
    named, mine, default = recipe(name).to_dict(), config.to_dict(), TrainConfig().to_dict()

    def source(field: str) -> str:
        if field not in RECIPES[name]:
            return "labkit's default (not in the recipe)" if mine[field] == default[field] else "changed here"
        return name if mine[field] == named[field] else "changed here"

    rows = [f"| {f} | {named[f]} | {mine[f]} | {source(f)} |" for f in [*RECIPES[name], *extra]]
    return "\n".join([f"| field | {name} | this run | source |", "|---|---|---|---|", *rows])


def _pair_name(metrics: dict[str, Any], arrow: str = "↔") -> str:
    """"6↔9" for a run on a dataset whose showcase pair is 6 and 9."""
    a, b = metrics["pair"]
    return f"{a}{arrow}{b}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """One run as a small table: accuracy, showcase-pair confusions and evaluation time per inference mode."""
    pair = _pair_name(metrics, "<->") if "pair" in metrics else "pair"
    lines = [f"{metrics['method']} on {metrics['dataset']} with {metrics['transform']} (N={metrics['N']}, "
             f"M={metrics['M']}, {metrics['n_test']} test images)",
             f"{'mode':<11} {'test acc':>8} {pair:>6} {'eval s':>7}"]
    for mode, acc in metrics["test_acc"].items():
        confused = metrics.get("pair_confused", {}).get(mode, "-")
        lines.append(f"{mode:<11} {acc:>8.4f} {confused!s:>6} {metrics['eval_seconds'][mode]:>7.3f}")
    if "selected" in metrics:  # val_every: the paper's number is the test accuracy at the best validation step
        sel = metrics["selected"]
        accs = ", ".join(f"{mode} {acc:.4f}" for mode, acc in sel["test_acc"].items())
        lines.append(f"selected step {sel['step']} (best {sel['by']} {sel['val_acc'][sel['by'].split('.')[-1]]:.4f}, "
                     f"{sel['checkpoint']}): test acc {accs}")
    if metrics.get("imbalance_ratio") is not None:
        lines += _long_tail_lines(metrics)
    if "train_seconds" in metrics:
        lines.append(f"trained in {metrics['train_seconds']:.1f} s")
    return "\n".join(lines)


def _long_tail_lines(metrics: dict[str, Any]) -> list[str]:
    """A long-tailed run's training images per class, its shot groups, and per mode the balanced and group
    accuracies."""
    groups = metrics["shot_groups"]
    named = "; ".join(f"{shot}: {', '.join(map(str, groups[shot])) or '-'}" for shot in SHOTS)
    lines = [f"training images per class (R={metrics['imbalance_ratio']:g}): "
             f"{' '.join(map(str, metrics['train_counts']))} ({named})"]
    for mode, balanced in metrics["balanced_acc"].items():
        shots = ", ".join(f"{shot} {_percent(acc)}" for shot, acc in metrics["shot_acc"][mode].items())
        lines.append(f"{mode:<11} balanced acc {balanced:.4f}; by shots (%): {shots}")
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of each (method, mode)."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        for mode in (m for m in modes.available() if m in mine[0]["test_acc"]):
            accs = [r["test_acc"][mode] for r in mine]
            row = {"method": method, "mode": mode, "seeds": len(mine), **_stats("acc", accs),
                   **_stats("train_seconds", [r["train_seconds"] for r in mine]),
                   "forwards_per_image": mine[0]["forwards_per_image"][mode]}
            if "pair" in mine[0]:
                row["pair"] = _pair_name(mine[0])
                row.update(_stats("pair_confused", [r["pair_confused"][mode] for r in mine]))
                row.update(_stats("pair_expected", [r["pair_expected"][mode] for r in mine]))
            if all("balanced_acc" in r for r in mine):
                row.update(_per_class_stats(mine, mode))
            rows.append(row)
    return rows


def _per_class_stats(runs: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Balanced accuracy and each shot group's accuracy (when no run leaves the group empty), over seeds."""
    stats: dict[str, Any] = {"imbalance_ratio": runs[0].get("imbalance_ratio"),
                             **_stats("balanced_acc", [r["balanced_acc"][mode] for r in runs])}
    for shot in SHOTS:
        values = [r["shot_acc"][mode][shot] for r in runs]
        if all(v is not None for v in values):
            stats.update(_stats(f"{shot}_acc", values))
    return stats


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {f"{name}_mean": statistics.fmean(values), f"{name}_std": spread}


def format_table(rows: Sequence[dict[str, Any]], long_tail: bool | None = None) -> str:
    """A markdown table of `summarize`'s rows: accuracy in %, mean ± sample std over seeds (the mean alone for one
    seed); with `long_tail` (default: when a row's runs trained on a long tail), also balanced accuracy and the
    many-, medium- and few-shot classes' accuracy; for rows that carry one (`with_differences`), the
    difference from the row's reference in percentage points with its 95 % interval; and a first column of
    settings when rows name theirs (`rows_with(setting=...)`)."""
    pair = rows[0].get("pair") if rows else None
    if long_tail is None:
        long_tail = any(r.get("imbalance_ratio") is not None for r in rows)
    diffs = any("acc_diff" in r for r in rows)
    setting = any("setting" in r for r in rows)  # rows of several settings (compare_settings), each named
    head = (("| setting " if setting else "") + "| method | mode | test acc (%) |"
            + (" balanced acc (%) | many / medium / few (%) |" if long_tail else "")
            + (f" {pair} confused | {pair} expected |" if pair else "")
            + (" Δ acc (pp) [95% interval] |" if diffs else "") + " forwards/image |")
    lines = [head, ("|---" if setting else "") + "|---|---|---:|" + ("---:|---:|" if long_tail else "")
             + ("---:|---:|" if pair else "") + ("---|" if diffs else "") + "---:|"]
    for r in rows:
        spread = r.get("seeds", 2) > 1  # one seed has no spread to show
        cells = [str(r.get("setting", ""))] if setting else []
        cells += [r["method"], r["mode"], _mean_std(100 * r["acc_mean"], 100 * r["acc_std"], 2, spread)]
        if long_tail:
            cells.append(_mean_std(100 * r["balanced_acc_mean"], 100 * r["balanced_acc_std"], 2, spread)
                         if "balanced_acc_mean" in r else "-")
            cells.append(" / ".join(f"{100 * r[f'{shot}_acc_mean']:.1f}" if f"{shot}_acc_mean" in r else "-"
                                    for shot in SHOTS))
        if pair:
            cells.append(_mean_std(r["pair_confused_mean"], r["pair_confused_std"], 1, spread))
            cells.append(_mean_std(r["pair_expected_mean"], r["pair_expected_std"], 2, spread))
        if diffs:
            cells.append(_diff_cell(r))
        cells.append(str(r["forwards_per_image"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(mean: float, std: float, digits: int, spread: bool) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if spread else f"{mean:.{digits}f}"


def _diff_cell(row: dict[str, Any]) -> str:
    """"−0.30 [−0.90, +0.30] vs sla single" (pp), "reference" for a row others are measured against."""
    if "acc_diff" not in row:
        return "reference" if row.get("is_reference") else ""
    d, (method, mode) = row["acc_diff"].scaled(100), row["acc_diff_vs"]
    bounds = f" [{d.lo:+.2f}, {d.hi:+.2f}]" if d.finite else " (one seed: no interval)"
    return f"{d.mean:+.2f}{bounds} vs {method} {mode}"


@dataclass
class Comparison:
    """Runs trained (or reused) side by side: their configs and run folders, their metrics, `summarize`'s rows,
    and the markdown table (which a notebook shows when the comparison is a cell's value)."""

    configs: list[TrainConfig]
    folders: list[RunFolder]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    table: str
    groups: list[str] = field(default_factory=list)  # per run, the name its rows go by (default: its method)

    def _repr_markdown_(self) -> str:
        return self.table

    def __repr__(self) -> str:
        return self.table  # what a notebook's plain-text copy of the cell keeps: the table, not the folders' paths

    def group(self, k: int) -> str:
        """The name run k's rows go by: its method, or the setting `renamed` gave it."""
        return self.groups[k] if self.groups else self.runs[k]["method"]

    def renamed(self, name: str) -> Comparison:
        """The same runs with every row under `name` in the method column (a setting: "T=4")."""
        rows = self.rows_as(name)
        return replace(self, rows=rows, table=format_table(rows), groups=[name] * len(self.runs))

    def rows_as(self, name: str) -> list[dict[str, Any]]:
        """The rows under another name in the method column, e.g. "T=4" for a setting of sla+sd."""
        return [{**r, "method": name} for r in self.rows]

    def rows_with(self, **values: Any) -> list[dict[str, Any]]:
        """The rows with the setting they were trained under added, e.g. `rows_with(images_per_class=10)` for
        `viz.accuracy_by_labels`."""
        return [{**r, **values} for r in self.rows]

    def per_class(self, method: str, mode: str) -> tuple[list[int], list[list[float | None]]]:
        """One method's training images per class (its first run's) and, per seed, each class's test accuracy in
        `mode`: what `viz.accuracy_by_class_size` draws."""
        runs = self.by_method()[method]
        return runs[0]["train_counts"], [r["per_class_acc"][mode] for r in runs]

    def by_method(self) -> dict[str, list[dict[str, Any]]]:
        """Each method's runs (one per seed), in the order of the configs."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for run in self.runs:
            grouped.setdefault(run["method"], []).append(run)
        return grouped


def join(comparisons: Sequence[Comparison]) -> Comparison:
    """Several comparisons as one (rows and runs in order), e.g. the settings of one method, each `renamed`."""
    rows = [r for c in comparisons for r in c.rows]
    return Comparison([x for c in comparisons for x in c.configs], [x for c in comparisons for x in c.folders],
                      [x for c in comparisons for x in c.runs], rows, format_table(rows),
                      [c.group(k) for c in comparisons for k in range(len(c.runs))])


def compare(configs: Sequence[TrainConfig], root: str | Path | None = None, progress: bool = False,
            summary_dir: str | Path | None = None, log: Callable[[str], None] | None = None, workers: int | None = 1,
            address: str | None = None, gpus_per_run: float | None = None, dashboard: bool = False) -> Comparison:
    """Train (or reuse) every config's run under `root` (default: the run cache) and summarise them over seeds;
    with `summary_dir`, also write summary.json and summary.md there. `workers`, `address`, `gpus_per_run` and
    `dashboard`: how the grid runs (`run_grid`); the numbers are the same however it runs."""
    folders = run_grid(configs, root, workers=workers, address=address, gpus_per_run=gpus_per_run,
                       progress=progress, log=log, dashboard=dashboard)
    comparison = _comparison(configs, folders)
    if summary_dir is not None and is_main():  # under torchrun every rank builds the same table; rank 0 writes it
        write_json(Path(summary_dir) / "summary.json", comparison.rows)
        write_text(Path(summary_dir) / "summary.md", comparison.table + "\n")
    return comparison


def compare_settings(settings: Mapping[str, Sequence[TrainConfig]], root: str | Path | None = None,
                     progress: bool = False, log: Callable[[str], None] | None = None, workers: int | None = 1,
                     address: str | None = None, gpus_per_run: float | None = None) -> dict[str, Comparison]:
    """One `Comparison` per named setting ("10 per class": its methods × seeds), every run of every setting
    trained (or reused) as one grid, so `workers` runs go at once across the settings, not only within one. A
    config that two settings share is trained once."""
    every = list(dict.fromkeys(c for configs in settings.values() for c in configs))
    folders = dict(zip(every, run_grid(every, root, workers=workers, address=address, gpus_per_run=gpus_per_run,
                                       progress=progress, log=log), strict=True))
    return {name: _comparison(configs, [folders[c] for c in configs]) for name, configs in settings.items()}


def _comparison(configs: Sequence[TrainConfig], folders: Sequence[RunFolder]) -> Comparison:
    runs = [f.metrics() for f in folders]
    rows = summarize(runs)
    return Comparison(list(configs), list(folders), runs, rows, format_table(rows))


# ---------------------------------------------------------------------------------------- differences
Side = tuple[str, str]  # (method, or the name a comparison's rows go by; inference mode)


def _quantity(run: dict[str, Any], quantity: str, mode: str) -> float:
    return float(run["test_acc" if quantity == "acc" else quantity][mode])


def per_seed(comparison: Comparison, side: Side, quantity: str = "acc") -> dict[int, float]:
    """seed -> the side's number in each of its runs ("acc": test accuracy; "pair_confused", ...)."""
    method, mode = side
    return {c.seed: _quantity(run, quantity, mode) for k, (c, run) in enumerate(zip(comparison.configs,
                                                                                     comparison.runs, strict=True))
            if comparison.group(k) == method}


def _folder(comparison: Comparison, method: str, seed: int) -> RunFolder:
    return next(f for k, (c, f) in enumerate(zip(comparison.configs, comparison.folders, strict=True))
                if comparison.group(k) == method and c.seed == seed)


def correctness(folder: RunFolder, mode: str, device: str = "cpu") -> Any:
    """(n_test,) 1.0 where the run's model in `mode` names the test image's class, else 0.0 (numpy, float64).
    Computed once per finished run and mode (a run's metrics.json never changes once written)."""
    stamp = folder.file("metrics.json").stat().st_mtime_ns if folder.finished else None
    return _correctness(str(folder.path), stamp, device)[mode]


@functools.lru_cache(maxsize=64)
def _correctness(path: str, stamp: int | None, device: str) -> dict[str, Any]:
    """Every inference mode's per-image correctness of one run: a single load and pass over the test split."""
    from ..data.splits import split_tensors
    from ..sla.inference import evaluate
    from .experiment import load_run

    run = load_run(path, device)
    x, y = split_tensors(run.data.test, run.device)
    results = evaluate(run.model, run.tset, x, y, run.data.N, run.method.modes)
    return {mode: (r.predictions.cpu() == y.cpu()).double().numpy() for mode, r in results.items()}


def difference(comparison: Comparison, a: Side, b: Side, other: Comparison | None = None,
               quantity: str = "acc") -> Interval:
    """a - b (b from `other` when given, e.g. another setting of the same method): paired over the seeds both ran
    when there are two or more; with one seed, for accuracy, a bootstrap over the test images of the two runs."""
    other = other or comparison
    A, B = per_seed(comparison, a, quantity), per_seed(other, b, quantity)
    seeds = sorted(set(A) & set(B))
    if not seeds:
        raise ValueError(f"{a} and {b} share no seed")
    if len(seeds) >= 2 or quantity != "acc":
        return paired([A[s] for s in seeds], [B[s] for s in seeds])
    return bootstrap(correctness(_folder(comparison, a[0], seeds[0]), a[1]),
                     correctness(_folder(other, b[0], seeds[0]), b[1]))


def reference_of(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> Side | None:
    """What a row is measured against: a mode other than `single` against its own method's `single`; a `single`
    row against the first method's `single`; None for that first row itself."""
    first = rows[0]["method"]
    if row["mode"] != "single":
        return row["method"], "single"
    return None if row["method"] == first else (first, "single")


def with_differences(comparison: Comparison,
                     reference: Callable[[dict[str, Any], Sequence[dict[str, Any]]], Side | None] = reference_of
                     ) -> Comparison:
    """The comparison with each row's accuracy difference from its reference (`reference(row, rows)`, default
    `reference_of`; an `Interval` under "acc_diff", the reference under "acc_diff_vs"), and its table showing
    them."""
    rows = []
    for row in comparison.rows:
        ref = reference(row, comparison.rows)
        if ref is None or not any(r["method"] == ref[0] and r["mode"] == ref[1] for r in comparison.rows):
            rows.append({**row, "is_reference": True})
            continue
        rows.append({**row, "acc_diff": difference(comparison, (row["method"], row["mode"]), ref),
                     "acc_diff_vs": ref})
    return replace(comparison, rows=rows, table=format_table(rows))


def findings(comparison: Comparison) -> list[str]:
    """The sentences after a table: one per row that carries a difference (`with_differences`), written by
    `stats.describe` from that row's interval, beyond-noise ones first."""
    said = [(r["acc_diff"], describe(f"{r['method']} {r['mode']}", " ".join(r["acc_diff_vs"]), r["acc_diff"]))
            for r in comparison.rows if "acc_diff" in r]
    return [text for d, text in sorted(said, key=lambda item: not (item[0].finite and item[0].excludes_zero))]
