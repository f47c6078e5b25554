"""The lines labkit prints about its work, and how a notebook runner recognises them.

Inside a notebook kernel (or any process) labkit says what it does in lines that start with `[labkit]`
(`log("reusing cached run ...")`) and, when the runner asks for it (`LABKIT_PROGRESS=lines` in the kernel's
environment), one `[labkit:epoch]` line per trained epoch instead of a progress bar. The runner
(`labkit.lab.watch`) reads both prefixes from the kernel's output and shows them in its own terminal.
"""

from __future__ import annotations

import os

__all__ = ["PREFIX", "EPOCH_PREFIX", "PROGRESS_ENV", "log", "epoch_line", "lines_wanted"]

PREFIX = "[labkit] "
EPOCH_PREFIX = "[labkit:epoch] "
PROGRESS_ENV = "LABKIT_PROGRESS"  # "lines": print one line per epoch (the runner sets it in its kernels)


def log(message: str) -> None:
    """A `[labkit]` line on stdout: shown in the notebook, and forwarded to the terminal by the runner."""
    print(PREFIX + message, flush=True)


def epoch_line(message: str) -> None:
    """A `[labkit:epoch]` line: the runner shows it in its status line; it never reaches a saved copy's cell."""
    print(EPOCH_PREFIX + message, flush=True)


def lines_wanted() -> bool:
    """Whether this process runs under the notebook runner, which wants one line per epoch."""
    return os.environ.get(PROGRESS_ENV) == "lines"
