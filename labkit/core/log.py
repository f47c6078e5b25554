"""The lines labkit prints about its work, and how a notebook runner recognises them.

Inside a notebook kernel (or any process) labkit says what it does in lines that start with `[labkit]`
(`log("reusing cached run ...")`) and, when the runner asks for it (`LABKIT_PROGRESS=lines` in the kernel's
environment), one `[labkit:epoch]` line per trained epoch instead of a progress bar. The runner
(`labkit.lab.watch`) shows both in its own terminal. The `[labkit]` lines are the cell's output (a saved copy keeps
them: one per run). The epoch lines are progress, which belongs in the runner's terminal and not in a saved copy:
the runner names a file (`LABKIT_EPOCH_FILE`) that they are appended to instead of the kernel's stdout, and reads it
as it grows.
"""

from __future__ import annotations

import os

__all__ = ["PREFIX", "EPOCH_PREFIX", "PROGRESS_ENV", "EPOCH_FILE_ENV", "log", "epoch_line", "lines_wanted"]

PREFIX = "[labkit] "
EPOCH_PREFIX = "[labkit:epoch] "
PROGRESS_ENV = "LABKIT_PROGRESS"  # "lines": print one line per epoch (the runner sets it in its kernels)
EPOCH_FILE_ENV = "LABKIT_EPOCH_FILE"  # a file the epoch lines are appended to instead of stdout (the runner's)


def log(message: str) -> None:
    """A `[labkit]` line on stdout: shown in the notebook, and forwarded to the terminal by the runner."""
    print(PREFIX + message, flush=True)


def epoch_line(message: str) -> None:
    """A `[labkit:epoch]` line: appended to the runner's file when it named one (so no saved copy keeps it), else
    printed."""
    path = os.environ.get(EPOCH_FILE_ENV)
    if not path:
        print(EPOCH_PREFIX + message, flush=True)
        return
    with open(path, "a", encoding="utf-8") as f:  # one write per line: the reader never sees half a line
        f.write(EPOCH_PREFIX + message + "\n")


def lines_wanted() -> bool:
    """Whether this process runs under the notebook runner, which wants one line per epoch."""
    return os.environ.get(PROGRESS_ENV) == "lines"
