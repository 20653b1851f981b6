"""The local sandbox a student's kernel runs in (no Docker needed).

As root, every grading worker takes one unprivileged Unix account of its own (tcgrade1,
tcgrade2, ...: no home, nologin, created when missing; an flock keeps two graders from
sharing one), and its kernel is started as that account in a fresh network namespace
(`unshare --net`: no network at all, not even loopback), with rlimits on CPU time, address
space, processes, file size and open files, a scrubbed environment, and a private scratch
dir holding only the notebook's data files. The kernel talks to the grader over unix sockets
in that dir (jupyter's ipc transport), never TCP. The course dir, gradebook, source and other
submissions belong to the grader with mode 0700, so the account cannot read any of them.

Without root there is no account to switch to and no namespace: kernels run as the caller
with the rlimits only, and `isolated` is False so the engine can say so.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

USER_PREFIX = "tcgrade"
MAX_SLOTS = 64
STATE_DIR = Path("/var/tmp/torchclass-grade")


class SandboxError(RuntimeError):
    pass


@dataclass
class Limits:
    cpu_seconds: int = 600          # whole kernel, every cell together
    memory_bytes: int = 8 << 30     # address space: torch's CUDA build maps ~5 GB on import
    processes: int = 256            # threads count too (torch and ipykernel start a few)
    file_bytes: int = 256 << 20     # largest file the kernel may write
    open_files: int = 256


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    proc = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--user-group", name],
        capture_output=True, text=True, check=False)
    # 9: created meanwhile by a grader running beside this one.
    if proc.returncode not in (0, 9):
        raise SandboxError(f"cannot create sandbox user {name}: {proc.stderr.strip()}")
    return pwd.getpwnam(name)


class Slot:
    """One worker's sandbox: its account (as root), its lock, its scratch dirs."""

    def __init__(self, limits: Limits, env: dict[str, str]):
        self.limits = limits
        self.env = env
        self.isolated = os.geteuid() == 0
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        if self.isolated:
            os.chmod(STATE_DIR, 0o711)  # accounts may enter their own dir, never list others
        self.user = None
        self._lock = None
        if self.isolated:
            for i in range(1, MAX_SLOTS + 1):
                fh = open(STATE_DIR / f"{USER_PREFIX}{i}.lock", "w")  # noqa: SIM115 (held for life)
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.close()
                    continue
                self._lock = fh
                self.user = _ensure_user(f"{USER_PREFIX}{i}")
                break
            else:
                raise SandboxError(f"all {MAX_SLOTS} sandbox accounts are in use")
            self.kill_all()  # leftovers of a grader that was killed

    def new_scratch(self) -> Path:
        d = STATE_DIR / f"run-{uuid.uuid4().hex[:12]}"
        d.mkdir(mode=0o700)
        if self.isolated:
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        return d

    def give(self, path: Path) -> None:
        """Hand a file the grader wrote in the scratch dir to the sandbox account."""
        if self.isolated:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def kernel_cmd(self, connection_file: str, scratch: Path, startup: list[str]) -> list[str]:
        lim = self.limits
        env = dict(self.env, HOME=str(scratch), TMPDIR=str(scratch), MPLCONFIGDIR=str(scratch))
        cmd = []
        if self.isolated:
            cmd += ["unshare", "--net", "--",
                    "setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                    "--clear-groups", "--inh-caps=-all", "--no-new-privs", "--"]
        cmd += ["prlimit", f"--cpu={lim.cpu_seconds}", f"--as={lim.memory_bytes}",
                f"--nproc={lim.processes}", f"--fsize={lim.file_bytes}",
                f"--nofile={lim.open_files}", "--core=0", "--",
                "env", "-i", *[f"{k}={v}" for k, v in sorted(env.items())],
                sys.executable, "-m", "ipykernel_launcher", "-f", connection_file,
                "--HistoryManager.enabled=False"]
        cmd += [f"--IPKernelApp.exec_lines={line}" for line in startup]
        return cmd

    def kill_all(self) -> None:
        """Every process of this slot's account: a forked child outlives its kernel."""
        if self.isolated:
            subprocess.run(["pkill", "-KILL", "-U", str(self.user.pw_uid)], check=False,
                           capture_output=True)

    def finish(self, scratch: Path) -> None:
        self.kill_all()
        shutil.rmtree(scratch, ignore_errors=True)
