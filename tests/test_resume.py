"""Interrupted and failing runs lose nothing.

- Ctrl-C lands at any moment, even between `optimizer.step()` and the scheduler; the run stops at the next step
  boundary, saves a consistent checkpoint, and the resumed run ends with bit-identical weights and metrics.
- SIGKILL at several moments, one of them inside a checkpoint write, leaves the last good checkpoint loadable and
  `--resume` still reaches exactly the uninterrupted run's weights and metrics.
- A NaN loss stops the run naming the step, the likely cause and the last good checkpoint, which stays intact.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labkit.core.device import resolve_device
from labkit.data.datasets import load_data
from labkit.data.splits import DataBundle, Split
from labkit.training.callbacks import Checkpointer
from labkit.training.checkpoint import load_checkpoint
from labkit.training.engine import Learner, NonFiniteLossError
from labkit.training.experiment import train_run
from labkit.training.resolve import resolve
from labkit.training.run_folder import RunFolder
from tests.support import (
    ROOT,
    TINY_ARGS,
    SigintAfterOptimizerStep,
    assert_one_line_error,
    env,
    one_thread,
    run_cli,
    run_labkit,
    snapshot,
    tiny_config,
)

CPU = resolve_device("cpu")
STEPS_PER_EPOCH = 7  # 126 training images of the tiny digits run, batches of 16, last partial batch dropped


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _learner(config, data, callbacks=()) -> Learner:
    run = resolve(config, CPU, data)
    return Learner(run.model, run, list(callbacks))


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted 2-epoch run: (config, data, learner after fit)."""
    config = tiny_config()
    data = load_data("digits", config.train_fraction)
    with one_thread():
        learner = _learner(config, data)
        learner.fit()
    assert learner.steps_per_epoch == STEPS_PER_EPOCH
    return config, data, learner


def test_ctrl_c_mid_step_resumes_to_identical_weights(reference, tmp_path):
    config, data, ref = reference
    path = tmp_path / "checkpoint.pt"
    handler_before = signal.getsignal(signal.SIGINT)
    first = _learner(config, data, [Checkpointer(RunFolder(tmp_path)), SigintAfterOptimizerStep(at=10)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert signal.getsignal(signal.SIGINT) is handler_before, "fit did not restore the Ctrl-C handler"
    state = load_checkpoint(path)
    assert {"model", "optimizer", "scheduler", "generator", "epoch_generator", "torch_rng", "history",
            "config"} <= state.keys()
    assert (state["epoch"], state["step"], state["epoch_step"]) == (1, 10, 10 - STEPS_PER_EPOCH)
    assert state["scheduler"]["last_epoch"] == 10, "the checkpoint holds half a step"
    assert len(state["history"]) == 1 and state["config"] == config.to_dict()

    resumed = _learner(config, data)
    resumed.load_state_dict(state)
    history = resumed.fit()
    assert_same_weights(resumed.model.state_dict(), ref.model.state_dict())
    assert_same_weights(resumed.optimizer.state_dict()["state"][0], ref.optimizer.state_dict()["state"][0])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ref.history]


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(reference, tmp_path):
    config, data, _ = reference
    path = tmp_path / "checkpoint.pt"
    learner = _learner(config, data, [Checkpointer(RunFolder(tmp_path)), SigintAfterOptimizerStep(at=10, times=2)])
    with pytest.raises(KeyboardInterrupt):
        learner.fit()
    assert not learner.interrupted_cleanly
    assert load_checkpoint(path)["step"] == STEPS_PER_EPOCH, "a half-done step replaced the epoch-end checkpoint"


def _poisoned(data: DataBundle) -> DataBundle:
    x = data.train.x.clone()
    x[::5] = float("inf")  # every fifth training image: some batch of every epoch has one
    return DataBundle(data.name, data.classes, Split(x, data.train.y), data.val, data.test, data.shape,
                      data.augment, data.mean, data.std)


def test_nan_loss_names_step_cause_and_keeps_last_good_checkpoint(reference, tmp_path):
    config, data, _ = reference
    out = tmp_path / "run"
    train_run(config.replace(epochs=1), out, data=data, progress=False)
    before = snapshot(out)
    with pytest.raises(NonFiniteLossError) as e:
        train_run(config, out, resume=True, data=_poisoned(data), progress=False)
    msg = str(e.value)
    step = int(re.search(r"loss became NaN or infinite at step (\d+) \(epoch 2\)", msg).group(1))
    assert STEPS_PER_EPOCH < step <= 2 * STEPS_PER_EPOCH
    assert "likely cause: the learning rate is too high" in msg
    assert f"the last good checkpoint {out / 'checkpoint.pt'} is intact" in msg
    after = snapshot(out)
    del after["config.json"], before["config.json"]  # the resumed run's config (epochs=2) is recorded at its start
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert after == before, "the failed run changed the last good checkpoint, history or metrics"
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_nan_loss_from_the_cli(tmp_path):
    rc, _, err = run_cli("train", *TINY_ARGS, "--lr", "1e6", "--out", str(tmp_path / "run"), "--no-progress")
    line = assert_one_line_error(rc, err, "loss became NaN or infinite at step", "(epoch 1)",
                                 "likely cause: the learning rate is too high", "lr=1000000.0",
                                 "no checkpoint was written yet")
    assert int(re.search(r"at step (\d+)", line).group(1)) <= STEPS_PER_EPOCH
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------------- killed training processes
def _hooked(hook: str, marker: Path, seconds: float, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "_hooked_train.py"), hook, str(marker),
                             str(seconds), "--", *argv], env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the hook: {proc.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "the hook was never reached"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_anywhere_resume_reaches_the_uninterrupted_result(tmp_path):
    """3 epochs of 7 steps, bookkeeping every epoch. Kill inside the epoch-2 checkpoint write, Ctrl-C in the middle
    of step 10, kill in the middle of step 16; after each, `--resume`; the final weights and metrics equal an
    uninterrupted run's."""
    args = [*TINY_ARGS, "--epochs", "3", "--log-every", "1", "--no-progress"]  # a checkpoint every epoch
    ref_out, out = tmp_path / "reference", tmp_path / "run"
    ckpt = out / "checkpoint.pt"

    # 1. SIGKILL with the epoch-2 checkpoint written to its temporary file but not yet renamed into place
    proc = _hooked("in-write:2", tmp_path / "m1", 600, "train", *args, "--out", str(out))
    _wait_for(tmp_path / "m1", proc)
    _kill(proc)
    assert len(list(out.glob(".checkpoint.pt.*.tmp"))) == 1, "the interrupted write left no temporary file"
    state = load_checkpoint(ckpt)  # the epoch-1 checkpoint, whole
    assert (state["epoch"], state["step"]) == (1, STEPS_PER_EPOCH)

    # 2. Ctrl-C in the middle of step 10 (after optimizer.step, before the scheduler): saved at the step boundary
    proc = _hooked("mid-step:10", tmp_path / "m2", 2, "train", "--out", str(out), "--resume", "--no-progress")
    _wait_for(tmp_path / "m2", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("labkit: interrupted; the checkpoint holds the progress")
    state = load_checkpoint(ckpt)
    assert (state["epoch"], state["step"], state["epoch_step"]) == (1, 10, 10 - STEPS_PER_EPOCH)
    assert not list(out.glob(".*.tmp")), "resume did not clear the half-written temporary file"

    # 3. SIGKILL in the middle of step 16 (epoch 3): the epoch-2 checkpoint stays
    proc = _hooked("mid-step:16", tmp_path / "m3", 600, "train", "--out", str(out), "--resume", "--no-progress")
    _wait_for(tmp_path / "m3", proc)
    before = snapshot(out)
    _kill(proc)
    assert snapshot(out) == before
    assert load_checkpoint(ckpt)["step"] == 2 * STEPS_PER_EPOCH

    # 4. resume to the end, and the uninterrupted reference
    done = run_labkit("train", "--out", str(out), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    train_run(tiny_config(epochs=3), ref_out, progress=False)  # in this process, also on one thread
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (out, ref_out)]
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"]
    assert metrics[0]["confusion"] == metrics[1]["confusion"]
    assert metrics[0]["steps"] == metrics[1]["steps"] == 3 * STEPS_PER_EPOCH
    final = [load_checkpoint(d / "checkpoint.pt") for d in (out, ref_out)]
    assert_same_weights(final[0]["model"], final[1]["model"])
    losses = [[r["train_loss"] for r in s["history"]] for s in final]
    assert losses[0] == losses[1] and len(losses[0]) == 3
