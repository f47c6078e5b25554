"""The frozen, validated configuration of one training run: labkit's one schema.

Each field carries its help text and its check in its metadata (`option(...)`); the `train` command's flags
(`labkit.cli.flags`), `TrainConfig.to_argv()`, the run's config.json, the checks `eval` and `--resume` make against a
checkpoint, and the notebooks' helpers are all generated from the fields, so a new field is written here once.
A bad value raises a one-line `LabkitError` naming the field and what is allowed. The resolved config (with
`model="auto"` replaced) is saved beside every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core.device import DEVICES, PRECISIONS
from ..core.errors import LabkitError, check_choice
from ..data import datasets
from ..sla import methods, models, transforms

__all__ = ["TrainConfig", "option", "field_types", "config_fields", "check_field", "RECIPES", "RECIPE_NOTES",
           "recipe", "LONG_TAIL_LOSSES", "long_tail_loss", "flag_name", "run_length"]

Check = Callable[[str, Any], None]  # (field name, value) -> None, or raise a LabkitError


def option(default: Any, help: str, check: Check | None = None,
           choices: Callable[[], Iterable[str]] | None = None) -> Any:
    """A config field: its default, its help (units, meaning), its check and, for names, the allowed values
    (a function, so names registered later count)."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "choices": choices})


# ---------------------------------------------------------------------------------------------------- checks
def _integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LabkitError(f"{name} must be an integer, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    _integer(name, value)
    if value < 1:
        raise LabkitError(f"{name} must be a positive integer (>= 1), got {value!r}")


def _non_negative_int(name: str, value: object) -> None:
    _integer(name, value)
    if value < 0:
        raise LabkitError(f"{name} must be a non-negative integer (>= 0), got {value!r}")


def _optional(check: Check) -> Check:
    return lambda name, value: None if value is None else check(name, value)


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise LabkitError(f"{name} must be true or false, got {value!r}")


def _text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise LabkitError(f"{name} must be a string, got {value!r}")


def _number(low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> Check:
    """A check for a finite number in the interval [low, high], either end open or absent."""
    def check(name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LabkitError(f"{name} must be a finite number, got {value!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "(" if low_open or low is None else "["
            hi = ")" if high_open or high is None else "]"
            interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
            raise LabkitError(f"{name} must be in {interval}, got {value!r}")
    return check


def _each(check: Check) -> Check:
    def each(name: str, values: object) -> None:
        if not isinstance(values, tuple):
            raise LabkitError(f"{name} must be a list of numbers, got {values!r}")
        for v in values:
            check(name, v)
    return each


def _joint_methods() -> list[str]:
    return [name for name in methods.available() if "joint" in methods.get(name).heads]


def _model_names() -> list[str]:
    return ["auto", *models.MODELS]


# ---------------------------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class TrainConfig:
    dataset: str = option("digits", "the data (labkit.data.datasets)", choices=datasets.available)
    method: str = option("sla", "what is trained: its heads, loss and inference modes (labkit.sla.methods)",
                         choices=methods.available)
    transform: str = option("rotation", "the M transformations, identity first (labkit.sla.transforms)",
                            choices=transforms.available)
    model: str = option("auto", "the backbone; auto: the dataset's default (smallcnn for digits/mnist, resnet32 "
                        "for CIFAR, resnet18 for imagefolder)", choices=_model_names)
    epochs: int = option(30, "passes over the training split (unless steps is set)", _positive_int)
    steps: int | None = option(None, "optimiser steps to train, however many epochs that takes (the paper: 80000); "
                               "none: epochs × steps per epoch", _optional(_positive_int))
    batch_size: int = option(64, "original images per step and per process (torchrun: global batch = processes × "
                             "this); a method that expands sees ×M views", _positive_int)
    lr: float = option(0.1, "peak SGD learning rate, ×lr_decay (0.1) at each milestone", _number(0.0, low_open=True))
    momentum: float = option(0.9, "SGD momentum", _number(0.0, 1.0, high_open=True))
    nesterov: bool = option(True, "Nesterov momentum (labkit's default; the paper's plain momentum: --no-nesterov)",
                            _flag)
    weight_decay: float = option(5e-4, "L2 penalty on all parameters", _number(0.0))
    milestones: tuple[float, ...] = option((0.5, 0.75), "fractions of all steps where the learning rate drops "
                                           "×0.1 (the paper's)", _each(_number(0.0, 1.0, low_open=True)))
    train_fraction: float = option(1.0, "share of the training split used, in (0, 1]",
                                   _number(0.0, 1.0, low_open=True))
    samples_per_class: int | None = option(None, "train on this many images of each class, one fixed draw from the "
                                           "training split (the official --num-samples-per-class); none: all",
                                           _optional(_positive_int))
    # long tails and scarce labels: the draw, its losses, its metrics; the LDAM-DRW schedule; bookkeeping
    imbalance_ratio: float | None = option(None, "a long-tailed training split: class i keeps floor(n_max · "
                                           "R^(-i/(N-1))) images, n_max the smallest class count of the split (Cao "
                                           "et al.'s exponential profile, one fixed draw; the test split stays "
                                           "balanced); R = n_max / n_min >= 1; none: every image",
                                           _optional(_number(1.0)))
    class_balanced: bool = option(False, "weight each class's cross-entropy by (1 - cb_beta) / (1 - cb_beta^n_i), "
                                  "n_i its training images (Cui et al.'s effective number), normalised to sum N; a "
                                  "joint label (i, j) takes class i's weight", _flag)
    cb_beta: float = option(0.9999, "the effective number's beta: 0 weighs every class alike, towards 1 by inverse "
                            "class size", _number(0.0, 1.0, high_open=True))
    drw_at: float | None = option(None, "deferred re-weighting: the class_balanced weights switch on at this "
                                  "fraction of all steps (LDAM-DRW: 0.8, epoch 160 of 200); none: from the first "
                                  "step", _optional(_number(0.0, 1.0, low_open=True, high_open=True)))
    ldam: bool = option(False, "LDAM (Cao et al.): cosine class and joint heads scaled by ldam_scale, and the true "
                        "label's logit lowered by ldam_scale · C / n_i^(1/4), C so that the largest margin is "
                        "ldam_margin; a joint label (i, j) takes class i's margin", _flag)
    ldam_margin: float = option(0.5, "LDAM: the largest margin (the rarest class's), in cosine units",
                                _number(0.0, low_open=True))
    ldam_scale: float = option(30.0, "LDAM: the scale s of the cosine logits", _number(0.0, low_open=True))
    many_shot: int = option(100, "metrics: a class with more than this many training images is many-shot (Liu et "
                            "al.'s 100)", _non_negative_int)
    few_shot: int = option(20, "metrics: a class with fewer than this many training images is few-shot (Liu et "
                           "al.'s 20); the others are medium-shot", _non_negative_int)
    warmup: float = option(0.0, "fraction of all steps over which the learning rate rises linearly to lr "
                           "(LDAM-DRW: 5 of 200 epochs, 0.025); 0: none", _number(0.0, 1.0, high_open=True))
    lr_decay: float = option(0.1, "the learning rate's factor at each milestone (LDAM-DRW: 0.01)",
                             _number(0.0, 1.0, low_open=True))
    log_every: int | None = option(None, "bookkeeping (validation, history.json, checkpoint.pt) at the end of the "
                                   "first epoch at least this many steps after the last, and at the run's end; 1: "
                                   "every epoch; none: as often as keeps it near 5 % of the training time "
                                   "(measured as the run goes, so short epochs are not validated one by one)",
                                   _optional(_positive_int))
    val_size: int = option(0, "images held out of the training split for validation, one fixed stratified draw "
                           "(cifar10, cifar100, mnist; the paper: 5000); 0: none (digits and imagefolder have fixed "
                           "validation splits of their own)", _non_negative_int)
    val_indices: str | None = option(None, "an .npy of training-split indices to hold out for validation instead of "
                                     "val_size (e.g. the official splits/cifar10_val_idx.npy); absolute, or under the "
                                     "data root", _optional(_text))
    val_every: int | None = option(None, "every this many steps and at the last, score the validation and test splits "
                                   "and keep the step of best validation single-view accuracy (best.pt, metrics' "
                                   "selected; the paper: 1000); none: no selection", _optional(_positive_int))
    seed: int = option(0, "weight init, shuffling and augmentation", _integer)
    device: str = option("auto", "where to train; auto picks CUDA when present", choices=lambda: DEVICES)
    threads: int = option(1, "CPU threads of the run (intra-op; not used on CUDA): fixed here, not by the machine "
                          "or by how many runs share it, because the order of a CPU sum follows the thread count "
                          "and with it the run's numbers; a grid gives each run this many cores", _positive_int)
    precision: str = option("auto", "bf16 autocast or fp32; auto: bf16 on CUDA, fp32 on the CPU (exact)",
                            choices=lambda: PRECISIONS)
    T: float = option(1.0, "self-distillation temperature (sla+sd)", _number(0.0, low_open=True))
    beta: float = option(1.0, "weight of the distilled head's own cross-entropy (sla+sd)", _number(0.0))
    large_loss: bool = option(False, "methods with a joint head (sla, sla+sd): the joint cross-entropy summed over "
                              "the M views instead of averaged (×M), the official --with-large-loss for ImageNet-scale "
                              "data", _flag)
    max_steps: int | None = option(None, "stop after this many optimiser steps (smoke runs); none: all epochs",
                                   _optional(_positive_int))
    compile: bool = option(False, "torch.compile the model (CUDA; compile time is reported apart)", _flag)
    data_dir: str | None = option(None, "imagefolder: a folder of class sub-folders (absolute, or under the data "
                                  "root)", _optional(_text))
    image_size: int = option(64, "imagefolder: images are resized to image_size × image_size pixels",
                             _positive_int)
    sync_bn: bool = option(False, "distributed runs: batch-norm statistics over the global batch of all processes",
                           _flag)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        if datasets.get(self.dataset).needs_dir and not self.data_dir:
            raise LabkitError(f"dataset {self.dataset!r} needs data_dir (--data-dir): a folder of class sub-folders")
        self._check_validation()
        self._check_long_tail()
        if self.large_loss and "joint" not in methods.get(self.method).heads:
            raise LabkitError(f"large_loss sums the joint cross-entropy over the views; method {self.method!r} has no "
                              f"joint head (use it with: {', '.join(_joint_methods())})")

    def _check_validation(self) -> None:
        if self.val_size and self.val_indices:
            raise LabkitError("pass either val_size (--val-size, a stratified draw) or val_indices (--val-indices, a "
                              "file of indices), not both")
        lending = [name for name in datasets.available() if datasets.get(name).val_from_train]
        if (self.val_size or self.val_indices) and self.dataset not in lending:
            raise LabkitError(f"dataset {self.dataset!r} has a fixed validation split of its own; val_size and "
                              f"val_indices hold one out of: {', '.join(lending)}")

    def _check_long_tail(self) -> None:
        if self.samples_per_class is not None and self.imbalance_ratio is not None:
            raise LabkitError("pass either samples_per_class (--samples-per-class, k images of every class) or "
                              "imbalance_ratio (--imbalance-ratio, a long tail), not both")
        if self.drw_at is not None and not self.class_balanced:
            raise LabkitError("drw_at defers the class-balanced weights; add class_balanced (--class-balanced)")
        if self.few_shot > self.many_shot:
            raise LabkitError(f"few_shot ({self.few_shot}) must be at most many_shot ({self.many_shot})")

    @property
    def resolved_model(self) -> str:
        return datasets.get(self.dataset).default_model if self.model == "auto" else self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with `model` resolved."""
        d = dataclasses.asdict(self)
        d["model"] = self.resolved_model
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a dict such as config.json; a key the schema lacks is refused, a missing one defaults."""
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

    def to_argv(self, every: bool = False, base: TrainConfig | None = None) -> list[str]:
        """The `train` flags that rebuild this config (only the fields that differ from `base`, default the schema's
        defaults, unless `every`): `labkit.cli.parse_config(config.to_argv()) == config`, and after `--recipe NAME`
        `config.to_argv(base=recipe(NAME))` does the same."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if every or value != (f.default if base is None else getattr(base, f.name)):
                argv += _flag_words(f.name, value)
        return argv


# ---------------------------------------------------------------------------------------------------- recipes
# Named sets of field values; explicit values (flags, keyword arguments) override them. Each has a note, which the
# CLI's --recipe help shows. The `paper` recipe is the official code's CIFAR setting (github.com/hankook/SLA, README
# and train.py), stepped per iteration; fp32, as the official code trained (no mixed precision), so the recipe is
# the setting the paper's numbers come from (--precision bf16 is faster on CUDA).
RECIPES: dict[str, dict[str, Any]] = {
    "labkit": {},
    "paper": {"dataset": "cifar10", "model": "resnet32", "batch_size": 128, "steps": 80000, "lr": 0.1,
              "milestones": (0.5, 0.75), "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "val_size": 5000,
              "val_every": 1000, "precision": "fp32"},
    "ldam-drw": {"dataset": "cifar10", "model": "resnet32", "imbalance_ratio": 100.0, "epochs": 200,
                 "batch_size": 128, "lr": 0.1, "warmup": 0.025, "milestones": (0.8, 0.9), "lr_decay": 0.01,
                 "momentum": 0.9, "nesterov": False, "weight_decay": 2e-4, "ldam": True, "class_balanced": True,
                 "cb_beta": 0.9999, "drw_at": 0.8, "precision": "fp32"},
}


RECIPE_NOTES: dict[str, str] = {
    "labkit": "quick runs, CIFAR 30 epochs, batch 64, weight decay 5e-4, Nesterov momentum, all 50,000 training "
              "images, the last step reported (the schema's own defaults)",
    "paper": "the official CIFAR setting: cifar10 unless --dataset, ResNet-32 (option A), batch 128, 80,000 steps, lr "
             "0.1 x0.1 at 40,000 and 60,000, weight decay 1e-4, momentum 0.9 without Nesterov, 5,000 training images "
             "held out for validation and scored every 1,000 steps, the test accuracy of the best validation step "
             "reported, fp32 as the official code",
    "ldam-drw": "long-tailed CIFAR as Cao et al.'s LDAM-DRW code: cifar10 unless --dataset, imbalance ratio 100 "
                "unless --imbalance-ratio, ResNet-32 (option A) with cosine heads, 200 epochs of batch 128, lr 0.1 "
                "after a linear warm-up over the first 5 epochs, x0.01 at epochs 160 and 180, weight decay 2e-4, "
                "momentum 0.9 without Nesterov, the LDAM loss (largest margin 0.5, scale 30) with class-balanced "
                "weights (beta 0.9999) from epoch 160 on, fp32",
}


def recipe(name: str, **changes: Any) -> TrainConfig:
    """The config of recipe `name` (see RECIPES), with `changes` on top: `recipe("paper", dataset="cifar100")`."""
    check_choice("recipe", name, RECIPES)
    return TrainConfig(**{**RECIPES[name], **changes})


# The long-tail losses a comparison tries on a long-tailed split: field values on top of a config, each a named
# combination of the class-balanced weights (Cui et al.), deferred re-weighting and the LDAM margins (Cao et al.).
# drw_at 0.8 is the LDAM-DRW code's epoch 160 of 200.
LONG_TAIL_LOSSES: dict[str, dict[str, Any]] = {
    "plain": {},  # cross-entropy, every class weighted alike
    "cb": {"class_balanced": True},  # class-balanced weights from the first step
    "drw": {"class_balanced": True, "drw_at": 0.8},  # the same weights from 80 % of the steps on
    "ldam": {"ldam": True},  # LDAM margins, no re-weighting
    "ldam-drw": {"ldam": True, "class_balanced": True, "drw_at": 0.8},  # Cao et al.'s combination
}


def long_tail_loss(name: str) -> dict[str, Any]:
    """The field values of the long-tail loss `name` (see LONG_TAIL_LOSSES): `recipe("labkit", **long_tail_loss(
    "ldam-drw"))`."""
    check_choice("long-tail loss", name, LONG_TAIL_LOSSES)
    return dict(LONG_TAIL_LOSSES[name])


def run_length(config: dict[str, Any]) -> str:
    """How long a run (a config as a dict, maybe of an older labkit) trains: "30 epochs", "80000 steps", or
    "30 epochs, at most 4 steps"."""
    length = f"{config['steps']} steps" if config.get("steps") else f"{config.get('epochs', '?')} epochs"
    return f"{length}, at most {config['max_steps']} steps" if config.get("max_steps") else length


def check_field(field: dataclasses.Field, value: Any) -> None:
    """`value` against one schema field's allowed names and check; raises the field's one-line LabkitError."""
    meta = field.metadata
    if meta.get("choices"):
        check_choice(field.name, value, meta["choices"]())
    if meta.get("check"):
        meta["check"](field.name, value)


def config_fields(schema: type = TrainConfig) -> list[dataclasses.Field]:
    return list(dataclasses.fields(schema))


def field_types(schema: type = TrainConfig) -> dict[str, Any]:
    """Field name -> its type, resolved from the (string) annotations."""
    return typing.get_type_hints(schema)


def flag_name(field: str) -> str:
    """batch_size -> --batch-size; T -> --T."""
    return "--" + field.replace("_", "-")


def _flag_words(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag_name(name) if value else "--no-" + flag_name(name)[2:]]
    if value is None:
        return [flag_name(name), "none"]
    if isinstance(value, tuple):
        return [flag_name(name), *map(str, value)]
    return [flag_name(name), str(value)]
