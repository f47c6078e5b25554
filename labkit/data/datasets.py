"""The datasets labkit knows, each one entry in one registry: its loader, default model, normalisation and showcase
pair.

Normalisation: one mean and one std for every channel (`labkit.data.splits.normalise`), so colour permutations
commute with it. CIFAR uses the official code's (x - 0.5) / 0.5; imagefolder the same; the 1-channel digits and
MNIST use their training split's own mean and std.

| name        | N   | images          | default model | showcase | source                                     |
|-------------|-----|-----------------|---------------|----------|--------------------------------------------|
| digits      | 10  | 8×8 grey        | smallcnn      | 6, 9     | scikit-learn's bundled copy, no download   |
| mnist       | 10  | 28×28 grey      | smallcnn      | 6, 9     | torchvision, downloaded into the data root |
| cifar10     | 10  | 32×32 RGB       | resnet32      | -        | torchvision, downloaded into the data root |
| cifar100    | 100 | 32×32 RGB       | resnet32      | -        | torchvision, downloaded into the data root |
| imagefolder | any | resized, RGB    | resnet18      | -        | a folder of class sub-folders (`data_dir`) |

The showcase is a pair of classes that a half turn maps onto each other (a 6 turned by 180° looks like a 9): the
pair whose confusions the metrics count and the figures and explorers show first. Add a dataset with
`register(Dataset(...))`; the config, the CLI and the notebooks see it at once. The data root is
`labkit.core.paths.data_root()` ($LABKIT_DATA, else data/ in the repository).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import LabkitError
from ..core.paths import data_root
from ..core.registry import Registry
from .imagefolder import load_imagefolder
from .splits import (
    HALF_STATS,
    DataBundle,
    Split,
    Stats,
    check_stats,
    hold_out,
    long_tail,
    normalise,
    per_class,
    read_indices,
    stratified_count,
    stratified_indices,
    subsample,
)

__all__ = ["Dataset", "DATASETS", "available", "get", "register", "load_data", "DIGITS_SPLIT", "VAL_SEED",
           "SAMPLES_SEED", "LONG_TAIL_SEED"]

DIGITS_SPLIT = {"test": 0.2, "val": 0.1, "seed": 0}  # one fixed stratified split for every method and seed
VAL_SEED = 0  # the val_size draw: one validation split for every method and seed
SAMPLES_SEED = 1  # the samples_per_class draw
LONG_TAIL_SEED = 2  # the imbalance_ratio draw


@dataclass(frozen=True)
class Dataset:
    """One dataset: `loader(self, train_fraction, data_dir, image_size)` returns its DataBundle on the CPU.

    default_model: what `model="auto"` means; normalisation: fixed
    (mean, std), one value repeated for every channel, or None for the training split's own statistics (pooled
    over the channels of a multi-channel image); needs_dir: reads `data_dir`; val_from_train: it has no validation
    split of its own, and one can be held out of its training split (`val_size`, `val_indices`); showcase: the
    pair of class indices that a half turn maps onto each other, or None.
    """

    name: str
    loader: Callable[..., DataBundle]
    default_model: str
    normalisation: Stats | None = None
    needs_dir: bool = False
    val_from_train: bool = False
    showcase: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.normalisation is not None:
            check_stats(self.normalisation)

    def load(self, train_fraction: float = 1.0, data_dir: str | None = None, image_size: int = 64) -> DataBundle:
        return dataclasses.replace(self.loader(self, train_fraction, data_dir, image_size), showcase=self.showcase)


def _digits(spec: Dataset, train_fraction: float, data_dir: str | None, image_size: int) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = d.target.astype(np.int64)
    test, rest = stratified_indices(y, DIGITS_SPLIT["test"], DIGITS_SPLIT["seed"])
    val_rel, train_rel = stratified_indices(y[rest], DIGITS_SPLIT["val"] / (1 - DIGITS_SPLIT["test"]),
                                            DIGITS_SPLIT["seed"] + 1)
    val, train = rest[val_rel], rest[train_rel]
    x, mean, std = normalise(images, train)
    yt = torch.as_tensor(y)
    splits = [Split(x[i], yt[i]) for i in (train, val, test)]
    bundle = DataBundle("digits", tuple(str(c) for c in range(10)), *splits, shape=(1, 8, 8), augment=False,
                        mean=mean, std=std)
    return subsample(bundle, train_fraction)


_TORCHVISION = {  # name -> (torchvision class, folder under the data root, augment)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", True),
    "cifar100": ("CIFAR100", "cifar-100-python", True),
    "mnist": ("MNIST", "MNIST/raw", False),
}


def _torchvision(spec: Dataset, train_fraction: float, data_dir: str | None, image_size: int) -> DataBundle:
    import torchvision

    cls_name, folder, augment = _TORCHVISION[spec.name]
    cls = getattr(torchvision.datasets, cls_name)
    root = data_root()
    try:
        with _network_timeout(30.0):  # a network that drops packets fails in seconds instead of hanging
            train, test = (cls(str(root), train=t, download=True) for t in (True, False))
    except Exception as e:  # no files and no network, or damaged files
        reason = " ".join(str(e).split())  # torchvision's messages span lines
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise LabkitError(f"could not load {spec.name} from {root / folder} ({type(e).__name__}: {reason}); "
                          f"put the dataset's files there (or set LABKIT_DATA) or run once with network access"
                          ) from None
    images = [np.asarray(ds.data) for ds in (train, test)]
    if images[0].ndim == 3:  # MNIST: (n, 28, 28) uint8 -> (n, 28, 28, 1)
        images = [im[..., None] for im in images]
    n_train = len(images[0])
    pixels = np.concatenate(images).astype(np.float32) / 255.0  # (n, H, W, C) in [0, 1]
    x, mean, std = normalise(pixels, slice(0, n_train), spec.normalisation)
    y = torch.as_tensor(np.concatenate([np.asarray(ds.targets) for ds in (train, test)]), dtype=torch.long)
    empty = Split(x[:0], y[:0])  # no validation split: the paper trains on all of train and reports test
    bundle = DataBundle(spec.name, tuple(train.classes), Split(x[:n_train], y[:n_train]), empty,
                        Split(x[n_train:], y[n_train:]), shape=tuple(x.shape[1:]), augment=augment, mean=mean,
                        std=std)
    return subsample(bundle, train_fraction)


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """torchvision downloads with urllib and no timeout; give its sockets one for the duration of the load."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _imagefolder(spec: Dataset, train_fraction: float, data_dir: str | None, image_size: int) -> DataBundle:
    path = Path(data_dir or "").expanduser()
    root = path if path.is_absolute() else data_root() / path
    return load_imagefolder(root, image_size, train_fraction, spec.normalisation or HALF_STATS)


DATASETS: Registry[Dataset] = Registry("dataset", (
    Dataset("digits", _digits, default_model="smallcnn", showcase=(6, 9)),
    Dataset("mnist", _torchvision, default_model="smallcnn", val_from_train=True, showcase=(6, 9)),
    Dataset("cifar10", _torchvision, default_model="resnet32", normalisation=HALF_STATS, val_from_train=True),
    Dataset("cifar100", _torchvision, default_model="resnet32", normalisation=HALF_STATS, val_from_train=True),
    Dataset("imagefolder", _imagefolder, default_model="resnet18", normalisation=HALF_STATS, needs_dir=True),
))


available = DATASETS.available
get = DATASETS.lookup  # the registered dataset called `name`, or the one-line error listing the allowed ones
register = DATASETS.add  # make a dataset a choice of the config, the CLI and the notebooks


def load_data(name: str, train_fraction: float = 1.0, data_dir: str | None = None, image_size: int = 64,
              *, val_size: int = 0, val_indices: str | None = None,
              samples_per_class: int | None = None, imbalance_ratio: float | None = None) -> DataBundle:
    """Load a dataset on the CPU; call `.to(device)` to move it to the training device.

    In this order, as the official code: a validation split held out of the training split (`val_size` images, a
    stratified draw with seed VAL_SEED, or the training-split indices in the .npy file `val_indices`), then
    `train_fraction` of every class of what is left, then `samples_per_class` images of each class (seed
    SAMPLES_SEED) or a long tail of ratio `imbalance_ratio` (seed LONG_TAIL_SEED; `splits.long_tail`), drawn from
    the training split alone. The draws do not depend on the run's seed, so every method and seed sees the same
    images; the validation and test splits are never thinned."""
    spec = get(name)
    holding_out = bool(val_size or val_indices)
    bundle = spec.load(1.0 if holding_out else train_fraction, data_dir, image_size)
    if holding_out:
        rows = _val_rows(bundle, val_size, val_indices)
        bundle = subsample(hold_out(bundle, rows), train_fraction)
    if samples_per_class is not None and imbalance_ratio is not None:
        raise LabkitError("pass either samples_per_class (--samples-per-class, k images of every class) or "
                          "imbalance_ratio (--imbalance-ratio, a long tail), not both")
    if samples_per_class is not None:
        bundle = per_class(bundle, samples_per_class, SAMPLES_SEED)
    if imbalance_ratio is not None:
        bundle = long_tail(bundle, imbalance_ratio, LONG_TAIL_SEED)
    return bundle


def _val_rows(bundle: DataBundle, val_size: int, val_indices: str | None) -> np.ndarray:
    n = len(bundle.train)
    if val_indices is None:
        if val_size >= n:
            raise LabkitError(f"val_size {val_size} leaves no training images: {bundle.name} has {n}")
        return stratified_count(bundle.train.y.numpy(), val_size, VAL_SEED)
    path = Path(val_indices).expanduser()
    path = path if path.is_absolute() else data_root() / path
    return read_indices(path, n)
