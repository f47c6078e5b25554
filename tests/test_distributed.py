"""Distributed training through torchrun and DistributedDataParallel, with gloo on the CPU.

The slow tests start `torchrun --standalone --nproc_per_node=2 -m labkit train` as a user would and check what it
leaves behind against one-process runs of the same engine: one set of files, whole-test-set metrics equal to a
one-process `labkit eval`, and (with --sync-bn) the same weights as one process at twice the per-rank batch,
after one step and after a distributed --resume.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.cli import main
from labkit.core.errors import LabkitError
from labkit.data.datasets import load_data
from labkit.sla.methods import get as get_method
from labkit.training import distributed
from labkit.training.checkpoint import load_checkpoint
from labkit.training.config import TrainConfig
from labkit.training.experiment import train_run
from labkit.training.run_folder import RUN_FILES

REPO = Path(__file__).resolve().parent.parent
TINY = dict(dataset="digits", epochs=1, train_fraction=0.1, device="cpu", lr=0.05)


RUN_FILES_WITHOUT_BEST = sorted(f for f in RUN_FILES if f != "best.pt")  # best.pt: only with --val-every


def _flags(**fields) -> list[str]:
    """TrainConfig fields -> CLI flags (True -> bare flag)."""
    out = []
    for k, v in fields.items():
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, str(v)]
    return out


def _torchrun(out: Path, *extra: str, nproc: int = 2, **fields) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "labkit", "train", *_flags(**fields), "--out", str(out), "--no-progress", *extra]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# ------------------------------------------------------------------------------------------------- fast units
def test_plain_process_is_not_a_launch(monkeypatch):
    for k in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    assert distributed.launch_from_env() is None
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.arange(5)
    assert distributed.all_reduce(t) is t and distributed.shard(t) is t


def test_launch_is_read_from_torchrun_variables():
    env = dict(RANK="3", WORLD_SIZE="8", LOCAL_RANK="1", MASTER_ADDR="node0", MASTER_PORT="29500")
    assert distributed.launch_from_env(env) == distributed.Launch(3, 8, 1, "node0:29500")
    with pytest.raises(LabkitError, match="MASTER_ADDR"):
        distributed.launch_from_env({k: v for k, v in env.items() if k != "MASTER_ADDR"})
    with pytest.raises(LabkitError, match="RANK must be in"):
        distributed.launch_from_env({**env, "RANK": "8"})
    with pytest.raises(LabkitError, match="LOCAL_RANK must be an integer"):
        distributed.launch_from_env({**env, "LOCAL_RANK": "x"})


def test_evaluation_shards_cover_every_row_once():
    t = torch.arange(11)
    shards = [distributed.shard(t, r, 3) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))


def test_torchrun_with_one_process_needs_no_process_group(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(k, v)  # port 1: joining a group would fail, so passing shows none was joined
    metrics = train_run(TrainConfig(**TINY, method="sla", max_steps=1), tmp_path / "run", progress=False).metrics()
    assert metrics["world_size"] == 1 and not torch.distributed.is_initialized()
    assert sorted(os.listdir(tmp_path / "run")) == RUN_FILES_WITHOUT_BEST


# ------------------------------------------------------------------------------------------- torchrun, 2 ranks
@pytest.mark.slow
@pytest.mark.parametrize("method", ["sla", "sla+sd"])
def test_torchrun_two_ranks_writes_one_run_with_whole_test_set_metrics(tmp_path, method, capsys):
    out = tmp_path / "run"
    stdout = _ok(_torchrun(out, **{**TINY, "epochs": 2, "train_fraction": 0.3, "lr": 0.1}, method=method,
                           batch_size=16))
    assert stdout.count("wrote ") == 1  # only rank 0 reports
    assert sorted(os.listdir(out)) == RUN_FILES_WITHOUT_BEST  # one set of files, no per-rank copies or temp files
    metrics = json.loads((out / "metrics.json").read_text())
    n_test = len(load_data("digits").test)
    assert metrics["world_size"] == 2 and metrics["n_test"] == n_test
    for mode, confusion in metrics["confusion"].items():
        assert sum(map(sum, confusion)) == n_test, mode  # every test image counted exactly once
    assert tuple(metrics["test_acc"]) == get_method(method).modes
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)  # the saved model, evaluated in one process
    assert alone["n_test"] == n_test
    # Exact: each test image's eval-mode output does not depend on its batch, and every rank evaluates with rank
    # 0's batch-norm statistics (the ones in the checkpoint), not the ones its own last shard left behind.
    assert alone["test_acc"] == metrics["test_acc"]
    assert alone["confusion"] == metrics["confusion"]
    assert alone["pair_expected"] == pytest.approx(metrics["pair_expected"], abs=1e-5)


@pytest.mark.slow
def test_torchrun_refuses_an_existing_run_on_every_rank(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    proc = _torchrun(out, **TINY, method="sla")
    assert proc.returncode != 0
    assert "already holds a run" in proc.stderr
    assert sorted(os.listdir(out)) == ["metrics.json"]


SEVERAL_GROUPS = """
import os, time
import torch
from labkit.training import distributed
for _ in range(6):  # a group made, used and left, again and again in one process (as train_run does per run)
    if os.environ["RANK"] == "1":
        time.sleep(0.3)  # rank 0 reaches the rendezvous first, where stale keys of the last group would be
    with distributed.session("cpu"):
        assert int(distributed.all_reduce(torch.ones(()))) == 2
"""


@pytest.mark.slow
def test_one_torchrun_process_can_make_the_group_again(tmp_path):
    """Every group gets fresh rendezvous keys: with torch's default ones, rank 0 of a re-made gloo group reads
    rank 1's address from the previous group and its connection is refused (or hangs)."""
    script = tmp_path / "groups.py"
    script.write_text(SEVERAL_GROUPS)
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    _ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script)], env=env, capture_output=True, text=True, timeout=120))


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path / "checkpoint.pt")["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.slow
def test_two_ranks_at_half_batch_with_sync_bn_step_like_one_process(tmp_path):
    """2 ranks × B/2 with --sync-bn == 1 process × B: after one step (weights and batch-norm running stats),
    and again after a distributed --resume for a second step.

    train_fraction 0.02 keeps 30 digits, so an epoch is exactly one step of B = 16 (2 × 8 on two ranks): the
    two shards of the shared permutation are the single process's batch. Each rank's loss is the mean over its
    own equal shard, so DDP's average of the rank gradients is the gradient of the global mean.
    """
    cfg = dict(TINY, method="sla+sd", train_fraction=0.02)
    dist_out, single_out = tmp_path / "ddp", tmp_path / "single"
    _ok(_torchrun(dist_out, **cfg, batch_size=8, sync_bn=True))
    after_one = _model_state(dist_out)
    alone = train_run(TrainConfig(**cfg, batch_size=16), single_out, progress=False).metrics()
    assert alone["steps"] == 1 and json.loads((dist_out / "metrics.json").read_text())["steps"] == 1
    _assert_same_weights(after_one, _model_state(single_out))
    assert not torch.equal(after_one["backbone.features.0.1.running_mean"], torch.zeros(32))  # stats did update
    dist_loss = json.loads((dist_out / "history.json").read_text())[0]["train_loss"]
    assert dist_loss == pytest.approx(json.loads((single_out / "history.json").read_text())[0]["train_loss"],
                                      rel=1e-5)  # mean over ranks of per-rank means = global mean

    _ok(_torchrun(dist_out, "--resume", **{**cfg, "epochs": 2}, batch_size=8, sync_bn=True))  # all ranks load it
    train_run(TrainConfig(**{**cfg, "epochs": 2}, batch_size=16), single_out, resume=True, progress=False)
    assert [r["step"] for r in json.loads((dist_out / "history.json").read_text())] == [1, 2]
    after_two = _model_state(dist_out)
    assert not torch.allclose(after_two["heads.joint.weight"], after_one["heads.joint.weight"])
    _assert_same_weights(after_two, _model_state(single_out))
    with pytest.raises(LabkitError, match="trained on 2 process"):  # shards and steps per epoch would change
        train_run(TrainConfig(**{**cfg, "epochs": 3}, batch_size=8, sync_bn=True), dist_out, resume=True,
                  progress=False)
