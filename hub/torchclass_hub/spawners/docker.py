"""spawner.type docker: every user gets their own container of the notebook image.

The hub runs in a container too (`make up-docker`: the hub image, the engine's socket mounted,
no privilege) with the classroom's data dir mounted at the same path, so the host paths named
here are right on both sides. Containers use the host's network, each server on a free port,
because the engine on a classroom machine has no bridge. Per user: a named volume for the home
folder, the classroom's CPU and memory limits, the staged datasets read-only, and only the part
of the nbgrader exchange that user may see:

    student     <exchange>/<course>/outbound             -> /srv/nbgrader/exchange/<course>/outbound (ro)
                <exchange>/<course>/inbound-private/<u>  -> /srv/nbgrader/exchange/<course>/inbound  (rw)
    instructor  <exchange>, <course dir>                 -> the same paths (rw); NBGRADER_EXCHANGE
                                                            tells nbgrader where the exchange is

Every container runs as uid 1000, so Unix permissions cannot stop one student reading another's
submission; mounts can: a student's container holds no other student's folder. The instructor
runs `gather-submissions <course>` (in the notebook image), then `nbgrader collect`; the
instructor's server carries the formgrader (TORCHCLASS_ROLE=instructor).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torchclass_classroom as config
from dockerspawner import DockerSpawner

EXCHANGE_IN_CONTAINER = "/srv/nbgrader/exchange"
DATA_IN_CONTAINER = "/srv/torchclass/data"
# Settings that name paths on the hub's machine; the image has its own.
HOST_ONLY_ENV = {"PYTHONPATH", "JUPYTER_CONFIG_PATH", "TORCHCLASS_DATA"}


def _owned_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, 1000, 100)


def exchange_mounts(exchange: Path, course_id: str, user: str, instructor: bool,
                    course_dir: Path | None = None) -> dict:
    """DockerSpawner `volumes` entries (host path -> bind) for one user's view of the exchange;
    creates the host folders a student's mounts need."""
    if instructor:
        # At the host's paths: the course's own nbgrader_config.py names them.
        volumes = {str(exchange): {"bind": str(exchange), "mode": "rw"}}
        if course_dir is not None:
            volumes[str(course_dir)] = {"bind": str(course_dir), "mode": "rw"}
        return volumes
    course = exchange / course_id
    inside = f"{EXCHANGE_IN_CONTAINER}/{course_id}"
    private = course / "inbound-private" / user
    for folder in (course / "outbound", course / "inbound-private", private):
        _owned_dir(folder)
    return {
        str(course / "outbound"): {"bind": f"{inside}/outbound", "mode": "ro"},
        str(private): {"bind": f"{inside}/inbound", "mode": "rw"},
    }


class HostNetworkDockerSpawner(DockerSpawner):
    """DockerSpawner on the host's network: each server listens on 127.0.0.1 on its own port
    (not on every interface), where the hub and its proxy, on the same host, reach it."""

    async def get_ip_and_port(self):
        return self.ip, self.port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(c, classroom, env: dict) -> None:
    spawner = classroom["spawner"]
    course_id = classroom.course_id
    instructors = set(classroom.instructors)
    cpu_limit = float(spawner.get("cpu_limit") or 1)

    c.JupyterHub.spawner_class = HostNetworkDockerSpawner
    c.DockerSpawner.ip = "127.0.0.1"
    c.DockerSpawner.image = spawner.get("image") or config.NOTEBOOK_IMAGE
    c.DockerSpawner.network_name = "host"
    c.DockerSpawner.use_internal_ip = True
    c.DockerSpawner.remove = True
    c.DockerSpawner.cpu_limit = cpu_limit
    c.DockerSpawner.mem_limit = spawner.get("mem_limit") or "2G"
    c.DockerSpawner.cmd = ["start-notebook"]
    c.DockerSpawner.name_template = f"torchclass-{course_id}-{{username}}"
    c.DockerSpawner.start_timeout = spawner["start_timeout"]
    c.DockerSpawner.http_timeout = spawner["start_timeout"]
    c.Spawner.default_url = "/lab"
    if spawner.get("gpu"):
        c.DockerSpawner.extra_host_config = {"device_requests": [
            {"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}]}

    def pre_spawn(spawner_):
        user = spawner_.user.name
        instructor = user in instructors
        volumes = {f"torchclass-{course_id}-home-{{username}}": "/home/jovyan"}
        if classroom.datasets_dir.is_dir() and any(classroom.datasets_dir.iterdir()):
            volumes[str(classroom.datasets_dir)] = {"bind": DATA_IN_CONTAINER, "mode": "ro"}
        volumes.update(exchange_mounts(classroom.exchange_dir, course_id, user, instructor,
                                       classroom.course_dir))
        spawner_.volumes = volumes
        # Host networking: one free port per server.
        spawner_.port = _free_port()
        spawner_.environment = {
            **{k: v for k, v in env.items() if k not in HOST_ONLY_ENV},
            "TORCHCLASS_COURSE_ID": course_id,
            "TORCHCLASS_ROLE": "instructor" if instructor else "student",
            "OMP_NUM_THREADS": str(max(1, int(cpu_limit))),
            **({"NBGRADER_COURSE_ROOT": str(classroom.course_dir),
                "NBGRADER_EXCHANGE": str(classroom.exchange_dir),
                # Set here, not only by start-notebook: `docker exec` and terminals read the
                # instructor's config too, which switches Autograde off in this container...
                "JUPYTER_CONFIG_PATH": "/etc/jupyter/instructor",
                # ... and names the sandboxed command instead (root, on the host).
                "TORCHCLASS_GRADE_COMMAND": "make grade-docker ASSIGNMENT={aid}, as root on "
                                            "the classroom's host"} if instructor else {}),
        }

    c.Spawner.pre_spawn_hook = pre_spawn
