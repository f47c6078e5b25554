"""The official CIFAR ResNet (option A shortcuts)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.methods import METHODS
from labkit.models import build_model

# ---------------------------------------------------------------------------------------------------------------
# Task A: option A CIFAR ResNets


def _params_by_hand(depth: int, K: int) -> int:
    """He et al.'s CIFAR ResNet with option A shortcuts and a K-way linear head, counted layer by layer."""
    n = (depth - 2) // 6  # blocks per stage

    def conv(c_in: int, c_out: int) -> int:  # 3×3, no bias
        return 9 * c_in * c_out

    def bn(c: int) -> int:  # weight and bias; running mean/var are buffers, not parameters
        return 2 * c

    total, c_in = conv(3, 16) + bn(16), 16
    for width in (16, 32, 64):
        for _ in range(n):  # two conv+BN per block; the option-A shortcut has no parameters
            total += conv(c_in, width) + bn(width) + conv(width, width) + bn(width)
            c_in = width
    return total + 64 * K + K  # linear head on the 64-d embedding, with bias


@pytest.mark.parametrize("name,N,expected", [
    ("resnet20", 10, 271_672), ("resnet20", 100, 295_072), ("resnet32", 10, 466_104), ("resnet32", 100, 489_504),
    ("resnet56", 10, 854_968), ("resnet56", 100, 878_368), ("resnet110", 10, 1_729_912),
    ("resnet110", 100, 1_753_312)])
def test_option_a_resnets_have_exactly_the_hand_counted_parameters(name, N, expected):
    depth = int(name.removeprefix("resnet"))
    assert _params_by_hand(depth, N * 4) == expected  # the pinned number is the architecture's
    model = build_model(name, 3, N, 4, METHODS["sla"])
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.heads["joint"].out_features == N * 4


def test_option_a_has_no_1x1_convs_and_option_b_adds_two_projections():
    a = build_model("resnet32", 3, 10, 4, METHODS["sla"])
    b = build_model("resnet32b", 3, 10, 4, METHODS["sla"])
    assert not [m for m in a.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len([m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]) == 2
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1×1 conv + BN at the two stage changes
    assert sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters()) == projections


def test_option_a_shortcut_subsamples_and_appends_zero_channels():
    model = build_model("resnet20", 3, 10, 4, METHODS["baseline"]).eval()
    block = model.backbone.features[4]  # stem, 3 blocks of stage 1, then stage 2's first block: 16 -> 32, stride 2
    x = torch.randn(2, 16, 32, 32)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))  # (2, 16, 16, 16) -> (2, 32, 16, 16), zeros last
    torch.testing.assert_close(block.shortcut(x), expected, rtol=0, atol=0)
    assert torch.equal(expected[:, 16:], torch.zeros(2, 16, 16, 16))
    torch.testing.assert_close(block(x), torch.relu(block.body(x) + expected))
