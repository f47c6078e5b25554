"""The frozen, validated configuration of one training run.

Every field is checked on construction; a bad value raises a one-line `LabkitError` naming the field and what is
allowed. The resolved config (with `model="auto"` replaced) is saved beside every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .errors import LabkitError, check_choice

__all__ = ["TrainConfig", "DEFAULT_MODELS", "resolve_device", "DATASETS"]

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "imagefolder")
DEFAULT_MODELS = {"digits": "smallcnn", "mnist": "smallcnn", "cifar10": "resnet32", "cifar100": "resnet32",
                  "imagefolder": "resnet18"}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    method: str = "sla"  # baseline, da, mt, sla, sla+sd
    transform: str = "rotation"  # a name in labkit.transforms.available()
    model: str = "auto"  # auto: smallcnn for digits/mnist, resnet32 for CIFAR, resnet18 for imagefolder
    epochs: int = 30  # passes over the training split
    batch_size: int = 64  # original images per step and per rank (torchrun: global = ranks × this); ×M views
    lr: float = 0.1  # peak SGD learning rate, ×0.1 at each milestone
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 on all parameters
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of all steps where lr drops ×0.1 (the paper's)
    train_fraction: float = 1.0  # share of the training split used, in (0, 1]
    seed: int = 0  # weight init, shuffling and augmentation
    device: str = "auto"  # auto picks CUDA when present
    T: float = 1.0  # self-distillation temperature (sla+sd)
    beta: float = 1.0  # weight of the distilled head's own cross-entropy (sla+sd)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs); None = all epochs
    compile: bool = False  # torch.compile the model (CUDA; compile time is reported apart)
    data_dir: str | None = None  # imagefolder: folder of class sub-folders (absolute or under the data root)
    image_size: int = 64  # imagefolder: images are resized to image_size × image_size pixels
    sync_bn: bool = False  # distributed runs: synchronise batch-norm statistics across ranks

    def __post_init__(self) -> None:
        from . import transforms
        from .methods import METHODS
        from .models import MODELS

        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        check_choice("transform", self.transform, transforms.available())
        check_choice("model", self.model, ["auto", *MODELS])
        check_choice("device", self.device, DEVICES)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("image_size", self.image_size)
        _integer("seed", self.seed)
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        _number("lr", self.lr, low=0.0, low_open=True)
        _number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("train_fraction", self.train_fraction, low=0.0, low_open=True, high=1.0)
        _number("T", self.T, low=0.0, low_open=True)
        _number("beta", self.beta, low=0.0)
        for m in self.milestones:
            _number("milestones", m, low=0.0, low_open=True, high=1.0)
        if self.dataset == "imagefolder" and not self.data_dir:
            raise LabkitError("dataset 'imagefolder' needs data_dir (--data-dir): a folder of class sub-folders")

    @property
    def resolved_model(self) -> str:
        return DEFAULT_MODELS[self.dataset] if self.model == "auto" else self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with `model` resolved."""
        d = dataclasses.asdict(self)
        d["model"] = self.resolved_model
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LabkitError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LabkitError(f"{name} must be an integer, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    _integer(name, value)
    if value < 1:
        raise LabkitError(f"{name} must be a positive integer (>= 1), got {value!r}")


def _number(name: str, value: object, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabkitError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "(" if low_open or low is None else "["
        hi = ")" if high_open or high is None else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise LabkitError(f"{name} must be in {interval}, got {value!r}")


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit 'cuda' without a GPU is refused."""
    check_choice("device", name, DEVICES)
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise LabkitError("device 'cuda' requested but no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu")
