"""`imagefolder`: any folder of class sub-folders, read from disk through a DataLoader.

The images are split once, per class and deterministically, into 70 % train, 15 % validation and 15 % test,
so every method and seed sees the same test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import DataBundle, FolderSplit, stratified_indices
from .errors import LabkitError

__all__ = ["load_imagefolder", "IMAGENET_STATS", "HALF_STATS"]

HALF_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # (mean, std): one value for every channel (see labkit.data)
# The usual per-channel choice for photos; not labkit's default, because per-channel statistics do not commute with
# colour permutations (a permuted view would be normalised with another channel's mean and std)
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_imagefolder(root: Path, image_size: int, train_fraction: float = 1.0,
                     stats: tuple[tuple[float, ...], tuple[float, ...]] = HALF_STATS) -> DataBundle:
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
        train = train[stratified_indices(y[train], train_fraction, seed=12345)[0]]
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
