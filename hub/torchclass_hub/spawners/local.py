"""spawner.type: local — one jupyterhub-singleuser process per user on this machine.

As root, each user's server runs as that user's own Unix account (homes are 0700, so nobody
reads anyone else's files). Not as root, every server runs as the one account running the hub,
each in its own folder under <data_dir>/homes: convenient for trying torchclass out, but with
no isolation between students, which the hub logs loudly at start.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from ..config import VENV, Classroom


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
        return env


def copy_new_lessons(lessons_dir: Path, home: Path, uid: int | None, gid: int | None) -> list[Path]:
    """Copy into home/lessons every lesson the student does not have yet. A lesson the student
    already has (perhaps edited) is never overwritten; one they deleted comes back."""
    copied = []
    if not lessons_dir.is_dir():
        return copied
    for src in sorted(lessons_dir.rglob("*.ipynb")):
        dest = home / "lessons" / src.relative_to(lessons_dir)
        if dest.exists():
            continue
        for d in reversed([p for p in dest.parents if p != home and home in p.parents]):
            if not d.exists():
                d.mkdir()
                if uid is not None:
                    os.chown(d, uid, gid)
        shutil.copyfile(src, dest)
        if uid is not None:
            os.chown(dest, uid, gid)
        copied.append(dest)
    return copied


def configure(c, classroom: Classroom, env: dict) -> None:
    spawner = classroom["spawner"]
    if classroom.real_unix_users:
        c.JupyterHub.spawner_class = LocalProcessSpawner
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
