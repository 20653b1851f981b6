"""spawner.type: local — one jupyterhub-singleuser process per user on this machine.

As root, each user's server runs as that user's own Unix account (homes are 0700, so nobody
reads anyone else's files). Not as root, every server runs as the one account running the hub,
each in its own folder under <data_dir>/homes: convenient for trying torchclass out, but with
no isolation between students, which the hub logs loudly at start.

With spawner.server_factory (the default), servers are forked from a process that has already
imported the server (server_factory.py says how, and why that is safe); without it, or when
the factory cannot start, each server is a new process, as JupyterHub's LocalProcessSpawner does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pwd
import sys
import textwrap
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from torchclass_classroom import VENV, Classroom
from torchclass_course import lessons
from traitlets import Bool, Unicode

FACTORY_SCRIPT = Path(__file__).with_name("server_factory.py")
# What every student's server imports at start (the extensions enabled for students, the
# server itself, and what they import lazily while starting: found with `python -X importtime`
# on a server start); a module missing here is imported by the server as usual.
FACTORY_PRELOAD = [
    "jupyterhub.singleuser", "jupyterhub.singleuser.extension", "jupyter_server.serverapp",
    "jupyterlab.labapp", "notebook.app", "notebook_shim.shim", "jupyter_server_terminals",
    "jupyter_server_proxy", "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.validate_assignment", "nbgrader.server_extensions.course_list",
    # notebook_shim asks IPython for its nbextensions path: a fifth of an import-free start.
    "IPython", "codeop", "jinja2.ext", "jupyter_core.migrate", "tornado.httpclient",
    "notebook.services.contents.manager",
    *(f"jupyter_server.{name}.handlers" for name in (
        "kernelspecs", "nbconvert", "view", "services.api", "services.config",
        "services.contents", "services.events", "services.kernels", "services.kernelspecs",
        "services.nbconvert", "services.security", "services.sessions")),
    "jupyter_server.services.shutdown",
]


class FactoryError(RuntimeError):
    pass


class ServerFactory:
    """The hub's end of server_factory.py: starts it on first use (again if it died), sends it
    spawn requests and keeps the exit codes it reports."""

    def __init__(self, socket_path: Path, pythonpath: list[str], log):
        self.socket_path = socket_path
        self.pythonpath = pythonpath
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.exits: dict[int, int] = {}
        self.lock = asyncio.Lock()

    async def ensure(self) -> None:
        async with self.lock:
            if self.proc is not None and self.proc.returncode is None:
                return
            # Nothing of the hub's environment: whatever this process holds, every fork holds.
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(FACTORY_SCRIPT), "jupyterhub-singleuser",
                str(self.socket_path),
                json.dumps(self.pythonpath), json.dumps(FACTORY_PRELOAD),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                     "HOME": "/nonexistent"},
                cwd="/", start_new_session=True)
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
            except TimeoutError:
                line = b""
            if line.strip() != b"ready":
                self.proc.kill()
                raise FactoryError("the server factory did not start")
            asyncio.get_running_loop().create_task(self._read_exits(self.proc))

    async def _read_exits(self, proc) -> None:
        while line := await proc.stdout.readline():
            word, _, rest = line.decode().partition(" ")
            if word == "exit":
                pid, code = rest.split()
                self.exits[int(pid)] = int(code)

    async def spawn(self, request: dict) -> int:
        await self.ensure()
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), 30) or b"{}")
        finally:
            writer.close()
        if "pid" not in answer:
            raise FactoryError(answer.get("error", "no answer from the server factory"))
        return answer["pid"]


class FactoryLocalSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose servers start as forks of the factory; poll, stop and hub
    restarts work as before (by pid)."""

    server_factory = Bool(True).tag(config=True)
    factory_socket = Unicode().tag(config=True)
    factory_pythonpath = Unicode().tag(config=True)
    _factory: ServerFactory | None = None  # one per hub, shared by every spawner

    def _get_factory(self) -> ServerFactory:
        cls = FactoryLocalSpawner
        if cls._factory is None:
            cls._factory = ServerFactory(Path(self.factory_socket),
                                         [p for p in self.factory_pythonpath.split(os.pathsep) if p],
                                         self.log)
        return cls._factory

    def _account(self) -> dict:
        return {"uid": None, "gid": None, "groups": []}

    async def start(self):
        if not self.server_factory:
            return await super().start()
        if self.port == 0:
            from jupyterhub.utils import random_port

            self.port = random_port()
        env = self.get_env()
        request = {"argv": [*self.cmd, *self.get_args()], "env": env, "cwd": env["HOME"],
                   **self._account()}
        try:
            self.pid = await self._get_factory().spawn(request)
        except (FactoryError, OSError, ValueError) as exc:
            self.log.warning("server factory: %s; starting %s's server as a new process",
                             exc, self.user.name)
            return await super().start()
        self.proc = None
        self.log.info("Forked %s's server from the server factory: pid %i", self.user.name,
                      self.pid)
        ip = self.ip or "127.0.0.1"
        await self._until_listening(ip)
        return (ip, self.port)

    async def _until_listening(self, ip: str) -> None:
        """Return once the forked server accepts connections (or has exited, or http_timeout
        passed: the hub's own check then reports it). After start() the hub checks the server
        with a backoff that doubles up to 5 s, which at 10 starts at once left ready servers
        unchecked for a second; a connect every 50 ms costs next to nothing."""
        factory = self._get_factory()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline and self.pid not in factory.exits:
            try:
                _, writer = await asyncio.open_connection(ip, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def poll(self):
        factory = FactoryLocalSpawner._factory
        if self.proc is None and self.pid and factory is not None and self.pid in factory.exits:
            code = factory.exits.pop(self.pid)
            self.clear_state()
            return code
        return await super().poll()


def private_runtime_dir(env: dict) -> dict:
    """Kernels talk over ipc sockets (the students' Jupyter config sets the transport) kept
    beside their connection files in the runtime dir, which Jupyter creates 0700. It sits in the
    home, with a short name: a Unix socket path may not exceed 107 bytes, and the default
    ~/.local/share/jupyter/runtime/kernel-<uuid>-ipc-N does with a long user name."""
    env["JUPYTER_RUNTIME_DIR"] = os.path.join(env["HOME"], ".jupyter-run")
    return env


class OwnAccountSpawner(FactoryLocalSpawner):
    """LocalProcessSpawner (each user's server as their own Unix account), kernels' sockets in
    a folder of their own."""

    def user_env(self, env):
        return private_runtime_dir(super().user_env(env))

    def _account(self) -> dict:
        pw = pwd.getpwnam(self.user.name)
        return {"uid": pw.pw_uid, "gid": pw.pw_gid,
                "groups": os.getgrouplist(self.user.name, pw.pw_gid)}


class SharedAccountSpawner(FactoryLocalSpawner):
    """LocalProcessSpawner without switching Unix user; each user gets HOME=<homes_dir>/<name>."""

    homes_dir = Unicode().tag(config=True)

    def make_preexec_fn(self, name):
        return None

    def user_env(self, env):
        home = Path(self.homes_dir) / self.user.name
        home.mkdir(parents=True, exist_ok=True)
        env["USER"] = self.user.name
        env["HOME"] = str(home)
        return private_runtime_dir(env)


async def copy_new_lessons(lessons_dir: Path, home: Path, uid: int | None,
                           gid: int | None) -> list[Path]:
    """Copy into home/lessons every lesson the student does not have yet
    (torchclass_course.lessons, the routine every deployment uses).

    With a uid (the hub as root), the copy runs in a child process that is that user: the home
    is theirs, and whatever links they put in it, root must never write there on their behalf.
    The hub awaits the child instead of blocking on it: run synchronously, ten students' copies
    at once held the hub's event loop (and every other student's request) for a second.
    """
    if not lessons_dir.is_dir():
        return []
    if uid is None or os.geteuid() != 0:
        copied = await asyncio.to_thread(lessons.copy_missing, str(lessons_dir), str(home))
        return [Path(p) for p in copied]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", _COPY_AS_STUDENT, str(lessons_dir), str(home),
        user=uid, group=gid, extra_groups=[], umask=0o022, cwd="/", env={"LANG": "C.UTF-8"},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"copying lessons into {home} as uid {uid} took over 120 s") from None
    if proc.returncode != 0:
        # The child's own error (its traceback's last line) is what the student and `make
        # status` are shown: the first line of a traceback says nothing.
        lines = err.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"]
        raise RuntimeError(f"copying lessons into {home} as uid {uid} failed: {lines[-1]}")
    return [Path(p) for p in json.loads(out)]


_COPY_AS_STUDENT = (textwrap.dedent(inspect.getsource(lessons.copy_missing))
                    + "import json, sys\nprint(json.dumps(copy_missing(sys.argv[1], sys.argv[2])))\n")


def configure(c, classroom: Classroom, env: dict) -> None:
    spawner = classroom["spawner"]
    if classroom.real_unix_users:
        c.JupyterHub.spawner_class = OwnAccountSpawner
    else:
        c.JupyterHub.spawner_class = SharedAccountSpawner
        c.SharedAccountSpawner.homes_dir = str(classroom.homes_dir)
    lessons_dir = classroom.lessons_dir

    async def give_lessons(spawner):
        if classroom.real_unix_users:
            pw = pwd.getpwnam(spawner.user.name)
            await copy_new_lessons(lessons_dir, Path(pw.pw_dir), pw.pw_uid, pw.pw_gid)
        else:
            home = classroom.homes_dir / spawner.user.name
            home.mkdir(parents=True, exist_ok=True)
            await copy_new_lessons(lessons_dir, home, None, None)

    c.Spawner.pre_spawn_hook = give_lessons
    c.FactoryLocalSpawner.server_factory = spawner["server_factory"]
    c.FactoryLocalSpawner.factory_socket = str(classroom.state_dir / "server-factory.sock")
    c.FactoryLocalSpawner.factory_pythonpath = env["PYTHONPATH"]
    c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
    c.Spawner.notebook_dir = "~"
    c.Spawner.default_url = "/lab"
    c.Spawner.environment = env
    c.Spawner.start_timeout = spawner["start_timeout"]
    c.Spawner.http_timeout = spawner["start_timeout"]
    # LocalProcessSpawner cannot enforce these; they reach the server as MEM_LIMIT/CPU_LIMIT
    # (jupyter-resource-usage shows them) and docker/kubernetes enforce the same keys.
    if spawner.get("mem_limit"):
        c.Spawner.mem_limit = spawner["mem_limit"]
    if spawner.get("cpu_limit"):
        c.Spawner.cpu_limit = float(spawner["cpu_limit"])
    if spawner["server_factory"]:
        warm_factory_with_the_hub(str(classroom.state_dir / "server-factory.sock"),
                                  env["PYTHONPATH"])


def warm_factory_with_the_hub(socket_path: str, pythonpath: str) -> None:
    """Start the factory while the hub starts, so the first student does not wait for its
    imports. JupyterHub loads its config inside its running event loop; anywhere else (a
    config check, a test) there is no loop and the first start warms it instead."""
    import logging

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    log = logging.getLogger("JupyterHub")
    factory = FactoryLocalSpawner._factory = ServerFactory(
        Path(socket_path), [p for p in pythonpath.split(os.pathsep) if p], log)

    async def warm():
        try:
            await factory.ensure()
        except (FactoryError, OSError) as exc:
            log.warning("server factory: %s; it is tried again at the first start", exc)

    loop.create_task(warm())
