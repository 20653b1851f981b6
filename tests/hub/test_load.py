"""The load generator (tests/bench/bench_load.py, `make bench-load`) in quick mode against a real
hub, and what a student and the instructor are told when a server does not start.

Behaviour only: no test here asserts a latency (the machine is shared and its timings swing).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubclient import HubClient
from torchclass_hub import cli

pytestmark = [pytest.mark.hub, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tests" / "bench" / "bench_load.py"
sys.path.insert(0, str(BENCH.parent))
import bench_load


def test_quick_run_drives_every_step_for_every_student(tmp_path):
    """Three students at once against a hub that starts one server at a time: every step for
    every student, and those who had to wait were told why by a page that retries itself."""
    if os.geteuid() != 0:
        pytest.skip("the load generator's own classroom creates real Unix users: run as root")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        str(REPO / d) for d in ("hub", "grading", "course")))
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--rate", "0", "--set",
                           'spawner={"concurrent_spawns": 1}', "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=840, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "load.json").read_text())
    [run] = results["runs"]
    assert run["students"] == 3 and run["arrived"] == 3
    assert run["failed"] == 0 and run["failed_spawns"] == [] and not run["cut_short"]
    users = {r["user"] for r in run["per_student"]}
    assert len(users) == 3
    for record in run["per_student"]:
        assert record["ok"], record
        assert list(record["steps"]) == bench_load.STEPS, record
        # The cell ran in the student's own kernel: its printed result came back on the socket.
        assert record["cell_output"].startswith("4999950000"), record
        assert record["login_to_ready_s"] >= record["steps"]["spawn"]
    for step in bench_load.STEPS:
        assert run["steps"][step]["n"] == 3
    # One start at a time and three at once: someone was asked to wait, politely.
    waits = [w for r in run["per_student"] for w in r["waits"]]
    assert waits and run["students_asked_to_wait"] >= 1
    for w in waits:
        assert w["page_retries_itself"], w
        assert "tries again by itself" in w["message"], w
    assert run["hub_limits"]["concurrent_spawn_limit"] == 1
    # The sampler saw the hub and the three servers (with their kernels) on this machine.
    assert run["peak_hub_rss_mb"] > 0 and run["peak_proxy_rss_mb"] > 0
    assert run["peak_servers"] == 3 and run["peak_kernels"] == 3
    assert run["hub_limits"]["active_server_limit"] >= 3
    assert "| 3 |" in (tmp_path / "load.md").read_text()
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"


def test_generator_refuses_a_remote_hub_unless_told(capsys):
    with pytest.raises(SystemExit):
        bench_load.main(["--url", "http://192.0.2.1:8000/", "--roster", "/dev/null",
                         "--course-id", "x", "--out", "/tmp/never"])
    assert "--allow-remote" in capsys.readouterr().err


def test_a_server_that_cannot_start_says_why_to_student_and_instructor(classroom):
    """The instructor's home is moved away for a moment, so their server cannot start for a
    real reason; the spawn progress the pending page shows and `status` both give it."""
    import pwd

    user = classroom.instructor
    home = Path(pwd.getpwnam(user).pw_dir)
    moved = home.with_name(home.name + ".moved-by-test")
    client = HubClient(classroom.url, user)
    assert client.login(classroom.passwords()[user]).status_code == 302
    home.rename(moved)
    try:
        r = client.api("POST", f"users/{user}/server")
        progress = client.s.get(client.base + f"hub/api/users/{user}/server/progress",
                                headers=client._xsrf("/hub/"), timeout=120, stream=True)
        events = [json.loads(line[5:]) for line in progress.iter_lines(decode_unicode=True)
                  if line and line.startswith("data:")]
    finally:
        moved.rename(home)
    assert r.status_code in (201, 202, 500), r.text
    last = events[-1] if events else {}
    assert last.get("failed") and "No such file or directory" in last.get("message", ""), events
    lines = []
    cli.status(classroom.classroom, log=lines.append)
    [line] = [ln for ln in lines if ln.strip().startswith(user)]
    assert "No such file or directory" in line
    # Once the home is back, the server starts and the failure is no longer listed.
    client.start_server()
    lines = []
    cli.status(classroom.classroom, log=lines.append)
    assert not [ln for ln in lines if ln.strip().startswith(user)], lines
    client.stop_server()


HUB_LOG = """\
[W 2026-12-01 09:00:00.000 JupyterHub user:1058] old's server failed to start in 120 seconds, giving up.
[I 2026-12-02 10:00:00.000 JupyterHub app:3400] Running JupyterHub version 6.1.1
[W 2026-12-02 10:00:01.000 JupyterHub user:1058] ann's server failed to start in 120 seconds, giving up.
[W 2026-12-02 10:00:02.000 JupyterHub web:1] 500 GET /hub/spawn/bob (bob@127.0.0.1): Spawner failed to start [status=1]. The logs for bob may contain details.
[E 2026-12-02 10:00:03.000 JupyterHub user:1072] Unhandled error starting cy's server: [Errno 2] No such file or directory: '/home/cy'
[E 2026-12-02 10:00:04.000 JupyterHub user:1072] Unhandled error starting dee's server: boom
[I 2026-12-02 10:00:05.000 JupyterHub base:1192] User dee took 3.1 seconds to start
"""  # JupyterHub's own lines, as it writes them


def test_status_reads_each_kind_of_spawn_failure_from_the_log(tmp_path):
    log = tmp_path / "jupyterhub.log"
    log.write_text(HUB_LOG)
    failed = cli.spawn_failures(log)
    assert set(failed) == {"ann", "bob", "cy"}  # old: before this hub; dee: started later
    assert "120 s" in failed["ann"][1]
    assert "status 1" in failed["bob"][1]
    assert failed["cy"] == ("2026-12-02 10:00:03",
                            "[Errno 2] No such file or directory: '/home/cy'")


def test_other_error_pages_still_render(classroom):
    """torchclass_hub/templates/error.html replaces JupyterHub's page for every error, so the plain ones
    (a wrong URL, and the page the proxy fetches when a route is missing) must still work."""
    import requests

    r = requests.get(classroom.url + "hub/no-such-page", timeout=30)
    assert r.status_code == 404 and "404" in r.text
    # The proxy fetches this page to show for a missing route (JupyterHub answers it with 200).
    r = requests.get(classroom.url + "hub/error/404?url=/hub/gone", timeout=30)
    assert r.status_code == 200 and "404" in r.text
