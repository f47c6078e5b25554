"""What the notebook runner shows in its own terminal while a notebook executes: the driver's half of progress.

The kernel prints `[labkit]` and `[labkit:epoch]` lines (`labkit.core.log`); `NotebookWatch` reads the kernel's
output as papermill relays it and shows

- in an interactive terminal, one status line rewritten in place: the notebook, the cell being run and the epoch
  of the run being trained; lines about the cache stay on screen;
- in a log (CI, a pipe, a file), only the `[labkit]` lines: at most one line per epoch, no carriage returns.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from ..core.log import EPOCH_PREFIX, PREFIX, PROGRESS_ENV

__all__ = ["NotebookWatch"]


class _Lines:
    """A file-like sink that hands each complete line to `handle`."""

    def __init__(self, handle: Callable[[str], None]) -> None:
        self.handle, self.pending = handle, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.handle(line)
        return len(text)

    def flush(self) -> None:
        pass


class NotebookWatch:
    """What the runner shows while one notebook executes (see the module docstring). `papermill_kwargs()` are
    the keywords papermill.execute_notebook passes on to nbclient; `env` goes into the kernel's environment."""

    env = {PROGRESS_ENV: "lines"}

    def __init__(self, label: str, log: Callable[[str], None] = print, live: bool | None = None) -> None:
        self.label, self.log, self.stream = label, log, sys.stdout
        if live is None:  # a status line rewritten in place only on a terminal the runner prints to itself
            live = log is print and sys.stdout.isatty() and not os.environ.get("CI")
        self.live, self.n_cells = live, 0
        self.cell, self.epoch, self._width = "", "", 0

    def papermill_kwargs(self, n_cells: int) -> dict[str, Any]:
        self.n_cells = n_cells
        return {"stdout_file": _Lines(self._line), "stderr_file": _Lines(lambda line: None),
                "on_cell_start": self._cell_start}

    def _cell_start(self, cell: Any, cell_index: int) -> None:
        if cell.get("cell_type") == "code":
            first = next((line for line in cell.get("source", "").splitlines() if line.strip()), "")
            self.cell = f"cell {cell_index + 1}/{self.n_cells}: {first.strip()[:50]}"
            self._status()

    def _line(self, line: str) -> None:
        if line.startswith(EPOCH_PREFIX):
            self.epoch = line.removeprefix(EPOCH_PREFIX)
            if self.live:
                return self._status()
            return self._print(f"    {self.epoch}")
        if line.startswith(PREFIX):
            self._print("    " + line.removeprefix(PREFIX))

    def _status(self) -> None:
        if self.live:
            text = f"  {self.label} | {self.cell.split(':')[0]}{' | ' + self.epoch if self.epoch else ''} | " \
                   f"{self.cell.partition(': ')[2]}"  # the epoch before the cell's code: a narrow terminal cuts it
            text = text[:max(shutil.get_terminal_size().columns - 1, 20)]
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = len(text)

    def _print(self, text: str) -> None:
        self.close()
        self.log(text)
        self._status()

    def close(self) -> None:
        """Clear the status line (live) before the runner prints its own line."""
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
