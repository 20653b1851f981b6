"""The Docker backend: each submission's kernel runs in a container of the course's notebook image.

The grading worker still drives the kernel with jupyter_client over the ipc transport; only the
kernel command changes. It becomes `docker run` of the notebook image with the worker's scratch
dir bind-mounted at the same path, so the connection file and the kernel's unix sockets are
where both sides expect them (the host and the container share one kernel, so unix sockets
work across the bind mount). The container has

- no network (`--network none`: loopback only), no capabilities, no new privileges;
- a read-only root filesystem: the scratch dir is the only writable place besides a small
  tmpfs on /tmp (both count against the memory limit or the file-size limit);
- an unprivileged uid that owns nothing outside the scratch dir (no host account needed);
- limits: memory (cgroup, no swap), CPUs, processes (pids cgroup), CPU seconds, file size and
  open files (rlimits);
- no view of the course dir, the gradebook, the sources or any other submission: nothing of the
  host is mounted but the scratch dir (and the classroom's datasets, read-only, if the grader
  has TORCHCLASS_DATA set).

The docker CLI is the kernel process jupyter_client sees: it proxies the interrupt signal to
the container (the image's tini forwards it to the kernel), and it ends when the kernel ends.
Everything else (the image probe, listing and removing containers) goes through the docker SDK.
Containers are named per kernel and labelled with the grading worker that started them;
`finish()` removes them, and a new worker removes those of workers that no longer run, so a
killed grader leaves nothing behind once the next one starts.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import docker
from torchclass_classroom import NOTEBOOK_IMAGE

from torchclass_grading.engine.backends import KernelBackend
from torchclass_grading.sandbox import (
    STATE_DIR,
    Limits,
    new_scratch_dir,
    private_dir,
    process_start_time,
    remove_dead_scratch,
)

LABEL = "torchclass.grading"          # value: "<host>:<pid>:<start time>" of the worker
SCRATCH_ROOT = STATE_DIR / "docker"  # not world-writable (see sandbox.STATE_DIR)
SANDBOX_UID = 61000                   # owns only the scratch dirs; no account of that id needed
IMAGE_PATH = "/opt/torchclass/bin:/usr/local/bin:/usr/bin:/bin"
IMAGE_DATA = "/srv/torchclass/data"   # where torchclass_course looks for the classroom's datasets
TMPFS = "/tmp:rw,nosuid,nodev,size=64m"
# Variables of the grader's environment that name host paths: the image has its own.
HOST_ONLY = {"PATH", "PYTHONPATH", "TORCHCLASS_DATA"}


class DockerError(RuntimeError):
    pass


def docker_command() -> str:
    """The CLI that runs each kernel's container: Debian's client (BuildKit built in) unless
    $DOCKER names another, as the Makefile does."""
    return os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists()
                                        else shutil.which("docker") or "docker")


def default_image() -> str:
    """The CPU notebook image `make build-cpu` tags: torchclass/notebook:<project version>."""
    return os.environ.get("TORCHCLASS_NOTEBOOK_IMAGE") or NOTEBOOK_IMAGE


def _owner(pid: int) -> str:
    return f"{os.uname().nodename}:{pid}:{process_start_time(pid)}"


class DockerSlot(KernelBackend):
    """One grading worker's containers (the engine's KernelBackend "docker")."""

    def __init__(self, limits: Limits, env: dict[str, str], hide=(), preload=(),
                 image: str | None = None, cpus: float = 1.0, uid: int = SANDBOX_UID):
        # hide: nothing of the host is mounted but the scratch dir, so there is nothing more to
        # hide. preload: kernels start by command in a fresh container (no forking factory).
        self.limits = limits
        self.env = {k: v for k, v in env.items() if k not in HOST_ONLY}
        self.data = env.get("TORCHCLASS_DATA")
        self.image = image or default_image()
        self.cpus = cpus
        self.docker = docker_command()
        # Ownership of the scratch dir: only root can hand it to another uid. Without root the
        # caller can still run containers (docker group), as itself.
        self.root = os.geteuid() == 0
        self.uid, self.gid = (uid, uid) if self.root else (os.getuid(), os.getgid())
        self.owner = _owner(os.getpid())
        self._containers: dict[Path, list[str]] = {}
        try:
            self.client = docker.from_env(timeout=60)
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise DockerError(f"docker image {self.image!r} is not available (no such image); "
                              "build it with `make build-cpu` or name another with --image") from None
        except docker.errors.DockerException as exc:
            raise DockerError(f"docker image {self.image!r} is not available ({exc}; no Docker "
                              "engine? `make docker-engine` starts one)") from None
        private_dir(STATE_DIR, 0o711)
        private_dir(SCRATCH_ROOT, 0o711)
        self.remove_leftovers()

    def _remove(self, names: list[str]) -> None:
        for name in names:
            try:
                self.client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass  # --rm removed it when its kernel ended
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: --rm is removing it right now
                    raise DockerError(f"cannot remove grading container {name}: {exc}") from None

    def remove_leftovers(self) -> list[str]:
        """Remove the grading containers and scratch dirs of workers on this host that no
        longer run; return the containers' names."""
        host = os.uname().nodename
        dead = []
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            o_host, _, rest = container.labels.get(LABEL, "").partition(":")
            pid, _, start = rest.partition(":")
            if o_host == host and pid.isdigit() and process_start_time(int(pid)) != start:
                dead.append(container.name)
        self._remove(dead)
        remove_dead_scratch(SCRATCH_ROOT)
        return dead

    def new_scratch(self) -> Path:
        d = new_scratch_dir(SCRATCH_ROOT)
        self.give(d)
        return d

    def give(self, path: Path) -> None:
        """Hand a file the grader wrote in the scratch dir to the container's uid."""
        if self.root:
            os.chown(path, self.uid, self.gid)

    def launch(self, connection_file: str, scratch: Path, startup: list[str]) -> None:
        """No forked kernels here: the engine falls back to `kernel_cmd`."""

    def kernel_cmd(self, connection_file: str, scratch: Path, startup: list[str]) -> list[str]:
        lim = self.limits
        name = f"tcgrade-{uuid.uuid4().hex[:16]}"
        self._containers.setdefault(scratch, []).append(name)
        env = dict(self.env, HOME=str(scratch), TMPDIR=str(scratch), MPLCONFIGDIR=str(scratch),
                   PATH=IMAGE_PATH)
        cmd = [self.docker, "run", "--rm", "--name", name, "--label", f"{LABEL}={self.owner}",
               "--network", "none", "--user", f"{self.uid}:{self.gid}",
               "--read-only", "--tmpfs", TMPFS, "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges",
               f"--memory={lim.memory_bytes}", f"--memory-swap={lim.memory_bytes}",
               f"--cpus={self.cpus}", f"--pids-limit={lim.processes}",
               # The cgroup ends a kernel over its memory; the data rlimit first turns one big
               # allocation into a MemoryError the student can read, as the local sandbox does.
               "--ulimit", f"data={lim.memory_bytes}:{lim.memory_bytes}",
               "--ulimit", f"cpu={lim.cpu_seconds}:{lim.cpu_seconds}",
               "--ulimit", f"fsize={lim.file_bytes}:{lim.file_bytes}",
               "--ulimit", f"nofile={lim.open_files}:{lim.open_files}",
               "--ulimit", "core=0:0",
               # The kernel's raw stdout and stderr (not its messages) go to a log file in the
               # scratch dir (see below), never to the grader; no log driver keeps a copy.
               "--log-driver", "none", "--no-healthcheck",
               "-v", f"{scratch}:{scratch}", "-w", str(scratch)]
        if self.data and Path(self.data).is_dir():
            cmd += ["-v", f"{self.data}:{IMAGE_DATA}:ro"]
            env["TORCHCLASS_DATA"] = IMAGE_DATA
        for k, v in sorted(env.items()):
            cmd += ["-e", f"{k}={v}"]
        cmd += [self.image, "sh", "-c", 'exec "$@" >>"$0" 2>&1', str(scratch / "kernel.log"),
                "python", "-m", "ipykernel_launcher", "-f", connection_file,
                "--HistoryManager.enabled=False"]
        cmd += [f"--IPKernelApp.exec_lines={line}" for line in startup]
        return cmd

    def finish(self, scratch: Path) -> None:
        self._remove(self._containers.pop(scratch, []))
        shutil.rmtree(scratch, ignore_errors=True)
