"""`python -m labkit`: train, eval, compare, run the notebooks and sweep one of them from the command line.

Every user error is one line on stderr (`labkit: error: ...`) and exit status 2; Ctrl-C saves a checkpoint and
exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import transforms
from .config import DATASETS, TrainConfig
from .errors import LabkitError
from .methods import METHODS
from .models import MODELS

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (`labkit: error: ...`, exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labkit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m labkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one method and evaluate every inference mode")
    _add_config_args(train)
    train.add_argument("--out", required=True, help="run folder (config, history, checkpoint, metrics)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev = sub.add_parser("eval", help="re-evaluate a saved run")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint.pt or a run folder")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    cmp = sub.add_parser("compare", help="train several methods over several seeds and print one table")
    _add_config_args(cmp, single_method=False)
    cmp.add_argument("--methods", default="baseline,da,mt,sla,sla+sd", help="comma-separated methods")
    cmp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    cmp.add_argument("--out", default="runs/compare", help="folder of the runs; finished runs are reused")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_notebook_args(sub)
    return parser


def _add_notebook_args(sub) -> None:
    nb = sub.add_parser("notebooks", help="execute the numbered notebooks with papermill under a preset")
    nb.add_argument("--preset", default="default", help="a YAML file in notebooks/presets (smoke, default, full)")
    nb.add_argument("--only", action="append", default=None, metavar="NN",
                    help="run only this notebook (number or name); repeat or comma-separate for several")
    nb.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter (a YAML literal) in every selected notebook that has it")
    nb.add_argument("--out", default=None, help="folder of the executed notebooks (default runs/notebooks)")
    sw = sub.add_parser("sweep", help="execute one notebook over a grid of parameters and tabulate its numbers")
    sw.add_argument("notebook", help="number or name of the notebook, e.g. 02")
    sw.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=V1,V2",
                    help="a parameter and its comma-separated values (YAML literals); the grid is the product")
    sw.add_argument("--preset", default="default", help="values for the parameters the grid does not set")
    sw.add_argument("--out", default=None, help="folder of the sweeps (default runs/sweeps)")


def _add_config_args(p: argparse.ArgumentParser, single_method: bool = True) -> None:
    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(DATASETS)}")
    if single_method:
        p.add_argument("--method", default=d.method, help=f"one of {', '.join(METHODS)}")
        p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--transform", default=d.transform, help=f"one of {', '.join(transforms.available())}")
    p.add_argument("--model", default=d.model, help=f"auto or one of {', '.join(MODELS)}")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="original images per step and per process (torchrun: global batch = processes × this)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--train-fraction", type=float, default=d.train_fraction, help="share of train used, (0, 1]")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--T", type=float, default=d.T, help="distillation temperature (sla+sd)")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the distilled head's CE (sla+sd)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--data-dir", default=None, help="imagefolder: folder of class sub-folders")
    p.add_argument("--image-size", type=int, default=d.image_size, help="imagefolder: resize to this square")
    p.add_argument("--sync-bn", action="store_true",
                   help="torchrun: batch-norm statistics over the global batch of all processes")


def _config(args: argparse.Namespace, **override) -> TrainConfig:
    fields = dict(dataset=args.dataset, transform=args.transform, model=args.model, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                  train_fraction=args.train_fraction, device=args.device, T=args.T, beta=args.beta,
                  max_steps=args.max_steps, compile=args.compile, data_dir=args.data_dir,
                  image_size=args.image_size, sync_bn=args.sync_bn)
    if hasattr(args, "method"):
        fields.update(method=args.method, seed=args.seed)
    fields.update(override)
    return TrainConfig(**fields)


def _cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .distributed import is_main
    from .experiment import train_run
    from .report import format_metrics

    explicit = any(a.startswith("--") and a.split("=")[0] not in _RUN_FLAGS for a in argv[1:])
    config = _config(args) if (explicit or not args.resume) else None
    metrics = train_run(config, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress, device=args.device)
    if is_main():  # under torchrun every rank gets the same metrics; rank 0 reports them
        print(format_metrics(metrics))
        print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


_RUN_FLAGS = {"--out", "--resume", "--overwrite", "--no-progress", "--device"}


def _cmd_eval(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .config import resolve_device
    from .experiment import evaluate_run, load_run
    from .report import format_metrics

    model, config, data = load_run(args.checkpoint, args.device)
    metrics = evaluate_run(model, config, data, resolve_device(args.device))
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def _cmd_compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .distributed import is_main, session
    from .report import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [_int("--seeds", s) for s in args.seeds.split(",") if s.strip()]
    configs = [_config(args, method=m, seed=s) for m in methods for s in seeds]
    with session(args.device):  # under torchrun, one process group for all the runs (not one per run)
        table = compare(configs, args.out, progress=not args.no_progress)
    if is_main():
        print(table)
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
    summary = run_notebooks(args.preset, only, parse_assignments(args.params), out_root=out)
    print(format_summary(summary))
    return 0


def _cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .runner import format_sweep, parse_grid, sweep

    if not args.params:
        raise LabkitError("sweep needs at least one -p KEY=V1,V2")
    out = Path(args.out).resolve() if args.out else None
    print(format_sweep(sweep(args.notebook, parse_grid(args.params), args.preset, out_root=out)))
    return 0


_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "compare": _cmd_compare, "notebooks": _cmd_notebooks,
             "sweep": _cmd_sweep}


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
