"""Datasets as tensors on the training device, and batching as tensor ops on that device.

Small datasets (digits, MNIST, CIFAR) are held as (n, C, H, W) float tensors, normalised, on the device;
shuffling, sharding across ranks and CIFAR's augmentation (random crop with 4 pixels of black padding and a
horizontal flip, per sample) are batched ops on that device. No worker processes, no host-to-device copy per step.
`imagefolder` data can be any size, so it stays on disk and goes through a DataLoader
(`labkit.data.imagefolder`). Which datasets exist and how each is loaded is `labkit.data.datasets`' registry.

Normalisation is (x - mean) / std with one mean and one std shared by every channel of a multi-channel image (the
official CIFAR input, ToTensor then Normalize(0.5, 0.5), is such a pair), so permuting the channels of a
normalised image gives exactly the normalised permuted image: a colour-permuted view has the statistics the model
was trained on. Crop padding is black in raw pixels, i.e. the normalised value of 0 (`DataBundle.black`).
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import LabkitError

__all__ = ["Split", "DataBundle", "FolderSplit", "tensor_batches", "random_crop_flip", "batches", "split_tensors",
           "stratified_indices", "stratified_count", "normalise", "check_stats", "subsample", "per_class",
           "hold_out", "read_indices", "folder_batches", "Stats", "HALF_STATS", "FRACTION_SEED", "long_tail_counts",
           "long_tail"]

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one entry per channel
# (x - 0.5) / 0.5 on every channel: the official CIFAR input (ToTensor, then Normalize((0.5,)*3, (0.5,)*3)), and
# imagefolder's. Per-channel statistics such as ImageNet's would not commute with colour permutations.
HALF_STATS: Stats = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
FRACTION_SEED = 12345  # the train_fraction draw: the same images for every method and seed


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
    mean: tuple[float, ...]  # per-channel normalisation (one value repeated when C > 1), to undo it for display
    std: tuple[float, ...]
    showcase: tuple[int, int] | None = None  # the dataset's pair of classes a half turn confuses (digits: 6, 9)

    @property
    def N(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> DataBundle:
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))

    @property
    def train_counts(self) -> list[int]:
        """Training images of each class, indexed by class: [n_0, ..., n_{N-1}]."""
        return torch.bincount(self.train.y.cpu(), minlength=self.N).tolist()

    @property
    def black(self) -> float:
        """The normalised value of a raw 0 (black), what crop padding fills with; one value for every channel."""
        return (0.0 - self.mean[0]) / self.std[0]

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to [0, 1] pixel values for display."""
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)



def normalise(images: np.ndarray, train_rows: np.ndarray | slice, stats: Stats | None = None
              ) -> tuple[Tensor, tuple[float, ...], tuple[float, ...]]:
    """Float (n, H, W, C) in [0, 1] -> (n, C, H, W) normalised, and the (mean, std) used, one entry per channel.

    `stats`: fixed (mean, std), e.g. CIFAR's (0.5, 0.5); None: the training rows' statistics, per channel for
    1-channel images, pooled over the channels otherwise. Either way every channel of a multi-channel image gets
    the same mean and std, so channel permutations commute with normalising (exactly: the same float ops)."""
    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    C = x.shape[1]
    if stats is not None:
        check_stats(stats)
        mean, std = (torch.tensor(s, dtype=torch.float32).expand(C) for s in stats)
    elif C == 1:
        train = x[train_rows]
        mean, std = train.mean(dim=(0, 2, 3)), train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        train = x[train_rows]
        mean, std = train.mean().expand(C), train.std().clamp_min(1e-6).expand(C)
    x = (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    return x, tuple(mean.tolist()), tuple(std.tolist())


def check_stats(stats: Stats) -> None:
    """Refuse per-channel statistics that differ between channels: they would not commute with colour permutations."""
    for name, values in zip(("mean", "std"), stats, strict=True):
        if len(set(values)) != 1:
            raise LabkitError(f"normalisation {name} {tuple(values)} differs between channels; use one value for "
                              f"every channel so that colour permutations commute with normalising")


def _draw_per_class(y: np.ndarray, take: Callable[[int, int], int], seed: int) -> np.ndarray:
    """Sorted indices: for each class c in order, the first take(c, count of c) of a seeded permutation of its
    indices. The one per-class draw behind stratified_indices, stratified_count and per_class."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:take(int(c), int(n))]
                                   for c, n in zip(classes, counts, strict=True)]))


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, rest) with `fraction` of every class kept, deterministically."""
    kept = _draw_per_class(y, lambda c, n: max(1, round(fraction * n)), seed)
    return kept, np.setdiff1d(np.arange(len(y)), kept)


def subsample(bundle: DataBundle, fraction: float) -> DataBundle:
    """The bundle with `fraction` of every class of its training split kept (a fixed draw)."""
    if fraction >= 1.0:
        return bundle
    kept, _ = stratified_indices(bundle.train.y.numpy(), fraction, seed=FRACTION_SEED)
    kept = torch.as_tensor(kept)
    return dataclasses.replace(bundle, train=Split(bundle.train.x[kept], bundle.train.y[kept]))


def stratified_count(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Exactly k indices (sorted), each class drawn in proportion to its size (largest remainders get the rest)."""
    classes, counts = np.unique(y, return_counts=True)
    share = k * counts / len(y)
    take = np.floor(share).astype(int)
    take[np.argsort(-(share - take), kind="stable")[: k - take.sum()]] += 1
    per_class_take = dict(zip(classes.tolist(), take.tolist(), strict=True))
    return _draw_per_class(y, lambda c, n: per_class_take[c], seed)


def read_indices(path: Path, n: int) -> np.ndarray:
    """The distinct indices in [0, n) of an .npy file (e.g. the official splits/cifar10_val_idx.npy), sorted."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LabkitError(f"val_indices {path} is not a readable .npy file of indices ({type(e).__name__})") from None
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or len(rows) == 0:
        raise LabkitError(f"val_indices {path} must hold a non-empty 1-D array of integers, got {rows.dtype} "
                          f"{rows.shape}")
    if rows.min() < 0 or rows.max() >= n or len(np.unique(rows)) != len(rows):
        raise LabkitError(f"val_indices {path} must hold distinct indices in [0, {n}) of the training split")
    if len(rows) >= n:
        raise LabkitError(f"val_indices {path} holds out all {n} training images")
    return np.sort(rows.astype(np.int64))


def hold_out(bundle: DataBundle, rows: np.ndarray) -> DataBundle:
    """The bundle with the training rows `rows` moved into its (empty) validation split."""
    rest = torch.as_tensor(np.setdiff1d(np.arange(len(bundle.train)), rows))
    rows = torch.as_tensor(rows)
    train, val = (Split(bundle.train.x[r], bundle.train.y[r]) for r in (rest, rows))
    return dataclasses.replace(bundle, train=train, val=val)


def per_class(bundle: DataBundle, k: int, seed: int) -> DataBundle:
    """The bundle with k training images of each class (one draw with `seed`); every class must have k."""
    if not isinstance(bundle.train, Split):
        raise LabkitError(f"samples_per_class needs a dataset held in memory; {bundle.name} is read from disk")
    y = bundle.train.y.numpy()
    smallest = int(np.bincount(y, minlength=bundle.N).min())
    if k > smallest:
        raise LabkitError(f"samples_per_class {k} is more than the {smallest} training images of the smallest class")
    kept = torch.as_tensor(_draw_per_class(y, lambda c, n: k, seed))
    return dataclasses.replace(bundle, train=Split(bundle.train.x[kept], bundle.train.y[kept]))


def long_tail_counts(n_max: int, ratio: float, N: int) -> list[int]:
    """Cao et al.'s exponential profile (the LDAM-DRW code's `imbalance_cifar`): class i keeps
    n_i = floor(n_max · R^(−i/(N−1))) images, so class 0 keeps n_max and class N−1 keeps floor(n_max / R).

    Written as the LDAM-DRW code computes it, int(n_max · (1/R)^(i/(N−1))), so the counts match its CIFAR-10-LT and
    CIFAR-100-LT exactly (R=100 on CIFAR-10: 5000, 2997, ..., 50; 12,406 images)."""
    if N < 2:
        raise LabkitError(f"imbalance_ratio needs at least 2 classes, got N={N}")
    counts = [int(n_max * (1.0 / ratio) ** (i / (N - 1.0))) for i in range(N)]
    if counts[-1] < 1:
        raise LabkitError(f"imbalance_ratio {ratio:g} leaves the last class no image: n_max = {n_max} (the smallest "
                          f"class of the training split) over R must be at least 1; use R <= {n_max}")
    return counts


def long_tail(bundle: DataBundle, ratio: float, seed: int) -> DataBundle:
    """The bundle with a long-tailed training split: class i keeps `long_tail_counts(n_max, ratio, N)[i]` of its
    training images (one draw with `seed`), n_max the smallest class count of the training split. The validation
    and test splits stay as they are (balanced)."""
    if not isinstance(bundle.train, Split):
        raise LabkitError(f"imbalance_ratio needs a dataset held in memory; {bundle.name} is read from disk")
    y = bundle.train.y.numpy()
    counts = np.bincount(y, minlength=bundle.N)
    if counts.min() < 1:
        raise LabkitError(f"imbalance_ratio needs every class in the training split; class "
                          f"{bundle.classes[int(counts.argmin())]} has no image")
    profile = long_tail_counts(int(counts.min()), ratio, bundle.N)
    kept = torch.as_tensor(_draw_per_class(y, lambda c, n: profile[c], seed))
    return dataclasses.replace(bundle, train=Split(bundle.train.x[kept], bundle.train.y[kept]))


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4, rank: int = 0,
                     world_size: int = 1, fill: float = 0.0) -> Tensor:
    """Per-sample random crop from the image padded with `fill` (black: `DataBundle.black`) and a horizontal flip
    with probability 1/2, as one gather.

    (B, C, H, W) -> (B, C, H, W); the flip is folded into the column index, so nothing is copied twice. Under DDP
    every rank draws the parameters of the whole global batch (world_size*B) and keeps its own rows: the ranks'
    generators stay in step (they must, for the next epoch's shared permutation) yet their crops differ.
    """
    B, C, H, W = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)  # (B, C, H+2p, W+2p)
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
                   world_size: int = 1, fill: float = 0.0) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of a device-resident split; with world_size > 1, rank r gets every world_size-th sample of the
    same permutation (all ranks must share the generator's seed). `fill`: the crop padding's normalised value."""
    n = len(split)
    device = split.y.device
    order = torch.randperm(n, generator=generator, device=device) if shuffle else torch.arange(n, device=device)
    order = order[: n - n % world_size][rank::world_size]  # equal shards, so every rank takes the same steps
    stop = len(order) - len(order) % batch_size if drop_last and len(order) >= batch_size else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = split.x[idx]
        x = random_crop_flip(x, generator, rank=rank, world_size=world_size, fill=fill) if augment else x
        yield x, split.y[idx]


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
    yield from folder_batches(split, batch_size, device, **kwargs)


def folder_batches(split: FolderSplit, batch_size: int, device: torch.device, *, shuffle: bool,
                   generator: torch.Generator | None = None, augment: bool = False, drop_last: bool = False,
                   rank: int = 0, world_size: int = 1, fill: float = 0.0) -> Iterator[tuple[Tensor, Tensor]]:
    """DataLoader batches moved to `device`; the shuffle order comes from `generator` (on any device). The
    dataset's own transforms augment (padding with raw black before normalising), so `fill` is not needed."""
    n = len(split)
    order = torch.randperm(n, generator=generator, device=generator.device) if shuffle else torch.arange(n)
    order = order.cpu()[: n - n % world_size][rank::world_size].tolist()
    sampler = torch.utils.data.BatchSampler(order, batch_size, drop_last=drop_last and len(order) >= batch_size)
    loader = torch.utils.data.DataLoader(split.dataset, batch_sampler=sampler, num_workers=2,
                                         pin_memory=device.type == "cuda", worker_init_fn=_ignore_sigint)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the workers too; let only the main process handle it (it stops between steps and saves)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
