"""Tables of results: one run's metrics, and methods × inference modes over seeds.

`compare` trains every config into a folder keyed by a hash of its resolved config, labkit's version and a
fingerprint of the training code (`labkit.cache`), so a finished run is reused only when it was trained with
exactly the same settings by the same code; each reuse is logged, naming the run.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache
from .checkpoint import write_json
from .config import RECIPES, TrainConfig, recipe
from .distributed import is_main
from .paths import cache_root

__all__ = ["run_key", "run_dir", "cached_run", "history", "format_metrics", "compare", "Comparison", "summarize",
           "format_summary", "MODES", "recipe_table"]

MODES = ("single", "aggregated", "distilled")


def run_key(config: TrainConfig) -> str:
    """A short hash of everything that changes the result: the config (not the device), labkit's version and the
    fingerprint of the training code (`labkit.cache.cache_key`)."""
    return cache.cache_key(config.to_dict())


def run_dir(root: str | Path, config: TrainConfig) -> Path:
    return Path(root) / f"{config.dataset}-{config.transform}-{config.method}-s{config.seed}-{run_key(config)}"


def cached_run(config: TrainConfig, root: str | Path | None = None, progress: bool = False,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The metrics of `config`'s run under `root` (default: the run cache, `labkit.paths.cache_root()`), training
    it first unless it already finished. `log` (default: print, as `labkit.progress.log` does) is told whether
    the run is reused, resumed or trained, and which folder it is."""
    from .experiment import train_run
    from .progress import epoch_callbacks
    from .progress import log as default_log

    log = log or default_log
    out = run_dir(root or cache_root(), config)
    name = f"{config.method} on {config.dataset}/{config.transform}, seed {config.seed}"
    if (out / "metrics.json").is_file():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime((out / "metrics.json").stat().st_mtime))
        log(f"reusing cached run {out.name} ({name}, trained {when}) from {out.parent}")
        return json.loads((out / "metrics.json").read_text())
    resume = (out / "checkpoint.pt").is_file()
    length = f"{config.steps} steps" if config.steps is not None else f"{config.epochs} epochs"
    log(f"{'resuming' if resume else 'training'} {name} ({length}) into {out}")
    return train_run(config, out, resume=resume, overwrite=not resume, progress=progress,
                     callbacks=epoch_callbacks(progress))


def history(config: TrainConfig, root: str | Path | None = None) -> list[dict[str, Any]]:
    """The per-epoch history of `config`'s cached run (see `cached_run`)."""
    return json.loads((run_dir(root or cache_root(), config) / "history.json").read_text())


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


def format_metrics(metrics: dict[str, Any]) -> str:
    """One run as a small table: accuracy, 6↔9 confusions and evaluation time per inference mode."""
    lines = [f"{metrics['method']} on {metrics['dataset']} with {metrics['transform']} (N={metrics['N']}, "
             f"M={metrics['M']}, {metrics['n_test']} test images)",
             f"{'mode':<11} {'test acc':>8} {'6<->9':>6} {'eval s':>7}"]
    for mode, acc in metrics["test_acc"].items():
        six_nine = metrics.get("six_nine", {}).get(mode, "-")
        lines.append(f"{mode:<11} {acc:>8.4f} {six_nine!s:>6} {metrics['eval_seconds'][mode]:>7.3f}")
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
        for mode in (m for m in MODES if m in mine[0]["test_acc"]):
            accs = [r["test_acc"][mode] for r in mine]
            row = {"method": method, "mode": mode, "seeds": len(mine), **_stats("acc", accs),
                   **_stats("train_seconds", [r["train_seconds"] for r in mine]),
                   "forwards_per_image": mine[0]["forwards_per_image"][mode]}
            if "six_nine" in mine[0]:
                row.update(_stats("six_nine", [r["six_nine"][mode] for r in mine]))
                row.update(_stats("six_nine_expected", [r["six_nine_expected"][mode] for r in mine]))
            rows.append(row)
    return rows


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {f"{name}_mean": statistics.fmean(values), f"{name}_std": spread}


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of `summarize`'s rows: accuracy in %, mean ± sample std over seeds."""
    six_nine = "six_nine_mean" in rows[0] if rows else False
    head = ("| method | mode | test acc (%) |" + (" 6↔9 confused | 6↔9 expected |" if six_nine else "")
            + " forwards/image |")
    lines = [head, "|---|---|---:|" + ("---:|---:|" if six_nine else "") + "---:|"]
    for r in rows:
        cells = [r["method"], r["mode"], f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}"]
        if six_nine:
            cells.append(f"{r['six_nine_mean']:.1f} ± {r['six_nine_std']:.1f}")
            cells.append(f"{r['six_nine_expected_mean']:.2f} ± {r['six_nine_expected_std']:.2f}")
        cells.append(str(r["forwards_per_image"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Comparison:
    """Runs trained (or reused) side by side: their metrics, `summarize`'s rows, and the markdown table (which a
    notebook shows when the comparison is a cell's value)."""

    configs: list[TrainConfig]
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
            summary_dir: str | Path | None = None, log: Callable[[str], None] | None = None) -> Comparison:
    """Train (or reuse) every config's run under `root` (default: the run cache) and summarise them over seeds;
    with `summary_dir`, also write summary.json and summary.md there."""
    runs = [cached_run(c, root, progress, log) for c in configs]
    rows = summarize(runs)
    comparison = Comparison(list(configs), runs, rows, format_summary(rows))
    if summary_dir is not None and is_main():  # under torchrun every rank builds the same table; rank 0 writes it
        write_json(Path(summary_dir) / "summary.json", rows)
        (Path(summary_dir) / "summary.md").write_text(comparison.table + "\n")
    return comparison
