"""The local sandbox a student's kernel runs in (no Docker needed).

As root, every grading worker takes one unprivileged Unix account of its own (tcgrade1,
tcgrade2, ...: no home, nologin, created when missing; an flock keeps two graders from
sharing one), and its kernels run as that account in fresh network and mount namespaces (no
network but their own loopback; the course dir, the checkout with the assignments' sources and
any other path the engine names hidden under empty tmpfs), with rlimits on CPU time, address
space, processes, file size and open files, a scrubbed environment, and a private scratch dir
holding only the notebook's data files. The kernel talks to the grader over unix sockets in that
dir (jupyter's ipc transport), never TCP.

Kernels are forked from a per-worker kernel factory (kernel_zygote.py) that has imported the
heavy libraries once; the worker is a child subreaper, so forked kernels, and whatever they fork,
are its children to wait for and reap. When the factory cannot be used, a kernel is started as a
fresh interpreter that locks itself down the same way (kernel_cmd), only slower.

After each notebook every process of the account is stopped, then killed, round after round
until none is left: a fork bomb cannot outrun it, and nothing it started survives into the next
student's notebook.

Without root there is no account to switch to and no namespace: kernels run as the caller
with the rlimits only, and `isolated` is False so the engine can say so.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

USER_PREFIX = "tcgrade"
MAX_SLOTS = 64


def _default_state_dir() -> Path:
    """Scratch dirs, slot locks, the kernels' library copy and dataset cache. Never in a
    world-writable place such as /var/tmp, where a student could create it first and plant code
    that root then imports: as root under /var/lib (only root creates there), otherwise in the
    caller's own state dir."""
    if os.environ.get("TORCHCLASS_GRADE_STATE"):
        return Path(os.environ["TORCHCLASS_GRADE_STATE"])
    if os.geteuid() == 0:
        return Path("/var/lib/torchclass-grade")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "torchclass-grade"


STATE_DIR = _default_state_dir()
PR_SET_CHILD_SUBREAPER = 36
ZYGOTE = Path(__file__).with_name("kernel_zygote.py")
# Kill rounds before giving up on a slot's leftovers (each round stops, then kills, everything).
KILL_ROUNDS = 50


class SandboxError(RuntimeError):
    pass


def private_dir(path: Path, mode: int = 0o711) -> Path:
    """path as a directory of this process's user that nobody else can write: made if missing,
    refused (with the reason) if it is a link, someone else's, or writable by others."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except FileExistsError:  # a link or a file where the dir should be: said below
        pass
    st = os.lstat(path)
    why = ("is a symbolic link" if stat.S_ISLNK(st.st_mode) else
           "is not a directory" if not stat.S_ISDIR(st.st_mode) else
           f"belongs to uid {st.st_uid}, not {os.geteuid()}" if st.st_uid != os.geteuid() else
           "is writable by other users" if st.st_mode & 0o022 else "")
    if why:
        raise SandboxError(f"{path} {why}: the grader will not use it. Fix: remove it "
                           "(someone may have planted it), then grade again")
    os.chmod(path, mode)
    return path


def open_lock(path: Path):
    """A lock file of this user's, opened without following a link; 0600 so that no kernel can
    hold the lock itself."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise SandboxError(f"{path} belongs to another user: the grader will not use it")
    return os.fdopen(fd, "r+")


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


def _files_only_nsswitch() -> str | None:
    """The host's nsswitch.conf with host names from files only (see kernel_zygote)."""
    try:
        text = Path("/etc/nsswitch.conf").read_text()
    except OSError:
        return None
    lines = [line for line in text.splitlines() if not line.startswith("hosts:")]
    private_dir(STATE_DIR)
    path = STATE_DIR / "nsswitch.conf"
    tmp = path.with_suffix(f".{os.getpid()}")
    tmp.write_text("\n".join([*lines, "hosts: files"]) + "\n")
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return str(path)


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks: a pid plus this tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def new_scratch_dir(root: Path) -> Path:
    """A fresh scratch dir (0700) named for this worker, so that a later grader can tell the
    dirs a killed one left behind (remove_dead_scratch)."""
    pid = os.getpid()
    d = root / f"run-{pid}-{process_start_time(pid)}-{uuid.uuid4().hex[:12]}"
    d.mkdir(mode=0o700)
    return d


def remove_dead_scratch(root: Path) -> None:
    """Remove the scratch dirs of workers that no longer run (a grader killed mid-notebook)."""
    for d in root.glob("run-*-*-*"):
        _, pid, start, _ = d.name.split("-", 3)
        if pid.isdigit() and process_start_time(int(pid)) != start:
            shutil.rmtree(d, ignore_errors=True)


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (they become its children to wait for)."""
    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_children() -> list[int]:
    """Collect every child of this process that has exited; their pids."""
    reaped = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


class ForkedKernel:
    """A forked kernel seen the way jupyter_client sees the Popen of a kernel it started."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already, by Slot.reap
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)


class Slot:
    """One worker's sandbox: its account (as root), its lock, its kernel factory, its scratch dirs.

    hide: paths the kernel must not see (as root: covered in its mount namespace).
    preload: modules the kernel factory imports once for every kernel it forks; None: no
    factory, every kernel starts as a fresh interpreter.
    """

    def __init__(self, limits: Limits, env: dict[str, str], hide=(), preload=()):
        self.limits = limits
        self.env = env
        self.hide = [str(p) for p in hide]
        self.preload = None if preload is None else list(preload)
        self.isolated = os.geteuid() == 0
        self.zygote = None
        self.nsswitch = _files_only_nsswitch() if self.isolated else None
        # Accounts may enter their own scratch dir in it, never list the others.
        private_dir(STATE_DIR, 0o711 if self.isolated else 0o700)
        self.user = None
        self._lock = None
        if self.isolated:
            for i in range(1, MAX_SLOTS + 1):
                fh = open_lock(STATE_DIR / f"{USER_PREFIX}{i}.lock")  # held for the slot's life
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
        remove_dead_scratch(STATE_DIR)

    def new_scratch(self) -> Path:
        d = new_scratch_dir(STATE_DIR)
        if self.isolated:
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        return d

    def give(self, path: Path) -> None:
        """Hand a file the grader wrote in the scratch dir to the sandbox account."""
        if self.isolated:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _kernel_env(self, scratch: Path) -> dict[str, str]:
        return dict(self.env, HOME=str(scratch), TMPDIR=str(scratch), MPLCONFIGDIR=str(scratch))

    def kernel_cmd(self, connection_file: str, scratch: Path, startup: list[str]) -> list[str]:
        """The command that starts a kernel without the factory: a fresh interpreter that locks
        itself down exactly as a forked kernel does (kernel_zygote.py --kernel)."""
        spec = self._spec(connection_file, scratch, startup)
        return ["env", "-i", f"PYTHONHASHSEED={self.env.get('PYTHONHASHSEED', '0')}",
                sys.executable, str(ZYGOTE), "--kernel", json.dumps(spec)]

    def _spec(self, connection_file: str, scratch: Path, startup: list[str]) -> dict:
        return {
            "nsswitch": self.nsswitch,
            "uid": self.user.pw_uid if self.isolated else None,
            "gid": self.user.pw_gid if self.isolated else None,
            "hide": self.hide, "limits": asdict(self.limits), "scratch": str(scratch),
            "keep": self._needed(scratch),
            "env": self._kernel_env(scratch),
            "argv": ["-f", connection_file, *self._kernel_args(startup)],
        }

    def _needed(self, scratch: Path) -> list[str]:
        """Dirs the kernel reads from: kept visible under its private /tmp (kernel_zygote)."""
        paths = [str(scratch), *self.env.get("PYTHONPATH", "").split(os.pathsep)]
        paths += [self.env.get(k, "") for k in ("TORCHCLASS_DATA", "TORCHCLASS_SHARED_CACHE")]
        return [os.path.realpath(p) for p in paths if p]

    @staticmethod
    def _kernel_args(startup: list[str]) -> list[str]:
        return ["--HistoryManager.enabled=False",
                *[f"--IPKernelApp.exec_lines={line}" for line in startup]]

    # -- the kernel factory

    def _start_zygote(self):
        # The worker adopts every orphan below it: forked kernels and whatever they fork.
        if not become_subreaper():
            return None
        env = dict(self.env, MPLCONFIGDIR=str(STATE_DIR / "matplotlib"))
        private_dir(STATE_DIR / "matplotlib", 0o700)
        proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE), json.dumps(self.preload)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=STATE_DIR)
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            proc.wait()
            return None
        return proc

    def launch(self, connection_file: str, scratch: Path, startup: list[str]) -> ForkedKernel | None:
        """A kernel forked from the factory, or None when there is none (start it by kernel_cmd)."""
        if self.preload is None:
            return None
        if self.zygote is None or self.zygote.poll() is not None:
            self.zygote = self._start_zygote()
            if self.zygote is None:
                return None
        spec = self._spec(connection_file, scratch, startup)
        try:
            self.zygote.stdin.write(json.dumps({"kernel": spec}) + "\n")
            self.zygote.stdin.flush()
            answer = json.loads(self.zygote.stdout.readline() or "{}")
        except (OSError, ValueError):
            answer = {}
        if "pid" not in answer:
            raise SandboxError(f"the kernel factory could not start a kernel: "
                               f"{answer.get('error', 'it stopped answering')}")
        return ForkedKernel(answer["pid"])

    def close(self) -> None:
        if self.zygote is not None and self.zygote.poll() is None:
            self.zygote.stdin.close()
            self.zygote.wait(timeout=10)

    # -- cleaning up after a notebook

    def reap(self) -> None:
        """Collect every exited child (orphans the worker adopted); notice a dead factory."""
        if self.zygote is not None and self.zygote.pid in reap_children():
            self.zygote.returncode = -1
            self.zygote = None

    def _alive(self) -> bool:
        """Whether a live process (zombies aside: init or this worker reaps them) is the account's."""
        uid = str(self.user.pw_uid)
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                              if ":" in line)
            except OSError:
                continue
            if fields.get("Uid", "").split()[:1] == [uid] and not fields.get("State", "").strip().startswith("Z"):
                return True
        return False

    def kill_all(self) -> None:
        """Every process of this slot's account: a forked child outlives its kernel.

        Signalled as the account itself with kill(-1), so every process it owns gets it in one
        call; stopped first, so none can fork while the round goes on.
        """
        if not self.isolated:
            return
        killer = ("import os, signal\nfor s in (signal.SIGSTOP, signal.SIGKILL):\n"
                  "    try:\n        os.kill(-1, s)\n    except ProcessLookupError:\n"
                  "        pass\n")
        for _ in range(KILL_ROUNDS):
            self.reap()
            if not self._alive():
                return
            subprocess.run(
                ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                 "--clear-groups", "--", sys.executable, "-S", "-E", "-c", killer],
                check=False, capture_output=True)
        raise SandboxError(f"processes of {self.user.pw_name} survived {KILL_ROUNDS} kill rounds")

    def finish(self, scratch: Path) -> None:
        self.kill_all()
        self.reap()
        shutil.rmtree(scratch, ignore_errors=True)
