"""`labkit` (or `python -m labkit`): train, eval, compare, run the notebooks and sweep one of them, import an
official checkpoint, manage the run cache, export the explorer.

Every user error is one line on stderr (`labkit: error: ...`, with the closest name when one is close, and the
help of the subcommand that refused it) and exit status 2; Ctrl-C saves a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..core.errors import LabkitError
from ..training.config import config_fields
from .flags import Parser, add_config_arguments, config_from_args

__all__ = ["main", "build_parser", "program_name"]


def program_name(argv0: str | None = None) -> str:
    """The program as the user invoked it: `labkit` (the installed script) or `python -m labkit`."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).stem
    return "labkit" if name == "labkit" else "python -m labkit"  # __main__.py, or main() called from Python


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or program_name(), description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> its parser: main() reports unknown flags through it
    train = sub.add_parser("train", help="train one method and evaluate every inference mode")
    add_config_arguments(train)
    train.add_argument("--out", default=None,  # checked after the config, so a bad --method is named first
                       help="run folder (config, history, checkpoint, metrics); required")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_tracking_args(train)
    ev = sub.add_parser("eval", help="re-evaluate a saved run")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint.pt or a run folder")
    ev.add_argument("--device", default="auto", help="where to evaluate: auto, cpu or cuda (default: auto)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    cmp = sub.add_parser("compare", help="train several methods over several seeds and print one table")
    add_config_arguments(cmp, exclude=("method", "seed"))
    cmp.add_argument("--methods", default="baseline,da,mt,sla,sla+sd", help="comma-separated methods")
    cmp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    cmp.add_argument("--out", default="runs/compare", help="folder of the runs; finished runs are reused")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_grid_args(cmp, "runs train")
    _add_notebook_args(sub)
    _add_import_official_args(sub)
    _add_cache_args(sub)
    _add_export_explorer_args(sub)
    _add_handout_args(sub)
    _add_grade_args(sub)
    return parser


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="labkit's home: runs and the cache go under DIR/runs, data is read from DIR/data "
                             "(default: $LABKIT_HOME, else the checkout, else the current folder)")


def _add_grid_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--workers, --address, --gpus-per-run, --dashboard: how a grid runs (labkit.training.grid, on Ray)."""
    grid = parser.add_argument_group("in parallel, on Ray (pip install \"labkit[sweep]\")")
    grid.add_argument("--workers", type=int, default=None, metavar="N",
                      help=f"how many {what} at once: 1 (the default) one after another in this process; N > 1 on a "
                           f"local Ray on this machine, listening on 127.0.0.1 only; with --address, at most N on the "
                           f"cluster (default there: as many as its resources allow)")
    grid.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None, metavar="HOST:PORT",
                      help="join this Ray cluster (what `ray start --head` prints; default: $RAY_ADDRESS) instead "
                           "of starting a local Ray; the run folders must be on a filesystem every node sees")
    grid.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                      help="GPUs each run asks for on Ray (default 1; 0.5 packs two runs on a GPU)")
    grid.add_argument("--dashboard", action="store_true",
                      help="start the local Ray with its dashboard (on 127.0.0.1; off by default)")


def _grid_options(args: argparse.Namespace) -> dict:
    """The keywords of run_grid from the flags: --workers defaults to 1 here and to the cluster's size with
    --address."""
    from ..core.workers import check_workers

    check_workers(args.workers, "--workers")
    workers = args.workers if args.workers is not None else (1 if args.address is None else None)
    return {"workers": workers, "address": args.address, "gpus_per_run": args.gpus_per_run,
            "dashboard": args.dashboard}


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="log the loss per step, accuracy per inference mode and the learning rate per "
                             "evaluation to TensorBoard event files in DIR (needs labkit[tensorboard])")
    parser.add_argument("--callback", action="append", default=[], metavar="MODULE:NAME",
                        help="add a training callback: NAME() from MODULE (a labkit.training.engine.Callback); "
                             "repeatable")


def _add_cache_args(sub) -> None:
    cache = sub.add_parser("cache", help="list or clear the run cache (finished runs reused by the notebooks)")
    what = cache.add_subparsers(dest="cache_command", required=True)
    cache.commands = what.choices
    ls = what.add_parser("list", help="every cached run: its folder, state (finished, partial, stale), age, size")
    clear = what.add_parser("clear", help="delete cached runs (all, or the older or stale ones)")
    clear.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="only runs last written more than DAYS days ago")
    clear.add_argument("--stale", action="store_true",
                       help="only runs trained by other code or another labkit version (never reused)")
    for p in (ls, clear):
        _add_root(p)
def _add_export_explorer_args(sub) -> None:
    ex = sub.add_parser("export-explorer", help="one offline HTML file exploring trained runs' test images, no kernel")
    ex.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR",
                    help="run folders trained on one dataset and transformation set (e.g. an sla and an mt run)")
    ex.add_argument("--out", required=True, help="the HTML file to write, e.g. explorer.html")
    ex.add_argument("--images", type=int, default=None,
                    help="at most this many test images: the first images of the showcase pair (6s and 9s), the "
                         "most and least confident and every mistake of SLA's aggregate, in that order (default 40)")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ex.add_argument("--device", default="cpu", help="where the models run: cpu, cuda or auto (default: cpu)")


def _add_notebook_args(sub) -> None:
    nb = sub.add_parser("notebooks", help="execute the numbered notebooks with papermill under a preset")
    nb.add_argument("--preset", default="default", help="a YAML file in notebooks/presets (smoke, default, full)")
    nb.add_argument("--only", action="append", default=None, metavar="NN",
                    help="run only this notebook (number or name); repeat or comma-separate for several")
    nb.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter (a YAML literal) in every selected notebook that has it")
    nb.add_argument("--out", default=None, help="folder of the executed notebooks (default runs/notebooks)")
    nb.add_argument("--list", action="store_true", help="list the notebooks, their parameters and the presets")
    _add_root(nb)
    nb.add_argument("--student", action="store_true",
                    help="the learner's copy: exercise stubs left empty (SOLUTIONS false), into <out>/<preset>-student")
    sw = sub.add_parser("sweep", help="execute one notebook over a grid of parameters and tabulate its numbers")
    sw.add_argument("notebook", help="number or name of the notebook, e.g. 02")
    sw.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=V1,V2",
                    help="a parameter and its comma-separated values (YAML literals); the grid is the product")
    sw.add_argument("--preset", default="default", help="values for the parameters the grid does not set")
    sw.add_argument("--out", default=None, help="folder of the sweeps (default runs/sweeps)")
    _add_root(sw)
    _add_grid_args(sw, "notebooks run (one kernel each)")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..training.distributed import is_main
    from ..training.experiment import train_run
    from ..training.report import format_metrics

    explicit = [f.name for f in config_fields() if hasattr(args, f.name) and f.name != "device"]
    config = config_from_args(args) if (explicit or hasattr(args, "recipe") or not args.resume) else None
    if not args.out:
        raise LabkitError("train needs --out DIR, the run folder (config, history, checkpoint, metrics)")
    run = train_run(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                    device=getattr(args, "device", None), callbacks=_callbacks(args))
    if is_main():  # under torchrun every rank trained the same run; rank 0 reports it
        print(format_metrics(run.metrics()))
        print(f"wrote {run.file('metrics.json')}")
    return 0


def _callbacks(args: argparse.Namespace) -> tuple:
    """The extra training callbacks of --tensorboard and --callback MODULE:NAME."""
    import importlib

    extra = []
    if args.tensorboard:
        from ..training.tracking import TensorBoard

        extra.append(TensorBoard(args.tensorboard))
    for ref in args.callback:
        module, _, name = ref.partition(":")
        try:
            extra.append(getattr(importlib.import_module(module), name)())
        except (ImportError, AttributeError, ValueError) as e:
            raise LabkitError(f"--callback {ref}: cannot make a callback from it ({type(e).__name__}: {e}); "
                              f"give MODULE:NAME, NAME a Callback class importable from MODULE") from None
    return tuple(extra)


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..training.experiment import evaluate_run, load_run
    from ..training.report import format_metrics

    metrics = evaluate_run(load_run(args.checkpoint, args.device))
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..training.distributed import is_main, session
    from ..training.report import compare

    methods = _distinct("--methods", [m.strip() for m in args.methods.split(",") if m.strip()])
    seeds = _distinct("--seeds", [_int("--seeds", s) for s in args.seeds.split(",") if s.strip()])
    configs = [config_from_args(args, method=m, seed=s) for m in methods for s in seeds]
    if not configs:
        raise LabkitError("compare needs at least one method in --methods and one seed in --seeds")
    grid = _grid_options(args)
    with session(configs[0].device):  # under torchrun, one process group for all the runs (not one per run)
        comparison = compare(configs, args.out, progress=not args.no_progress, summary_dir=args.out, **grid)
    if is_main():
        print(comparison.table)
    return 0


def _distinct(flag: str, values: list) -> list:
    """A list of a grid's values with none twice: the same seed twice is one run counted twice, spread ± 0."""
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:
        raise LabkitError(f"{flag} has {twice[0]} twice; each value is one run of the grid, so give each once")
    return values


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabkitError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from ..lab.runner import format_results, parse_assignments, run_notebooks

    if args.list:
        from ..lab.runner import format_catalogue

        print(format_catalogue())
        return 0
    only = [ref.strip() for item in args.only or [] for ref in item.split(",") if ref.strip()] or None
    out = Path(args.out).resolve() if args.out else None
    summary = run_notebooks(args.preset, only, parse_assignments(args.params), out_root=out, student=args.student)
    print(format_results(summary))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..lab.runner import format_sweep, parse_grid, sweep

    if not args.params:
        raise LabkitError("sweep needs at least one -p KEY=V1,V2")
    grid = _grid_options(args)
    out = Path(args.out).resolve() if args.out else None
    print(format_sweep(sweep(args.notebook, parse_grid(args.params), args.preset, out_root=out, **grid)))
    return 0


def _add_import_official_args(sub) -> None:
    imp = sub.add_parser("import-official", help="turn a model-best.pth of the official SLA code (CIFAR) into a "
                         "labkit run folder that eval opens")
    imp.add_argument("path", metavar="FILE", help="the official train.py's model-best.pth")
    imp.add_argument("--dataset", default=None, help="cifar10 or cifar100 (default: the checkpoint's --dataset)")
    imp.add_argument("--transform", default=None, help="the transformation set (default: the checkpoint's --aug)")
    imp.add_argument("--out", required=True, help="the run folder to write")
    imp.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def _cmd_import_official(args: argparse.Namespace) -> int:
    from ..training.official import import_official

    out = import_official(args.path, args.dataset, args.transform, args.out, args.overwrite)
    print(f"imported {args.path} into {out.path}; evaluate it with: python -m labkit eval --checkpoint {out.path}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..core.paths import cache_root
    from ..training.cache import clear, format_runs, list_runs

    if args.cache_command == "list":
        print(f"run cache: {cache_root()}")
        print(format_runs(list_runs()))
        return 0
    days = args.older_than
    if days is not None and not (math.isfinite(days) and days >= 0):
        raise LabkitError(f"--older-than takes a number of days >= 0 (runs last written longer ago are removed), got "
                          f"{days:g}; nothing was removed")
    removed = clear(older_than_days=days, stale_only=args.stale)
    for run in removed:
        print(f"removed {run.path}")
    print(f"{len(removed)} cached run(s) removed from {cache_root()}")
    return 0


def _cmd_export_explorer(args: argparse.Namespace) -> int:
    import time

    from ..figures.static_explorer import DEFAULT_IMAGES, export

    start = time.perf_counter()
    out = export(args.runs, args.out, images=DEFAULT_IMAGES if args.images is None else args.images,
                 overwrite=args.overwrite, device=args.device)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s); it opens offline "
          f"in any browser")
    return 0


def _add_handout_args(sub) -> None:
    ho = sub.add_parser("handout", help="write what a teacher hands out: the learner's notebooks (no answers) and a "
                        "README, or with --solutions the notebooks run with worked solutions as HTML and PDF")
    ho.add_argument("--out", required=True, metavar="DIR", help="the folder to write (refused if it holds files)")
    ho.add_argument("--solutions", action="store_true",
                    help="the solutions handout instead: every notebook executed with its worked solutions, as "
                         ".ipynb, .html and an A4 .pdf (for the teacher, or for after the class)")
    ho.add_argument("--preset", default="default",
                    help="the preset whose values the learner's notebooks get as their defaults (how long they "
                         "train), or, with --solutions, the notebooks run under (default: default, sized for CPUs)")
    ho.add_argument("--only", action="append", default=None, metavar="NN",
                    help="only this notebook (number or name); repeat or comma-separate for several")
    ho.add_argument("--no-pdf", action="store_true", help="with --solutions: HTML copies only")
    ho.add_argument("--notebooks", default=None, metavar="DIR", help="the master notebooks (default: labkit's)")
    ho.add_argument("--overwrite", action="store_true", help="replace the files of a folder that is not empty")
    _add_root(ho)


def _cmd_handout(args: argparse.Namespace) -> int:
    from ..lab.handout import write_handout, write_solutions

    only = [ref.strip() for item in args.only or [] for ref in item.split(",") if ref.strip()] or None
    notebooks = Path(args.notebooks).resolve() if args.notebooks else None
    presets = notebooks / "presets" if notebooks else None
    if not args.solutions:
        write_handout(args.out, only, notebooks, args.preset, presets, overwrite=args.overwrite)
        return 0
    summary = write_solutions(args.out, args.preset, only, notebooks, presets, pdf=not args.no_pdf,
                              overwrite=args.overwrite)
    wide = sum(len(entry.get("too_wide", [])) for entry in summary["notebooks"].values())
    print(f"wrote {len(summary['notebooks'])} notebook(s) with worked solutions to {Path(args.out).resolve()}"
          + (f"; {wide} figure(s) wider than the printed page" if wide else ""))
    return 0


def _add_grade_args(sub) -> None:
    gr = sub.add_parser("grade", help="grade the notebooks learners hand back (one sub-folder per learner): a CSV "
                        "and a feedback page per learner")
    gr.add_argument("folder", metavar="FOLDER", help="the folder of hand-ins: FOLDER/<learner>/<notebooks>")
    gr.add_argument("--out", required=True, metavar="CSV",
                    help="the CSV to write (one row per learner); feedback pages go beside it, in feedback/")
    gr.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="the most each exercise's function may run on all its cases, and a notebook's "
                         "definitions (at least 60 s for its imports) (default: 30)")
    gr.add_argument("--notebooks", default=None, metavar="DIR", help="the master notebooks (default: labkit's)")
    gr.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _cmd_grade(args: argparse.Namespace) -> int:
    from ..lab.grading import grade

    notebooks = Path(args.notebooks).resolve() if args.notebooks else None
    grade(args.folder, args.out, args.timeout, notebooks, overwrite=args.overwrite)
    return 0


_RESUME = {  # what Ctrl-C leaves behind, and how to carry on
    "train": "the checkpoint holds the progress so far (continue with --resume)",
    "compare": "finished runs are kept and each stopped run keeps its last checkpoint; the same command again trains "
               "only what is missing",
    "sweep": "finished points are kept; the same command again runs them all, reusing their cached runs",
}

_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "compare": _cmd_compare, "notebooks": _cmd_notebooks,
             "sweep": _cmd_sweep, "import-official": _cmd_import_official, "cache": _cmd_cache,
             "export-explorer": _cmd_export_explorer, "handout": _cmd_handout, "grade": _cmd_grade}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's parser names the flags it has, and its own --help
        command = parser.commands[args.command]
        if getattr(args, "cache_command", None):
            command = command.commands[args.cache_command]
        command.unrecognized(extra)
    saved_home = os.environ.get("LABKIT_HOME")
    if getattr(args, "root", None):  # the kernels the runner starts inherit it
        os.environ["LABKIT_HOME"] = str(Path(args.root).expanduser().resolve())
    try:
        return _COMMANDS[args.command](args)
    except LabkitError as e:
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labkit: interrupted; {_RESUME.get(args.command, _RESUME['train'])}", file=sys.stderr)
        return 130
    finally:
        if saved_home is None:
            os.environ.pop("LABKIT_HOME", None)
        else:
            os.environ["LABKIT_HOME"] = saved_home
