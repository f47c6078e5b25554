"""`imagefolder`: any folder of class sub-folders, read from disk through a DataLoader.

The images are split once, per class and deterministically, into 70 % train, 15 % validation and 15 % test,
so every method and seed sees the same test images.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import DataBundle, FolderSplit, _stratified_indices
from .errors import LabkitError

__all__ = ["load_imagefolder", "folder_batches"]

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, the usual choice for photos


def load_imagefolder(root: Path, image_size: int, train_fraction: float = 1.0) -> DataBundle:
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    _check_root(root)
    base = [T.ToImage(), T.Resize((image_size, image_size), antialias=True), T.ToDtype(torch.float32, scale=True)]
    norm = T.Normalize(_MEAN, _STD)
    train_tf = T.Compose([*base, T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip(), norm])
    test_tf = T.Compose([*base, norm])
    plain = ImageFolder(str(root), transform=test_tf)
    y = np.asarray(plain.targets)
    test_val, train = _stratified_indices(y, 0.3, seed=0)
    val_rel, test_rel = _stratified_indices(y[test_val], 0.5, seed=1)
    if train_fraction < 1.0:
        train = train[_stratified_indices(y[train], train_fraction, seed=12345)[0]]
    augmented = ImageFolder(str(root), transform=train_tf)
    splits = [FolderSplit(torch.utils.data.Subset(ds, idx.tolist()), torch.as_tensor(y[idx]))
              for ds, idx in ((augmented, train), (plain, test_val[val_rel]), (plain, test_val[test_rel]))]
    return DataBundle("imagefolder", tuple(plain.classes), *splits, shape=(3, image_size, image_size),
                      augment=False, mean=_MEAN, std=_STD)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise LabkitError(f"imagefolder root {root} does not exist; pass --data-dir with a folder of class "
                          f"sub-folders (one sub-folder of images per class)")
    classes = [p for p in root.iterdir() if p.is_dir() and any(f.is_file() for f in p.iterdir())]
    if len(classes) < 2:
        raise LabkitError(f"imagefolder root {root} has {len(classes)} class sub-folder(s) with images; "
                          f"it needs at least 2 (one sub-folder of images per class)")


def folder_batches(split: FolderSplit, batch_size: int, device: torch.device, *, shuffle: bool,
                   generator: torch.Generator | None = None, augment: bool = False, drop_last: bool = False,
                   rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """DataLoader batches moved to `device`; the shuffle order comes from `generator` (on any device)."""
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
