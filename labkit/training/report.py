"""Tables of results: one run's metrics, and methods × inference modes over seeds.

`compare` trains (or reuses, through the run cache `labkit.training.cache`) every config's run and summarises them
over seeds: a `Comparison` holds the run folders, their metrics, one row per (method, mode) and the markdown table.
The runs are a grid (`labkit.training.grid.run_grid`): in this process one after another, or `workers` at once on
Ray (`address`: on a Ray cluster).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.files import write_json, write_text
from ..sla import modes
from .config import RECIPES, TrainConfig, recipe
from .distributed import is_main
from .grid import run_grid
from .run_folder import RunFolder

__all__ = ["format_metrics", "compare", "Comparison", "summarize", "format_table", "recipe_table"]


def recipe_table(config: TrainConfig, name: str = "paper",
                 extra: Sequence[str] = ("train_fraction", "samples_per_class", "large_loss")) -> str:
    """Markdown: each field the recipe `name` sets (and `extra` fields), the recipe's value, `config`'s, and where
    the run's value comes from (the recipe, changed here, or labkit's own setting outside the recipe)."""
    named, mine = recipe(name).to_dict(), config.to_dict()

    def source(field: str) -> str:
        if field not in RECIPES[name]:
            return "labkit (not in the recipe)"
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
    if "train_seconds" in metrics:
        lines.append(f"trained in {metrics['train_seconds']:.1f} s")
    return "\n".join(lines)


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
            rows.append(row)
    return rows


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {f"{name}_mean": statistics.fmean(values), f"{name}_std": spread}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of `summarize`'s rows: accuracy in %, mean ± sample std over seeds."""
    pair = rows[0].get("pair") if rows else None
    head = ("| method | mode | test acc (%) |" + (f" {pair} confused | {pair} expected |" if pair else "")
            + " forwards/image |")
    lines = [head, "|---|---|---:|" + ("---:|---:|" if pair else "") + "---:|"]
    for r in rows:
        cells = [r["method"], r["mode"], f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}"]
        if pair:
            cells.append(f"{r['pair_confused_mean']:.1f} ± {r['pair_confused_std']:.1f}")
            cells.append(f"{r['pair_expected_mean']:.2f} ± {r['pair_expected_std']:.2f}")
        cells.append(str(r["forwards_per_image"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Comparison:
    """Runs trained (or reused) side by side: their configs and run folders, their metrics, `summarize`'s rows,
    and the markdown table (which a notebook shows when the comparison is a cell's value)."""

    configs: list[TrainConfig]
    folders: list[RunFolder]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    table: str

    def _repr_markdown_(self) -> str:
        return self.table

    def rows_as(self, name: str) -> list[dict[str, Any]]:
        """The rows under another name in the method column, e.g. "T=4" for a setting of sla+sd."""
        return [{**r, "method": name} for r in self.rows]

    def by_method(self) -> dict[str, list[dict[str, Any]]]:
        """Each method's runs (one per seed), in the order of the configs."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for run in self.runs:
            grouped.setdefault(run["method"], []).append(run)
        return grouped


def compare(configs: Sequence[TrainConfig], root: str | Path | None = None, progress: bool = False,
            summary_dir: str | Path | None = None, log: Callable[[str], None] | None = None, workers: int | None = 1,
            address: str | None = None, gpus_per_run: float | None = None, dashboard: bool = False) -> Comparison:
    """Train (or reuse) every config's run under `root` (default: the run cache) and summarise them over seeds;
    with `summary_dir`, also write summary.json and summary.md there. `workers`, `address`, `gpus_per_run` and
    `dashboard`: how the grid runs (`run_grid`); the numbers are the same however it runs."""
    folders = run_grid(configs, root, workers=workers, address=address, gpus_per_run=gpus_per_run,
                       progress=progress, log=log, dashboard=dashboard)
    runs = [f.metrics() for f in folders]
    rows = summarize(runs)
    comparison = Comparison(list(configs), folders, runs, rows, format_table(rows))
    if summary_dir is not None and is_main():  # under torchrun every rank builds the same table; rank 0 writes it
        write_json(Path(summary_dir) / "summary.json", rows)
        write_text(Path(summary_dir) / "summary.md", comparison.table + "\n")
    return comparison
