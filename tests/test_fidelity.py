"""Issue 11, faithful to the paper at full scale: the official optimiser, the 45k/5k protocol with a selected
checkpoint, normalisation that commutes with colour permutations, the paper recipe in one flag, and importing the
official checkpoints through the CLI. Each fact about the official code (github.com/hankook/SLA) is named where
it is tested."""

from __future__ import annotations

import pytest

from labkit.config import TrainConfig
from labkit.experiment import resolve
from labkit.train import Learner


# ------------------------------------------------------------------------------------------------- 2. optimiser
@pytest.mark.parametrize("nesterov", [True, False])
def test_nesterov_is_a_config_field_and_reaches_the_optimiser(nesterov):
    config = TrainConfig(nesterov=nesterov, device="cpu", train_fraction=0.1)
    run = resolve(config)
    group = Learner(run.model, run).optimizer.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (nesterov, 0.9, 5e-4)
    assert TrainConfig().nesterov  # labkit's default, so the digits results do not move
