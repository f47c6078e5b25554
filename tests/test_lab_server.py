"""`make lab`: JupyterLab on 127.0.0.1 with a token, its kernels talking over IPC (Unix sockets), not TCP.

The test reads the flags the Makefile passes (LAB_FLAGS), starts JupyterLab with them (labkit.lab.browser), starts
a kernel through JupyterLab's REST API, and reads that kernel's connection file."""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from labkit.lab import browser
from tests.support import ROOT


def makefile_lab_flags() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^LAB_FLAGS\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "the Makefile names make lab's flags in LAB_FLAGS"
    lab = text[text.index("\nlab:"):].split("\n\n")[0]
    assert "$(LAB_FLAGS)" in lab, "make lab passes LAB_FLAGS to jupyter lab"
    return match.group(1).split()


def test_make_lab_asks_for_ipc_kernels_on_loopback():
    flags = makefile_lab_flags()
    assert "--KernelManager.transport=ipc" in flags and "--ServerApp.ip=127.0.0.1" in flags


def _api(base: str, token: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(f"{base}api/{path}", method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read() or b"{}")


@pytest.mark.slow
def test_make_labs_kernels_talk_over_ipc(tmp_path):
    # a short folder for the runtime files: a Unix socket's path must stay under about 100 bytes
    work = Path(tempfile.mkdtemp(prefix="lk-lab-"))
    try:
        flags = [f for f in makefile_lab_flags() if not f.startswith("--ServerApp.ip=")]  # jupyterlab() sets it
        with browser.jupyterlab(tmp_path, work, args=flags) as (base, token):
            with pytest.raises(urllib.error.HTTPError):  # the token is required, as today
                urllib.request.urlopen(f"{base}api/kernels", timeout=30)
            kernel = _api(base, token, "kernels", "POST")
            connection = work / "runtime" / f"kernel-{kernel['id']}.json"
            info = json.loads(connection.read_text())
            assert info["transport"] == "ipc" and info["ip"].startswith(str(work))
            sockets = [Path(f"{info['ip']}-{info[f'{name}_port']}") for name in ("shell", "iopub", "stdin",
                                                                                  "control", "hb")]
            client = BlockingKernelClient(connection_file=str(connection))
            client.load_connection_file()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=90)  # a kernel_info request answered over the Unix sockets
                reply = client.execute_interactive("import ipykernel; print(ipykernel.get_connection_info("
                                                   "unpack=True)['transport'])", timeout=60)
                assert reply["content"]["status"] == "ok"
            finally:
                client.stop_channels()
            assert all(stat.S_ISSOCK(s.stat().st_mode) for s in sockets), sockets
    finally:
        shutil.rmtree(work, ignore_errors=True)
