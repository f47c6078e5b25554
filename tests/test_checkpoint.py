"""Checkpoints from untrusted or damaged files: code never runs, damage is always reported, writes are atomic."""

from __future__ import annotations

import os
import pickle
import random
import re
import stat
from pathlib import Path

import pytest
import torch

from labkit.core.errors import LabkitError
from labkit.core.files import atomic_write
from labkit.data.datasets import load_data
from labkit.training.checkpoint import digest, load_checkpoint, save_checkpoint
from labkit.training.engine import Learner
from labkit.training.experiment import train_run
from labkit.training.resolve import resolve
from tests.support import RunsShell, run_cli, snapshot, tiny_config


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A real checkpoint of an untrained tiny run (no training needed to test the file format)."""
    config = tiny_config()
    run = resolve(config, torch.device("cpu"), load_data("digits", config.train_fraction))
    path = tmp_path_factory.mktemp("good") / "checkpoint.pt"
    save_checkpoint(path, Learner(run.model, run).state_dict())
    return path


class _CallsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _malicious_files(folder: Path, good: Path) -> dict[str, Path]:
    marker = folder / "PWNED"
    payloads = {"raw-protocol0": (RunsShell(marker), 0), "raw-protocol2": (RunsShell(marker), 2),
                "raw-protocol5": (RunsShell(marker), 5), "raw-exec": (_CallsExec(marker), 2),
                "raw-exec-protocol4": (_CallsExec(marker), 4)}
    files = {}
    for name, (payload, protocol) in payloads.items():
        files[name] = folder / f"{name}.pt"
        files[name].write_bytes(pickle.dumps({"format": "labkit-checkpoint/1", "model": payload}, protocol=protocol))
    state = torch.load(good, weights_only=True)
    files["torch-zip"] = folder / "zip.pt"  # a genuine checkpoint with one extra, malicious entry
    torch.save({**state, "extra": RunsShell(marker)}, files["torch-zip"])
    return files


def test_the_malicious_files_really_carry_code(tmp_path, good):
    """Guard against a vacuous test: plain pickle.load of these files does run their code."""
    for path in _malicious_files(tmp_path, good).values():
        (tmp_path / "PWNED").unlink(missing_ok=True)
        if path.name == "zip.pt":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert (tmp_path / "PWNED").exists(), path.name
    (tmp_path / "PWNED").unlink()


@pytest.mark.parametrize("kind,name", [("raw-protocol0", "posix.system"), ("raw-protocol2", "posix.system"),
                                       ("raw-protocol5", "posix.system"), ("raw-exec", "exec"),
                                       ("raw-exec-protocol4", "builtins.exec"), ("torch-zip", "posix.system")])
def test_checkpoint_with_code_is_refused_and_nothing_runs(kind, name, tmp_path, good):
    if os.name != "posix" and "posix" in name:
        name = name.replace("posix", os.name)
    path = _malicious_files(tmp_path, good)[kind]
    with pytest.raises(LabkitError) as e:
        load_checkpoint(path)
    assert str(e.value) == (f"refused to load {path}: it would import {name}, so it may carry code; labkit loads "
                            f"only tensors and plain data and ran nothing from it")
    assert not (tmp_path / "PWNED").exists()


def test_code_in_a_run_folder_is_refused_by_resume_and_eval(tmp_path, good):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(_malicious_files(tmp_path, good)["torch-zip"].read_bytes())
    before = snapshot(tmp_path)
    rc, _, err = run_cli("eval", "--checkpoint", str(run))
    assert rc == 2 and "labkit: error: refused to load" in err
    with pytest.raises(LabkitError, match="refused to load"):
        train_run(tiny_config(), run, resume=True, progress=False)
    assert not (tmp_path / "PWNED").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 1000, 0.5, 0.9, -1])
def test_truncated_checkpoint_is_refused(keep, tmp_path, good):
    data = good.read_bytes()
    n = keep if isinstance(keep, int) and keep >= 0 else int(len(data) * keep) if keep > 0 else len(data) - 1
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:n])
    with pytest.raises(LabkitError, match=r"checkpoint .*cut\.pt is truncated or corrupted \(.*\).*use an intact"):
        load_checkpoint(path)


def test_damaged_bytes_never_load_as_something_else(tmp_path, good):
    """Flip one bit at 40 random places: each file is refused or, where the bit is padding, loads unchanged."""
    data, original = good.read_bytes(), load_checkpoint(good)
    rng = random.Random(0)
    refused = 0
    for i in range(40):
        b = bytearray(data)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(b))
        try:
            state = load_checkpoint(path)
        except LabkitError as e:
            assert re.search(r"corrupted|not a labkit checkpoint|refused to load", str(e)), e
            refused += 1
        else:
            assert digest(state) == digest(original)
    assert refused >= 30  # almost every byte of the file is content


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"PK\x03\x04" + b"\x00" * 100])
def test_garbage_is_refused(content, tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(LabkitError, match="corrupted|not a labkit checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_files_are_not_checkpoints(tmp_path):
    for i, obj in enumerate([{"w": torch.ones(2)}, [1, 2], torch.zeros(3)]):
        torch.save(obj, tmp_path / f"{i}.pt")
        with pytest.raises(LabkitError, match="is not a labkit checkpoint"):
            load_checkpoint(tmp_path / f"{i}.pt")
    with pytest.raises(LabkitError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder


def test_round_trip_keeps_everything(tmp_path, good):
    state = load_checkpoint(good)
    save_checkpoint(tmp_path / "again.pt", {k: v for k, v in state.items() if k not in ("format", "digest")})
    again = load_checkpoint(tmp_path / "again.pt")
    assert again["digest"] == state["digest"] == digest({k: v for k, v in state.items() if k != "digest"})


def test_atomic_write_failing_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, lambda f: f.write(b"old contents"))

    def half_then_crash(f):
        f.write(b"new contents, half of them")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["file.bin"], "a temporary file was left behind"


def test_atomic_write_gives_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", lambda f: f.write(b"x"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
