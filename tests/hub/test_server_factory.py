"""Students' servers forked from the server factory (spawners/server_factory.py), attacked as a
student would: each runs as its student and nobody else, no student's token is in the factory
(so none is in the next student's server, a fork of it), students cannot talk to the factory,
and the factory refuses to fork a server as root."""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torchclass_classroom as config
from classroom_fixture import TestClassroom
from hubclient import HubClient
from torchclass_hub.spawners import local

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def room():
    if os.geteuid() != 0:
        pytest.skip("the factory forks servers as real Unix users: run as root")
    room = TestClassroom(n_students=2, assignments=[])
    room.up()
    clients = {}
    for student in room.students:
        clients[student] = HubClient(room.url, student)
        clients[student].login(room.passwords()[student])
        clients[student].start_server(timeout=120)
    yield room, clients
    room.teardown()


def _server_process(student: str) -> psutil.Process:
    (server,) = [p for p in psutil.process_iter(["username", "cmdline"])
                 if p.info["username"] == student
                 and "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or [])]
    return server


def _factory(room) -> psutil.Process:
    sock = str(room.classroom.state_dir / "server-factory.sock")
    # Its servers show the same command line: the factory is the one that is still root.
    (factory,) = [p for p in psutil.process_iter(["cmdline", "username"])
                  if sock in (p.info["cmdline"] or []) and p.info["username"] == "root"]
    return factory


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether the process's writable memory (heap, stacks, anonymous maps) contains needle."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, ValueError, OverflowError):
                continue
    return False


def _token_of(client: HubClient, student: str) -> str:
    """The student's API token as their server holds it: read through a kernel of that server
    (root can use the kernel's ipc sockets, as test_classroom's kernel test does)."""
    from jupyter_client import BlockingKernelClient

    r = client.server("POST", "api/kernels", json={"name": "python3"})
    assert r.status_code == 201, r.text[:300]
    kid = r.json()["id"]
    try:
        deadline = time.monotonic() + 60
        conn = None
        while conn is None and time.monotonic() < deadline:
            for p in psutil.process_iter(["username", "cmdline"]):
                args = p.info["cmdline"] or []
                if p.info["username"] == student and any(kid in a for a in args):
                    conn = next(a for a in args if a.endswith(f"kernel-{kid}.json"))
            time.sleep(0.3)
        assert conn, f"no kernel process for {kid}"
        kc = BlockingKernelClient(connection_file=conn)
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            out = []
            kc.execute_interactive("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])",
                                   timeout=60, output_hook=lambda m: out.append(
                                       m["content"].get("text", "")))
        finally:
            kc.stop_channels()
        token = "".join(out).strip()
        assert re.fullmatch(r"[0-9a-f]{32,}", token), token
        return token
    finally:
        client.server("DELETE", f"api/kernels/{kid}")


def test_each_server_is_a_fork_of_the_factory_running_as_its_student_only(room):
    room, _ = room
    factory = _factory(room)
    assert factory.uids().real == 0
    for student in room.students:
        pw = pwd.getpwnam(student)
        server = _server_process(student)
        assert server.ppid() == factory.pid
        assert tuple(server.uids()) == (pw.pw_uid,) * 3
        assert tuple(server.gids()) == (pw.pw_gid,) * 3
        with open(f"/proc/{server.pid}/status") as fh:
            status = fh.read()
        groups = {int(g) for g in re.search(r"^Groups:(.*)$", status, re.MULTILINE).group(1).split()}
        assert groups == set(os.getgrouplist(student, pw.pw_gid))
        assert re.search(r"^CapEff:\s*0+$", status, re.MULTILINE), "the server kept a capability"
        assert server.cwd() == pw.pw_dir
        assert os.getsid(server.pid) == server.pid  # its own session, as a new process had
    assert "Forked" in room.hub_log(400)


def _open_files(pid: int) -> set[str]:
    """Files, sockets and pipes (by inode) the process has open; anonymous inodes (epoll,
    inotify) all read alike and are left out."""
    links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    return {link for link in links if not link.startswith("anon_inode:")}


def test_a_server_holds_nothing_of_the_factory_open(room):
    """Not its listening socket (a student's code could ask it to fork as anyone), not its pipes
    to the hub: only what a new process would inherit (the hub's log, /dev/null)."""
    room, _ = room
    factory = _open_files(_factory(room).pid) - {os.devnull, str(room.classroom.state_dir / "jupyterhub.log")}
    assert any(f.startswith("socket:") for f in factory)
    for student in room.students:
        assert not factory & _open_files(_server_process(student).pid)


def test_no_students_token_is_in_the_factory_or_in_another_students_server(room):
    """The attack: every server is a fork of the factory, so whatever the factory once read, a
    student can find in their own server's memory. Alice's token must be in her server and
    nowhere else: not in the factory, not in bob's server (forked after hers)."""
    room, clients = room
    alice, bob = room.students
    token = _token_of(clients[alice], alice).encode()
    assert _memory_holds(_server_process(alice).pid, token)  # the scan finds what is there
    assert not _memory_holds(_factory(room).pid, token)
    assert not _memory_holds(_server_process(bob).pid, token)


def test_a_student_cannot_reach_the_factory(room):
    room, _ = room
    sock = room.classroom.state_dir / "server-factory.sock"
    assert sock.exists()
    assert sock.stat().st_mode & 0o077 == 0
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    sys.exit(f'refused: {e}')\n"
             "print('connected')")
    out = room.as_user(room.students[0], str(config.VENV / "bin" / "python"), "-c", probe,
                       str(sock))
    assert out.returncode != 0 and "connected" not in out.stdout, out.stdout + out.stderr


def test_a_stopped_server_is_reaped_and_its_exit_seen_by_the_hub(room):
    room, clients = room
    bob = room.students[1]
    pid = _server_process(bob).pid
    clients[bob].stop_server()
    deadline = time.monotonic() + 60
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid), "the stopped server is still there (a zombie?)"
    assert not clients[bob].api("GET", f"users/{bob}").json()["servers"]
    clients[bob].start_server(timeout=120)  # and the factory forks the next one
    assert _server_process(bob).ppid() == _factory(room).pid


@pytest.mark.parametrize("uid", [0, None])
def test_the_factory_refuses_to_fork_a_server_as_root(tmp_path, uid):
    if os.geteuid() != 0:
        pytest.skip("the check is for a factory running as root")
    os.chmod(tmp_path, 0o700)
    sock = tmp_path / "factory.sock"
    proc = subprocess.Popen([sys.executable, "-I", str(local.FACTORY_SCRIPT),
                             "jupyterhub-singleuser", str(sock), "[]", "[]"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            request = {"argv": ["sh", "-c", "echo should-not-run"], "env": {}, "cwd": "/",
                       "uid": uid, "gid": 0, "groups": []}
            s.sendall(json.dumps(request).encode() + b"\n")
            answer = json.loads(s.makefile().readline())
        assert answer == {"error": "PermissionError: a student's server never runs as root"}
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_entry_points_come_from_the_factorys_scan_unless_the_students_path_differs(tmp_path):
    # A distribution with a jupyter-server-proxy entry point, as a student's own ~/.local
    # packages would add: it is found once sys.path includes it, with a scan of its own.
    dist = tmp_path / "mine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[jupyter_serverproxy_servers]\nmine = mine:setup\n")
    code = f"""
import json, sys
from importlib import metadata
from torchclass_hub.spawners.server_factory import CachedEntryPoints
scans = []
cached = CachedEntryPoints()
real = cached.scan
cached.scan = lambda **params: (scans.append(params), real(**params))[1]
cached.freeze()
got = [e.name for e in metadata.entry_points(group="console_scripts")]
want = [e.name for e in real(group="console_scripts")]
scans_cached = len(scans)
sys.path.append({str(tmp_path)!r})
mine = [e.name for e in metadata.entry_points(group="jupyter_serverproxy_servers")]
print(json.dumps(dict(same=got == want and len(got) > 0, scans_cached=scans_cached,
                      mine=mine, scans=len(scans))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    got = json.loads(out)
    assert got["same"], "the cached answer differs from a fresh scan"
    assert got["scans_cached"] == 1, "a process on the factory's sys.path scanned again"
    assert "mine" in got["mine"] and got["scans"] == 2, got
