"""Backbones f(x; θ) and the heads every method puts on them.

`LabkitNet(x)` returns a dict of logits, one entry per head the method trains:
`class` (N-way u), `transform` (M-way v, MT only) and `joint` (N·M-way w, column i*M + j). With a cosine scale
s (the LDAM loss, `labkit.sla.longtail`) the class and joint heads are `CosineLinear`: s times the cosine between
the embedding and each label's weight vector.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.errors import LabkitError, check_choice

__all__ = ["LabkitNet", "SmallCNN", "CifarResNet", "CIFAR_DEPTHS", "MODELS", "build_model", "build_backbone",
           "CosineLinear"]


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv layers for small grey images (digits 8×8, MNIST 28×28); 128-d embedding.

    It pools to 2×2 and flattens instead of global pooling, so the embedding keeps where strokes are: the
    network can tell a 6 from a 9 rotated by 180°, which global average pooling would partly blur.
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(in_channels, width), _conv_bn(width, 2 * width), nn.MaxPool2d(2),
            _conv_bn(2 * width, 4 * width), nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 4w, 2, 2) -> (B, 16w)
            nn.Linear(16 * width, 128), nn.ReLU(inplace=True))
        self.out_features = 128

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class _ShortcutA(nn.Module):
    """He et al.'s option A shortcut, parameter-free: keep every `stride`-th pixel, then append c_out - c_in zero
    channels after the input's. Appending (not padding (c_out - c_in)/2 on both sides, as some CIFAR ResNets do) is
    what the official SLA code does (`torch.cat((x, x.mul(0)), 1)` after a stride-2 1×1 average pool), so a model
    it trained gives the same logits here (`labkit.official`)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, c_in, H, W) -> (B, c_in, ⌈H/s⌉, ⌈W/s⌉), as the 3×3 conv
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # -> (B, c_out, ⌈H/s⌉, ⌈W/s⌉), zeros in the last channels


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str = "A") -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c_in, c_out, stride), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # the shape changes: option A subsamples and pads, option B projects
            self.shortcut = _ShortcutA(c_in, c_out, stride) if shortcut == "A" else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110): widths 16-32-64, 64-d embedding.

    `shortcut="A"` (the paper's CIFAR choice and the official SLA code's): where the shape changes, the identity is
    subsampled and zero-padded, no weights. `"B"`: a 1×1 conv + BN projection there (the `resnet*b` models).
    """

    def __init__(self, depth: int = 32, in_channels: int = 3, shortcut: str = "A") -> None:
        super().__init__()
        check_choice("shortcut", shortcut, ("A", "B"))
        if depth < 8 or (depth - 2) % 6:
            raise LabkitError(f"CifarResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        layers: list[nn.Module] = [_conv_bn(in_channels, 16)]
        c_in = 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(_BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1, shortcut))
                c_in = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def _resnet18(in_channels: int) -> nn.Module:
    import torchvision  # only this model needs it, and importing it costs about a second

    net = torchvision.models.resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    net.out_features = 512
    return net


CIFAR_DEPTHS = (20, 32, 44, 56, 110)
MODELS: dict[str, Callable[[int], nn.Module]] = {
    "smallcnn": lambda c: SmallCNN(c),
    **{f"resnet{d}": partial(CifarResNet, d, shortcut="A") for d in CIFAR_DEPTHS},  # option A, as the paper
    **{f"resnet{d}b": partial(CifarResNet, d, shortcut="B") for d in CIFAR_DEPTHS},  # 1×1 projection shortcuts
    "resnet18": _resnet18,
}


def build_backbone(name: str, in_channels: int) -> nn.Module:
    check_choice("model", name, MODELS)
    return MODELS[name](in_channels)


class CosineLinear(nn.Linear):
    """s · cos(z, w_k) for every output k: the embedding and each weight row normalised to length 1, no bias (the
    LDAM-DRW code's `NormedLinear`, scaled by s so that the logits are what its loss sees). (B, d) -> (B, out)."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(z, dim=1), F.normalize(self.weight, dim=1))


class LabkitNet(nn.Module):
    """A shared backbone with the heads of one method; with `cosine_scale`, cosine class and joint heads."""

    def __init__(self, backbone: nn.Module, N: int, M: int, heads: tuple[str, ...],
                 cosine_scale: float | None = None) -> None:
        super().__init__()
        d = backbone.out_features
        sizes = {"class": N, "transform": M, "joint": N * M}
        self.backbone = backbone
        self.heads = nn.ModuleDict({h: _head(d, sizes[h], cosine_scale if h != "transform" else None)
                                    for h in heads})
        self.N, self.M = N, M

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.backbone(x)
        return {name: head(z) for name, head in self.heads.items()}


def _head(d: int, size: int, cosine_scale: float | None) -> nn.Module:
    return nn.Linear(d, size) if cosine_scale is None else CosineLinear(d, size, cosine_scale)


def build_model(name: str, in_channels: int, N: int, M: int, heads: tuple[str, ...],
                cosine_scale: float | None = None) -> LabkitNet:
    """Backbone `name` with the `heads` a method trains (`Method.heads`); with `cosine_scale`, the heads trained on
    class labels (class, joint) are `CosineLinear` with that scale."""
    return LabkitNet(build_backbone(name, in_channels), N, M, heads, cosine_scale)
