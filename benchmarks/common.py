"""What both benchmark scripts share: timing, the machine's name, synthetic data, and a reference-style pipeline.

The reference pipeline is how SLA is usually written (the official code's style): a torch DataLoader whose
dataset transforms one image at a time (PIL crop and flip, ToTensor, Normalize), a Python loop over the M views
(one transform call per view, then a stack), joint labels built per view, and `loss.item()` every step. It trains
the same model on the same images as labkit's pipeline, so the two epochs differ only in the pipeline.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's labkit, without installing it

from labkit.core.device import synchronize  # noqa: E402
from labkit.data.splits import DataBundle, Split  # noqa: E402
from labkit.sla.transforms import TransformSet  # noqa: E402

__all__ = ["CLOCKS", "timed", "interleaved", "median", "machine", "peak_memory", "reset_peak", "cifar_like",
           "bundle_of", "reference_loader", "reference_epoch"]


# ------------------------------------------------------------------------------------------------------- timing
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds of fn(), with the device's queue drained before and after.

    clock: `wall`, or `process` (CPU seconds of this process: on a CPU shared with other busy processes it leaves
    out the time this process waited for a core; meaningful on CPU only, and with no DataLoader workers)."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def interleaved(cases: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1,
                clock: str = "wall") -> dict[str, list[float]]:
    """Seconds of each case over `repeats` rounds, the cases taking turns within each round (order reversed every
    other round), so drift in the machine's load hits every case alike. Warm-up rounds are not recorded."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for k in (list(cases) if r % 2 == 0 else list(reversed(cases))):
            times[k].append(timed(cases[k], device, clock))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# ------------------------------------------------------------------------------------------------------ machine
def machine(device: torch.device) -> dict[str, object]:
    """The machine, named: CPU model, cores, torch version, threads, device, load at the time."""
    info: dict[str, object] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """MiB. CPU: the process's peak resident set so far (a high-water mark over the whole run); CUDA: the peak
    allocated since the last reset_peak."""
    out = {"cpu_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    if device.type == "cuda":
        out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# --------------------------------------------------------------------------------------------------------- data
def cifar_like(n: int, seed: int = 0, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """n random CIFAR-shaped uint8 images (n, 32, 32, 3) and labels (n,) in 0..N-1."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, N, n).astype(np.int64)


def bundle_of(images: np.ndarray, labels: np.ndarray, augment: bool, device: torch.device,
              name: str = "cifar10") -> DataBundle:
    """A DataBundle holding `images` ((n, H, W, C) in [0, 1] floats or uint8) normalised, as labkit's loaders do;
    no validation split, so an epoch is training only. The test split is the training images."""
    x = torch.as_tensor(images).float()
    x = (x / 255.0 if images.dtype == np.uint8 else x).permute(0, 3, 1, 2).contiguous()
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    y = torch.as_tensor(labels)
    train = Split(x, y)
    return DataBundle(name, tuple(str(i) for i in range(int(y.max()) + 1)), train, Split(x[:0], y[:0]), train,
                      tuple(x.shape[1:]), augment, tuple(mean.tolist()), tuple(std.tolist())).to(device)


# ------------------------------------------------------------------------------------------- reference pipeline
class _PerImage(torch.utils.data.Dataset):
    """One image at a time, through a torchvision transform, as reference pipelines do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def reference_loader(images: np.ndarray, labels: np.ndarray, data: DataBundle, batch_size: int, workers: int,
                     pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader over (n, H, W, C) images (uint8 or [0, 1] floats) with the per-image transforms of `data`:
    PIL random crop (padding 4) + horizontal flip when data.augment, then ToTensor and Normalize."""
    import torchvision.transforms as T
    from PIL import Image

    steps: list[Callable] = []
    if data.augment:
        steps += [Image.fromarray, T.RandomCrop(images.shape[1], padding=4), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    return torch.utils.data.DataLoader(_PerImage(images, labels, T.Compose(steps)), batch_size=batch_size,
                                       shuffle=True, drop_last=True, num_workers=workers, pin_memory=pin_memory,
                                       persistent_workers=workers > 0)


def reference_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: torch.utils.data.DataLoader,
                    tset: TransformSet, device: torch.device, max_steps: int | None = None,
                    autocast: bool | None = None) -> float:
    """One SLA epoch the reference way; returns the mean loss (read with .item() every step, as such code does)."""
    M = tset.M
    use_amp = device.type == "cuda" if autocast is None else autocast
    model.train()
    total, steps = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        x = torch.stack([tset.apply(x, j) for j in range(M)], 1).view(-1, *x.shape[1:])  # sample-major views
        joint = torch.stack([y * M + j for j in range(M)], 1).view(-1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = F.cross_entropy(model(x)["joint"], joint)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
        if max_steps and steps >= max_steps:
            break
    return total / max(steps, 1)
