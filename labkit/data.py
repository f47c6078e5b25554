"""Datasets as tensors on the training device, and batching as tensor ops on that device.

Small datasets (digits, MNIST, CIFAR) are loaded once into (n, C, H, W) float tensors, normalised, and moved to
the device; shuffling, sharding across ranks and CIFAR's augmentation (random crop with 4-pixel zero padding and a
horizontal flip, per sample) are batched ops on that device. No worker processes, no host-to-device copy per step.
`imagefolder` data can be any size, so it stays on disk and goes through a DataLoader.

Data root: `LABKIT_DATA` if set, else `data/` at the repository root, whatever the working directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DATASETS
from .errors import LabkitError, check_choice

__all__ = ["data_root", "Split", "DataBundle", "load_data", "tensor_batches", "random_crop_flip", "FolderSplit",
           "batches", "split_tensors", "DIGITS_SPLIT"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGITS_SPLIT = {"test": 0.2, "val": 0.1, "seed": 0}  # one fixed stratified split for every method and seed


def data_root() -> Path:
    """The one place data lives: $LABKIT_DATA, else <repo>/data."""
    env = os.environ.get("LABKIT_DATA")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


@dataclass
class Split:
    """Images (n, C, H, W) float, normalised, and labels (n,) long, both on one device."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class FolderSplit:
    """A torch Dataset read from disk (imagefolder); batches come from a DataLoader."""

    dataset: torch.utils.data.Dataset
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> FolderSplit:
        return self


@dataclass
class DataBundle:
    name: str
    classes: tuple[str, ...]
    train: Split | FolderSplit
    val: Split | FolderSplit
    test: Split | FolderSplit
    shape: tuple[int, int, int]  # (C, H, W)
    augment: bool  # random crop + flip on the training split
    mean: tuple[float, ...]  # per-channel normalisation, to undo it for display
    std: tuple[float, ...]

    @property
    def N(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(self.name, self.classes, self.train.to(device), self.val.to(device), self.test.to(device),
                          self.shape, self.augment, self.mean, self.std)

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to [0, 1] pixel values for display."""
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def load_data(name: str, train_fraction: float = 1.0, data_dir: str | None = None, image_size: int = 64,
              download: bool = True) -> DataBundle:
    """Load a dataset on the CPU; call `.to(device)` to move it to the training device."""
    check_choice("dataset", name, DATASETS)
    if name == "digits":
        bundle = _digits()
    elif name == "imagefolder":
        from .folder import load_imagefolder

        return load_imagefolder(_resolve_dir(data_dir), image_size, train_fraction)
    else:
        bundle = _torchvision(name, download)
    return _subsample(bundle, train_fraction)


def _resolve_dir(data_dir: str | None) -> Path:
    path = Path(data_dir or "").expanduser()
    return path if path.is_absolute() else data_root() / path


def _normalise(images: np.ndarray, train_rows: np.ndarray | slice) -> tuple[Tensor, tuple[float, ...],
                                                                          tuple[float, ...]]:
    """Float (n, H, W, C) in [0, 1] -> (n, C, H, W) normalised by the training rows' per-channel statistics."""
    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    train = x[train_rows]
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x, tuple(mean.tolist()), tuple(std.tolist())


def _stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, rest) with `fraction` of every class kept, deterministically."""
    rng = np.random.default_rng(seed)
    kept = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        kept.append(idx[: max(1, round(fraction * len(idx)))])
    kept = np.sort(np.concatenate(kept))
    return kept, np.setdiff1d(np.arange(len(y)), kept)


def _digits() -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = d.target.astype(np.int64)
    test, rest = _stratified_indices(y, DIGITS_SPLIT["test"], DIGITS_SPLIT["seed"])
    val_rel, train_rel = _stratified_indices(y[rest], DIGITS_SPLIT["val"] / (1 - DIGITS_SPLIT["test"]),
                                             DIGITS_SPLIT["seed"] + 1)
    val, train = rest[val_rel], rest[train_rel]
    x, mean, std = _normalise(images, train)
    yt = torch.as_tensor(y)
    splits = [Split(x[i], yt[i]) for i in (train, val, test)]
    return DataBundle("digits", tuple(str(c) for c in range(10)), *splits, shape=(1, 8, 8), augment=False,
                      mean=mean, std=std)


_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", True),
    "cifar100": ("CIFAR100", "cifar-100-python", True),
    "mnist": ("MNIST", "MNIST/raw", False),
}


def _torchvision(name: str, download: bool) -> DataBundle:
    import torchvision

    cls_name, folder, augment = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    root = data_root()
    try:
        with _network_timeout(30.0):  # a network that drops packets fails in seconds instead of hanging
            train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except Exception as e:  # no files and no network, or damaged files
        reason = " ".join(str(e).split())  # torchvision's messages span lines
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise LabkitError(f"could not load {name} from {root / folder} ({type(e).__name__}: {reason}); "
                          f"put the dataset's files there (or set LABKIT_DATA) or run once with network access"
                          ) from None
    images = [np.asarray(ds.data) for ds in (train, test)]
    if images[0].ndim == 3:  # MNIST: (n, 28, 28) uint8 -> (n, 28, 28, 1)
        images = [im[..., None] for im in images]
    n_train = len(images[0])
    x, mean, std = _normalise(np.concatenate(images).astype(np.float32) / 255.0, slice(0, n_train))
    y = torch.as_tensor(np.concatenate([np.asarray(ds.targets) for ds in (train, test)]), dtype=torch.long)
    empty = Split(x[:0], y[:0])  # no validation split: the paper trains on all of train and reports test
    return DataBundle(name, tuple(train.classes), Split(x[:n_train], y[:n_train]), empty,
                      Split(x[n_train:], y[n_train:]), shape=tuple(x.shape[1:]), augment=augment, mean=mean, std=std)


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """torchvision downloads with urllib and no timeout; give its sockets one for the duration of the load."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _subsample(bundle: DataBundle, fraction: float) -> DataBundle:
    if fraction >= 1.0:
        return bundle
    kept, _ = _stratified_indices(bundle.train.y.numpy(), fraction, seed=12345)
    kept = torch.as_tensor(kept)
    train = Split(bundle.train.x[kept], bundle.train.y[kept])
    return DataBundle(bundle.name, bundle.classes, train, bundle.val, bundle.test, bundle.shape, bundle.augment,
                      bundle.mean, bundle.std)


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4, rank: int = 0,
                     world_size: int = 1) -> Tensor:
    """Per-sample random crop from the zero-padded image and a horizontal flip with probability 1/2, as one gather.

    (B, C, H, W) -> (B, C, H, W); the flip is folded into the column index, so nothing is copied twice. Under DDP
    every rank draws the parameters of the whole global batch (world_size*B) and keeps its own rows: the ranks'
    generators stay in step (they must, for the next epoch's shared permutation) yet their crops differ.
    """
    B, C, H, W = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    n = B * world_size
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)[rank::world_size]
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)[rank::world_size]
    flip = (torch.rand(n, 1, generator=generator, device=dev) < 0.5)[rank::world_size]
    rows = top + torch.arange(H, device=dev)  # (B, H)
    cols = left + torch.arange(W, device=dev)  # (B, W)
    cols = torch.where(flip, cols.flip(1), cols)
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    c = torch.arange(C, device=dev).view(1, C, 1, 1)
    return padded[b, c, rows.view(B, 1, H, 1), cols.view(B, 1, 1, W)]


def tensor_batches(split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                   augment: bool = False, drop_last: bool = False, rank: int = 0,
                   world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of a device-resident split; with world_size > 1, rank r gets every world_size-th sample of the
    same permutation (all ranks must share the generator's seed)."""
    n = len(split)
    device = split.y.device
    order = torch.randperm(n, generator=generator, device=device) if shuffle else torch.arange(n, device=device)
    order = order[: n - n % world_size][rank::world_size]  # equal shards, so every rank takes the same steps
    stop = len(order) - len(order) % batch_size if drop_last and len(order) >= batch_size else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = split.x[idx]
        yield (random_crop_flip(x, generator, rank=rank, world_size=world_size) if augment else x), split.y[idx]


def split_tensors(split: Split | FolderSplit, device: torch.device) -> tuple[Tensor, Tensor]:
    """A whole split as (n, C, H, W) images and (n,) labels: a device-resident split as it is, a folder split read
    once in order onto `device`."""
    if isinstance(split, Split):
        return split.x, split.y
    xs, ys = zip(*batches(split, 256, device, shuffle=False), strict=True)
    return torch.cat(xs), torch.cat(ys)


def batches(split: Split | FolderSplit, batch_size: int, device: torch.device, **kwargs) -> Iterator[
        tuple[Tensor, Tensor]]:
    """Batches on `device` from either kind of split."""
    if isinstance(split, Split):
        yield from tensor_batches(split, batch_size, **kwargs)
        return
    from .folder import folder_batches

    yield from folder_batches(split, batch_size, device, **kwargs)
