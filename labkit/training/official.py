"""Open a CIFAR model trained with the official SLA code (github.com/hankook/SLA) as a labkit run folder.

The official `train.py` writes `model-best.pth`, a `torch.save` of a dict:

    model       state dict of nn.DataParallel(PredictionModel): `module.base_model.<i>...`, `module.classifiers.<k>...`
    optim       the SGD state dict (not imported: an imported run is for evaluation, not for resuming)
    best        the best (validation, test) accuracies
    epoch, iteration
    args        the argparse.Namespace of its command line (mode, aug, model, dataset, lr, ...)

For `--model cresnetNN`, `base_model` is nn.Sequential(conv, bn, relu, stage_1, stage_2, stage_3, avgpool, reshape);
the stages' blocks hold `conv_a, bn_a, conv_b, bn_b` and option A's parameter-free shortcut (stride-2 subsample,
zero channels appended after the input's): labkit's `CifarResNet(depth, shortcut="A")`, the `resnetNN` models.
`classifiers` holds one linear layer per head, in the order of labkit's `Method.heads`:

    --mode      classifiers (outputs)   labkit method
    baseline    [N]                     baseline
    da          [N]                     da
    mt          [N, M]                  mt
    sla         [N·M]                   sla
    sla+sd      [N·M, N]                sla+sd
    (sla+random trains 4 of the M views per image; labkit has no such method, so it is refused)

Joint column i·M + j is class i under view j in both code bases (the official labels are `y*n + j`), and the
official `--aug` sets (rotation, rotation2, color_perm, color_perm3, rot_color_perm6/12/24) are labkit's transform
sets of the same names with the views in the same order. Without `args.mode` the method is read off the heads.

Inputs: the imported model equals the official one as a function of its input tensor. The official CIFAR pipeline
normalises pixels in [0, 1] by (x - 0.5) / 0.5 (`labkit.data.splits.HALF_STATS`, also saved in the checkpoint's
`source`), and so does labkit's CIFAR loader, so `load_run` on an imported run evaluates the official model on
exactly the input it was trained on.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.errors import LabkitError
from ..data.splits import HALF_STATS
from ..sla import transforms
from ..sla.methods import get as get_method
from ..sla.models import CIFAR_DEPTHS, LabkitNet, build_model
from .checkpoint import FORMAT, load_tensors
from .config import TrainConfig
from .run_folder import RunFolder, run_facts

__all__ = ["OFFICIAL_MODES", "CIFAR_CLASSES", "load_official", "convert_official", "import_official"]

OFFICIAL_MODES = {"baseline": "baseline", "da": "da", "mt": "mt", "sla": "sla", "sla+sd": "sla+sd"}  # --mode -> method

CIFAR_CLASSES: dict[str, tuple[str, ...]] = {  # torchvision's names (the datasets' meta files), in label order
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
        butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
        dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard
        lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
        pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal
        shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
        television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()),
}

_STEM = re.compile(r"base_model\.([01])\.(\w+)")  # the first conv (0) and its BN (1)
_BLOCK = re.compile(r"base_model\.([345])\.(\d+)\.(conv_a|bn_a|conv_b|bn_b)\.(\w+)")  # stage, block, layer, tensor
_HEAD = re.compile(r"classifiers\.(\d+)\.(weight|bias)")
_LAYERS = {"conv_a": "body.0.0", "bn_a": "body.0.1", "conv_b": "body.1", "bn_b": "body.2"}  # in labkit's _BasicBlock


def load_official(path: str | Path) -> dict[str, Any]:
    """The dict the official code saved, loaded with tensors and plain data only (plus its argparse.Namespace);
    a file that would import anything else is refused and nothing in it runs."""
    ckpt = load_tensors(path, "cpu", allow=(argparse.Namespace,))
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        raise LabkitError(f"{path} is a labkit checkpoint already; open it with labkit directly")
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict) or not all(isinstance(v, Tensor) for v in model.values()):
        raise LabkitError(f"{path} is not a checkpoint of the official SLA code (no 'model' state dict); "
                          f"labkit imports the model-best.pth its train.py writes")
    return ckpt


def convert_official(ckpt: dict[str, Any], dataset: str | None = None, transform: str | None = None
                     ) -> tuple[TrainConfig, LabkitNet]:
    """The labkit config and model (weights loaded, eval mode) of an official checkpoint. `dataset` and
    `transform` default to the checkpoint's `--dataset` and `--aug`; every contradiction is refused in one line."""
    args = _plain(vars(ckpt["args"])) if isinstance(ckpt.get("args"), argparse.Namespace) else {}
    dataset = _dataset(dataset, args.get("dataset"))
    transform = _transform(transform, args.get("aug"))
    backbone, classifiers = _split(ckpt["model"])
    depth = _depth(backbone, args.get("model"))
    N, M = len(CIFAR_CLASSES[dataset]), transforms.get(transform).M
    sizes = [weight.shape[0] for weight, _ in classifiers]
    method = _method(args.get("mode"), sizes, N)
    heads = get_method(method).heads
    _check_heads(heads, sizes, N, M, dataset, transform)
    config = TrainConfig(dataset=dataset, method=method, transform=transform, model=f"resnet{depth}")
    return config, _load(config, N, M, _labkit_state(backbone, dict(zip(heads, classifiers, strict=True)), depth))


def import_official(path: str | Path, dataset: str | None, transform: str | None, out_dir: str | Path,
                    overwrite: bool = False) -> RunFolder:
    """Write a labkit run folder (config.json, checkpoint.pt, an empty history.json) holding the official model
    in `path`; `load_run(out_dir)` opens it. `dataset` and `transform` None: the checkpoint's `--dataset` and
    `--aug`. An existing run is replaced only with `overwrite`."""
    out = RunFolder(out_dir)
    out.check_new(overwrite, resumable=False)  # before anything is read, so a refusal costs nothing
    ckpt = load_official(path)
    config, model = convert_official(ckpt, dataset, transform)
    facts = run_facts(config.to_dict(), model.N, model.M, CIFAR_CLASSES[config.dataset], (3, 32, 32))
    out.clear()  # an overwritten run's metrics and selected model are not this model's
    out.save_checkpoint({**facts, "model": model.state_dict(), "history": [], "source": _source(path, ckpt)})
    out.write_history([])
    out.write_config(config.to_dict())
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: numbers, strings, lists and dicts as they are, tensors as lists, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value.tolist() if isinstance(value, Tensor) else repr(value)


def _source(path: str | Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    args = ckpt.get("args")
    return {"official": str(path), "iteration": _plain(ckpt.get("iteration")), "epoch": _plain(ckpt.get("epoch")),
            "best": _plain(ckpt.get("best")), "args": _plain(vars(args)) if isinstance(args, argparse.Namespace)
            else None,
            "input_normalization": {"mean": list(HALF_STATS[0]), "std": list(HALF_STATS[1])}}


def _dataset(given: str | None, saved: Any) -> str:
    """--dataset, else the checkpoint's; labkit imports official CIFAR models only."""
    if given is not None and isinstance(saved, str) and saved != given:
        raise LabkitError(f"the checkpoint was trained with --dataset {saved} but --dataset {given} was given")
    dataset = given or saved
    if dataset is None:
        raise LabkitError(f"the checkpoint does not name its dataset; pass --dataset ({', '.join(CIFAR_CLASSES)})")
    if dataset not in CIFAR_CLASSES:
        raise LabkitError(f"labkit imports official CIFAR ResNets only: --dataset must be one of "
                          f"{', '.join(CIFAR_CLASSES)}, got {dataset!r}")
    return dataset


def _transform(given: str | None, saved: Any) -> str:
    """--transform, else the checkpoint's --aug (the same names); a baseline run without --aug gets the default."""
    known = isinstance(saved, str) and saved in transforms.available()
    if given is not None and known and saved != given:
        raise LabkitError(f"the checkpoint was trained with --aug {saved} but --transform {given} was given")
    if given is None and saved is not None and not known:
        raise LabkitError(f"the checkpoint's --aug {saved!r} is not a labkit transform set; pass --transform (one "
                          f"of: {', '.join(transforms.available())})")
    name = given or saved or TrainConfig.transform
    transforms.get(name)  # refuses an unknown --transform, naming the allowed ones
    return name


def _split(model: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
    """(the base_model tensors, (weight, bias) of each classifier in order), without DataParallel's `module.`."""
    model = {k.removeprefix("module."): v for k, v in model.items()}
    backbone = {k: v for k, v in model.items() if k.startswith("base_model.")}
    heads: dict[int, dict[str, Tensor]] = {}
    for key, value in model.items():
        head = _HEAD.fullmatch(key)
        if head:
            heads.setdefault(int(head.group(1)), {})[head.group(2)] = value
        elif key not in backbone:
            raise LabkitError(f"unexpected entry {key!r} in the checkpoint's model: not an official SLA model")
    if not heads or sorted(heads) != list(range(len(heads))) or any(len(h) != 2 for h in heads.values()):
        raise LabkitError(f"the checkpoint's classifiers are {sorted(heads)}; expected 0, 1, ... with weight and bias")
    return backbone, [(heads[k]["weight"], heads[k]["bias"]) for k in range(len(heads))]


def _depth(backbone: dict[str, Tensor], model: Any) -> int:
    """6n+2 from the n blocks in each stage; it must agree with the checkpoint's --model where it names one (the
    official code calls its CIFAR ResNets cresnetNN; resnetNN is accepted too)."""
    name = model.removeprefix("c") if isinstance(model, str) else None
    if name is not None and name not in {f"resnet{d}" for d in CIFAR_DEPTHS}:
        raise LabkitError(f"the checkpoint holds a {model}; labkit imports the official CIFAR ResNets only "
                          f"({', '.join(f'cresnet{d}' for d in CIFAR_DEPTHS)})")
    blocks = [{m.group(2) for k in backbone if (m := _BLOCK.fullmatch(k)) and m.group(1) == s} for s in "345"]
    n = len(blocks[0])
    if n == 0 or any(len(b) != n for b in blocks) or 6 * n + 2 not in CIFAR_DEPTHS:
        raise LabkitError(f"the checkpoint's stages hold {[len(b) for b in blocks]} blocks; labkit imports the "
                          f"official CIFAR ResNets ({', '.join(f'cresnet{d}' for d in CIFAR_DEPTHS)})")
    if name is not None and name != f"resnet{6 * n + 2}":
        raise LabkitError(f"the checkpoint says --model {model} but its stages hold {n} blocks each "
                          f"(cresnet{6 * n + 2})")
    return 6 * n + 2


def _method(mode: Any, sizes: list[int], N: int) -> str:
    """The labkit method of --mode; without one, read off the heads' sizes (see the table above)."""
    if mode is not None:
        if not isinstance(mode, str) or mode not in OFFICIAL_MODES:
            raise LabkitError(f"the checkpoint was trained with --mode {mode!r}, which labkit has no method for; "
                              f"it imports: {', '.join(OFFICIAL_MODES)}")
        return OFFICIAL_MODES[mode]
    fits = {"baseline": sizes == [N], "sla": len(sizes) == 1 and sizes[0] % N == 0 and sizes[0] > N,
            "mt": len(sizes) == 2 and sizes[0] == N, "sla+sd": len(sizes) == 2 and sizes[1] == N != sizes[0]}
    for method, fit in fits.items():
        if fit:
            return method
    raise LabkitError(f"the checkpoint's heads have {sizes} outputs, which fit no labkit method with N={N}: "
                      f"baseline [N], sla [N·M], mt [N, M], sla+sd [N·M, N]")


def _check_heads(heads: tuple[str, ...], sizes: list[int], N: int, M: int, dataset: str, transform: str) -> None:
    """Each head's outputs must be what N (from --dataset) and M (from --transform) give the method's head."""
    if len(heads) != len(sizes):
        raise LabkitError(f"the checkpoint has {len(sizes)} head(s) ({sizes} outputs) but its method has "
                          f"{len(heads)} ({', '.join(heads)})")
    for head, size in zip(heads, sizes, strict=True):
        if head == "class" and size != N:
            raise LabkitError(f"the checkpoint's class head has {size} outputs but --dataset {dataset} has N={N}")
        if head == "joint" and size % N:
            raise LabkitError(f"the checkpoint's joint head has {size} outputs, not a multiple of N={N} "
                              f"(--dataset {dataset})")
        if head == "joint" and size != N * M:
            raise LabkitError(f"the checkpoint's joint head has {size} outputs = N·M with M={size // N}, but "
                              f"--transform {transform} has M={M}")
        if head == "transform" and size != M:
            raise LabkitError(f"the checkpoint's transform head has {size} outputs = M, but --transform {transform} "
                              f"has M={M}")


def _labkit_key(key: str, n: int) -> str:
    """base_model.<i>... -> backbone.features.<j>...: the stem is labkit's features.0 (conv 0.0, BN 0.1); block b
    of stage s (base_model.3/4/5) is features.1 + s·n + b."""
    if stem := _STEM.fullmatch(key):
        return f"backbone.features.0.{stem.group(1)}.{stem.group(2)}"
    if block := _BLOCK.fullmatch(key):
        stage, b, layer, tensor = block.groups()
        return f"backbone.features.{1 + (int(stage) - 3) * n + int(b)}.{_LAYERS[layer]}.{tensor}"
    raise LabkitError(f"unexpected entry {key!r} in the checkpoint's base_model: not an official CIFAR ResNet")


def _labkit_state(backbone: dict[str, Tensor], heads: dict[str, tuple[Tensor, Tensor]], depth: int
                  ) -> dict[str, Tensor]:
    state = {_labkit_key(k, (depth - 2) // 6): v for k, v in backbone.items()}
    for head, (weight, bias) in heads.items():  # classifiers.k is the method's k-th head
        state[f"heads.{head}.weight"], state[f"heads.{head}.bias"] = weight, bias
    return state


def _load(config: TrainConfig, N: int, M: int, state: dict[str, Tensor]) -> LabkitNet:
    """The labkit model of `config` with `state` loaded strictly: every tensor of each, with equal shapes."""
    model = build_model(config.resolved_model, 3, N, M, get_method(config.method).heads)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LabkitError(f"the checkpoint's weights do not fit a labkit {config.resolved_model} "
                          f"({' '.join(str(e).split())[:160]})") from None
    return model.eval()
