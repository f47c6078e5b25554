"""Where the independent tasks of a grid run: one after another in this process, or in parallel on Ray.

    outcomes = run_tasks(train_one, jobs)                           # in this process; Ray is not imported
    outcomes = run_tasks(train_one, jobs, workers=2)                # a local Ray on this machine, 2 at a time
    outcomes = run_tasks(train_one, jobs, address="head:6379")      # an existing Ray cluster

A task is `fn(item)`, `fn` a function defined at the top level of a module: Ray sends it by reference, so the
module must import on every node (labkit installed there, the same version). Each task declares the resources it
needs (`Resources`: CPUs, GPUs) and Ray's scheduler places it where they are free. An exception in a task fails
that task alone, as one line in its `Outcome`; the other tasks carry on. A task whose worker process dies (SIGKILL,
out of memory, a lost node) is run again by Ray, up to `RETRIES` times.

A local Ray that labkit starts (`workers` > 1 without an address):

- listens on 127.0.0.1 only, every service of it: Ray's own switch for that (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
  what it does on macOS and Windows) and the node's address set to 127.0.0.1;
- has token authentication on (`RAY_AUTH_MODE=token`; Ray keeps the token in `~/.ray/auth_token`);
- runs its workers at the usual priority (Ray's default niceness for them is 15);
- has no dashboard unless asked for (`dashboard=True`, then on 127.0.0.1 too), and sends no usage statistics;
- has an object store of `OBJECT_STORE_BYTES`: tasks pass configs, paths and small results, never tensors, so
  Ray's default (30 % of the machine's memory) would only reserve room nothing uses;
- stays up for the rest of the process, so the next grid starts at once; `shutdown()` stops it sooner.

While that Ray starts (seconds), and until the grid ends, this process runs tasks too, as one of the `workers`
(`run_tasks(..., here=...)`): the start-up and each worker's first import hide behind work it does anyway.

Joining a cluster (`address`: `HOST:PORT` as `ray start --head` prints it, `ray://HOST:PORT`, or `auto`) is the
user's explicit choice; labkit then changes nothing of the cluster. `workers` caps how many tasks are in flight
(None: as many as the cluster's resources allow).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import LabkitError
from .paths import kernel_pythonpath

__all__ = ["Resources", "Outcome", "RETRIES", "OBJECT_STORE_BYTES", "INSTALL_HINT", "check_workers",
           "check_gpus_per_run", "check_address", "in_process", "import_ray", "run_tasks", "prepare", "start",
           "started", "shutdown", "node_gpus", "one_line", "Progress"]

RETRIES = 3  # runs of a task again after its worker died (Ray's default for tasks)
CANCEL_WAIT_S = 30  # after Ctrl-C, how long the driver waits for stopped tasks to save their checkpoints
OBJECT_STORE_BYTES = 128 * 2**20  # a local Ray's shared-memory object store; Ray's minimum is 75 MiB
INSTALL_HINT = 'pip install "labkit[sweep]"'
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every service on 127.0.0.1 (ray_constants)
                 "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                 # Ray runs its workers at niceness 15: a run there would crawl beside anything else on the
                 # machine, this process's own run included; a run is the user's work, at the usual priority
                 "RAY_worker_niceness": "0"}
_started: dict[str, Any] = {}  # the Ray this process started or joined: {"where": "local" or the address, ...}
# Linux kills Ray's services when the *thread* that started them ends (their parent-death signal follows the
# thread): a thread that starts a local Ray waits on this until shutdown().
_keep_alive = threading.Event()


@dataclass(frozen=True)
class Resources:
    """What one task needs from the node that runs it."""

    cpus: float = 1.0
    gpus: float = 0.0

    def options(self) -> dict[str, float]:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}


@dataclass(frozen=True)
class Outcome:
    """One task's result: its `value`, or its `error` in one line; where and how long it ran."""

    index: int  # its place in the items
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    node: str = "this process"  # the node's address on Ray
    pid: int = 0
    node_id: str = ""  # Ray's id of the node (several nodes may share an address)

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------------------------------------------- checks
def check_workers(workers: object, flag: str = "workers") -> None:
    """`workers` is a positive integer (tasks at once), or None (as many as the resources allow)."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LabkitError(f"{flag} must be a positive integer (how many tasks run at once; 1: one after another in "
                          f"this process), got {workers!r}")


def check_gpus_per_run(gpus: object) -> None:
    """None (one GPU per run), a share of one GPU in (0, 1], or a whole number of GPUs."""
    if gpus is None:
        return
    if (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus <= 0
            or (gpus > 1 and not float(gpus).is_integer())):
        raise LabkitError(f"--gpus-per-run takes a share of one GPU in (0, 1] (0.5 packs two runs on a GPU) or a whole "
                          f"number of GPUs, got {gpus!r}")


def check_address(address: str) -> None:
    """A cluster address that answers: `auto`, or `[ray://]HOST:PORT` with something listening there. Refused in one
    line (and nothing started) when it does not: Ray itself would retry for minutes."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        raise LabkitError(f"no Ray cluster answers at --address {address} ({e.strerror or e}); start one with 'ray "
                          f"start --head' and pass the address it prints, or leave --address out for a local Ray "
                          f"(--workers N)") from None


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LabkitError(f"--address takes HOST:PORT (the head's address, as 'ray start --head' prints it), "
                          f"ray://HOST:PORT or auto; got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(address: str) -> bool:
    if address == "auto":
        return True
    host = _host_port(address)[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def one_line(error: BaseException) -> str:
    """An exception as one line: a LabkitError's own message, anything else with its type."""
    text = " ".join(str(error).split())
    return text if isinstance(error, LabkitError) else f"{type(error).__name__}: {text}"


# --------------------------------------------------------------------------------------------- in this process
def in_process(fn: Callable[[Any], Any], items: Sequence[Any],
               on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every task one after another in this process; a task that raises fails alone (Ctrl-C stops them all)."""
    outcomes = []
    for index, item in enumerate(items):
        outcomes.append(_attempt(fn, item, index))
        if on_done:
            on_done(outcomes[-1])
    return outcomes


def _attempt(fn: Callable[[Any], Any], item: Any, index: int) -> Outcome:
    start_ = time.perf_counter()
    try:
        return Outcome(index, value=fn(item), seconds=time.perf_counter() - start_, pid=os.getpid())
    except Exception as e:
        return Outcome(index, error=one_line(e), seconds=time.perf_counter() - start_, pid=os.getpid())


# ---------------------------------------------------------------------------------------------------------- Ray
def import_ray(local: bool = True) -> Any:
    """The `ray` module; with `local`, first the environment that keeps a Ray started from this process on
    127.0.0.1 with token authentication (Ray reads part of it when it is imported). A one-line hint to install the
    extra when Ray is missing."""
    imported = "ray" in sys.modules
    if local:
        os.environ.update(_LOOPBACK_ENV)
    try:
        import ray
    except ImportError:
        raise LabkitError(f"running tasks in parallel (--workers N > 1, or --address) needs Ray, which is not "
                          f"installed: {INSTALL_HINT}; or leave --workers at 1 to run them here one by "
                          f"one") from None
    from ray._private import ray_constants
    from ray._raylet import Config

    ray_constants.ENABLE_RAY_CLUSTER = not local  # read when Ray picks this node's address: 127.0.0.1 if local
    if local and imported:  # Ray read RAY_AUTH_MODE when it was imported; read it again, as Ray itself does
        Config.initialize("")
    return ray


def start(address: str | None, cpus: float, gpus: float | None = None, dashboard: bool = False,
          log: Callable[[str], None] | None = None) -> Any:
    """Ray, started or joined for `run_tasks`: without `address` a local Ray of `cpus` CPUs (and `gpus` GPUs, None:
    those it finds), reused when the one this process started already has as many; with `address`, that
    cluster. Returns the `ray` module."""
    if address is not None:
        check_address(address)
    local = address is None
    ray = import_ray(local=local or _is_loopback(address))
    if ray.is_initialized():
        if _started.get("where") == (address or "local") and (
                not local or (_started["cpus"] >= cpus and _started["dashboard"] == dashboard)):
            return ray
        if not _started:
            return ray  # a Ray the user started or joined in this process: theirs to configure
        shutdown()
    began = time.perf_counter()
    try:
        if local:
            _init_local(ray, cpus, gpus, dashboard)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            _started.update(where=address, cpus=0.0, dashboard=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise LabkitError(f"could not {'start a local Ray' if local else f'join the Ray cluster at {address}'}: "
                          f"{one_line(e)}") from None
    _started["seconds"] = time.perf_counter() - began
    if log:
        log(_started_line(ray, local, _started["seconds"]))
    return ray


def started() -> dict[str, Any]:
    """The Ray this process started or joined: {"where": "local" or the address, "cpus", "dashboard", "seconds"
    (how long starting or joining it took), ...}; empty when none."""
    return dict(_started)


def _init_local(ray: Any, cpus: float, gpus: float | None, dashboard: bool) -> None:
    quiet = logging.getLogger("ray._private.worker")  # started from a thread: its note on SIGTERM handlers
    level = quiet.level
    if threading.current_thread() is not threading.main_thread():
        quiet.setLevel(logging.ERROR)
    try:
        with _workers_import_this_labkit():
            context = ray.init(address="local", num_cpus=max(math.ceil(cpus), 1), num_gpus=gpus,
                               include_dashboard=dashboard, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                               object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
                               logging_level=logging.WARNING)
    finally:
        quiet.setLevel(level)
    _started.update(where="local", cpus=cpus, dashboard=dashboard, url=context.dashboard_url or "",
                    thread=threading.current_thread())
    _stop_with_the_kernel()


@contextlib.contextmanager
def _workers_import_this_labkit() -> Iterator[None]:
    """PYTHONPATH with this checkout first while the local Ray starts: its raylet, and the workers it starts later,
    inherit the environment of that moment and import this labkit, as the notebook kernels do. This process's own
    environment is left as it was (a later subprocess, a pip install say, must not see the checkout)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*map(str, kernel_pythonpath()), *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _stop_with_the_kernel() -> None:
    """In a Jupyter kernel, stop the local Ray when the kernel is asked to shut down. Left to the interpreter's
    exit, Ray's own clean-up does not finish before jupyter_client's wait (5 s) runs out: the kernel is then
    sent SIGTERM, and Ray's signal handler prints a stack dump to the terminal of a notebook that succeeded."""
    ipython = sys.modules.get("IPython")
    kernel = getattr(ipython.get_ipython(), "kernel", None) if ipython else None
    if kernel is None or getattr(kernel, "_labkit_stops_ray", False):
        return
    answer = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        shutdown()
        return answer(restart)  # a dict or an awaitable: the kernel handles both

    kernel.do_shutdown, kernel._labkit_stops_ray = do_shutdown, True


def _started_line(ray: Any, local: bool, seconds: float) -> str:
    resources = ray.cluster_resources()
    size = f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"
    if not local:
        return f"joined the Ray cluster ({len(ray.nodes())} nodes, {size}) in {seconds:.1f} s"
    board = f", dashboard on http://{_started['url']}" if _started.get("url") else ", no dashboard"
    return f"started a local Ray ({size}, on 127.0.0.1 only, token authentication{board}) in {seconds:.1f} s"


def shutdown() -> None:
    """Stop the local Ray this process started (or leave the cluster it joined)."""
    global _keep_alive
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    _started.clear()
    _keep_alive.set()  # the thread that started it may end now
    _keep_alive = threading.Event()


def run_tasks(fn: Callable[[Any], Any], items: Sequence[Any], workers: int | None = 1, address: str | None = None,
              resources: Sequence[Resources] | None = None, dashboard: bool = False,
              on_done: Callable[[Outcome], None] | None = None, log: Callable[[str], None] | None = None,
              here: Callable[[Any], Any] | None = None) -> list[Outcome]:
    """`fn(item)` for every item, in the items' order: in this process when `workers` is 1 and there is no
    `address` (Ray is not imported), else on Ray with at most `workers` in flight (None: as many as fit).
    `resources[i]` is what task i needs (default one CPU). `on_done` hears of each outcome as it arrives.

    `here(item)`: the same work done in this process. When a local Ray must first be started (seconds), this
    process is one of the `workers` for the whole call: it runs tasks with `here` from the first moment, while Ray
    starts and after, and Ray runs the others on `workers` - 1 slots (all `workers` once this process has none
    left). So the start-up, and each worker's first import, hide behind work this process does anyway."""
    check_workers(workers)
    items = list(items)
    if workers == 1 and address is None:
        return in_process(fn, items, on_done)
    resources = list(resources or [Resources()] * len(items))
    slots = min(workers or len(items), len(items))
    if here is not None and address is None and not _running_locally(resources, slots, dashboard):
        import_ray(local=True)  # Ray missing is refused here, before this process trains anything
        outcomes = _with_this_process(fn, here, items, resources, slots, dashboard, on_done, log)
    else:
        ray = prepare(resources, workers, address, dashboard, log)
        outcomes = dict(_on_ray(ray, fn, items, resources, _Queue(range(len(items)), slots), on_done))
    return [outcomes[i] for i in range(len(items))]


def _running_locally(resources: Sequence[Resources], slots: int, dashboard: bool) -> bool:
    """Whether a local Ray this process started already has room for `slots` of these tasks."""
    ray = sys.modules.get("ray")
    cpus = slots * max((r.cpus for r in resources), default=1.0)
    return bool(ray and ray.is_initialized() and _started.get("where") == "local" and _started["cpus"] >= cpus
                and _started["dashboard"] == dashboard)


class _Queue:
    """The tasks not yet started, and how many Ray may run now: `slots`, less one while this process runs a task
    itself (`here` busy)."""

    def __init__(self, indices: Iterable[int], slots: int) -> None:
        self.waiting, self.slots, self.here_busy = deque(indices), slots, False
        self.lock, self.stop = threading.Lock(), threading.Event()

    def for_ray(self, in_flight: int) -> list[int]:
        with self.lock:
            free = self.slots - int(self.here_busy) - in_flight
            return [self.waiting.popleft() for _ in range(min(max(free, 0), len(self.waiting)))]

    def for_here(self, ray_failed: threading.Event) -> int | None:
        with self.lock:
            self.here_busy = bool(self.waiting) and not ray_failed.is_set()
            return self.waiting.popleft() if self.here_busy else None


def _with_this_process(fn: Callable[[Any], Any], here: Callable[[Any], Any], items: list[Any],
                       resources: list[Resources], slots: int, dashboard: bool,
                       on_done: Callable[[Outcome], None] | None, log: Callable[[str], None] | None
                       ) -> dict[int, Outcome]:
    """Start a local Ray in a thread that then hands it tasks, while this thread runs tasks itself, one at a time,
    until none is left (Ctrl-C still reaches the task this thread runs)."""
    queue, ray_failed, dispatched, outcomes, failed = _Queue(range(len(items)), slots), threading.Event(), \
        threading.Event(), {}, []
    heard = threading.Lock()

    def done(outcome: Outcome) -> None:
        with heard:
            outcomes[outcome.index] = outcome
            if on_done:
                on_done(outcome)

    def on_ray() -> None:
        try:
            ray = prepare(resources, slots, None, dashboard, log)
            for _ in _on_ray(ray, fn, items, resources, queue, done):
                pass
        except BaseException as e:  # reported by the main thread, which stops taking tasks
            failed.append(e)
            ray_failed.set()
        finally:
            dispatched.set()
        if _started.get("thread") is threading.current_thread():
            _keep_alive.wait()  # Ray's services die with the thread that started them: live until shutdown()

    threading.Thread(target=on_ray, name="labkit-ray", daemon=True).start()
    try:
        while (i := queue.for_here(ray_failed)) is not None:
            done(_attempt(here, items[i], i))
        while not dispatched.wait(0.2):  # a timeout keeps Ctrl-C deliverable to this thread
            pass
    except BaseException:
        queue.stop.set()
        dispatched.wait(CANCEL_WAIT_S + 5)
        raise
    if failed:
        raise failed[0]
    return outcomes


def prepare(resources: Sequence[Resources], workers: int | None, address: str | None = None,
            dashboard: bool = False, log: Callable[[str], None] | None = None) -> Any:
    """Ray, ready for these tasks with `workers` in flight: a local Ray with room for that many (started, or the
    one this process started before), or the cluster at `address`; refuses tasks that no node can take. Returns
    the `ray` module. `run_tasks` calls it; call it first to start Ray before a clock starts."""
    slots = min(workers or len(resources), len(resources))
    ray = start(address, slots * max((r.cpus for r in resources), default=1.0), dashboard=dashboard, log=log)
    _check_fits(ray, resources)
    return ray


def node_gpus(ray: Any) -> float:
    """The most GPUs any alive node of the Ray in use has."""
    return max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


def _check_fits(ray: Any, resources: Sequence[Resources]) -> None:
    """Refuse tasks that no node can take (Ray would wait for them forever), before any runs."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for r in dict.fromkeys(resources):
        if not any(n.get("CPU", 0) >= r.cpus and n.get("GPU", 0) >= r.gpus for n in nodes):
            most = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            raise LabkitError(f"a task asks for {r.cpus:g} CPU(s) and {r.gpus:g} GPU(s), more than any node has (the "
                              f"largest: {most.get('CPU', 0):g} CPUs, {most.get('GPU', 0):g} GPUs); ask for less "
                              f"(--gpus-per-run, or the runs' threads)")


def _on_ray(ray: Any, fn: Callable[[Any], Any], items: list[Any], resources: list[Resources], queue: _Queue,
            on_done: Callable[[Outcome], None] | None) -> Iterator[tuple[int, Outcome]]:
    remote = ray.remote(_remote_call)
    pending: dict[Any, int] = {}
    try:
        while queue.waiting or pending or queue.here_busy:
            for i in queue.for_ray(len(pending)):
                options = {**resources[i].options(), "max_retries": RETRIES, "retry_exceptions": False}
                pending[remote.options(**options).remote(fn, items[i], i)] = i
            if queue.stop.is_set():
                raise KeyboardInterrupt
            if not pending:  # this process runs the last task itself
                time.sleep(0.1)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                outcome = _collect(ray, ref, pending.pop(ref))
                if on_done:
                    on_done(outcome)
                yield outcome.index, outcome
    except KeyboardInterrupt:  # a task told to stop saves its checkpoint, as on Ctrl-C in a terminal
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
        if queue.stop.is_set():
            return
        raise


def _collect(ray: Any, ref: Any, index: int) -> Outcome:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the task could not even start, e.g. its module does not import
        return Outcome(index, error=one_line(e.cause) if e.cause is not None else _first_line(e))
    except ray.exceptions.RayError as e:  # its worker died (each of RETRIES + 1 tries), or its node was lost
        return Outcome(index, error=f"its worker process died and it was tried {RETRIES + 1} times "
                                    f"({type(e).__name__}: {_first_line(e)[:200]})")


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _remote_call(fn: Callable[[Any], Any], item: Any, index: int) -> Outcome:
    """What a Ray worker runs for one task: `fn(item)`, its error caught as one line, where and how long."""
    import ray

    node, node_id = ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()
    start_ = time.perf_counter()
    try:
        value, error = fn(item), None
    except Exception as e:
        value, error = None, one_line(e)
    return Outcome(index, value, error, time.perf_counter() - start_, node, os.getpid(), node_id)


# ----------------------------------------------------------------------------------------------------- progress
class Progress:
    """One line per finished task ("run 3/8 ...: ...; about 40 s left"), and in a terminal an overall bar with the
    count and the time left (tqdm), which the lines scroll above."""

    def __init__(self, total: int, log: Callable[[str], None], what: str = "run", bar: bool = False) -> None:
        self.total, self.log, self.what, self.done = total, log, what, 0
        self.began = time.perf_counter()
        self.bar = None
        if bar and total > 1 and sys.stderr.isatty() and not os.environ.get("CI"):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=what, desc="grid", leave=False, dynamic_ncols=True)

    def finished(self, label: str, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.began
        left = self.total - self.done
        eta = f"; about {_duration(elapsed / self.done * left)} left" if left else f"; all done in {_duration(elapsed)}"
        line = f"{self.what} {self.done}/{self.total} {label}: {text}{eta}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.clear()
        self.log(line)
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
