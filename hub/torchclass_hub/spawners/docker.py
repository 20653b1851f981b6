"""spawner.type docker: every user gets their own container of the notebook image.

The hub runs in a container too (the hub image, the engine's socket mounted, no privilege);
containers use the host's network with a free port each, as the engine on a classroom machine
has no bridge. Per user: a named volume for the home folder, CPU and memory limits, the data
volume read-only, and only the part of the nbgrader exchange that user may see:

    students     <exchange>/<course>/outbound             -> .../<course>/outbound   (read-only)
                 <exchange>/<course>/inbound-private/<u>  -> .../<course>/inbound    (their own)
    instructors  <exchange>                               -> the whole exchange      (read-write)

Every container runs as uid 1000, so Unix permissions cannot stop one student reading another's
submission; mounts can, because a student's container never contains the others' folders. The
instructor runs `gather-submissions <course>` (in the notebook image) before `nbgrader collect`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

EXCHANGE_IN_CONTAINER = "/srv/nbgrader/exchange"
DATA_IN_CONTAINER = "/srv/torchclass/data"
# Settings that name paths on the hub's machine; the image has its own.
HOST_ONLY_ENV = {"PYTHONPATH", "JUPYTER_CONFIG_PATH", "TORCHCLASS_DATA"}


def exchange_mounts(exchange: Path, course_id: str, user: str, instructor: bool) -> dict:
    """DockerSpawner `volumes` entries (host path -> bind) for one user's view of the exchange;
    creates the host folders a student's mounts need, owned by uid 1000."""
    course = exchange / course_id
    inside = f"{EXCHANGE_IN_CONTAINER}/{course_id}"
    if instructor:
        return {str(exchange): {"bind": EXCHANGE_IN_CONTAINER, "mode": "rw"}}
    private = course / "inbound-private" / user
    for folder in (course / "outbound", course / "inbound", private):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, 1000, 100)
    return {
        str(course / "outbound"): {"bind": f"{inside}/outbound", "mode": "ro"},
        str(private): {"bind": f"{inside}/inbound", "mode": "rw"},
    }


def user_volumes(user: str, *, exchange: Path, course_id: str, instructor: bool,
                 data_volume: str | None, home_prefix: str = "torchclass-home-") -> dict:
    volumes = {f"{home_prefix}{user}": {"bind": "/home/jovyan", "mode": "rw"}}
    if data_volume:
        volumes[data_volume] = {"bind": DATA_IN_CONTAINER, "mode": "ro"}
    volumes.update(exchange_mounts(exchange, course_id, user, instructor))
    return volumes


def configure(c, classroom, env: dict) -> None:
    settings = classroom["spawner"].get("docker", {})
    course_id = classroom.course_id
    exchange = Path(settings.get("exchange_dir", "/srv/torchclass/exchange"))
    instructors = set(classroom.get("instructors", []) or [])
    data_volume = settings.get("data_volume", "torchclass-data")

    c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
    c.DockerSpawner.image = settings.get("image", "torchclass/notebook:0.1.0")
    c.DockerSpawner.network_name = "host"
    c.DockerSpawner.use_internal_ip = True
    c.DockerSpawner.remove = True
    c.DockerSpawner.cpu_limit = float(settings.get("cpu_limit", 1.0))
    c.DockerSpawner.mem_limit = settings.get("mem_limit", "2G")
    c.DockerSpawner.cmd = ["start-notebook"]
    c.DockerSpawner.name_template = "torchclass-{username}"

    async def pre_spawn(spawner):
        user = spawner.user.name
        instructor = user in instructors
        spawner.volumes = user_volumes(user, exchange=exchange, course_id=course_id,
                                       instructor=instructor, data_volume=data_volume)
        # Host networking: each server on its own free port, picked by the spawner.
        spawner.port = spawner.port or _free_port()
        spawner.environment.update(
            {**{k: v for k, v in env.items() if k not in HOST_ONLY_ENV},
             "TORCHCLASS_COURSE_ID": course_id,
             "TORCHCLASS_ROLE": "instructor" if instructor else "student",
             "OMP_NUM_THREADS": str(max(1, int(c.DockerSpawner.cpu_limit)))}
        )

    c.Spawner.pre_spawn_hook = pre_spawn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
