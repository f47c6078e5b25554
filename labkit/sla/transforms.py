"""Transformation sets t_1..t_M, t_1 the identity, and the M-fold expansion of a batch.

Every built-in view is a permutation of the positions of a (C, H, W) image: a rotation moves pixels, a colour
permutation moves channels. So the whole expansion is one gather: for each image shape we compute, once, where
every output element of every view comes from, and `expand` is a single `index_select` over the batch.

    x: (B, C, H, W)  ->  expand(x): (B*M, C, H, W), sample-major: rows b*M .. b*M+M-1 are sample b's views,
                                                     row b*M is the identity view.

Register a set of your own in a few lines::

    flips = TransformSet("hflip", ("id", "hflip"), (identity, lambda x: x.flip(-1)))
    labkit.sla.transforms.register(flips)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.errors import LabkitError
from ..core.registry import Registry

__all__ = ["TransformSet", "TRANSFORMS", "available", "get", "register", "identity", "rotation", "channel_order",
           "product"]

View = Callable[[Tensor], Tensor]  # (..., C, H, W) -> (..., C, H, W), a permutation of element positions


def identity(x: Tensor) -> Tensor:
    return x


def rotation(k: int) -> View:
    """Counter-clockwise rotation by k*90 degrees."""
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


def channel_order(order: Sequence[int]) -> View:
    """Reorder the channels, e.g. (2, 1, 0) turns RGB into BGR."""
    order = list(order)
    return lambda x: x[..., order, :, :]


@dataclass(frozen=True)
class TransformSet:
    """M named views; view 0 must be the identity. `needs_square`/`needs_rgb` state what input they accept."""

    name: str
    names: tuple[str, ...]
    views: tuple[View, ...]
    needs_square: bool = False
    needs_rgb: bool = False

    def __post_init__(self) -> None:
        if len(self.names) != len(self.views) or not self.views:
            raise LabkitError(f"transform set {self.name!r} needs one name per view, got {len(self.names)} names "
                              f"for {len(self.views)} views")

    @property
    def M(self) -> int:
        return len(self.views)

    def check_input(self, channels: int, height: int, width: int, dataset: str = "this data") -> None:
        """Refuse, with the reason, an image shape this set cannot transform."""
        if self.needs_rgb and channels != 3:
            raise LabkitError(f"transform {self.name!r} permutes RGB channels but {dataset} has {channels} "
                              f"channel(s); use one of: {', '.join(n for n in available() if not get(n).needs_rgb)}")
        if self.needs_square and height != width:
            raise LabkitError(f"transform {self.name!r} rotates images, which needs square images, but {dataset} "
                              f"images are {height}x{width}; resize them to a square first")

    def index_maps(self, shape: tuple[int, int, int], device: torch.device | str = "cpu") -> Tensor:
        """(M, C*H*W) long: element e of view j's flattened image is element `maps[j, e]` of the input."""
        return _index_maps(self, tuple(shape), str(device))

    def expand(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B*M, C, H, W), sample-major, identity view first."""
        B, C, H, W = x.shape
        idx = self.index_maps((C, H, W), x.device)
        # (B, C*H*W) gathered at (M*C*H*W) positions -> (B, M*C*H*W) -> (B*M, C, H, W)
        out = x.reshape(B, C * H * W).index_select(1, idx.flatten())
        return out.view(B * self.M, C, H, W)

    def apply(self, x: Tensor, j: int) -> Tensor:
        """View j of a batch (B, C, H, W) or a single image (C, H, W)."""
        return self.views[j](x)


@functools.lru_cache(maxsize=64)
def _index_maps(tset: TransformSet, shape: tuple[int, int, int], device: str) -> Tensor:
    n = shape[0] * shape[1] * shape[2]
    base = torch.arange(n).view(shape)
    maps = torch.stack([view(base).reshape(n) for view in tset.views])  # (M, C*H*W)
    if not torch.equal(maps.sort(dim=1).values, base.reshape(1, n).expand(tset.M, n)):
        raise LabkitError(f"transform set {tset.name!r} has a view that is not a permutation of pixel and channel "
                          f"positions on shape {shape}; views must move elements, not change them")
    if not torch.equal(maps[0], base.reshape(n)):
        raise LabkitError(f"transform set {tset.name!r}: view 0 ({tset.names[0]!r}) must be the identity")
    return maps.to(device)


def product(name: str, outer: TransformSet, inner: TransformSet) -> TransformSet:
    """All compositions inner∘outer, outer-major: view j = j_outer * M_inner + j_inner."""
    pairs = list(itertools.product(range(outer.M), range(inner.M)))
    views = tuple(_compose(outer.views[a], inner.views[b]) for a, b in pairs)
    names = tuple(f"{outer.names[a]}+{inner.names[b]}" for a, b in pairs)
    return TransformSet(name, names, views, outer.needs_square or inner.needs_square,
                        outer.needs_rgb or inner.needs_rgb)


def _compose(first: View, second: View) -> View:
    return lambda x: second(first(x))


def _rotations(name: str, quarter_turns: Sequence[int]) -> TransformSet:
    return TransformSet(name, tuple(f"rot{90 * k}" for k in quarter_turns),
                        tuple(rotation(k) for k in quarter_turns), needs_square=True)


def _colour_orders(name: str, orders: Sequence[Sequence[int]]) -> TransformSet:
    names = tuple("".join("RGB"[c] for c in order) for order in orders)
    return TransformSet(name, names, tuple(channel_order(o) for o in orders), needs_rgb=True)


_ROTATION = _rotations("rotation", (0, 1, 2, 3))
_ROTATION2 = _rotations("rotation2", (0, 2))
_COLOR_PERM = _colour_orders("color_perm", list(itertools.permutations(range(3))))  # all 6, RGB first
_COLOR_PERM3 = _colour_orders("color_perm3", [(0, 1, 2), (1, 2, 0), (2, 0, 1)])  # the cyclic subgroup

TRANSFORMS: Registry[TransformSet] = Registry("transform")
available = TRANSFORMS.available
get = TRANSFORMS.lookup  # the registered transformation set called `name`, or the one-line error
register = TRANSFORMS.add  # make a set available by name to the config, the CLI and the notebooks


for _tset in (_ROTATION, _ROTATION2, _COLOR_PERM, _COLOR_PERM3,
              product("rot_color_perm6", _ROTATION2, _COLOR_PERM3),
              product("rot_color_perm12", _ROTATION, _COLOR_PERM3),
              product("rot_color_perm24", _ROTATION, _COLOR_PERM)):
    register(_tset)
