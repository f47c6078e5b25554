"""What a grading kernel runs around a learner's code; `labkit.lab.grading` starts the kernel and drives it.

    from labkit.lab import sandbox
    sandbox.enter()                                         # no network, no labkit answers, one thread
    sandbox.define(globals(), "job/04.definitions.json")    # the learner's imports, functions, classes, constants
    sandbox.attempt(globals(), "aggregate", "job/04.aggregate.pt")   # their function on every case of the check

`attempt` only runs the learner's function; whether its outputs are right is decided by the grader's own process
(`labkit.lab.exercises.verdict`), so nothing the learner's code does in this kernel can write a grade. Messages and
outputs travel as files: JSON for the definitions' errors, and `torch.save` of plain tensors and strings for an
attempt, which the grader reads with `torch.load(weights_only=True)` (no pickle of the learner's objects).
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import torch

from ..core.errors import LabkitError
from . import exercises

__all__ = ["enter", "define", "attempt", "NO_NETWORK", "NO_SOLUTIONS"]

NO_NETWORK = "no network while grading"
NO_SOLUTIONS = "exercises.solution is switched off while grading: the function must be your own"


def enter() -> None:
    """Refuse every socket but a Unix one, switch off `exercises.solution`, and compute on one thread (several
    learners may be graded side by side). Once per kernel: a second call changes nothing."""
    if getattr(socket.socket.connect, "guarded", False):
        return
    _guard_sockets()
    exercises.solution = _switched_off
    torch.set_num_threads(1)


def _switched_off(name: str) -> Callable[..., object]:
    raise LabkitError(NO_SOLUTIONS)


def _guard_sockets() -> None:
    """Python's sockets refuse to reach any address but a Unix socket's. The kernel's own channels are ZeroMQ's, in
    C, and stay open; the grader also points every proxy at a refused port and, where the system lets it, starts
    the kernel in a network namespace of its own with no interface up."""
    original = socket.socket.connect

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENETUNREACH, NO_NETWORK)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != getattr(socket, "AF_UNIX", None):
            refuse()
        original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        connect(self, address)
        return 0

    connect.guarded = True
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse


def define(namespace: MutableMapping[str, Any], job: str | Path) -> None:
    """Run each statement of the job file (`[{"cell": k, "source": "..."}]`, in notebook order) in `namespace`,
    one at a time, so that one that fails leaves the others defined; write the failures to `<job>.errors.json`
    as `[{"cell": k, "error": "NameError: ..."}]`."""
    job = Path(job)
    errors = []
    for statement in json.loads(job.read_text()):
        try:
            exec(compile(statement["source"], f"<cell {statement['cell']}>", "exec"), namespace)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a learner's SystemExit is one more error to report
            errors.append({"cell": statement["cell"], "error": _one_line(e)})
    job.with_suffix(".errors.json").write_text(json.dumps(errors))


def attempt(namespace: MutableMapping[str, Any], name: str, out: str | Path) -> None:
    """Run the learner's function `name` (from `namespace`) on every case of the exercise and save what it gave:
    `{"outputs": [tensors], "problem": str or None}`."""
    fn = namespace.get(name)
    if not callable(fn):
        result = exercises.Attempt(name, (), f"✗ {name} is not defined: no function of that name ran")
    else:
        try:
            result = exercises.attempt(name, fn)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - SystemExit and the like escape the check's own handler
            result = exercises.Attempt(name, (), f"✗ {name} raised {_one_line(e)}")
    torch.save({"outputs": [t.detach().cpu().clone() for t in result.outputs], "problem": result.problem}, out)


def _one_line(e: BaseException) -> str:
    message = (str(e).strip().splitlines() or [""])[0][:160]
    return f"{type(e).__name__}: {message}" if message else type(e).__name__
