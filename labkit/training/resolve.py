"""A config with every name in it resolved once: method, transformation set, device, data, model and loss.

    run = resolve(TrainConfig(method="sla"))      # ResolvedRun: what the learner, evaluation and the explorer take
    run.loss(model(run.tset.expand(x)), y, run.tset.M)

Below this point nothing looks a name up again: modules take `Method` and `TransformSet` objects, devices and
data bundles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.device import resolve_device
from ..core.errors import LabkitError
from ..data import datasets
from ..data.splits import DataBundle
from ..sla import methods, transforms
from ..sla.methods import LossFn, Method
from ..sla.models import build_model
from ..sla.transforms import TransformSet
from .config import TrainConfig

__all__ = ["ResolvedRun", "resolve", "load_config_data"]


@dataclass
class ResolvedRun:
    """What everything below `resolve` takes.

    model: seeded, on `device`, channels_last (the plain module; training may wrap it in DDP or torch.compile).
    data: on `device` (an imagefolder's images stay on disk). loss: the method's loss with the config's options
    bound, `loss(out, y, M)`.
    """

    config: TrainConfig
    method: Method
    tset: TransformSet
    device: torch.device
    data: DataBundle
    model: nn.Module
    loss: LossFn


def resolve(config: TrainConfig, device: torch.device | None = None, data: DataBundle | None = None) -> ResolvedRun:
    """The one place names become objects: method, transformation set, device, data, a seeded model, the loss.

    `device` defaults to `config.device` resolved; `data` (on the CPU or already on the device) is loaded when
    not given. The transformation set is checked against the data's image shape."""
    device = device or resolve_device(config.device)
    data = data or load_config_data(config)
    method, tset = methods.get(config.method), transforms.get(config.transform)
    tset.check_input(*data.shape, dataset=config.dataset)
    if config.val_every and len(data.val) == 0:
        raise LabkitError(f"val_every selects a step by validation accuracy, but {config.dataset} has no validation "
                          f"split here; hold one out with val_size (--val-size) or val_indices (--val-indices)")
    torch.manual_seed(config.seed)
    model = build_model(config.resolved_model, data.shape[0], data.N, tset.M, method.heads)
    # channels_last on every device: cuDNN's bf16 kernels and oneDNN's CPU kernels both prefer NHWC (a CPU step
    # takes about a quarter less time; see docs/benchmarks.md)
    model = model.to(device, memory_format=torch.channels_last)
    return ResolvedRun(config, method, tset, device, data.to(device), model, method.bind(config.to_dict()))


def load_config_data(config: TrainConfig) -> DataBundle:
    """The data a config trains on, on the CPU: its dataset, validation split, training fraction and per-class
    sample (see `datasets.load_data`)."""
    return datasets.load_data(config.dataset, config.train_fraction, config.data_dir, config.image_size,
                              val_size=config.val_size, val_indices=config.val_indices,
                              samples_per_class=config.samples_per_class)
