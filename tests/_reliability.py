"""Shared helpers of the reliability tests (test_errors, test_checkpoint, test_resume, test_official): tiny runs, a
CLI driver that captures the one-line error, snapshots that prove nothing on disk changed, and a pickle that would
run a shell command."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import torch

from labkit.cli import main
from labkit.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(dataset="digits", method="sla", transform="rotation", epochs=2, batch_size=16, train_fraction=0.1,
            device="cpu", seed=0)  # 7 steps per epoch, a few seconds on one CPU core
TINY_ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--train-fraction", "0.1",
             "--device", "cpu"]  # the CLI form of TINY (method sla is the default)


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


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
