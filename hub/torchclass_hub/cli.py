"""torchclass-hub: start, stop and inspect the classroom.

    torchclass-hub validate [--classroom FILE]      check the classroom file, start nothing
    torchclass-hub up [--port N] [--ip ADDR]        prepare accounts + course, start the hub
    torchclass-hub down                             stop the hub, its servers and services
    torchclass-hub status                           is it running, where, what it keeps
    torchclass-hub users                            the roster and who has logged in
    torchclass-hub reset-password USER              a new password for one user
    torchclass-hub schema-docs                      the classroom-file reference (markdown)
    torchclass-hub datasets-dir                     the shared datasets folder (`make data` fills it)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import torchclass_classroom as config
from torchclass_classroom import VENV, Classroom, ConfigError

from . import accounts, hubconfig, prepare

HERE = Path(__file__).resolve().parent


def package_roots() -> list[str]:
    """The folders torchclass's packages are imported from (hub/, grading/ and course/ of a
    checkout, or one site-packages): the hub, its services and students' servers need them all."""
    found = config.package_dirs()
    missing = [name for name in config.PACKAGES if name not in found]
    if missing:
        raise ConfigError(f"the Python package {missing[0]} is not importable from "
                          f"{sys.executable}. Fix: install torchclass (pip install .) or run from "
                          "a checkout with `make`.")
    return list(dict.fromkeys(str(d.parent) for d in found.values()))


def _alive(pid: int) -> bool:
    try:  # a hub started by this very process is a zombie until reaped
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hub_pid(classroom: Classroom) -> int | None:
    pidfile = hubconfig.state_files(classroom)["pid"]
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def port_busy(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def psutil_error():
    try:
        import psutil

        return psutil.Error
    except ImportError:
        return OSError


def _who_listens(port: int) -> str:
    try:
        import psutil

        for conn in psutil.net_connections("tcp"):
            if conn.status == "LISTEN" and conn.laddr.port == port and conn.pid:
                p = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(p.cmdline())[:80]})"
    except (ImportError, OSError, psutil_error()):
        return ""  # only decorates the message
    return ""


def _reap_leftovers(classroom: Classroom) -> None:
    """After a hub was killed (kill -9, power cut), its proxy and formgrader service keep
    running and hold their ports. Stop them; users' servers are left running: the new hub
    adopts them from its database."""
    try:
        import psutil
    except ImportError:
        return
    stale = []
    proxy_pid = classroom.state_dir / "jupyterhub-proxy.pid"
    try:
        stale.append((int(proxy_pid.read_text().strip()), "configurable-http-proxy"))
    except (FileNotFoundError, ValueError):
        pass
    ports_file = classroom.state_dir / "ports.json"
    if ports_file.exists():
        port = json.loads(ports_file.read_text()).get("formgrader")
        stale += [(c.pid, "jupyterhub-singleuser") for c in psutil.net_connections("tcp")
                  if c.status == "LISTEN" and c.laddr.port == port and c.pid]
    for pid, marker in stale:
        try:
            p = psutil.Process(pid)
            if any(marker in part for part in p.cmdline()):
                p.terminate()
                try:
                    p.wait(10)
                except psutil.TimeoutExpired:
                    p.kill()
        except psutil.NoSuchProcess:
            continue


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "hub/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def up(classroom: Classroom, timeout: float = 90, log=print) -> int:
    files = hubconfig.state_files(classroom)
    pid = hub_pid(classroom)
    if pid:
        log(f"The classroom is already running (pid {pid}) at {classroom.url}")
        return 0
    _reap_leftovers(classroom)
    if port_busy(classroom.ip, classroom.port):
        log(f"error: port {classroom.port} on {classroom.ip} is busy{_who_listens(classroom.port)}."
            f" Fix: stop that program, or pick another port: make up PORT=<port> "
            f"(or hub.port in {classroom.source}).")
        return 3
    problem = hubconfig.check_internal_ports(classroom, port_busy, log=log)
    if problem:
        log(f"error: {problem}")
        return 3
    prepare.everything(classroom, log=log)
    env = dict(os.environ,
               TORCHCLASS_CLASSROOM=str(classroom.source),
               TORCHCLASS_PORT=str(classroom.port),
               TORCHCLASS_IP=classroom.ip,
               TORCHCLASS_DATA_DIR=str(classroom.data_dir),
               PYTHONPATH=os.pathsep.join(package_roots()),
               # Only paths every user can read: servers and services inherit it.
               PATH=f"{VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    with open(files["log"], "ab") as logfh:
        proc = subprocess.Popen(
            [str(VENV / "bin" / "jupyterhub"), "-f", str(HERE / "jupyterhub_config.py")],
            cwd=classroom.state_dir, env=env, stdout=logfh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    files["pid"].write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log(f"error: the hub exited (code {proc.returncode}). Last lines of {files['log']}:\n"
                + _tail(files["log"]))
            files["pid"].unlink(missing_ok=True)
            return 4
        if _health(classroom.url):
            log(f"The classroom is up: {classroom.url}")
            log(f"  initial passwords: {classroom.password_file} "
                f"(readable by {classroom.instructors[0] if classroom.real_unix_users else 'you'} only)")
            log(f"  data: {classroom.data_dir}   log: {files['log']}   stop: make down")
            return 0
        time.sleep(0.3)
    log(f"error: the hub did not answer {classroom.url}hub/health within {timeout:.0f} s. "
        f"Last lines of {files['log']}:\n" + _tail(files["log"]))
    return 5


def down(classroom: Classroom, timeout: float = 60, log=print) -> int:
    pid = hub_pid(classroom)
    pidfile = hubconfig.state_files(classroom)["pid"]
    if not pid:
        _reap_leftovers(classroom)
        pidfile.unlink(missing_ok=True)
        log("The classroom is not running.")
        return 0
    # SIGTERM: JupyterHub stops every user's server, the formgrader and the proxy, then exits.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        log(f"The hub did not stop within {timeout:.0f} s; killed it.")
    _reap_leftovers(classroom)
    pidfile.unlink(missing_ok=True)
    log("The classroom is stopped; all data is kept in " + str(classroom.data_dir))
    return 0


# What JupyterHub logs when a user's server does not start (jupyterhub/user.py and
# handlers/base.py, 6.x), and when one does: a later start clears an earlier failure.
_SPAWN_FAILURES = [
    (re.compile(r"(?P<user>\S+)'s server failed to start in (?P<s>\d+) seconds, giving up"),
     "did not start within {s} s (spawner.start_timeout); the machine may be overloaded"),
    (re.compile(r"Spawner failed to start \[status=(?P<code>-?\d+)\]\. The logs for "
                r"(?P<user>[^ :]+)"),
     "its server exited with status {code} while starting (the hub log has its output)"),
    (re.compile(r"(?:Unhandled error|Error) starting (?P<user>\S+)'s server: (?P<msg>.*)"),
     "{msg}"),
    (re.compile(r"Not starting (?P<user>\S+)'s server \S*: (?P<msg>.*)"), "{msg}"),
]
_SPAWN_OK = re.compile(r"User (?P<user>\S+) took [\d.]+ seconds to start")
_HUB_START = "Running JupyterHub version"


def spawn_failures(log_path: Path) -> dict[str, tuple[str, str]]:
    """Users whose last start since the hub (re)started failed: user -> (when, why)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    start = max((i for i, ln in enumerate(lines) if _HUB_START in ln), default=0)
    failed: dict[str, tuple[str, str]] = {}
    for line in lines[start:]:
        ok = _SPAWN_OK.search(line)
        if ok:
            failed.pop(ok["user"], None)
            continue
        for pattern, text in _SPAWN_FAILURES:
            m = pattern.search(line)
            if m:
                when = line[3:22] if line.startswith("[") else ""
                failed[m["user"]] = (when, text.format(**m.groupdict()).strip()[:200])
                break
    return failed


def status(classroom: Classroom, log=print) -> int:
    pid = hub_pid(classroom)
    state = "running" if pid and _health(classroom.url) else ("starting" if pid else "stopped")
    log(f"classroom {classroom.course_id} ({classroom.source}): {state}"
        + (f", pid {pid}, {classroom.url}" if pid else ""))
    log(f"  data dir: {classroom.data_dir}")
    log(f"  log: {hubconfig.state_files(classroom)['log']}")
    log(f"  {len(classroom.instructors)} instructor(s), {len(classroom.students)} student(s), "
        f"assignments: {', '.join(classroom['assignments']) or 'none'}")
    if pid:
        failed = spawn_failures(hubconfig.state_files(classroom)["log"])
        log(f"  servers that failed to start since the hub started: {len(failed) or 'none'}")
        for user, (when, why) in sorted(failed.items()):
            log(f"    {user:24} {when}  {why}")
    return 0 if state == "running" else 1


def users(classroom: Classroom, log=print) -> int:
    hashes = accounts.read_hashes(classroom.password_hashes)
    for u in classroom.users:
        role = "instructor" if u in classroom.instructors else "student"
        log(f"{u:24} {role:10} {'password set' if u in hashes else 'no password yet (run up)'}")
    return 0


def schema_docs() -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(node, prefix):
        for key, sub in node.get("properties", {}).items():
            if "$ref" in sub:
                sub = {**config.schema()["$defs"][sub["$ref"].rsplit("/", 1)[1]], **sub}
            kind = sub.get("type") or "/".join(map(str, sub.get("enum", [])))
            default = json.dumps(sub["default"]) if "default" in sub else ""
            rows.append(f"| `{prefix}{key}` | {kind} | {default} | {sub['description']} |")
            if sub.get("type") == "object":
                walk(sub, f"{prefix}{key}.")

    walk(config.schema(), "")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchclass-hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["validate", "up", "down", "status", "users",
                                            "reset-password", "schema-docs", "datasets-dir"])
    parser.add_argument("user", nargs="?", help="for reset-password")
    parser.add_argument("--classroom", help="classroom file (default: $TORCHCLASS_CLASSROOM "
                        "or hub/classroom.yaml)")
    parser.add_argument("--port", help="public port (overrides hub.port)")
    parser.add_argument("--ip", help="public address (overrides hub.ip)")
    parser.add_argument("--data-dir", help="data dir (overrides hub.data_dir)")
    args = parser.parse_args(argv)
    if args.command == "schema-docs":
        print(schema_docs())
        return 0
    env = dict(os.environ)
    for key, value in (("TORCHCLASS_PORT", args.port), ("TORCHCLASS_IP", args.ip),
                       ("TORCHCLASS_DATA_DIR", args.data_dir)):
        if value:
            env[key] = value
    try:
        classroom = config.load(args.classroom, env=env)
        if args.command == "validate":
            print(f"{classroom.source}: OK ({len(classroom.users)} users, course "
                  f"{classroom.course_id}, {classroom['auth']['type']} login, "
                  f"{classroom['spawner']['type']} spawner)")
            return 0
        if args.command == "datasets-dir":
            print(classroom.datasets_dir)
            return 0
        if args.command == "reset-password":
            if not args.user:
                parser.error("reset-password needs a USER")
            print(f"{args.user} {accounts.reset_password(classroom, args.user)}")
            return 0
        return {"up": up, "down": down, "status": status, "users": users}[args.command](classroom)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
