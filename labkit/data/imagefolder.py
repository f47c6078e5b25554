"""`imagefolder`: any folder of class sub-folders, read from disk through a DataLoader.

The images are split once, per class and deterministically, into 70 % train, 15 % validation and 15 % test,
so every method and seed sees the same test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import LabkitError
from .splits import FRACTION_SEED, HALF_STATS, DataBundle, FolderSplit, Stats, stratified_indices

__all__ = ["load_imagefolder"]


def load_imagefolder(root: Path, image_size: int, train_fraction: float = 1.0,
                     stats: Stats = HALF_STATS) -> DataBundle:
    """Images of `root`'s class sub-folders, resized to image_size², normalised by `stats` (mean, std); the crop's
    padding is black in raw pixels (it pads before normalising)."""
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    _check_root(root)
    base = [T.ToImage(), T.Resize((image_size, image_size), antialias=True), T.ToDtype(torch.float32, scale=True)]
    norm = T.Normalize(*stats)
    train_tf = T.Compose([*base, T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip(), norm])
    test_tf = T.Compose([*base, norm])
    plain = ImageFolder(str(root), transform=test_tf)
    y = np.asarray(plain.targets)
    test_val, train = stratified_indices(y, 0.3, seed=0)
    val_rel, test_rel = stratified_indices(y[test_val], 0.5, seed=1)
    if train_fraction < 1.0:
        train = train[stratified_indices(y[train], train_fraction, seed=FRACTION_SEED)[0]]
    augmented = ImageFolder(str(root), transform=train_tf)
    splits = [FolderSplit(torch.utils.data.Subset(ds, idx.tolist()), torch.as_tensor(y[idx]))
              for ds, idx in ((augmented, train), (plain, test_val[val_rel]), (plain, test_val[test_rel]))]
    return DataBundle("imagefolder", tuple(plain.classes), *splits, shape=(3, image_size, image_size),
                      augment=False, mean=stats[0], std=stats[1])


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise LabkitError(f"imagefolder root {root} does not exist; pass --data-dir with a folder of class "
                          f"sub-folders (one sub-folder of images per class)")
    classes = [p for p in root.iterdir() if p.is_dir() and any(f.is_file() for f in p.iterdir())]
    if len(classes) < 2:
        raise LabkitError(f"imagefolder root {root} has {len(classes)} class sub-folder(s) with images; "
                          f"it needs at least 2 (one sub-folder of images per class)")
