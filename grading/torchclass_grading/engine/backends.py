"""Where kernels run: one declared interface, KernelBackend, and its implementations chosen by
name (as JupyterHub chooses a Spawner):

- "local": sandbox.Slot, a per-worker sandbox account and kernels forked from a kernel
  factory (the default; sandbox.py, kernel_zygote.py);
- "docker": docker_backend.DockerSlot, each kernel in a container of the notebook image;
- the Kubernetes Job's runner container uses k8s_job.PodSlot (the kernel is the pod's other
  container); it is passed to run.execute directly, not chosen by name.

A worker process holds one backend for its life and, per notebook, calls new_scratch, give
(for every file it puts there), launch or kernel_cmd, then finish.
"""

from __future__ import annotations

import abc
from pathlib import Path

from torchclass_grading import sandbox
from torchclass_grading.engine.common import EngineError


class KernelBackend(abc.ABC):
    """What run.execute needs from the place kernels run. Constructed once per worker as
    `Backend(limits, env, hide=..., preload=..., **options)` (sandbox.Limits, the kernel's
    environment, paths kernels must not see, modules a kernel factory may import first)."""

    @abc.abstractmethod
    def new_scratch(self) -> Path:
        """A fresh, empty dir for one notebook: the kernel's cwd, connection file, sockets,
        the assignment's data files and the sentinel's seal dir."""

    @abc.abstractmethod
    def give(self, path: Path) -> None:
        """Make a file or dir the worker created in the scratch dir the kernel's to read (and,
        for dirs, write)."""

    @abc.abstractmethod
    def launch(self, connection_file: str, scratch: Path, startup: list[str]):
        """A kernel forked from a factory, as a Popen-like object (pid, poll, wait, kill), or
        None: then the worker starts `kernel_cmd` itself."""

    @abc.abstractmethod
    def kernel_cmd(self, connection_file: str, scratch: Path, startup: list[str]) -> list[str]:
        """The command that starts a kernel for connection_file; it runs every line of
        `startup` (seeds, then the sentinel) before any student code."""

    @abc.abstractmethod
    def finish(self, scratch: Path) -> None:
        """After a notebook: kill what is left of its kernel and remove its scratch dir."""


def _local():
    return sandbox.Slot


def _docker():
    from torchclass_grading.docker_backend import DockerSlot  # the docker client only when used

    return DockerSlot


BACKENDS = {"local": _local, "docker": _docker}


def backend_class(name: str) -> type[KernelBackend]:
    """The backend class registered under name; EngineError for an unknown name."""
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r} (choose {' or '.join(BACKENDS)})")
    return BACKENDS[name]()


# sandbox.py is the security boundary and stays as it is: its Slot implements the interface
# and is registered as one, not rewritten to inherit it.
KernelBackend.register(sandbox.Slot)
