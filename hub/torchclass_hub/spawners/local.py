"""spawner.type: local — one jupyterhub-singleuser process per user on this machine.

As root, each user's server runs as that user's own Unix account (homes are 0700, so nobody
reads anyone else's files). Not as root, every server runs as the one account running the hub,
each in its own folder under <data_dir>/homes: convenient for trying torchclass out, but with
no isolation between students, which the hub logs loudly at start.
"""

from __future__ import annotations

import inspect
import json
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from torchclass_classroom import VENV, Classroom
from torchclass_course import lessons
from traitlets import Unicode


def private_runtime_dir(env: dict) -> dict:
    """Kernels talk over ipc sockets (the students' Jupyter config sets the transport) kept
    beside their connection files in the runtime dir, which Jupyter creates 0700. It sits in the
    home, with a short name: a Unix socket path may not exceed 107 bytes, and the default
    ~/.local/share/jupyter/runtime/kernel-<uuid>-ipc-N does with a long user name."""
    env["JUPYTER_RUNTIME_DIR"] = os.path.join(env["HOME"], ".jupyter-run")
    return env


class OwnAccountSpawner(LocalProcessSpawner):
    """LocalProcessSpawner (each user's server as their own Unix account), kernels' sockets in
    a folder of their own."""

    def user_env(self, env):
        return private_runtime_dir(super().user_env(env))


class SharedAccountSpawner(LocalProcessSpawner):
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


def copy_new_lessons(lessons_dir: Path, home: Path, uid: int | None, gid: int | None) -> list[Path]:
    """Copy into home/lessons every lesson the student does not have yet
    (torchclass_course.lessons, the routine every deployment uses).

    With a uid (the hub as root), the copy runs in a child process that is that user: the home
    is theirs, and whatever links they put in it, root must never write there on their behalf.
    """
    if not lessons_dir.is_dir():
        return []
    if uid is None or os.geteuid() != 0:
        return [Path(p) for p in lessons.copy_missing(str(lessons_dir), str(home))]
    code = (textwrap.dedent(inspect.getsource(lessons.copy_missing))
            + "import json, sys\nprint(json.dumps(copy_missing(sys.argv[1], sys.argv[2])))\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, str(lessons_dir), str(home)],
        user=uid, group=gid, extra_groups=[], umask=0o022, cwd="/", env={"LANG": "C.UTF-8"},
        capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        # The child's own error (its traceback's last line) is what the student and `make
        # status` are shown: the first line of a traceback says nothing.
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        raise RuntimeError(f"copying lessons into {home} as uid {uid} failed: {lines[-1]}")
    return [Path(p) for p in json.loads(proc.stdout)]


def configure(c, classroom: Classroom, env: dict) -> None:
    spawner = classroom["spawner"]
    if classroom.real_unix_users:
        c.JupyterHub.spawner_class = OwnAccountSpawner
    else:
        c.JupyterHub.spawner_class = SharedAccountSpawner
        c.SharedAccountSpawner.homes_dir = str(classroom.homes_dir)
    lessons_dir = classroom.lessons_dir

    def give_lessons(spawner):
        if classroom.real_unix_users:
            pw = pwd.getpwnam(spawner.user.name)
            copy_new_lessons(lessons_dir, Path(pw.pw_dir), pw.pw_uid, pw.pw_gid)
        else:
            home = classroom.homes_dir / spawner.user.name
            home.mkdir(parents=True, exist_ok=True)
            copy_new_lessons(lessons_dir, home, None, None)

    c.Spawner.pre_spawn_hook = give_lessons
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
