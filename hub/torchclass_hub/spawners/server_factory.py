"""The students' server factory: one process that has imported the single-user server once and
forks a student's server from itself, instead of a new Python importing it all again.

A server start used ~1 CPU-s, most of it imports (Jupyter Server, JupyterLab, nbgrader's
extensions, and JupyterLab running `node yarn config` at import); at a deadline every start
competes for the same cores (hub/README.md, Capacity). Forked from here, a start is the
server's own setup only.

Run by the hub (local.py, FactoryClient) as root, or as the hub's account, with:

    python -I server_factory.py jupyterhub-singleuser SOCKET PYTHONPATH_JSON PRELOAD_JSON

(the first argument says what it forks: servers show this command line, so `ps` and the load
benchmark still find them by "jupyterhub-singleuser").

What this process may know is what every student may know: it is started with an empty
environment and holds no secret, because each student's server is a fork of it. The hub sends a
student's request (their environment with their API token, their uid) over a new connection to
SOCKET (in the hub's root-only state dir); this process forks as soon as it accepts and only the
child reads the request, so no student's token is ever in this process's memory for the next
fork to inherit. The child then drops to the student (groups, gid, uid, checked), starts a new
session, takes the request's environment and runs jupyterhub-singleuser; it answers its pid.

On stdout this process writes "ready", then "exit PID STATUS" for every server that ends, so the
hub's poll sees exit codes as it does for servers it started itself. It exits when its stdin
closes (the hub is gone); servers it forked keep running, as servers the hub started do.
"""

import json
import os
import selectors
import signal
import socket
import sys

MAX_REQUEST = 1 << 20  # an environment and a command line; anything larger is not the hub


def preload(modules: list[str]) -> list[str]:
    """Import what every server imports; return the modules that failed (logged, not fatal)."""
    import importlib

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (a module that fails here fails in the server)
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


class CachedEntryPoints:
    """importlib.metadata.entry_points(), answered from one scan made here for a process whose
    sys.path is still this one's.

    Every server start scanned every installed distribution's entry points (jupyter-server-proxy's
    servers, jupyter_client's provisioners): a tenth of a forked start, for an answer that only
    changes with the shared, root-owned environment. A student whose sys.path differs (their
    own ~/.local packages) gets a fresh scan, as before.

    Installed before the preload, so that modules which bind `from importlib.metadata import
    entry_points` get this one; frozen after it, because importing some of them extends sys.path
    (setuptools adds its vendored packages, whose entry points count too)."""

    def __init__(self):
        from importlib import metadata

        self.scan = metadata.entry_points
        self.path_scanned: list[str] | None = None
        self.everything = None
        metadata.entry_points = self

    def freeze(self) -> None:
        self.path_scanned = list(sys.path)
        self.everything = self.scan()

    def __call__(self, **params):
        if self.path_scanned is None or sys.path != self.path_scanned:
            return self.scan(**params)
        return self.everything.select(**params) if params else self.everything


def read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    return json.loads(data)


def become(request: dict) -> None:
    """Drop to the student's account, as JupyterHub's own set_user_setuid does, and check it."""
    uid, gid = request.get("uid"), request.get("gid")
    if os.geteuid() == 0 and not uid:
        raise PermissionError("a student's server never runs as root")
    if uid is None:
        return  # the hub is not root: every server runs as its account (shared-account mode)
    os.setgroups(request["groups"])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) \
            or sorted(os.getgroups()) != sorted(set(request["groups"])):
        raise PermissionError(f"could not become uid {uid} gid {gid}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PermissionError("root could be regained after dropping to the student")


def fresh_process_state(request: dict) -> None:
    """What a new interpreter would have computed from the student's environment."""
    import random
    import site
    import tempfile

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    os.umask(0o022)
    random.seed()  # else every server would draw the same "random" numbers as its siblings
    tempfile.tempdir = None  # recomputed from the student's TMPDIR
    # The student's own ~/.local site-packages, as their interpreter would add it.
    site.USER_BASE = site.USER_SITE = None
    site.ENABLE_USER_SITE = True
    site.addusersitepackages(set(sys.path))
    sys.argv = list(request["argv"])


def serve(conn: socket.socket, listener: socket.socket, events) -> int:
    """In the forked child: become the student's server. Returns the exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    events.close()
    listener.close()
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the server logs where the hub logs (stdout is this factory's pipe)
    os.close(devnull)
    try:
        request = read_request(conn)
        become(request)
        fresh_process_state(request)
    except Exception as exc:  # noqa: BLE001 (answered to the hub, which shows it)
        conn.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
        return 1
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    conn.close()
    from jupyterhub.singleuser import main

    try:
        result = main()
    except SystemExit as exc:
        result = exc.code
    return result if isinstance(result, int) else (0 if result is None else 1)


def main() -> int:
    sock_path, pythonpath, modules = sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    sys.path[:0] = pythonpath  # the students' PYTHONPATH, ahead of the interpreter's own, as theirs
    entry_points = CachedEntryPoints()
    failed = preload(modules)
    entry_points.freeze()
    for line in failed:
        print(f"server factory: preloading {line}", file=sys.stderr)
    import gc

    gc.collect()
    gc.freeze()  # the imported modules' objects stay shared with every fork, not copied by gc

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    old = os.umask(0o177)
    listener.bind(sock_path)
    os.umask(old)
    listener.listen(64)

    def report_exits(*_):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            os.write(1, f"exit {pid} {code}\n".encode())

    signal.signal(signal.SIGCHLD, report_exits)
    os.write(1, b"ready\n")
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    while True:
        for key, _ in events.select():
            if key.fileobj is sys.stdin:
                if not os.read(0, 4096):
                    return 0  # the hub is gone
                continue
            try:
                conn, _ = listener.accept()
            except InterruptedError:
                continue
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    status = serve(conn, listener, events)
                finally:
                    os._exit(status)
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
