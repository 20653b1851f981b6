"""Kernel factory: a process with the kernel's libraries imported that forks one kernel per notebook.

Importing ipykernel, NumPy, matplotlib and torch costs every new kernel about 2 s of CPU, often
more than the notebook's own cells; forking a process that has done it once costs milliseconds.
sandbox.Slot starts this file as a script, with the kernel's scrubbed environment, and sends one
JSON request per line on stdin:

    {"kernel": {...}}     fork a kernel; answered with {"pid": N} or {"error": "..."}

(`kernel_zygote.py --kernel SPEC` makes the process itself the kernel: the slow way, for when
there is no factory.)

Each kernel is forked twice over so that it is orphaned and adopted by the grading worker (a
child subreaper), which can then wait for it and signal it like a kernel it started itself.

Before any student code runs, the kernel gets a process group of its own; as root, new network
and mount namespaces (loopback only, so a notebook's own multi-process code still works; each
path to hide covered by an empty read-only tmpfs; fresh, size-limited tmpfs over /tmp, /var/tmp
and /dev/shm); rlimits; the sandbox account's uid and gid with no supplementary groups and
no_new_privs; the scrubbed environment; the scratch dir as its working dir; and its stdout and
stderr in a log file there.
"""

import ctypes
import fcntl
import importlib
import json
import os
import resource
import socket
import struct
import sys
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_bytes": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
}

_libc = ctypes.CDLL(None, use_errno=True)
_HERE = os.path.dirname(os.path.abspath(__file__))


def _call(name, *args):
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args!r}: {os.strerror(err)}")


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


# A kernel's own temporary dirs: empty when it starts, gone with its mount namespace, so that
# nothing one submission leaves there (files, startup scripts, shared memory) reaches the next.
PRIVATE_TMP = {"/tmp": b"size=512m,mode=1777", "/var/tmp": b"size=256m,mode=1777",
               "/dev/shm": b"size=1g,mode=1777"}


def _private_tmp(keep):
    """Fresh tmpfs over each of PRIVATE_TMP; what the kernel needs from under them (its scratch
    dir, library, datasets: keep) is bound back in at the same place."""
    held = []
    for path in keep:
        if any(path == t or path.startswith(t + "/") for t in PRIVATE_TMP) and os.path.isdir(path):
            held.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
    for tmp, options in PRIVATE_TMP.items():
        if os.path.isdir(tmp):
            _call("mount", b"tmpfs", tmp.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options)
    for path, fd in held:
        os.makedirs(path, exist_ok=True)
        _call("mount", f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None)
        os.close(fd)


def _isolate(hide, nsswitch, keep=()):
    _call("unshare", CLONE_NEWNET | CLONE_NEWNS)
    # Private, so the mounts below never propagate back to the host's namespace.
    _call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    _private_tmp(keep)
    if nsswitch and os.path.isfile("/etc/nsswitch.conf"):
        # Names from /etc/hosts only: with no network a DNS lookup fails with "try again", and
        # torch's own rendezvous on 127.0.0.1 (DDP, Lightning) warns on stderr about it.
        _call("mount", nsswitch.encode(), b"/etc/nsswitch.conf", None, MS_BIND, None)
    for path in hide:
        if os.path.isdir(path):
            _call("mount", b"tmpfs", path.encode(), b"tmpfs",
                  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=555")
    _loopback_up()


def _become_kernel(spec):
    """In the forked child: lock it down, then run the kernel. Never returns."""
    if spec["uid"] is not None:
        _isolate(spec["hide"], spec.get("nsswitch"), spec.get("keep", ()))
    for key, limit in RLIMITS.items():
        resource.setrlimit(limit, (spec["limits"][key],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec["uid"] is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(spec["scratch"])
    log = os.open("kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 65536)
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.path[:] = [p for p in sys.path if p != _HERE]
    for p in reversed(spec["env"].get("PYTHONPATH", "").split(os.pathsep)):
        if p:
            sys.path.insert(0, p)
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(spec["argv"])
    app.start()


def _fork_kernel(spec):
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        code = 0
        try:
            os.close(read_end)
            # The kernel's process group, known before its pid is: interrupts and kills sent to
            # the group reach the kernel and whatever it forks, and nothing else.
            os.setsid()
            second = os.fork()
            if second == 0:
                os.close(write_end)
                try:
                    _become_kernel(spec)
                except BaseException:  # noqa: BLE001 (reported to the grader's log, then exit)
                    traceback.print_exc()
                    code = 70
                os._exit(code)
            os.write(write_end, str(second).encode())
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 71
        os._exit(code)
    os.close(write_end)
    pid = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(first, 0)
    return {"pid": int(pid)} if pid else {"error": "the kernel could not be forked"}


def main():
    if sys.argv[1:2] == ["--kernel"]:  # no factory: this fresh process becomes the kernel
        _become_kernel(json.loads(sys.argv[2]))
        return
    for name in json.loads(sys.argv[1]) if len(sys.argv) > 1 else []:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (the kernel imports it itself, and says why)
            print(f"kernel factory: {name} not preloaded ({exc})", file=sys.stderr)
    out = sys.stdout
    sys.stdout = sys.stderr  # a library that prints must not corrupt the answers
    print("ready", file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = _fork_kernel(request["kernel"])
        except OSError as exc:
            answer = {"error": str(exc)}
        print(json.dumps(answer), file=out, flush=True)


if __name__ == "__main__":
    main()
