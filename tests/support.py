"""Helpers that several test modules share (fixtures live in conftest.py): tiny runs, a CLI driver that captures
the one-line error, snapshots that prove nothing on disk changed, a pickle that would run a shell command, files
in the real CIFAR format, checkpoints in the official SLA code's layout, and a Ctrl-C sent mid-step."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.cli import main
from labkit.data.splits import DataBundle, Split
from labkit.training.config import TrainConfig
from labkit.training.engine import Callback, Learner
from labkit.training.official import CIFAR_CLASSES

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(dataset="digits", method="sla", transform="rotation", epochs=2, batch_size=16, train_fraction=0.1,
            device="cpu", seed=0)  # 7 steps per epoch, a few seconds on one CPU core
TINY_ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--train-fraction", "0.1",
             "--device", "cpu"]  # the CLI form of TINY (method sla is the default)


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})



def write_notebook(path: Path, body: str, imports: str = "import os, pathlib\nimport labkit\nfrom labkit import record"
                   ) -> None:
    """A throwaway notebook for the runner's tests: `imports`, a parameters cell (VALUE: int = 1, OUT_DIR) and
    `body`."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('VALUE: int = 1  # a number\nOUT_DIR: str = ""  # results folder')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell(imports), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


# ------------------------------------------------------------------------ docs/errors.md: bad input and its line
def fill_tmp(argv: list[str], tmp: Path) -> list[str]:
    """A documented command line (TMP for a scratch folder) with the folder filled in."""
    return [a.replace("TMP", str(tmp)) for a in argv]


def observe(argv: list[str], tmp: Path) -> tuple[int, str]:
    """Run a documented command line in process: its exit status and stderr, the scratch folder shown as TMP."""
    rc, _, err = run_cli(*fill_tmp(argv, tmp))
    return rc, err.replace(str(tmp), "TMP")


def command(argv: list[str]) -> str:
    return "python -m labkit " + " ".join(argv)


def _section(text: str, name: str) -> tuple[str, str, str]:
    """(before, the section, after) of the text between <!-- NAME:start --> and <!-- NAME:end -->."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    head, rest = text.split(start)
    body, tail = rest.split(end)
    return head + start, body, end + tail


def documented(docs: Path, name: str) -> dict[str, str]:
    """A section of docs/errors.md: command line -> message."""
    return dict(re.findall(r"^\| .*? \| `(python -m labkit [^`]*)` \| `([^`]*)` \|$", _section(docs.read_text(),
                                                                                          name)[1], re.M))


def write_error_table(docs: Path, name: str, cases: list, tmp: Path) -> None:
    """Run every (what, argv, fragments) case for real (each must be refused with status 2) and write what it said
    into the section `name` of docs/errors.md."""
    rows = ["| Bad input | Command | Message (exit status 2) |", "|---|---|---|"]
    for what, argv, _ in cases:
        rc, err = observe(argv, tmp)
        assert rc == 2, (what, err)
        rows.append(f"| {what} | `{command(argv)}` | `{err.strip()}` |")
    head, _, tail = _section(docs.read_text(), name)
    docs.write_text(head + "\n".join(rows) + "\n" + tail)

class RunsShell:
    """Unpickling this runs a shell command that creates `marker`: what a safe loader must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder` -> (SHA-256 of its bytes, mtime in ns); equal snapshots mean nothing changed."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit status, stdout, stderr), argparse's own exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m labkit` subprocess: this labkit, one thread, no network."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
         "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",  # port 9: refused at once
         "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PYTHONWARNINGS": "ignore"}
    for key in ("no_proxy", "NO_PROXY"):
        e.pop(key, None)
    return {**e, **extra}


def run_labkit(*argv: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m labkit ...` as a user would run it."""
    return subprocess.run([sys.executable, "-m", "labkit", *argv], capture_output=True, text=True, timeout=timeout,
                          env=env(**extra_env), cwd=ROOT)


def assert_one_line_error(rc: int, stderr: str, *fragments: str) -> str:
    """Exit status 2 and exactly one line on stderr, `labkit: error: ...`, holding every fragment."""
    lines = stderr.strip().splitlines()
    assert rc == 2, (rc, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("labkit: error: "), stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@contextlib.contextmanager
def one_thread():
    """Bitwise-reproducible, and fair to a busy 2-core machine."""
    before, env_before = torch.get_num_threads(), os.environ.get("LABKIT_THREADS")
    torch.set_num_threads(1)
    os.environ["LABKIT_THREADS"] = "1"  # train_run sets the thread count itself (experiment.set_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env_before is None:
            os.environ.pop("LABKIT_THREADS", None)
        else:
            os.environ["LABKIT_THREADS"] = env_before


# ----------------------------------------------------------------------------------------------- data and runs
def write_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


class SigintAfterOptimizerStep(Callback):
    """Sends itself Ctrl-C (`times` times) right after optimizer.step() of global step `at`, i.e. mid-step:
    before the scheduler, the loss sums and the step counters have moved."""

    def __init__(self, at: int, times: int = 1) -> None:
        self.at, self.times = at, times

    def before_fit(self, learner: Learner) -> None:
        learner.optimizer.register_step_post_hook(self._hook)
        self.learner = learner

    def _hook(self, optimizer, args, kwargs) -> None:
        if self.learner.step + 1 == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


# ------------------------------------------------------------------------------- the official SLA code's layout
class OfficialBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(c_out)
        self.conv_b = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(c_out)
        self.down = stride != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x)))))
        if self.down:  # option A as the official code: stride-2 subsample, the input's channels, then as many zeros
            x = x[:, :, ::2, ::2]
            x = torch.cat([x, torch.zeros_like(x)], 1)
        return F.relu(x + y)


class Reshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1)  # (B, 64, 1, 1) -> (B, 64)


class OfficialNet(nn.Module):
    def __init__(self, depth: int, outputs: list[int]) -> None:
        super().__init__()
        n, c_in, stages = (depth - 2) // 6, 16, []
        for s, width in enumerate((16, 32, 64)):
            stages.append(nn.Sequential(*[OfficialBlock(c_in if b == 0 else width, width, 2 if s and b == 0 else 1)
                                          for b in range(n)]))
            c_in = width
        self.base_model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                        *stages, nn.AdaptiveAvgPool2d(1), Reshape())
        self.classifiers = nn.ModuleList(nn.Linear(64, k) for k in outputs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.base_model(x)
        return [c(z) for c in self.classifiers]


def randomise_bn(net: nn.Module) -> None:
    """Trained-looking BN: running statistics and affine parameters far from their initial 0/1."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))


def official_args(mode: str | None = "sla", aug: str | None = "rotation", depth: int = 32, dataset: str = "cifar10",
          **extra) -> argparse.Namespace:
    return argparse.Namespace(mode=mode, aug=aug, model=f"cresnet{depth}", dataset=dataset, lr=0.1, wd=5e-4,
                              batchsize=128, logdir=f"logs/{dataset}/cresnet{depth}/{mode}_{aug}", **extra)


def official_checkpoint(path: Path, depth: int, outputs: list[int], args: argparse.Namespace | None, seed: int = 0,
              **extra) -> OfficialNet:
    """Save a checkpoint as the official train.py does; returns the model (eval mode) to compare against."""
    torch.manual_seed(seed)
    net = OfficialNet(depth, outputs)
    randomise_bn(net)
    dp = nn.DataParallel(net)  # on CPU it only wraps: the state dict's keys start with `module.`
    ckpt = {"model": dp.state_dict(), "optim": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9}]},
            "best": 0.9, "epoch": 3, "iteration": 1000, **extra}
    if args is not None:
        ckpt["args"] = args
    torch.save(ckpt, path)
    return net.eval()


def fake_cifar(N: int, n: int = 8) -> DataBundle:
    """CIFAR-shaped random data, so that load_run runs offline (it only needs the shape and N from the data)."""
    split = Split(torch.randn(n, 3, 32, 32), torch.arange(n) % N)
    return DataBundle(f"cifar{N}", CIFAR_CLASSES[f"cifar{N}"], split, split, split, (3, 32, 32), False,
                      (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
