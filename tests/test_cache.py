"""The run cache is honest: a run is reused only by the same config, labkit version and training code; reuses are
logged; `labkit cache list` and `labkit cache clear` show and remove runs."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time

import pytest

from labkit.cli import main
from labkit.core.errors import LabkitError
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


# ------------------------------------------------------------------------------------------------------ the lock
def test_a_second_process_waits_for_the_first_then_reuses_its_run(tmp_path):
    """Two trainers of one config (threads here: flock locks are per open file, so they exclude each other as two
    processes do): the second waits while the first trains, then reuses its run; it is trained once."""
    config, first_said, second_said = tiny_config(epochs=1), [], []
    training = threading.Event()

    def first_log(line: str) -> None:
        first_said.append(line)
        if line.startswith("training"):
            training.set()

    first = threading.Thread(target=cache.cached_run, args=(config, tmp_path), kwargs={"log": first_log})
    first.start()
    assert training.wait(60)
    run = cache.cached_run(config, tmp_path, log=second_said.append)
    first.join()
    assert run.finished and len(list(tmp_path.glob("*/metrics.json"))) == 1
    assert second_said[0].startswith(f"waiting for sla on digits/rotation, seed 0: pid {os.getpid()} on ")
    assert second_said[1].startswith("reusing cached run"), second_said
    assert sum(line.startswith("training") for line in first_said + second_said) == 1


def test_a_run_in_training_is_listed_as_such_and_clear_leaves_it(tiny_run_copy, tmp_path):
    config = tiny_config()
    run = cache.run_dir(config, tmp_path / "cache")
    shutil.copytree(tiny_run_copy("sla").path, run.path)
    mine = tmp_path / "cache" / "my-own-run"  # a run a user trained with --out into this folder: never the cache's
    shutil.copytree(run.path, mine)
    with cache.run_lock(run):
        runs = cache.list_runs(tmp_path / "cache")
        assert [r.path for r in runs] == [run.path] and runs[0].busy
        assert "training" in cache.format_runs(runs)
        assert cache.clear(tmp_path / "cache") == [] and run.finished
    assert [r.path for r in cache.clear(tmp_path / "cache")] == [run.path] and not run.path.exists()
    assert (mine / "metrics.json").is_file(), "clear removed a folder the cache did not name"


def test_a_lock_file_removed_while_a_process_waited_is_not_the_runs_lock(tmp_path):
    """`clear` removes a run's lock file while it holds it; a process that waited on that file must then lock the
    file now at the path, so it never trains alongside the process that locked the new file."""
    run = cache.RunFolder(tmp_path / "digits-rotation-sla-s0-0123456789")
    lock = tmp_path / f".{run.name}.lock"
    events, waiting, new_held = [], threading.Event(), threading.Event()

    def late() -> None:  # waits on the old file
        with cache.run_lock(run, on_wait=lambda who: waiting.set()):
            events.append(("late", "acquired", time.monotonic()))

    def newcomer() -> None:  # arrives after the file was removed: locks a new one at once
        with cache.run_lock(run):
            new_held.set()
            time.sleep(0.5)
            events.append(("newcomer", "released", time.monotonic()))

    with cache.run_lock(run):
        waiter = threading.Thread(target=late)
        waiter.start()
        assert waiting.wait(10)
        lock.unlink()
        other = threading.Thread(target=newcomer)
        other.start()
        assert new_held.wait(10)
    waiter.join()
    other.join()
    assert [e[:2] for e in sorted(events, key=lambda e: e[2])] == [("newcomer", "released"), ("late", "acquired")]


def test_a_filesystem_without_locks_is_refused_in_one_line(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache.fcntl, "flock", no_locks)
    with pytest.raises(LabkitError, match=r"cannot lock .*\(No locks available\): the run cache needs a filesystem "
                                          r"with file locks"):
        cache.cached_run(tiny_config(), tmp_path)
    assert not list(tmp_path.glob("*/config.json")), "a run started without its lock"
