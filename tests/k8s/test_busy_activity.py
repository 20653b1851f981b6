"""The culler's signal, for real: a Jupyter server configured the way student pods are (the
extension file and its JSON switch, both from the values) keeps reporting activity while a
silent training cell runs, and stops once the kernel is idle."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from k8s_support import free_port
from torchclass_deploy import layers

pytestmark = pytest.mark.k8s
TOKEN = "busy-activity-test"


def status(port):
    url = f"http://127.0.0.1:{port}/api/status?no_track_activity=1"
    req = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def api(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"{}"
                                 if method == "POST" else None,
                                 headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def parse(stamp):
    return datetime.fromisoformat(stamp).timestamp()


@pytest.fixture
def server(tmp_path):
    values = layers.load_values()
    files = values["jupyterhub"]["singleuser"]["extraFiles"]
    etc = tmp_path / "etc-jupyter"
    # The same two files the chart mounts into every student pod.
    switch = etc / Path(files["busy-activity-config"]["mountPath"]).relative_to("/etc/jupyter")
    switch.parent.mkdir(parents=True)
    switch.write_text(json.dumps(files["busy-activity-config"]["data"]))
    module_dir = tmp_path / "python"
    module_dir.mkdir()
    (module_dir / "torchclass_busy_activity.py").write_text(files["busy-activity"]["stringData"])
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(etc), "PYTHONPATH": str(module_dir),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path),
           "TORCHCLASS_BUSY_CHECK_SECONDS": "0.5", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "server.log", "w") as log:
        yield from run_server(port, env, log, tmp_path)


def run_server(port, env, log, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", "--allow-root", "--no-browser",
         f"--ServerApp.root_dir={tmp_path}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            status(port)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.2)
    yield port, tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    print((tmp_path / "server.log").read_text()[-3000:])


def test_busy_kernel_counts_as_activity(server):
    from jupyter_client import BlockingKernelClient

    port, tmp = server
    kernel = api(port, "/api/kernels", method="POST")
    client = BlockingKernelClient()
    client.load_connection_file(str(tmp / "runtime" / f"kernel-{kernel['id']}.json"))
    # No heartbeat channel: on a loaded CI machine missed heartbeats read as a dead kernel.
    client.start_channels(hb=False)
    try:
        client.wait_for_ready(timeout=120)
        # A "training run" that prints nothing for 8 seconds.
        msg_id = client.execute("import time; time.sleep(8)")

        def wait_for_state(state):
            deadline = time.monotonic() + 60
            while True:
                msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
                if (msg["parent_header"].get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == state):
                    return

        wait_for_state("busy")
        started = time.time()  # the kernel's last message until the cell ends
        seen = []
        while time.time() - started < 5:
            seen.append(parse(status(port)["last_activity"]))
            time.sleep(0.25)
        assert max(seen) - started > 2.5, (
            f"last_activity stayed near the cell's start while the kernel was busy: "
            f"{[round(s - started, 1) for s in seen]}")
        wait_for_state("idle")
        time.sleep(1.5)  # let the last in-flight check land
        idle_since = parse(status(port)["last_activity"])
        time.sleep(2)  # four check intervals with an idle kernel
        assert parse(status(port)["last_activity"]) == idle_since, "idle kernel kept it alive"
    finally:
        client.stop_channels()
