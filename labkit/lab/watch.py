"""What the notebook runner shows in its own terminal while a notebook executes: the driver's half of progress.

The kernel prints `[labkit]` lines (`labkit.core.log`), which `NotebookWatch` reads from the kernel's output as
papermill relays it, and appends `[labkit:epoch]` lines to a file the watch names in the kernel's environment
(`LABKIT_EPOCH_FILE`), which a thread of the watch reads as it grows: progress reaches the terminal, never the saved
copy. It shows

- in an interactive terminal, one status line rewritten in place: the notebook, the cell being run and the epoch
  of the run being trained; lines about the cache stay on screen;
- in a log (CI, a pipe, a file), only the `[labkit]` lines: at most one line per epoch, no carriage returns.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.log import EPOCH_FILE_ENV, EPOCH_PREFIX, PREFIX, PROGRESS_ENV

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
    the keywords papermill.execute_notebook passes on to nbclient; `env` goes into the kernel's environment.
    `close()` (always, also after a failure) reads the epoch file to its end and removes it."""

    POLL_SECONDS = 0.2  # how often the epoch file is read while the notebook runs

    def __init__(self, label: str, log: Callable[[str], None] = print, live: bool | None = None) -> None:
        self.label, self.log, self.stream = label, log, sys.stdout
        if live is None:  # a status line rewritten in place only on a terminal the runner prints to itself
            live = log is print and sys.stdout.isatty() and not os.environ.get("CI")
        self.live, self.n_cells = live, 0
        self.cell, self.epoch, self._width = "", "", 0
        handle, name = tempfile.mkstemp(prefix="labkit-epochs-", suffix=".log")
        os.close(handle)
        self.epoch_file, self._read_to, self._lock = Path(name), 0, threading.Lock()
        self.env = {PROGRESS_ENV: "lines", EPOCH_FILE_ENV: name}
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._follow, name="labkit-epoch-lines", daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self._read_epochs()

    def _read_epochs(self) -> None:
        """Hand every complete line appended to the epoch file since the last read to `_line`."""
        try:
            with open(self.epoch_file, encoding="utf-8") as f:
                f.seek(self._read_to)
                text = f.read()
        except OSError:
            return
        complete = text[:text.rfind("\n") + 1]
        self._read_to += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            self._line(line)

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
        with self._lock:  # the epoch reader and papermill's output callback both print
            self._show(line)

    def _show(self, line: str) -> None:
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
        self._clear()
        self.log(text)
        self._status()

    def close(self) -> None:
        """Show the last epoch lines, stop reading and remove the epoch file, and clear the status line (live)
        before the runner prints its own line. Safe to call more than once."""
        if not self._stop.is_set():
            self._stop.set()
            self._reader.join()
            self._read_epochs()
            self.epoch_file.unlink(missing_ok=True)
        self._clear()

    def _clear(self) -> None:
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
