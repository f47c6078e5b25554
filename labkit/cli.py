"""`python -m labkit`: train, eval, compare, run the notebooks and sweep one of them from the command line.

Every user error is one line on stderr (`labkit: error: ...`) and exit status 2; Ctrl-C saves a checkpoint and
exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .config import TrainConfig, config_fields, field_types, flag_name
from .errors import LabkitError

__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args", "parse_config",
           "format_command"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (`labkit: error: ...`, exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labkit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m labkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one method and evaluate every inference mode")
    add_config_arguments(train)
    train.add_argument("--out", required=True, help="run folder (config, history, checkpoint, metrics)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    _add_notebook_args(sub)
    _add_export_explorer_args(sub)
    return parser


def _add_export_explorer_args(sub) -> None:
    ex = sub.add_parser("export-explorer", help="one offline HTML file exploring trained runs' test images, no kernel")
    ex.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR",
                    help="run folders trained on one dataset and transformation set (e.g. an sla and an mt run)")
    ex.add_argument("--out", required=True, help="the HTML file to write, e.g. explorer.html")
    ex.add_argument("--images", type=int, default=None,
                    help="at most this many test images: the first 6s and 9s, the most and least confident and "
                         "every mistake of SLA's aggregate, in that order (default 40; about 25 kB each)")
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
    nb.add_argument("--student", action="store_true",
                    help="the learner's copy: exercise stubs left empty (SOLUTIONS false), into <out>/<preset>-student")
    sw = sub.add_parser("sweep", help="execute one notebook over a grid of parameters and tabulate its numbers")
    sw.add_argument("notebook", help="number or name of the notebook, e.g. 02")
    sw.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=V1,V2",
                    help="a parameter and its comma-separated values (YAML literals); the grid is the product")
    sw.add_argument("--preset", default="default", help="values for the parameters the grid does not set")
    sw.add_argument("--out", default=None, help="folder of the sweeps (default runs/sweeps)")


def add_config_arguments(parser: argparse.ArgumentParser, schema: type = TrainConfig,
                         exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of `schema`: name, type, default and help from the field, so a new field needs no edit
    here. Defaults stay out of the namespace (argparse.SUPPRESS): `config_from_args` sees which flags were given."""
    types = field_types(schema)
    for f in config_fields(schema):
        if f.name not in exclude:
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS, help=_help(f),
                                **_parse_as(types[f.name]))


def _help(f) -> str:
    choices = f.metadata.get("choices")
    allowed = f"; one of: {', '.join(choices())}" if choices else ""
    default = f.default if not isinstance(f.default, tuple) else " ".join(map(str, f.default))
    return f"{f.metadata.get('help', '')}{allowed} (default: {'none' if default is None else default})".replace(
        "%", "%%")


def _parse_as(tp) -> dict:
    """argparse keywords for a field type: int, float, str, bool (--x / --no-x), tuple[float, ...], X | None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is types.UnionType and type(None) in typing.get_args(tp):  # X | None: "none" -> None
        inner = _parse_as(args[0])["type"]
        return {"type": lambda text: None if text.lower() == "none" else inner(text), "metavar": "VALUE|none"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(tp) is tuple:
        return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
    return {"type": tp}


def config_from_args(args: argparse.Namespace, schema: type = TrainConfig, **override) -> TrainConfig:
    """The config of the flags given on the command line, the schema's defaults for the rest."""
    given = {f.name: getattr(args, f.name) for f in config_fields(schema) if hasattr(args, f.name)}
    given.update(override)
    if isinstance(given.get("milestones"), list):
        given["milestones"] = tuple(given["milestones"])
    return schema(**given)


def parse_config(argv: Sequence[str], schema: type = TrainConfig) -> TrainConfig:
    """`train`'s config flags -> the config (for `TrainConfig.to_argv` round trips and scripts)."""
    parser = _Parser(prog="labkit train")
    add_config_arguments(parser, schema)
    return config_from_args(parser.parse_args(list(argv)), schema)


def format_command(program: str, argv: Sequence[str]) -> str:
    """A shell command, one `--flag value...` per continued line: what a notebook prints for a terminal."""
    lines: list[str] = []
    for word in argv:
        if word.startswith("--") or not lines:
            lines.append(shlex.quote(word))
        else:
            lines[-1] += " " + shlex.quote(word)
    return " \\\n    ".join([program, *lines])


def _cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .distributed import is_main
    from .experiment import train_run
    from .report import format_metrics

    explicit = [f.name for f in config_fields() if hasattr(args, f.name) and f.name != "device"]
    config = config_from_args(args) if (explicit or not args.resume) else None
    metrics = train_run(config, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress, device=getattr(args, "device", None))
    if is_main():  # under torchrun every rank gets the same metrics; rank 0 reports them
        print(format_metrics(metrics))
        print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def _cmd_eval(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .experiment import evaluate_run, load_run
    from .report import format_metrics

    metrics = evaluate_run(load_run(args.checkpoint, args.device))
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def _cmd_compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .distributed import is_main, session
    from .report import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [_int("--seeds", s) for s in args.seeds.split(",") if s.strip()]
    configs = [config_from_args(args, method=m, seed=s) for m in methods for s in seeds]
    if not configs:
        raise LabkitError("compare needs at least one method in --methods and one seed in --seeds")
    with session(configs[0].device):  # under torchrun, one process group for all the runs (not one per run)
        comparison = compare(configs, args.out, progress=not args.no_progress, summary_dir=args.out)
    if is_main():
        print(comparison.table)
    return 0


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabkitError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _cmd_notebooks(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .runner import format_summary, parse_assignments, run_notebooks

    only = [ref.strip() for item in args.only or [] for ref in item.split(",") if ref.strip()] or None
    out = Path(args.out).resolve() if args.out else None
    summary = run_notebooks(args.preset, only, parse_assignments(args.params), out_root=out, student=args.student)
    print(format_summary(summary))
    return 0


def _cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .runner import format_sweep, parse_grid, sweep

    if not args.params:
        raise LabkitError("sweep needs at least one -p KEY=V1,V2")
    out = Path(args.out).resolve() if args.out else None
    print(format_sweep(sweep(args.notebook, parse_grid(args.params), args.preset, out_root=out)))
    return 0


def _cmd_export_explorer(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import time

    from .static_explorer import DEFAULT_IMAGES, export

    start = time.perf_counter()
    out = export(args.runs, args.out, images=DEFAULT_IMAGES if args.images is None else args.images,
                 overwrite=args.overwrite, device=args.device)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s); it opens offline "
          f"in any browser")
    return 0


_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "compare": _cmd_compare, "notebooks": _cmd_notebooks,
             "sweep": _cmd_sweep, "export-explorer": _cmd_export_explorer}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, argv)
    except LabkitError as e:
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted; the checkpoint holds the progress so far (continue with --resume)",
              file=sys.stderr)
        return 130
