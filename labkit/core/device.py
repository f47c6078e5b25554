"""The device a run computes on, its precision, its CPU threads, and waiting for it.

    device = resolve_device("auto")            # CUDA when present, else the CPU
    with autocast(device, "auto"):             # bf16 autocast on CUDA, fp32 on the CPU
        out = model(x)
    synchronize(device)                        # CUDA is asynchronous: wait before reading a clock
    with eval_mode(model): ...                 # batch norm on running statistics, then the old mode back

Nothing here runs at import; each helper takes the device (and precision) as an argument.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from .errors import LabkitError, check_choice

__all__ = ["DEVICES", "PRECISIONS", "resolve_device", "uses_bf16", "autocast", "synchronize", "eval_mode",
           "set_threads"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 autocast on CUDA, fp32 on the CPU (CPU results stay exact)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit 'cuda' without a GPU is refused."""
    check_choice("device", name, DEVICES)
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise LabkitError("device 'cuda' requested but no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu")


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether `precision` means bf16 autocast on `device`."""
    check_choice("precision", precision, PRECISIONS)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` asks for it on `device`, else a no-op (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA is asynchronous), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block (batch norm on running statistics), its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def set_threads(device: torch.device, threads: int | None = None) -> int:
    """The one place labkit sets the CPU thread count (intra-op), for training on `device`.

    On CPU: `threads`, else $LABKIT_THREADS, else $OMP_NUM_THREADS (the usual knob, which the notebook presets and
    torchrun set), else every core this process may run on (the affinity mask, which container CPU pinning narrows;
    os.cpu_count() would ignore it) shared among the processes torchrun started on this machine. A training run
    passes its config's `threads`, so its numbers never depend on the environment or on how many runs share the
    machine; the fallbacks serve tools such as the benchmarks. On CUDA the host threads only launch kernels and are
    left as PyTorch sets them. Returns the count in force.
    """
    if device.type == "cpu":
        n = threads or _env_threads("LABKIT_THREADS") or _env_threads("OMP_NUM_THREADS") or max(
            _usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
    return torch.get_num_threads()


def _env_threads(name: str) -> int | None:
    env = os.environ.get(name, "").strip()
    if env and not (env.isdigit() and int(env) > 0):
        raise LabkitError(f"{name} must be a positive integer, got {env!r}")
    return int(env) if env else None


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
