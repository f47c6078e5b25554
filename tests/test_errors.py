"""Every bad input a user can type gets one clear line (`labkit: error: ...`, exit 2) and changes nothing on disk.

Each case runs through the real command line (`main(argv)`, argparse included; a few also as a `python -m labkit`
subprocess), asserts the key fragments of its message, that nothing under the test folder changed (file bytes
and mtimes), and that the message is the one `docs/errors.md` lists. Regenerate that table after changing a
message with `PYTHONPATH=. python tests/test_errors.py`.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

from labkit.core.device import resolve_device
from labkit.core.errors import LabkitError
from labkit.data.datasets import load_data
from labkit.data.splits import DataBundle, Split
from labkit.sla import transforms
from labkit.sla.methods import get as get_method
from labkit.sla.models import build_model
from labkit.training.checkpoint import load_checkpoint, save_checkpoint
from labkit.training.config import TrainConfig
from labkit.training.experiment import load_run, train_run
from tests.support import (
    TINY_ARGS,
    assert_one_line_error,
    command,
    documented,
    fill_tmp,
    observe,
    one_thread,
    run_labkit,
    snapshot,
    tiny_config,
    write_error_table,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
NEW = ["--out", "TMP/new"]  # a fresh run folder: no bad input may create it

# (what is wrong, command line with TMP for the test folder, fragments the message must hold)
CASES = [
    ("unknown dataset", ["train", "--dataset", "imagenet", *NEW],
     ["unknown dataset 'imagenet'", "allowed: digits, mnist, cifar10, cifar100, imagefolder"]),
    ("unknown method", ["train", "--method", "simclr", *NEW],
     ["unknown method 'simclr'", "allowed: baseline, da, mt, sla, sla+sd"]),
    ("unknown model", ["train", "--model", "vgg", *NEW], ["unknown model 'vgg'", "allowed: auto, smallcnn"]),
    ("unknown transformation", ["train", "--transform", "blur", *NEW],
     ["unknown transform 'blur'", "allowed: rotation, rotation2, color_perm"]),
    ("colour permutation on 1-channel data", ["train", "--transform", "color_perm", *NEW],
     ["permutes RGB channels", "digits has 1 channel", "use one of: rotation, rotation2"]),
    ("rotations with colour on 1-channel data", ["train", "--transform", "rot_color_perm12", *NEW],
     ["permutes RGB channels", "use one of: rotation, rotation2"]),
    ("epochs zero", ["train", "--epochs", "0", *NEW], ["epochs must be a positive integer", "got 0"]),
    ("epochs negative", ["train", "--epochs", "-3", *NEW], ["epochs must be a positive integer", "got -3"]),
    ("epochs NaN", ["train", "--epochs", "nan", *NEW], ["--epochs: invalid int value: 'nan'"]),
    ("epochs not a number", ["train", "--epochs", "ten", *NEW], ["--epochs: invalid int value: 'ten'"]),
    ("epochs fractional", ["train", "--epochs", "2.5", *NEW], ["--epochs: invalid int value: '2.5'"]),
    ("batch size zero", ["train", "--batch-size", "0", *NEW], ["batch_size must be a positive integer", "got 0"]),
    ("batch size negative", ["train", "--batch-size", "-8", *NEW], ["batch_size must be a positive integer"]),
    ("batch size not a number", ["train", "--batch-size", "big", *NEW], ["--batch-size: invalid int value"]),
    ("learning rate zero", ["train", "--lr", "0", *NEW], ["lr must be in (0.0, inf), got 0.0"]),
    ("learning rate negative", ["train", "--lr", "-0.1", *NEW], ["lr must be in (0.0, inf), got -0.1"]),
    ("learning rate NaN", ["train", "--lr", "nan", *NEW], ["lr must be a finite number, got nan"]),
    ("learning rate infinite", ["train", "--lr", "inf", *NEW], ["lr must be a finite number, got inf"]),
    ("learning rate not a number", ["train", "--lr", "fast", *NEW], ["--lr: invalid float value: 'fast'"]),
    ("train fraction zero", ["train", "--train-fraction", "0", *NEW], ["train_fraction must be in (0.0, 1.0]"]),
    ("train fraction negative", ["train", "--train-fraction", "-0.5", *NEW], ["train_fraction must be in (0.0, 1.0]"]),
    ("train fraction above 1", ["train", "--train-fraction", "1.5", *NEW], ["train_fraction must be in (0.0, 1.0]"]),
    ("train fraction NaN", ["train", "--train-fraction", "nan", *NEW], ["train_fraction must be a finite number"]),
    ("max steps zero", ["train", "--max-steps", "0", *NEW], ["max_steps must be a positive integer"]),
    ("unknown device", ["train", "--device", "tpu", *NEW], ["unknown device 'tpu'", "allowed: auto, cpu, cuda"]),
    ("--device cuda without a GPU", ["train", "--device", "cuda", *NEW],
     ["device 'cuda' requested but no CUDA GPU", "use --device cpu or auto"]),
    ("--device cuda without a GPU, resuming", ["train", "--out", "TMP/run", "--resume", "--device", "cuda"],
     ["device 'cuda' requested but no CUDA GPU"]),
    ("--device cuda without a GPU, evaluating", ["eval", "--checkpoint", "TMP/run", "--device", "cuda"],
     ["device 'cuda' requested but no CUDA GPU"]),
    ("imagefolder without --data-dir", ["train", "--dataset", "imagefolder", *NEW], ["needs data_dir (--data-dir)"]),
    ("imagefolder root missing", ["train", "--dataset", "imagefolder", "--data-dir", "TMP/missing", *NEW],
     ["imagefolder root TMP/missing does not exist", "one sub-folder of images per class"]),
    ("imagefolder root empty", ["train", "--dataset", "imagefolder", "--data-dir", "TMP/empty", *NEW],
     ["has 0 class sub-folder(s) with images; it needs at least 2"]),
    ("imagefolder root with one class", ["train", "--dataset", "imagefolder", "--data-dir", "TMP/one_class", *NEW],
     ["has 1 class sub-folder(s) with images; it needs at least 2"]),
    ("CIFAR-10 without files or network", ["train", "--dataset", "cifar10", *NEW],
     ["could not load cifar10 from TMP/data/cifar-10-batches-py", "put the dataset's files there"]),
    ("MNIST without files or network", ["train", "--dataset", "mnist", *NEW],
     ["could not load mnist from TMP/data/MNIST/raw", "put the dataset's files there"]),
    ("--out holds a run", ["train", *TINY_ARGS, "--out", "TMP/run"],
     ["TMP/run already holds a run (config.json, history.json, checkpoint.pt, metrics.json, showcase.npz)",
      "pass --resume to continue it, --overwrite to replace it"]),
    ("--overwrite, but the new data cannot be loaded (old run kept)",
     ["train", "--dataset", "imagefolder", "--data-dir", "TMP/missing", "--out", "TMP/run", "--overwrite"],
     ["imagefolder root TMP/missing does not exist"]),
    ("--out is a file", ["train", "--out", "TMP/a_file"], ["--out TMP/a_file is a file"]),
    ("--resume and --overwrite together", ["train", "--out", "TMP/run", "--resume", "--overwrite"],
     ["pass either --resume", "or --overwrite", "not both"]),
    ("--resume of a folder without a checkpoint", ["train", "--out", "TMP/empty", "--resume"],
     ["checkpoint TMP/empty/checkpoint.pt does not exist"]),
    ("--resume with another method", ["train", *TINY_ARGS, "--method", "baseline", "--out", "TMP/run", "--resume"],
     ["cannot resume TMP/run", "different method ('sla', requested 'baseline')"]),
    ("--resume with another model", ["train", *TINY_ARGS, "--model", "resnet20", "--out", "TMP/run", "--resume"],
     ["cannot resume TMP/run", "model ('smallcnn', requested 'resnet20')"]),
    ("--resume with another transformation set (M)",
     ["train", *TINY_ARGS, "--transform", "rotation2", "--out", "TMP/run", "--resume"],
     ["cannot resume TMP/run", "transform ('rotation', requested 'rotation2')"]),
    ("checkpoint whose M does not match its transformation", ["eval", "--checkpoint", "TMP/m3.pt"],
     ["has N=10 classes and M=3 transformations but digits with rotation gives N=10, M=4"]),
    ("checkpoint whose N does not match its data", ["eval", "--checkpoint", "TMP/n5.pt"],
     ["has N=5 classes and M=4 transformations but digits with rotation gives N=10, M=4"]),
    ("checkpoint whose weights are another model's", ["eval", "--checkpoint", "TMP/resnet_weights.pt"],
     ["does not fit a smallcnn trained with sla", "Error(s) in loading state_dict"]),
    ("checkpoint missing", ["eval", "--checkpoint", "TMP/missing.pt"], ["checkpoint TMP/missing.pt does not exist"]),
    ("checkpoint carrying pickled code", ["eval", "--checkpoint", "TMP/evil.pt"],
     ["refused to load TMP/evil.pt", "may carry code", "ran nothing from it"]),
    ("checkpoint truncated", ["eval", "--checkpoint", "TMP/truncated.pt"],
     ["checkpoint TMP/truncated.pt is truncated or corrupted"]),
    ("checkpoint with damaged bytes", ["eval", "--checkpoint", "TMP/flipped.pt"],
     ["checkpoint TMP/flipped.pt is corrupted (its contents do not match the digest"]),
    ("not a labkit checkpoint", ["eval", "--checkpoint", "TMP/foreign.pt"],
     ["TMP/foreign.pt is not a labkit checkpoint", "missing: format, config, model, N, M, digest"]),
    ("compare: unknown method", ["compare", "--methods", "sla,byol", "--out", "TMP/new"], ["unknown method 'byol'"]),
    ("compare: seeds not integers", ["compare", "--seeds", "0,one", "--out", "TMP/new"],
     ["--seeds takes comma-separated integers, got 'one'"]),
    ("--val-size on a dataset with its own validation split", ["train", "--val-size", "100", *NEW],
     ["dataset 'digits' has a fixed validation split of its own", "hold one out of: mnist, cifar10, cifar100"]),
    ("--val-size and --val-indices together",
     ["train", "--dataset", "cifar10", "--val-size", "10", "--val-indices", "v.npy", *NEW],
     ["pass either val_size (--val-size, a stratified draw) or val_indices"]),
    ("--large-loss with a method without a joint head", ["train", "--method", "mt", "--large-loss", *NEW],
     ["method 'mt' has no joint head", "use it with: sla, sla+sd"]),
    ("--samples-per-class and --imbalance-ratio together",
     ["train", "--samples-per-class", "5", "--imbalance-ratio", "10", *NEW],
     ["pass either samples_per_class", "or imbalance_ratio (--imbalance-ratio, a long tail), not both"]),
    ("imbalance ratio below 1", ["train", "--imbalance-ratio", "0.5", *NEW],
     ["imbalance_ratio must be in [1.0, inf), got 0.5"]),
    ("imbalance ratio leaving the last class no image", ["train", "--imbalance-ratio", "500", *NEW],
     ["imbalance_ratio 500 leaves the last class no image", "use R <="]),
    ("--drw-at without --class-balanced", ["train", "--drw-at", "0.8", *NEW],
     ["drw_at defers the class-balanced weights", "add class_balanced (--class-balanced)"]),
    ("--drw-at of 1", ["train", "--class-balanced", "--drw-at", "1", *NEW], ["drw_at must be in (0.0, 1.0), got 1.0"]),
    ("--cb-beta of 1", ["train", "--class-balanced", "--cb-beta", "1", *NEW], ["cb_beta must be in [0.0, 1.0)"]),
    ("few-shot threshold above many-shot", ["train", "--few-shot", "200", *NEW],
     ["few_shot (200) must be at most many_shot (100)"]),
    ("--log-every zero", ["train", "--log-every", "0", *NEW], ["log_every must be a positive integer"]),
    ("unknown recipe", ["train", "--recipe", "fast", *NEW], ["argument --recipe: invalid choice: 'fast'"]),
    ("unknown command", ["fit"], ["argument command: invalid choice: 'fit'"]),
    ("unknown flag", ["train", "--epohcs", "3", *NEW], ["unrecognized arguments: --epohcs 3"]),
]


# ------------------------------------------------------------------------------------------------------- fixtures
def _png(path: Path, size: tuple[int, int] = (12, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


def _tampered(src: Path, dst: Path, **changes) -> None:
    state = load_checkpoint(src)
    state.pop("digest")
    save_checkpoint(dst, {**state, **changes})


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would run a shell command that creates the marker file
        return (os.system, (f"touch '{self.marker}'",))


def build_world(tmp: Path, run: Path) -> None:
    """A copy of the finished tiny run `run` and every kind of bad file and folder the cases point at."""
    shutil.copytree(run, tmp / "run")
    (tmp / "empty").mkdir()
    (tmp / "data").mkdir()
    (tmp / "a_file").write_text("not a folder\n")
    _png(tmp / "one_class" / "cat" / "0.png")
    ckpt = tmp / "run" / "checkpoint.pt"
    _tampered(ckpt, tmp / "m3.pt", M=3)
    _tampered(ckpt, tmp / "n5.pt", N=5)
    other = build_model("resnet20", 1, 10, 4, get_method("sla").heads)
    _tampered(ckpt, tmp / "resnet_weights.pt", model=other.state_dict())
    torch.save({"format": "labkit-checkpoint/1", "model": _Evil(tmp / "PWNED")}, tmp / "evil.pt")
    data = ckpt.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) * 2 // 3])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # one bit inside the tensor data: the zip container does not notice
    (tmp / "flipped.pt").write_bytes(bytes(flipped))
    torch.save({"weights": torch.zeros(3)}, tmp / "foreign.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs) -> Path:
    tmp = tmp_path_factory.mktemp("world")
    build_world(tmp, tiny_runs("sla").path)
    return tmp


def no_network(*args, **kwargs):
    """Stands in for socket.getaddrinfo: every name lookup fails, as on an air-gapped machine."""
    raise OSError(101, "Network is unreachable")


@pytest.fixture
def offline(monkeypatch, world):
    """No network and an empty data root."""
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("LABKIT_DATA", str(world / "data"))


# -------------------------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("what,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(what, argv, fragments, world, offline):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    before = snapshot(world)
    rc, err = observe(argv, world)
    line = assert_one_line_error(rc, err, *fragments)
    assert snapshot(world) == before, "a refused command changed files on disk"
    assert not (world / "new").exists(), "a refused command created its --out folder"
    assert not (world / "PWNED").exists(), "code inside a checkpoint ran"
    assert documented(DOCS, "table").get(command(argv)) == line, \
        f"docs/errors.md is stale for {what}; see the module docstring"


@pytest.mark.slow
@pytest.mark.parametrize("argv,fragment", [
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; allowed: digits"),
    (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["train", "--dataset", "cifar10"], "could not load cifar10 from TMP/data/cifar-10-batches-py"),
    (["eval", "--checkpoint", "TMP/evil.pt"], "refused to load TMP/evil.pt"),
], ids=["dataset", "epochs", "cifar10-offline", "pickled-code"])
def test_python_m_labkit_subprocess(argv, fragment, world):
    """A few of the cases as a user runs them: a fresh interpreter (about 5 s each, hence only a few), no network
    (a proxy on a closed port), an empty data root."""
    before = snapshot(world)
    argv = argv + (["--out", "TMP/new"] if argv[0] == "train" else [])
    proc = run_labkit(*fill_tmp(argv, world), LABKIT_DATA=str(world / "data"))
    assert_one_line_error(proc.returncode, proc.stderr.replace(str(world), "TMP"), fragment)
    assert "Traceback" not in proc.stderr
    assert snapshot(world) == before
    assert not (world / "new").exists() and not (world / "PWNED").exists()


# ------------------------------------------------------------------------------------------------- the Python API
@pytest.mark.parametrize("changes,fragment", [
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'; allowed: digits, mnist"),
    (dict(method="simclr"), "unknown method 'simclr'; allowed: baseline, da, mt, sla, sla+sd"),
    (dict(model="vgg"), "unknown model 'vgg'; allowed: auto, smallcnn"),
    (dict(transform="blur"), "unknown transform 'blur'; allowed: rotation"),
    (dict(epochs=0), "epochs must be a positive integer (>= 1), got 0"),
    (dict(epochs=-1), "epochs must be a positive integer (>= 1), got -1"),
    (dict(epochs=math.nan), "epochs must be an integer, got nan"),
    (dict(epochs="3"), "epochs must be an integer, got '3'"),  # e.g. a papermill parameter passed as text
    (dict(epochs=2.0), "epochs must be an integer, got 2.0"),
    (dict(epochs=True), "epochs must be an integer, got True"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(batch_size=None), "batch_size must be an integer, got None"),
    (dict(lr=0.0), "lr must be in (0.0, inf), got 0.0"),
    (dict(lr=-1.0), "lr must be in (0.0, inf), got -1.0"),
    (dict(lr=math.nan), "lr must be a finite number, got nan"),
    (dict(lr=math.inf), "lr must be a finite number, got inf"),
    (dict(lr="0.1"), "lr must be a finite number, got '0.1'"),
    (dict(train_fraction=0.0), "train_fraction must be in (0.0, 1.0], got 0.0"),
    (dict(train_fraction=1.01), "train_fraction must be in (0.0, 1.0], got 1.01"),
    (dict(train_fraction=math.nan), "train_fraction must be a finite number"),
    (dict(device="gpu"), "unknown device 'gpu'; allowed: auto, cpu, cuda"),
    (dict(dataset="imagefolder"), "needs data_dir"),
])
def test_config_refuses(changes, fragment):
    with pytest.raises(LabkitError) as e:
        TrainConfig(**changes)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(LabkitError, match=r"unknown config key\(s\) epoch; allowed: T, batch_size"):
        TrainConfig.from_dict({"epoch": 3})


def test_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(LabkitError, match="device 'cuda' requested but no CUDA GPU"):
        resolve_device("cuda")


def test_rotations_refuse_non_square_images():
    rot = transforms.get("rotation")
    with pytest.raises(LabkitError, match="rotates images, which needs square images, but my data images are 8x12"):
        rot.check_input(3, 8, 12, dataset="my data")
    rot.check_input(3, 12, 12)  # square is fine
    transforms.get("color_perm").check_input(3, 8, 12)  # colour permutations do not care


def _non_square_bundle() -> DataBundle:
    g = torch.Generator().manual_seed(0)
    splits = [Split(torch.randn(20, 3, 8, 12, generator=g), torch.arange(20) % 2) for _ in range(3)]
    return DataBundle("strips", ("a", "b"), *splits, shape=(3, 8, 12), augment=False, mean=(0.0,) * 3,
                      std=(1.0,) * 3)


def test_train_run_refuses_non_square_data_before_touching_disk(tmp_path):
    """The real user path: your own DataBundle of non-square images, trained with rotations."""
    with pytest.raises(LabkitError, match="images are 8x12; resize them to a square first"):
        train_run(tiny_config(model="smallcnn"), tmp_path / "out", data=_non_square_bundle(), progress=False)
    assert not (tmp_path / "out").exists()


def test_colour_permutation_on_grey_data_via_api(tmp_path):
    with pytest.raises(LabkitError, match="permutes RGB channels but digits has 1 channel"):
        train_run(tiny_config(transform="color_perm3"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("mnist", "MNIST/raw")])
def test_torchvision_dataset_offline_says_where_files_go(name, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    with pytest.raises(LabkitError) as e:
        load_data(name)
    assert f"could not load {name} from {tmp_path / folder}" in str(e.value)
    assert "put the dataset's files there (or set LABKIT_DATA)" in str(e.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a failed download left files behind"


def test_imagefolder_roots(tmp_path):
    with pytest.raises(LabkitError, match="does not exist"):
        load_data("imagefolder", data_dir=str(tmp_path / "nope"))
    (tmp_path / "empty_class").mkdir()
    _png(tmp_path / "only" / "0.png")
    with pytest.raises(LabkitError, match=r"has 1 class sub-folder\(s\) with images; it needs at least 2"):
        load_data("imagefolder", data_dir=str(tmp_path))


def test_load_run_refuses_other_request_and_other_data(world):
    before = snapshot(world)
    with pytest.raises(LabkitError, match=r"does not match the request: .*method \('sla', requested 'mt'\)"):
        load_run(world / "run", "cpu", expect=tiny_config(method="mt"))
    with pytest.raises(LabkitError, match=r"model \('smallcnn', requested 'resnet20'\)"):
        load_run(world / "run", "cpu", expect=tiny_config(model="resnet20"))
    data = load_data("digits", 0.1)
    keep = data.train.y < 5  # the same images, five classes: N=5
    five = DataBundle("digits", data.classes[:5], *(Split(s.x[s.y < 5], s.y[s.y < 5]) for s in
                      (data.train, data.val, data.test)), data.shape, False, data.mean, data.std)
    assert keep.any()
    with pytest.raises(LabkitError, match="has N=10 classes and M=4 transformations but digits with rotation "
                                          "gives N=5, M=4"):
        load_run(world / "run", "cpu", data=five)
    run = load_run(world / "run", "cpu", expect=tiny_config(epochs=5))  # epochs may differ
    assert run.config.method == "sla" and run.method.name == "sla" and not run.model.training
    assert snapshot(world) == before


def test_train_run_refuses_existing_run_and_keeps_it(world):
    before = snapshot(world)
    with pytest.raises(LabkitError, match="already holds a run"):
        train_run(tiny_config(), world / "run", progress=False)
    with pytest.raises(LabkitError, match="cannot resume .* different method"):
        train_run(tiny_config(method="da"), world / "run", resume=True, progress=False)
    assert snapshot(world) == before


# --------------------------------------------------------------------------------------------- docs/errors.md
def write_docs() -> None:
    """Run every case for real and put the observed messages into docs/errors.md between the markers."""
    import tempfile

    from _pytest.monkeypatch import MonkeyPatch

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with one_thread():
            run = train_run(tiny_config(), tmp / "trained", progress=False)
        build_world(tmp, run.path)
        mp = MonkeyPatch()
        mp.setattr(socket, "getaddrinfo", no_network)
        mp.setenv("LABKIT_DATA", str(tmp / "data"))
        try:
            write_error_table(DOCS, "table", CASES, tmp)
        finally:
            mp.undo()


if __name__ == "__main__":
    write_docs()
