"""Turn a validated classroom into JupyterHub settings (called from jupyterhub_config.py beside it)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from torchclass_classroom import VENV, Classroom

HERE = Path(__file__).resolve().parent


def _free_port(avoid: set = frozenset()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def internal_ports(classroom: Classroom) -> dict[str, int]:
    """The hub API, proxy API and formgrader ports: picked once, then kept in the state dir so
    that after a crash a restarted hub finds the servers and proxy where it left them."""
    path = classroom.state_dir / "ports.json"
    ports = json.loads(path.read_text()) if path.exists() else {}
    for name in ("hub_api", "proxy_api", "formgrader"):
        if name not in ports:
            ports[name] = _free_port(avoid={classroom.port, *ports.values()})
    path.write_text(json.dumps(ports))
    return ports


# Moved freely when busy: the proxy is restarted by every `up`, the formgrader too.
MOVABLE_PORTS = ("proxy_api", "formgrader")


def check_internal_ports(classroom: Classroom, busy, log=print) -> str | None:
    """Before the hub starts: a kept internal port that another program holds now is never
    reused (it could pose as the proxy's API or the formgrader and be handed instructors'
    requests). The proxy's and formgrader's move to a free port; the hub API's cannot (servers
    still running from before the crash call it there), so that one is an error, returned."""
    path = classroom.state_dir / "ports.json"
    if not path.exists():
        return None
    ports = json.loads(path.read_text())
    port = ports.get("hub_api")
    if port and busy("127.0.0.1", port):
        return (f"the hub_api port {port} kept in {path} is busy. Fix: stop the program that "
                "holds it, or (when no student server is still running from an earlier hub) "
                f"delete {path} so that `up` picks new internal ports.")
    for name in MOVABLE_PORTS:
        old = ports.get(name)
        if old and (busy("127.0.0.1", old) or old == classroom.port):
            ports[name] = _free_port(avoid={classroom.port, *ports.values()})
            log(f"note: the {name} port {old} kept in {path} is taken; using {ports[name]}")
    path.write_text(json.dumps(ports))
    return None


def formgrader_service(classroom: Classroom) -> str:
    return f"formgrader-{classroom.course_id}"


def formgrader_config_dir(classroom: Classroom) -> Path:
    return classroom.data_dir / "etc" / "formgrader"


def single_user_env(classroom: Classroom) -> dict[str, str]:
    return {
        "TORCHCLASS_DATA": str(classroom.datasets_dir),
        "TORCHCLASS_COURSE_ID": classroom.course_id,
        "PYTHONPATH": str(classroom.lib_dir),
        "JUPYTER_CONFIG_PATH": str(classroom.student_config_dir),
        # One thread per kernel: a class of students shares the machine's cores.
        "OMP_NUM_THREADS": "1",
    }


# Measured by tests/bench/bench_load.py on a 2-core, 24 GiB machine (hub/README.md, Capacity).
# A new-process start costs ~1.4 CPU-s and ~3 s alone, so 2 cores finish at most ~1.4 starts a
# second; more in flight only stretches each (with 4 per core on a loaded machine one of 50
# missed its 120 s start_timeout). A start forked from the server factory costs ~0.2 CPU-s:
# many more fit, and a student asked to wait is asked for less.
SPAWNS_PER_CORE = 2
FORKED_SPAWNS_PER_CORE = 8
# An idle student's server with its kernel: 181 MiB RSS; the fall in available memory per
# server was 150-230 MiB across runs (other work shared the machine). The RSS is the safe side.
IDLE_SERVER_MIB = 180
# Forked from the factory, a server shares the factory's imported pages until it writes them:
# available memory fell 58-95 MiB per server and kernel (the kernel is a new process as before).
FORKED_IDLE_SERVER_MIB = 100
MEMORY_RESERVE_MIB = 2048  # the hub, the proxy, the formgrader and the system


def _memory_mib() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def capacity_settings(classroom: Classroom) -> dict:
    """The hub's own limits: how many servers may start at once and how many may run.

    Past these a student is asked to wait (HTTP 429, a page that retries by itself) instead of
    every start slowing down until some time out, or the machine running out of memory."""
    spawner = classroom["spawner"]
    forked = spawner["type"] == "local" and spawner["server_factory"]
    concurrent = spawner.get("concurrent_spawns")
    if concurrent is None:
        concurrent = (FORKED_SPAWNS_PER_CORE if forked else SPAWNS_PER_CORE) * (os.cpu_count() or 1)
    servers = spawner.get("max_servers")
    if servers is None:
        # Containers and pods are bounded by their own mem_limit and the cluster's quota.
        per_server = FORKED_IDLE_SERVER_MIB if forked else IDLE_SERVER_MIB
        servers = (max(1, (_memory_mib() - MEMORY_RESERVE_MIB) // per_server)
                   if spawner["type"] == "local" else 0)
    return {"concurrent_spawn_limit": concurrent, "active_server_limit": servers,
            # JupyterHub's default is 30-60 s: long enough for a whole queue to drain.
            "spawn_throttle_retry_range": (2, 6) if forked else (5, 15)}


_FAST_COMMIT_DBS: set[str] = set()  # real paths of the databases fast_hub_commits was given


def fast_hub_commits(db_path: Path) -> None:
    """The hub's sqlite database in WAL mode with synchronous=NORMAL.

    JupyterHub commits on its event loop, and sqlite's default (a rollback journal, fsync on
    every commit) made those commits 29% of the loop's time with 10 students logging in at once
    (py-spy on the hub, hub/README.md, Capacity): every other student's request waited on the
    disk. With WAL and NORMAL a commit is a write to the log, synced at checkpoints. A crash of
    the hub loses nothing; a power cut may lose the last commits, which the hub rebuilds (it
    polls every server at start); grades live in nbgrader's gradebook, not here."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _FAST_COMMIT_DBS.add(os.path.realpath(db_path))
    if not event.contains(Engine, "connect", _wal_and_normal_sync):
        event.listen(Engine, "connect", _wal_and_normal_sync)


def _wal_and_normal_sync(dbapi_con, _record) -> None:
    import sqlite3

    if not isinstance(dbapi_con, sqlite3.Connection):
        return
    # Compared as real paths: sqlite may report a data dir reached through a link either way.
    files = {os.path.realpath(row[2]) for row in dbapi_con.execute("PRAGMA database_list")
             if row[2]}
    if files & _FAST_COMMIT_DBS:
        dbapi_con.execute("PRAGMA journal_mode=WAL")
        dbapi_con.execute("PRAGMA synchronous=NORMAL")


def apply(c, classroom: Classroom) -> None:
    # Imported here: they pull in JupyterHub, which the CLI's quick paths do not need.
    from . import auth, spawners

    state = classroom.state_dir
    ports = internal_ports(classroom)
    c.JupyterHub.bind_url = f"http://{classroom.ip}:{classroom.port}/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{ports['hub_api']}"
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    fast_hub_commits(state / "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.shutdown_on_logout = classroom["hub"]["shutdown_on_logout"]
    # bin/configurable-http-proxy: the venv's proxy with room for a whole class in flight;
    # a request may take as long as a start (the spawn-progress stream lasts that long).
    proxy_timeout_ms = 1000 * max(300, 2 * classroom["spawner"]["start_timeout"])
    c.ConfigurableHTTPProxy.command = [str(VENV / "bin" / "python"),
                                       str(HERE / "bin" / "configurable-http-proxy"),
                                       f"--proxy-timeout={proxy_timeout_ms}"]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{ports['proxy_api']}"
    # A proxy left behind by a killed hub is found by this pid file and replaced.
    c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
    limits = capacity_settings(classroom)
    c.JupyterHub.concurrent_spawn_limit = limits["concurrent_spawn_limit"]
    c.JupyterHub.active_server_limit = limits["active_server_limit"]
    # Not a configurable trait in JupyterHub 6, but read from the tornado settings it merges.
    c.JupyterHub.tornado_settings.update(
        {"spawn_throttle_retry_range": limits["spawn_throttle_retry_range"]})
    # templates/error.html: the "please wait" pages say why and retry by themselves.
    c.JupyterHub.template_paths = [str(HERE / "templates")]
    c.JupyterHub.template_vars = {"announcement_login": f"torchclass · {classroom.course_id}",
                                  "torchclass_limits": limits}

    auth.configure(c, classroom)
    spawners.configure(c, classroom, single_user_env(classroom))

    c.JupyterHub.load_groups = {
        "instructors": {"users": classroom.instructors},
        "students": {"users": classroom.students},
    }
    if classroom["spawner"]["type"] != "local":
        # In containers the instructor's own server (notebook image, role instructor) carries
        # the formgrader: the hub image has no nbgrader to run it as a service.
        return
    service = formgrader_service(classroom)
    grader_env = {"JUPYTERHUB_DEFAULT_URL": "/formgrader", "OMP_NUM_THREADS": "1",
                  # No terminals, kernels or proxy; notebooks sanitized; no Autograde button
                  # (prepare.formgrader_config).
                  "JUPYTER_CONFIG_PATH": str(formgrader_config_dir(classroom))}
    c.JupyterHub.services = [{
        "name": service,
        "display": True,
        "url": f"http://127.0.0.1:{ports['formgrader']}",
        "command": [str(VENV / "bin" / "jupyterhub-singleuser"),
                    f"--ServerApp.root_dir={classroom.course_dir}",
                    # Also on the command line: it outranks any config file the grader writes.
                    "--ServerApp.terminals_enabled=False"],
        "user": classroom.grader,
        "cwd": str(classroom.course_dir),
        "environment": grader_env,
        # Instructors reach it through the hub's login; no extra consent page.
        "oauth_no_confirm": True,
    }]
    c.JupyterHub.load_roles = [{
        "name": f"{service}-users",
        "description": "instructors open the course's formgrader",
        "groups": ["instructors"],
        "scopes": [f"access:services!service={service}"],
    }]


def log_isolation_warning(log, classroom: Classroom) -> None:
    if not classroom.real_unix_users and classroom["spawner"]["type"] == "local":
        log.warning(
            "torchclass: NOT running as root, so every server runs as this one Unix account "
            "with its own folder under %s. Students are NOT isolated from each other. "
            "Run `sudo make up` for one Unix account per student.", classroom.homes_dir)


def state_files(classroom: Classroom) -> dict[str, Path]:
    s = classroom.state_dir
    return {"pid": s / "torchclass-hub.pid", "log": s / "jupyterhub.log",
            "db": s / "jupyterhub.sqlite"}
