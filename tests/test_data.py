"""Data: the fixed digits split, the data-root resolver, and the CIFAR/MNIST/imagefolder loaders on small files
in the real on-disk formats, written by the tests themselves (no network)."""

import struct

import numpy as np
import pytest
import torch

from labkit.core import paths
from labkit.data import splits
from labkit.data.datasets import load_data
from tests.support import write_cifar10


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = load_data("digits"), load_data("digits")
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sum(sizes) == 1797 and 340 <= sizes[2] <= 380
    rows = {tuple(r.tolist()) for split in (a.train, a.val, a.test) for r in split.x.flatten(1)}
    assert len(rows) >= 1797 - 20, "splits overlap"  # a few digits images are exact duplicates in the dataset
    for split in (a.train, a.test):  # every class present in proportion
        counts = torch.bincount(split.y, minlength=10).float()
        assert counts.min() / counts.max() > 0.85
    assert a.shape == (1, 8, 8) and a.N == 10 and not a.augment
    assert abs(float(a.train.x.mean())) < 0.1


def test_train_fraction_subsamples_train_only():
    full, part = load_data("digits"), load_data("digits", train_fraction=0.3)
    assert abs(len(part.train) - 0.3 * len(full.train)) <= 10
    assert torch.equal(part.test.x, full.test.x)


def test_data_root_follows_env_not_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.data_root() == paths.REPO_ROOT / "data"
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "elsewhere"))
    assert paths.data_root() == tmp_path / "elsewhere"


def test_cifar10_loader_reads_the_real_format(tmp_path, monkeypatch):
    import torchvision

    write_cifar10(tmp_path)
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    # The files are ours, so their md5 differs from the published archive's: skip only that check.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    bundle = load_data("cifar10")
    assert bundle.shape == (3, 32, 32) and bundle.N == 10 and bundle.augment
    assert len(bundle.train) == 100 and len(bundle.test) == 20 and len(bundle.val) == 0
    assert bundle.classes[3] == "class3"
    # normalised as the official code does, (x - 0.5) / 0.5 on every channel (tests/test_fidelity.py checks it exactly)
    assert (bundle.mean, bundle.std) == ((0.5,) * 3, (0.5,) * 3)
    assert bundle.train.x.min() >= -1.0 and bundle.train.x.max() <= 1.0


def _idx(path, array, magic_type=0x08):
    dims = array.shape
    header = struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_loader_reads_idx_files(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    bundle = load_data("mnist")
    assert bundle.shape == (1, 28, 28) and len(bundle.train) == 30 and len(bundle.test) == 12
    assert not bundle.augment


def test_imagefolder_loader_splits_and_batches(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    bundle = load_data("imagefolder", data_dir=str(tmp_path), image_size=16)
    assert bundle.classes == ("cat", "dog") and bundle.shape == (3, 16, 16)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 20
    g = torch.Generator().manual_seed(0)
    x, y = next(splits.batches(bundle.train, 4, torch.device("cpu"), shuffle=True, generator=g))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.long


def test_tensor_batches_shard_one_permutation_across_ranks():
    split = splits.Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    seen = []
    for rank in range(2):
        g = torch.Generator().manual_seed(0)
        seen += [y for _, ys in splits.tensor_batches(split, 2, shuffle=True, generator=g, rank=rank, world_size=2)
                 for y in ys.tolist()]
    assert sorted(seen) == list(range(10))


@pytest.mark.parametrize("pad", [2, 4])
def test_random_crop_flip_is_a_window_of_the_padded_image(pad):
    x = torch.randn(64, 3, 8, 8)
    out = splits.random_crop_flip(x, torch.Generator().manual_seed(1), pad=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for b in range(8):
        windows = [padded[b, :, t:t + 8, s:s + 8] for t in range(2 * pad + 1) for s in range(2 * pad + 1)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(-1)) for w in windows)


def test_ranks_draw_different_crops_but_stay_in_step():
    """Under DDP each rank keeps its own rows of one global draw: different crops, identical generator state."""
    x = torch.randn(16, 3, 8, 8)
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    outs = [splits.random_crop_flip(x, g, rank=r, world_size=2) for r, g in enumerate(gens)]
    assert not torch.equal(outs[0], outs[1])
    assert torch.equal(gens[0].get_state(), gens[1].get_state())
    single = splits.random_crop_flip(x, torch.Generator().manual_seed(0))
    assert not torch.equal(single, outs[1])
