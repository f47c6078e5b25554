"""Extra training callbacks: the TensorBoard one writes event files that read back with the logged values."""

from __future__ import annotations

import json

import pytest

from labkit.cli import main
from labkit.training.experiment import train_run
from labkit.training.tracking import TensorBoard
from tests.support import one_thread, tiny_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(log_dir):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_logs_loss_per_step_and_accuracy_and_lr_per_evaluation(tmp_path):
    config = tiny_config(method="sla+sd", epochs=2)
    with one_thread():
        train_run(config, tmp_path / "run", progress=False, callbacks=(TensorBoard(tmp_path / "tb"),))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    scalars = _scalars(tmp_path / "tb")
    steps = history[-1]["step"]
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, steps + 1))  # every step, numbered from 1
    assert all(v > 0 for _, v in scalars["train/loss"])
    assert [s for s, _ in scalars["train/lr"]] == [r["step"] for r in history]
    for mode in ("single", "aggregated", "distilled"):
        logged = [v for _, v in scalars[f"val/acc_{mode}"]]
        assert logged == pytest.approx([r["val_acc"][mode] for r in history], abs=1e-6)
    mean_epoch_1 = sum(v for s, v in scalars["train/loss"] if s <= history[0]["step"]) / history[0]["step"]
    assert mean_epoch_1 == pytest.approx(history[0]["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_the_cli_takes_tensorboard_and_any_callback(tmp_path, capsys):
    argv = ["train", "--epochs", "1", "--train-fraction", "0.3", "--batch-size", "64", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb"),
            "--callback", "labkit.training.callbacks:EpochLine"]  # any importable Callback class
    with one_thread():
        assert main(argv) == 0
    assert "[labkit:epoch] sla seed 0: epoch 1/1 loss" in capsys.readouterr().out
    assert "train/loss" in _scalars(tmp_path / "tb")


def test_a_bad_callback_reference_is_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--callback", "tests.nowhere:X"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: --callback tests.nowhere:X: cannot make a callback") and err.count("\n") == 1
