"""A config with every name in it resolved once: method, transformation set, device, data, model and loss.

    run = resolve(TrainConfig(method="sla"))      # ResolvedRun: what the learner, evaluation and the explorer take
    run.loss(model(run.tset.expand(x)), y, run.tset.M)
    run.loss_at(step, total_steps)                # the loss of that step (deferred re-weighting switches at one)

Below this point nothing looks a name up again: modules take `Method` and `TransformSet` objects, devices and
data bundles.

The long-tail settings are bound here too, from the training split's class counts (known once the data is
loaded): `class_balanced` and `ldam` become a `labkit.sla.longtail.ClassCrossEntropy` that the method's loss uses
for every cross-entropy against class or joint labels, and `ldam` also makes the model's class and joint heads
cosine heads. With `drw_at` the run has two bound losses, without and with the class-balanced weights; the step
decides which (`loss_at`), so a resumed run switches at the same step as an uninterrupted one.
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
from ..sla.longtail import ClassCrossEntropy, class_balanced_weights, ldam_margins
from ..sla.methods import LossFn, Method
from ..sla.models import build_model
from ..sla.transforms import TransformSet
from .config import TrainConfig

__all__ = ["ResolvedRun", "resolve", "load_config_data", "criteria", "drw_step"]


@dataclass
class ResolvedRun:
    """What everything below `resolve` takes.

    model: seeded, on `device`, channels_last (the plain module; training may wrap it in DDP or torch.compile).
    data: on `device` (an imagefolder's images stay on disk). loss: the method's loss with the config's options
    and long-tail criterion bound, `loss(out, y, M)`, from the first step; deferred_loss: with `drw_at`, the loss
    with the class-balanced weights on, from `drw_step(config, total_steps)` on.
    """

    config: TrainConfig
    method: Method
    tset: TransformSet
    device: torch.device
    data: DataBundle
    model: nn.Module
    loss: LossFn
    deferred_loss: LossFn | None = None

    def loss_at(self, step: int, total_steps: int) -> LossFn:
        """The loss of optimiser step `step` (0-based: steps already taken) of a run of `total_steps` steps."""
        switch = drw_step(self.config, total_steps)
        if self.deferred_loss is not None and switch is not None and step >= switch:
            return self.deferred_loss
        return self.loss


def drw_step(config: TrainConfig, total_steps: int) -> int | None:
    """The first step with the deferred class-balanced weights: round(drw_at · total_steps), as the milestones are
    placed; None without drw_at."""
    return None if config.drw_at is None else round(config.drw_at * total_steps)


def criteria(config: TrainConfig, counts: list[int]) -> tuple[ClassCrossEntropy | None, ClassCrossEntropy | None]:
    """The cross-entropy against class labels from the first step, and after the DRW switch (None: no switch);
    None for the plain cross-entropy. `counts`: training images per class."""
    weights = class_balanced_weights(counts, config.cb_beta) if config.class_balanced else None
    margins = ldam_margins(counts, config.ldam_margin) if config.ldam else None
    scale = config.ldam_scale if config.ldam else 1.0

    def made(w: torch.Tensor | None) -> ClassCrossEntropy | None:
        return None if w is None and margins is None else ClassCrossEntropy(w, margins, scale)

    if config.drw_at is None:
        return made(weights), None
    return made(None), made(weights)


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
    early, late = (c if c is None else c.to(device) for c in criteria(config, data.train_counts))
    torch.manual_seed(config.seed)
    model = build_model(config.resolved_model, data.shape[0], data.N, tset.M, method.heads,
                        cosine_scale=config.ldam_scale if config.ldam else None)
    # channels_last on every device: cuDNN's bf16 kernels and oneDNN's CPU kernels both prefer NHWC (a CPU step
    # takes about a quarter less time; see docs/benchmarks.md)
    model = model.to(device, memory_format=torch.channels_last)
    values = config.to_dict()
    deferred = method.bind(values, late) if late is not None else None
    return ResolvedRun(config, method, tset, device, data.to(device), model, method.bind(values, early), deferred)


def load_config_data(config: TrainConfig) -> DataBundle:
    """The data a config trains on, on the CPU: its dataset, validation split, training fraction and per-class
    sample or long tail (see `datasets.load_data`)."""
    return datasets.load_data(config.dataset, config.train_fraction, config.data_dir, config.image_size,
                              val_size=config.val_size, val_indices=config.val_indices,
                              samples_per_class=config.samples_per_class, imbalance_ratio=config.imbalance_ratio)
