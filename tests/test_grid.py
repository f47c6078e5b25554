"""Grids of runs and of notebooks, in this process and on Ray, and the bad grid and cache input a new user tries.

- Bad input (a seed twice, an empty grid, --workers 0, a negative --older-than, a wrong address, Ray missing, more
  GPUs per run than a node has) is one line, exit 2, and nothing on disk changes; `docs/errors.md` lists each
  message (regenerate that section with `PYTHONPATH=. python tests/test_grid.py`).
- A grid stopped mid-run and started again trains only what is missing and resumes the interrupted run.
- A failed notebook execution never replaces the last good copy.
- On Ray (marked `ray`; they share one local Ray, then start a two-node cluster on 127.0.0.1): `--workers 2` gives
  the numbers of `--workers 1` run by run; every Ray service listens on 127.0.0.1 with token authentication and no
  dashboard; a SIGKILLed worker is retried and the grid ends with the same numbers; a run on bad input fails alone;
  a sweep runs one kernel per point; a grid runs across two nodes.

The reference numbers are those of the same configs trained in this process, one after another.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import torch

from labkit.core import workers as engine
from labkit.core.errors import LabkitError
from labkit.core.paths import kernel_pythonpath
from labkit.lab import runner
from labkit.training import cache
from labkit.training.cache import run_dir
from labkit.training.grid import GridError, run_grid
from labkit.training.run_folder import RunFolder
from tests.support import (
    TINY_ARGS,
    SigintAfterOptimizerStep,
    assert_one_line_error,
    command,
    documented,
    observe,
    run_cli,
    snapshot,
    tiny_config,
    write_error_table,
    write_notebook,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
GRID = ["--methods", "sla,da", "--seeds", "0,1"]  # four tiny runs (tests.support.TINY)
GRID_CONFIGS = [tiny_config(method=m, seed=s) for m in ("sla", "da") for s in (0, 1)]
VICTIM = tiny_config(seed=7, epochs=8)  # long enough to be killed between its first checkpoint and its end
BAD = tiny_config(dataset="imagefolder", data_dir="/nonexistent/photos")  # fails when its data loads


# ------------------------------------------------------------------------------------------------------- helpers
def numbers(folder: RunFolder) -> tuple[dict, list]:
    """A run's metrics and each epoch's training record (step, learning rate, loss): what must not depend on how
    the grid ran. Wall times and the epochs that validated are left out: without `log_every` a run validates as
    often as keeps bookkeeping near 5 % of its measured time, so which epochs carry `val_acc` follows the clock."""
    metrics = {k: v for k, v in folder.metrics().items() if "seconds" not in k}
    history = [{k: r[k] for k in ("epoch", "step", "lr", "train_loss")} for r in folder.history()]
    return metrics, history


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tuple[dict, list]]:
    """The numbers of GRID (through `compare --workers 1`), VICTIM and the partner of BAD, trained in this process."""
    root = tmp_path_factory.mktemp("one-by-one")
    rc, _, err = run_cli("compare", *GRID, *TINY_ARGS, "--workers", "1", "--out", str(root), "--no-progress")
    assert rc == 0, err
    run_grid([VICTIM, tiny_config(method="da", seed=3)], root, log=lambda line: None)
    return {p.parent.name: numbers(RunFolder(p.parent)) for p in root.glob("*/metrics.json")}


def ray_or_skip() -> None:
    if importlib.util.find_spec("ray") is None:  # not imported here: labkit sets Ray's environment first
        if os.environ.get("CI"):
            pytest.fail(f"the Ray tests need Ray: {engine.INSTALL_HINT}")
        pytest.skip(f"Ray is not installed ({engine.INSTALL_HINT})")


@pytest.fixture(scope="module")
def local_ray():
    """The local Ray labkit starts for `--workers 2` (two one-CPU slots; the one the first Ray test started, or a
    new one), shared by this module's Ray tests and stopped after them."""
    ray_or_skip()
    said = []
    ray = engine.prepare([engine.Resources()] * 2, 2, log=said.append)
    print("\n" + "\n".join(said))
    yield ray
    engine.shutdown()


def listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of these processes."""
    found = []
    for p in processes:
        try:
            found += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def this_process_tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


# ------------------------------------------------------------------------------------------------- bad input
NEW = ["--out", "TMP/new"]  # a folder no refused command may create

# (what is wrong, command line with TMP for the test folder, fragments the message must hold)
CASES = [
    ("cache clear, a negative age", ["cache", "clear", "--older-than", "-1"],
     ["--older-than takes a number of days >= 0", "got -1", "nothing was removed"]),
    ("cache clear, an age that is not a number", ["cache", "clear", "--older-than", "nan"], ["got nan"]),
    ("compare, a seed twice", ["compare", "--seeds", "0,0", *NEW], ["--seeds has 0 twice"]),
    ("compare, a method twice", ["compare", "--methods", "sla,da,sla", *NEW], ["--methods has sla twice"]),
    ("compare, no workers", ["compare", "--workers", "0", *NEW], ["--workers must be a positive integer", "got 0"]),
    ("compare, negative workers", ["compare", "--workers", "-2", *NEW], ["got -2"]),
    ("compare, workers not a number", ["compare", "--workers", "two", *NEW], ["argument --workers: invalid int"]),
    ("compare, a GPU share over one", ["compare", "--workers", "2", "--gpus-per-run", "1.5", *NEW],
     ["--gpus-per-run takes a share of one GPU in (0, 1]", "got 1.5"]),
    ("compare, no GPU per run", ["compare", "--workers", "2", "--gpus-per-run", "0", *NEW], ["got 0.0"]),
    ("compare, GPUs per run for runs on the CPU",
     ["compare", "--workers", "2", "--gpus-per-run", "0.5", "--device", "cpu", *NEW],
     ["--gpus-per-run 0.5 is for runs on a GPU", "none of these runs uses one"]),
    ("compare, cuda without a GPU", ["compare", "--workers", "2", "--device", "cuda", *NEW],
     ["device 'cuda' requested but no CUDA GPU is visible to PyTorch"]),
    ("compare, an address that is not one", ["compare", "--address", "head-node", *NEW],
     ["--address takes HOST:PORT", "got 'head-node'"]),
    ("compare, no Ray at the address", ["compare", "--address", "127.0.0.1:9", *NEW],
     ["no Ray cluster answers at --address 127.0.0.1:9", "start one with 'ray start --head'"]),
    ("notebooks, an empty grid", ["notebooks", "--preset", "smoke", "--only", "00", "-p", "SEEDS=[]", *NEW],
     ["parameter SEEDS of notebook 00_quick_tour is empty", "needs at least one value"]),
    ("notebooks, a seed twice", ["notebooks", "--preset", "smoke", "--only", "02", "-p", "SEEDS=[0, 0]", *NEW],
     ["parameter SEEDS of notebook 02_invariance_six_nine has 0 twice"]),
    ("notebooks, no workers", ["notebooks", "--preset", "smoke", "--only", "03", "-p", "WORKERS=0", *NEW],
     ["parameter WORKERS of notebook 03_compare_methods must be a positive integer", "got 0"]),
    ("sweep, no values", ["sweep", "02", "-p", "SEEDS=", *NEW], ["-p SEEDS= gives no values"]),
    ("sweep, a value twice", ["sweep", "02", "-p", "SEEDS=0,0", *NEW], ["-p SEEDS has 0 twice"]),
    ("sweep, a parameter twice", ["sweep", "02", "-p", "SEEDS=0", "-p", "SEEDS=1", *NEW],
     ["-p SEEDS is given twice"]),
    ("sweep, no workers", ["sweep", "02", "-p", "SEEDS=0,1", "--workers", "0", *NEW], ["--workers must be"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs) -> Path:
    """A run cache holding one finished run (the cases must leave it alone) and nothing else."""
    tmp = tmp_path_factory.mktemp("grid-world")
    run = tiny_runs("sla")
    shutil.copytree(run.path, run_dir(tiny_config(), tmp / "cache").path)
    return tmp


@pytest.fixture
def in_world(world, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(world / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return world


@pytest.mark.parametrize("what,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_grid_and_cache_input_is_one_line_and_changes_nothing(what, argv, fragments, in_world):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    before = snapshot(in_world)
    rc, err = observe(argv, in_world)
    line = assert_one_line_error(rc, err, *fragments)
    assert snapshot(in_world) == before, "a refused command changed files on disk"
    assert not (in_world / "new").exists(), "a refused command created its --out folder"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized(), "a refused command started Ray"
    assert documented(DOCS, "grid-table").get(command(argv)) == line, f"docs/errors.md is stale for {what}"


def test_without_ray_a_grid_says_how_to_install_it(in_world, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    before = snapshot(in_world)
    rc, err = observe(["compare", "--workers", "2", *TINY_ARGS, *NEW], in_world)
    assert_one_line_error(rc, err, "needs Ray, which is not installed", 'pip install "labkit[sweep]"')
    assert snapshot(in_world) == before and not (in_world / "new").exists()


def test_more_gpus_per_run_than_the_machine_has_is_refused_before_anything_starts(in_world, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a one-GPU machine, as far as the grid can tell
    rc, err = observe(["compare", "--workers", "2", "--gpus-per-run", "2", *NEW], in_world)
    assert_one_line_error(rc, err, "--gpus-per-run 2 is more GPUs than this machine has (1)")
    assert not (in_world / "new").exists()


def test_the_python_api_refuses_an_empty_grid_and_a_run_twice(tmp_path):
    with pytest.raises(LabkitError, match="the grid is empty"):
        run_grid([], tmp_path)
    with pytest.raises(LabkitError, match=r"the same run twice \(sla seed 0 on digits/rotation: configs 1 and 3\)"):
        run_grid([tiny_config(), tiny_config(seed=1), tiny_config()], tmp_path)
    with pytest.raises(LabkitError, match="workers must be a positive integer"):
        run_grid([tiny_config()], tmp_path, workers=0)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ in this process
@pytest.mark.slow
def test_a_stopped_grid_trains_only_what_is_missing_and_resumes_the_interrupted_run(reference, tmp_path,
                                                                                   monkeypatch):
    configs = [tiny_config(), VICTIM, tiny_config(method="da")]
    root, real = tmp_path / "stopped", cache.train_run

    def ctrl_c_in_the_victim(config, run, callbacks=(), **kw):  # Ctrl-C in the victim's step 20 of 56
        extra = (SigintAfterOptimizerStep(at=20),) if config == VICTIM else ()
        return real(config, run, callbacks=(*callbacks, *extra), **kw)

    monkeypatch.setattr(cache, "train_run", ctrl_c_in_the_victim)
    with pytest.raises(KeyboardInterrupt):
        run_grid(configs, root, log=lambda line: None)
    monkeypatch.undo()
    first, victim, last = (run_dir(c, root) for c in configs)
    assert first.finished and victim.resumable and not victim.finished and not last.path.exists()
    kept = first.file("metrics.json").stat().st_mtime_ns
    said = []
    folders = run_grid(configs, root, log=said.append)
    assert first.file("metrics.json").stat().st_mtime_ns == kept, "a finished run was trained again"
    assert any(line.startswith("reusing cached run " + first.name) for line in said)
    assert any(line.startswith("resuming sla on digits/rotation, seed 7") for line in said)
    assert any(line.startswith("training da on digits/rotation, seed 0") for line in said)
    for folder in folders:
        assert numbers(folder) == reference[folder.name], folder.name


@pytest.mark.slow
def test_a_run_on_bad_input_fails_alone_in_this_process(reference, tmp_path):
    partner = tiny_config(method="da", seed=3)
    said = []
    with pytest.raises(GridError) as failed:
        run_grid([BAD, partner], tmp_path, log=said.append)
    message = str(failed.value)
    assert message.startswith("1 of 2 runs failed (sla seed 0 on imagefolder/rotation: imagefolder root "
                              "/nonexistent/photos does not exist") and "\n" not in message
    assert failed.value.folders[0] is None
    assert numbers(failed.value.folders[1]) == reference[failed.value.folders[1].name]
    assert any("FAILED: imagefolder root /nonexistent/photos does not exist" in line for line in said)


@pytest.fixture
def lab(tmp_path) -> Path:
    """A folder of throwaway notebooks and a preset: 00_inverse records VALUE and 1 / VALUE (fails for 0)."""
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "tiny.yaml").write_text("notebooks:\n  '00': {VALUE: 5}\n")
    write_notebook(tmp_path / "nb" / "00_inverse.ipynb", 'record.value(OUT_DIR, "value", VALUE)\n'
                    'record.value(OUT_DIR, "inverse", 1 / VALUE)\nrecord.value(OUT_DIR, "pid", os.getpid())')
    return tmp_path


@pytest.mark.slow
def test_a_failed_execution_never_replaces_the_last_good_copy(lab):
    def run(**overrides):
        return runner.run_notebooks("tiny", overrides=overrides, notebooks=lab / "nb", presets=lab / "nb",
                                    out_root=lab / "out", log=lambda line: None)

    run()
    out = lab / "out" / "tiny"
    good = {name: (out / name).read_bytes() for name in ("00_inverse.ipynb", "00_inverse.html",
                                                         "00_inverse/results.json")}
    good_summary = json.loads((out / "summary.json").read_text())["notebooks"]
    with pytest.raises(runner.NotebookError, match="ZeroDivisionError.*partial output kept in .*00_inverse.failed"
                                                   r".ipynb; the last good copy 00_inverse.ipynb is as it was"):
        run(VALUE=0)
    assert {name: (out / name).read_bytes() for name in good} == good, "the failed execution replaced a good copy"
    assert json.loads((out / "summary.json").read_text())["notebooks"] == good_summary
    failed = nbformat.read(out / "00_inverse.failed.ipynb", as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert (out / "00_inverse.failed.html").is_file()
    assert json.loads((out / "00_inverse" / "results.failed.json").read_text()) == {"value": 0.0}
    assert run(VALUE=2)["notebooks"]["00_inverse"]["results"]["inverse"] == 0.5
    assert not list(out.glob("*.failed.*")) and not (out / "00_inverse" / "results.failed.json").exists()


# -------------------------------------------------------------------------------------------------------- on Ray
@pytest.mark.slow
@pytest.mark.ray
def test_when_a_grid_starts_a_local_ray_this_process_trains_runs_too(reference, tmp_path):
    """The first Ray test: it starts the module's local Ray, through a grid. Ray's workers import this labkit, but
    this process's PYTHONPATH stays as it was (a pip install run from here later must not see the checkout)."""
    ray_or_skip()
    engine.shutdown()
    before = os.environ.get("PYTHONPATH")
    said, heard = [], []
    folders = run_grid(GRID_CONFIGS, tmp_path, workers=2, log=said.append,
                       on_done=lambda config, outcome: heard.append(outcome))
    print("\n" + "\n".join(said))
    assert any(o.pid == os.getpid() and not o.node_id for o in heard), "no run trained in this process"
    assert engine.started()["where"] == "local" and sys.modules["ray"].is_initialized()
    assert os.environ.get("PYTHONPATH") == before
    for folder in folders:
        assert numbers(folder) == reference[folder.name], f"{folder.name} differs between --workers 1 and 2"


@pytest.mark.slow
@pytest.mark.ray
def test_workers_2_give_the_numbers_of_workers_1_run_by_run(reference, local_ray, tmp_path):
    rc, out, err = run_cli("compare", *GRID, *TINY_ARGS, "--workers", "2", "--out", str(tmp_path), "--no-progress")
    print(out)
    assert rc == 0, err
    folders = [run_dir(c, tmp_path) for c in GRID_CONFIGS]
    for folder in folders:
        assert numbers(folder) == reference[folder.name], f"{folder.name} differs between --workers 1 and 2"
    assert len(set(re.findall(r"\(pid (\d+)\)", out))) == 2, "the runs did not train on two worker processes"
    assert json.loads((tmp_path / "summary.json").read_text())[0]["seeds"] == 2


@pytest.mark.slow
@pytest.mark.ray
def test_the_local_ray_listens_on_loopback_only_with_token_authentication_and_no_dashboard(local_ray):
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    sockets = listening(this_process_tree())
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, names
    assert [s for s in sockets if not loopback(s[1])] == [], "a Ray service listens beyond this machine"
    assert all(port != 8265 for _, _, port in sockets), "the dashboard is up"
    assert local_ray.cluster_resources()["object_store_memory"] == engine.OBJECT_STORE_BYTES
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    with grpc.insecure_channel(local_ray.get_runtime_context().gcs_address) as channel:
        gcs = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer not-the-token")]):
            with pytest.raises(grpc.RpcError) as refused:
                gcs.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        gcs.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=[("authorization", f"Bearer {token}")],
                         timeout=10)
    print(f"\nlistening, all on loopback: {sorted(sockets)}")


def _holder(lock: Path) -> int | None:
    """The pid of the process (of this tree) that has `lock` open: the worker training that run."""
    for p in this_process_tree()[1:]:
        try:
            if any(f.path == str(lock) for f in p.open_files()):
                return p.pid
        except psutil.Error:
            pass
    return None


@pytest.mark.slow
@pytest.mark.ray
def test_a_killed_worker_is_retried_and_the_grid_ends_with_the_same_numbers(reference, local_ray, tmp_path):
    configs, victim = [VICTIM, tiny_config()], run_dir(VICTIM, tmp_path)
    killed: dict[str, object] = {}

    def kill_the_victim_after_its_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while not victim.resumable and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = _holder(victim.path.parent / f".{victim.name}.lock")
        killed.update(pid=pid, finished=victim.finished, epochs=len(victim.history()))
        if pid:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_victim_after_its_first_checkpoint)
    killer.start()
    said, heard = [], {}
    folders = run_grid(configs, tmp_path, workers=2, log=said.append,
                       on_done=lambda config, outcome: heard.update({config.seed: outcome}))
    killer.join()
    print("\n" + "\n".join(said) + f"\nkilled: {killed}")
    assert killed["pid"] and not killed["finished"], "the victim was not killed in the middle of its run"
    assert heard[7].ok and heard[7].pid != killed["pid"] and heard[7].value["how"] == "resumed from its checkpoint"
    for folder in folders:
        assert numbers(folder) == reference[folder.name], f"{folder.name} differs from the undisturbed run"


@pytest.mark.slow
@pytest.mark.ray
def test_a_run_on_bad_input_fails_alone_on_ray(reference, local_ray, tmp_path):
    said = []
    with pytest.raises(GridError) as failed:
        run_grid([BAD, tiny_config(method="da", seed=3)], tmp_path, workers=2, log=said.append)
    message = str(failed.value)
    assert message.startswith("1 of 2 runs failed (sla seed 0 on imagefolder/rotation: imagefolder root "
                              "/nonexistent/photos does not exist") and "\n" not in message
    partner = failed.value.folders[1]
    assert numbers(partner) == reference[partner.name]


@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_runs_one_kernel_per_point_on_ray_and_a_failing_point_fails_alone(lab, local_ray):
    said = []
    with pytest.raises(runner.NotebookError, match=r"1 of 3 points of the sweep failed \(VALUE=0: notebook "
                                                   r"00_inverse.ipynb failed in cell \[\d+\].*ZeroDivisionError"):
        runner.sweep("00", {"VALUE": [2, 0, 4]}, preset="tiny", notebooks=lab / "nb", presets=lab / "nb",
                     out_root=lab / "sw", log=said.append, workers=2)
    table = json.loads((lab / "sw" / "00_inverse" / "sweep.json").read_text())
    assert [(r["point"], r["results"]["inverse"]) for r in table["rows"]] == [({"VALUE": 2}, 0.5),
                                                                            ({"VALUE": 4}, 0.25)]
    kernels = {r["results"]["pid"] for r in table["rows"]}
    assert len(kernels) == 2 and os.getpid() not in kernels
    print("\n" + "\n".join(said))


@pytest.fixture
def two_nodes(local_ray, monkeypatch):
    """A Ray cluster of two one-CPU nodes on 127.0.0.1 (Ray's own test utility, in this process), with token
    authentication; RAY_ADDRESS names it, as on a machine that joined a cluster."""
    engine.shutdown()  # one Ray per driver: the local one goes first
    ray = engine.import_ray(local=True)
    from ray.cluster_utils import Cluster

    began = time.perf_counter()
    here = os.pathsep.join(map(str, kernel_pythonpath()))  # the nodes' workers import this labkit
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")])))
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": engine.OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    print(f"\ntwo-node cluster at {cluster.address} up in {time.perf_counter() - began:.1f} s")
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    yield cluster
    engine.shutdown()
    cluster.shutdown()
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.ray
def test_a_grid_runs_across_two_nodes_with_the_numbers_of_one_process(reference, two_nodes, tmp_path):
    rc, out, err = run_cli("compare", *GRID, *TINY_ARGS, "--out", str(tmp_path), "--no-progress")
    print(out)
    assert rc == 0, err
    assert "joined the Ray cluster (2 nodes" in out
    nodes = set(re.findall(r"on node ([0-9a-f]{8}) at 127\.0\.0\.1", out))
    assert len(nodes) == 2, f"both nodes should have trained runs, these did: {nodes}"
    for config in GRID_CONFIGS:
        folder = run_dir(config, tmp_path)
        assert numbers(folder) == reference[folder.name], f"{folder.name} differs from the one-process run"
    sockets = listening(this_process_tree())
    assert sockets and [s for s in sockets if not loopback(s[1])] == []


# ------------------------------------------------------------------------------------------ docs/errors.md table
def write_docs() -> None:
    """Run every case for real and put the observed messages into docs/errors.md between the grid markers."""
    import tempfile

    from labkit.training.experiment import train_run

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train_run(tiny_config(), run_dir(tiny_config(), tmp / "cache").path, progress=False)
        os.environ["LABKIT_CACHE"] = str(tmp / "cache")
        os.environ.pop("RAY_ADDRESS", None)
        write_error_table(DOCS, "grid-table", CASES, tmp)


# ------------------------------------------------------------------------------------------------- named settings
def test_compare_settings_trains_one_grid_and_gives_each_setting_its_own_comparison(reference, tmp_path):
    """Notebook 07's engine: every setting's runs go as one grid (a config two settings share trains once), and
    each setting's comparison is the one `compare` gives for its configs alone."""
    from labkit.training import report

    sla, da = GRID_CONFIGS[:2], GRID_CONFIGS[2:]
    said = []
    got = report.compare_settings({"sla": sla, "both": [*sla, *da]}, tmp_path, log=said.append)
    assert sum(line.startswith("training ") for line in said) == 4, said  # the shared sla runs train once
    assert list(got) == ["sla", "both"] and [c.seed for c in got["both"].configs] == [0, 1, 0, 1]
    alone = report.compare([*sla, *da], tmp_path, log=lambda line: None)
    assert got["both"].rows == alone.rows and got["sla"].rows == report.compare(sla, tmp_path, log=print).rows
    for folder in got["both"].folders:
        assert numbers(folder) == reference[folder.name]  # the numbers of compare, one after another


@pytest.mark.slow
def test_a_kernel_that_started_a_local_ray_shuts_down_quietly_and_in_time(capfd):
    """The kernel stops its Ray when asked to shut down, so jupyter_client's 5 s wait does not run out: no SIGTERM
    to the kernel, and no stack dump of Ray's signal handler in the terminal of a notebook that succeeded."""
    ray_or_skip()
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(Path(__file__).resolve().parent.parent))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(60)
        reply = kc.execute_interactive("from labkit.core import workers; workers.start(None, 2.0)", timeout=120)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        began = time.perf_counter()
        km.shutdown_kernel(now=False)
    took = time.perf_counter() - began
    assert "SIGTERM" not in capfd.readouterr().err
    assert took < km.shutdown_wait_time, f"the kernel took {took:.1f} s to stop: it was sent SIGTERM"


if __name__ == "__main__":
    write_docs()
