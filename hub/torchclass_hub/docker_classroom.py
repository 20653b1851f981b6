"""The single-host Docker classroom: `make up-docker` / `make down-docker` / `make grade-docker`.

    python -m torchclass_hub.docker_classroom ACTION
      up [--port N]        prepare the course, start the hub container
      down                 stop the hub and every student container (data is kept)
      grade ASSIGNMENT [--workers N] [--force]
                           grade the collected submissions, each kernel in a sandboxed
                           container of the notebook image

The classroom file is the same one `make up` reads ($TORCHCLASS_CLASSROOM, default
hub/classroom.yaml) with spawner.type set to docker (a copy is written into the data dir, with
the jupyterhub_config.d/ beside the original: the hub container sees only the data dir); the
data dir defaults to /var/lib/torchclass-docker ($TORCHCLASS_DATA_DIR). Accounts, the nbgrader
course and the released assignments are prepared here exactly as for `make up` (needs root and
`make install`); then the hub image runs as uid 1000 with the engine's socket mounted (no
privilege) and the data dir mounted at the same path, and spawns the students' containers
(spawners/docker.py). Every container runs as uid 1000, so the course and the exchange are
handed to uid 1000. The engine is driven through the docker SDK.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import docker
import torchclass_classroom as config
import yaml

from torchclass_hub import prepare
from torchclass_hub.cli import port_busy

HUB_IMAGE = os.environ.get("HUB_IMAGE", f"torchclass/hub:{config.VERSION}")
NOTEBOOK_IMAGE = os.environ.get("NOTEBOOK_IMAGE", config.NOTEBOOK_IMAGE)
SOCKET = Path("/var/run/docker.sock")


def engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        sys.exit(f"error: no Docker engine answers at {SOCKET} ({exc}): run 'make docker-engine'")
    return client


def load(port: int | None) -> config.Classroom:
    source = Path(os.environ.get("TORCHCLASS_CLASSROOM") or config.DEFAULT_CLASSROOM).resolve()
    data_dir = Path(os.environ.get("TORCHCLASS_DATA_DIR") or "/var/lib/torchclass-docker")
    raw = yaml.safe_load(source.read_text())
    if not isinstance(raw, dict):
        sys.exit(f"error: {source}: expected a mapping of keys at the top level")
    raw.setdefault("spawner", {})["type"] = "docker"
    raw["spawner"].setdefault("image", NOTEBOOK_IMAGE)
    # Relative assignment folders stay relative to the original file.
    raw["assignment_dirs"] = [str((source.parent / d).resolve())
                              for d in raw.get("assignment_dirs", [])]
    if not raw["assignment_dirs"]:
        del raw["assignment_dirs"]
    data_dir.mkdir(parents=True, exist_ok=True)
    derived = data_dir / "classroom-docker.yaml"
    derived.write_text(f"# Written by `make up-docker` from {source}; edit that file instead.\n"
                       + yaml.safe_dump(raw, sort_keys=False))
    extras = data_dir / "jupyterhub_config.d"
    shutil.rmtree(extras, ignore_errors=True)
    if (source.parent / "jupyterhub_config.d").is_dir():
        shutil.copytree(source.parent / "jupyterhub_config.d", extras)
    env = {"TORCHCLASS_DATA_DIR": str(data_dir)}
    if port:
        env["TORCHCLASS_PORT"] = str(port)
    try:
        return config.load(derived, env=env)
    except config.ConfigError as error:
        sys.exit(f"error: {str(error).replace(str(derived), str(source))}")


def hub_name(classroom) -> str:
    return f"torchclass-hub-{classroom.course_id}"


def chown_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, 1000, 100)


def up(classroom, timeout: float) -> int:
    name = hub_name(classroom)
    client = engine()
    try:
        old = client.containers.get(name)
    except docker.errors.NotFound:
        old = None
    if old is not None and old.status == "running":
        print(f"The Docker classroom is already running ({name}) at {classroom.url}")
        return 0
    if old is not None:  # a hub container that exited (a crash, a reboot): its data is kept
        old.remove(force=True)
    if port_busy(classroom.ip, classroom.port):
        print(f"error: port {classroom.port} on {classroom.ip} is busy. Fix: stop that program "
              f"or pick another port: make up-docker PORT=<port>", file=sys.stderr)
        return 3
    if os.geteuid() != 0:
        sys.exit("error: make up-docker prepares the course and the exchange for uid 1000: run it as root")
    for image in (HUB_IMAGE, classroom["spawner"]["image"]):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            sys.exit(f"error: image {image} is missing: run 'make build'")
    result = prepare.everything(classroom)
    # Every container runs as uid 1000: the hub writes its state, instructors the course, and
    # the hub makes each student's private inbound folder inside the course's exchange.
    for path in (classroom.state_dir, classroom.course_dir,
                 classroom.exchange_dir / classroom.course_id):
        chown_tree(path)
    data_dir = str(classroom.data_dir)
    hub = client.containers.run(
        HUB_IMAGE, name=name, detach=True, network_mode="host",
        group_add=[str(SOCKET.stat().st_gid)],
        volumes={str(SOCKET): {"bind": str(SOCKET), "mode": "rw"},
                 data_dir: {"bind": data_dir, "mode": "rw"}},
        environment={"TORCHCLASS_CLASSROOM": str(classroom.source),
                     "TORCHCLASS_DATA_DIR": data_dir,
                     "TORCHCLASS_PORT": str(classroom.port),
                     "TORCHCLASS_IP": classroom.ip},
        working_dir=str(classroom.state_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.reload()
        if hub.status != "running":
            break
        try:
            with urllib.request.urlopen(classroom.url + "hub/health", timeout=2):
                print(f"The Docker classroom is up: {classroom.url}")
                print(f"  initial passwords: {classroom.password_file}")
                print(f"  new accounts: {', '.join(result['new_users']) or 'none'}; "
                      f"released: {', '.join(result['released']) or 'nothing new'}")
                print(f"  hub container: {name}; data: {data_dir}; stop: make down-docker")
                return 0
        except OSError:
            time.sleep(0.5)
    logs = hub.logs(tail=40).decode(errors="replace")
    print(f"error: the hub did not come up within {timeout:.0f} s:\n{logs}", file=sys.stderr)
    return 5


def down(classroom) -> int:
    prefix = f"torchclass-{classroom.course_id}-"
    mine = [c for c in engine().containers.list(all=True)
            if c.name == hub_name(classroom) or c.name.startswith(prefix)]
    for container in mine:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # a student's container DockerSpawner removed meanwhile
    print(f"The Docker classroom is stopped ({len(mine)} container(s)); data kept in "
          f"{classroom.data_dir} and the home volumes {prefix}home-*")
    return 0


def grade(classroom, assignment: str, workers: int | None, force: bool) -> int:
    """The grading engine on the host (root), kernels in locked-down containers of the notebook
    image; the instructor's container only collects (its Autograde is switched off: it would run
    students' code beside the gradebook). The course goes back to uid 1000 afterwards, as up()
    hands it over, so the formgrader shows the grades."""
    if os.geteuid() != 0:
        sys.exit("error: make grade-docker runs each kernel as a sandbox account: run it as root")
    from torchclass_grading import cli as grading

    os.environ["TORCHCLASS_DATA_DIR"] = str(classroom.data_dir)
    args = ["--classroom", str(classroom.source), "grade", assignment, "--backend", "docker",
            "--image", classroom["spawner"]["image"]]
    args += (["--workers", str(workers)] if workers else []) + (["--force"] if force else [])
    try:
        return grading.main(args)
    finally:
        chown_tree(classroom.course_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "grade"])
    parser.add_argument("assignment", nargs="?", help="for grade: the assignment id")
    parser.add_argument("--workers", type=int, help="for grade: kernels at once")
    parser.add_argument("--force", action="store_true", help="for grade: regrade everything")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 0) or None)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if args.action == "grade" and not args.assignment:
        parser.error("grade needs the assignment id: make grade-docker ASSIGNMENT=<id>")
    classroom = load(args.port)
    if args.action == "grade":
        return grade(classroom, args.assignment, args.workers, args.force)
    return up(classroom, args.timeout) if args.action == "up" else down(classroom)


if __name__ == "__main__":
    sys.exit(main())
