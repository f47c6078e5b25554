"""The run cache is honest: a run is reused only by the same config, labkit version and training code; reuses are
logged; `labkit cache list` and `labkit cache clear` show and remove runs."""

from __future__ import annotations

import os
import time

import pytest

from labkit.cli import main
from labkit.training import cache
from tests.support import one_thread, tiny_config


def test_the_key_changes_with_the_code_the_version_and_the_config_but_not_the_device(monkeypatch):
    config = tiny_config()
    key = cache.run_key(config)
    assert cache.run_key(config.replace(device="auto")) == key
    assert cache.run_key(config.replace(seed=1)) != key
    monkeypatch.setattr(cache, "__version__", "9.9.9")
    assert cache.run_key(config) != key
    monkeypatch.undo()
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "edited")
    assert cache.run_key(config) != key


def test_the_fingerprint_covers_the_training_code_and_ignores_comments():
    assert {"training.engine", "training.experiment", "sla.objectives", "sla.inference", "sla.methods",
            "sla.models", "sla.modes", "sla.joint"} <= set(cache.RESULT_MODULES)
    assert len(cache.code_fingerprint()) == 12


@pytest.mark.slow
def test_a_changed_fingerprint_retrains_and_the_old_run_shows_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    config, said = tiny_config(epochs=1), []
    with one_thread():
        first = cache.cached_run(config, log=said.append)
        again = cache.cached_run(config, log=said.append)
    assert again == first
    assert said[0].startswith("training sla on digits/rotation, seed 0") and said[1].startswith("reusing cached run")
    assert cache.run_dir(config, tmp_path / "cache").name in said[1]
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "the training code changed")
    with one_thread():
        cache.cached_run(config, log=said.append)
    assert said[2].startswith("training"), "a run of other code was reused"
    runs = cache.list_runs()
    assert len(runs) == 2 and sorted(r.stale for r in runs) == [False, True]
    old = next(r for r in runs if r.stale).path
    for path in old.iterdir():  # every file of the run three days old: a folder is as old as its newest file
        os.utime(path, (time.time() - 3 * 86400,) * 2)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and "finished" in out and old.name in out
    assert main(["cache", "clear", "--older-than", "5"]) == 0 and len(cache.list_runs()) == 2
    assert main(["cache", "clear", "--older-than", "2"]) == 0
    assert [r.stale for r in cache.list_runs()] == [False] and not old.exists()
    assert main(["cache", "clear"]) == 0 and cache.list_runs() == []
    assert "1 cached run(s) removed" in capsys.readouterr().out


def test_the_log_says_how_long_a_run_trains(tmp_path, monkeypatch):
    """A run sized by `steps` is announced in steps, one sized by epochs in epochs (training itself is stubbed)."""
    monkeypatch.setattr(cache, "train_run", lambda *a, **k: None)
    said = []
    cache.cached_run(tiny_config(epochs=3), root=tmp_path, log=said.append)
    cache.cached_run(tiny_config(steps=40), root=tmp_path, log=said.append)
    assert "(3 epochs)" in said[0] and "(40 steps)" in said[1] and "epochs" not in said[1]
