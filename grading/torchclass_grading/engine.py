"""Grade every submission of an assignment in parallel, each kernel sandboxed.

nbgrader stays the format and the gradebook. Per submission:
1. the grader (this process) prepares the notebook exactly as `nbgrader autograde` does, with
   nbgrader's own sanitizing preprocessors (clear outputs, restore test cells and the kernelspec
   from the gradebook, check cell metadata);
2. a worker process executes it with nbclient, cell by cell, while ONLY the kernel runs in the
   sandbox (sandbox.py): hidden tests reach the kernel when their cell runs, never before;
3. the grader records it with nbgrader's own Autograde app, whose Execute step is swapped for
   one that hands over the executed notebook, so the gradebook, late penalties, formgrader and
   feedback are nbgrader's. The grader is the gradebook's only writer.

A kernel that dies loses the rest of its cells (each gets an error output, so scores 0); a cell
past its time is interrupted; the kernel's own reply status counts, so swallowing a test's
exception in the kernel does not turn it into a pass. Each graded submission is marked done
with its timestamp, so a killed run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import hmac
import json
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from torchclass_grading import sandbox, scrub

REPO = Path(__file__).resolve().parents[2]
STATE = ".torchclass-engine"
TIMEOUT_ENAME = "CellTimeoutError"
MAX_OUTPUT = 1 << 20  # bytes of output kept per notebook; the rest is dropped as it streams in

# Run in the kernel before any student cell: same submission, same result, every time.
STARTUP = [
    "import random as _r; _r.seed(0); del _r",
    "exec('try:\\n import numpy as _np; _np.random.seed(0); del _np\\nexcept ImportError: pass')",
]
TORCH_STARTUP = [
    ("import torch as _t; _t.manual_seed(0); _t.use_deterministic_algorithms(True, warn_only=True);"
     " _t.set_num_threads(1); del _t"),
]
SENTINEL = Path(__file__).with_name("kernel_sentinel.py").read_text()
# After this many cells of a notebook run past their time limit, its other cells are not run:
# honest solutions stay far inside every limit (grading/README.md), so two such cells mean a
# submission that would only burn the grader's time (a trace function, a slow hook, a loop).
TIMEOUT_STRIKES = 2
INTEGRITY = "integrity"  # the first word of a problem that is evidence of tampering
SEAL_WAIT = 5.0          # seconds to wait for a timed-out locked cell's sealed result


def _seal_request(nonce: str, source: str, names: list[str], graded: bool) -> str:
    """The code sent for a locked cell: the kernel's sentinel runs `source` itself (and checks
    the machinery before and after it when it is a test cell)."""
    return (f"__import__('sys').modules['_torchclass_sentinel'].run({nonce!r}, {source!r}, "
            f"{tuple(names)!r}, {graded!r})")


@dataclass
class Verdict:
    """A locked cell's result as the kernel's sentinel signed it."""
    status: str            # ok | error | stopped (tampering found before it ran)
    ename: str
    result: str            # repr of the cell's last expression ('' when none)
    had_stderr: bool
    problems: list[str]    # what differed from the sentinel's snapshots
    evidence: list[tuple[str, str]]  # (refused primitive, ipykernel cell stem)
    details: dict          # stdout, stderr, evalue, traceback (unsigned: shown, not trusted)


def _read_private(path: Path, limit: int) -> bytes | None:
    """A file in the kernel's scratch dir, never through a link the kernel planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_verdict(seal_dir: Path, key: bytes, nonce: str, source: str,
                 graded: bool = True) -> Verdict | None:
    """The signed verdict for nonce; None when it is missing or was not signed with key."""
    raw = _read_private(seal_dir / nonce, 1 << 20)
    if not raw or b"\n" not in raw:
        return None
    mac, data = raw.split(b"\n", 1)
    if not hmac.compare_digest(mac, hmac.new(key, data, "sha256").hexdigest().encode()):
        return None
    try:
        head, problems, cells = data.decode("utf-8").split("\x1e")
        got_nonce, digest, kind, status, ename, result, stderr = head.split("\x1f")
    except ValueError:
        return None
    if got_nonce != nonce or digest != hashlib.sha256(source.encode("utf-8", "replace")).hexdigest() \
            or kind != ("graded" if graded else "setup"):
        return None
    evidence = [tuple(c.split("\x1f", 1)) for c in cells.split("\x1d") if "\x1f" in c]
    try:
        details = json.loads(_read_private(seal_dir / f"{nonce}.txt", 8 << 20) or b"{}")
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    return Verdict(status, ename, result, stderr == "1",
                   [p for p in problems.split("\x1d") if p], evidence, details)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _verdict_outputs(v: Verdict, streamed: list) -> list:
    """A locked cell's outputs, built from its signed verdict (plus what its subprocesses and
    C code wrote straight to the kernel's stdout and stderr, and its images)."""
    outs = []
    if _text(v.details.get("stdout")):
        outs.append(nbformat.v4.new_output("stream", name="stdout", text=v.details["stdout"]))
    for o in streamed:
        if o.get("output_type") == "stream":
            outs.append(o)
        elif o.get("output_type") == "display_data":
            images = {k: d for k, d in o.get("data", {}).items() if k.startswith("image/")}
            if images:
                outs.append(nbformat.v4.new_output("display_data", data=images))
    if v.had_stderr:
        outs.append(nbformat.v4.new_output(
            "stream", name="stderr", text=_text(v.details.get("stderr")) or "[output on stderr]\n"))
    if v.result:
        outs.append(nbformat.v4.new_output("execute_result", data={"text/plain": v.result},
                                           execution_count=None))
    if v.status == "error":
        evalue = _text(v.details.get("evalue"))
        tb = v.details.get("traceback")
        tb = [t for t in tb if isinstance(t, str)] if isinstance(tb, list) else []
        outs.append(nbformat.v4.new_output("error", ename=v.ename, evalue=evalue,
                                           traceback=tb or [f"{v.ename}: {evalue}"]))
    return outs


def _cell_stems(nb) -> dict[str, int]:
    """ipykernel's file name stem for each code cell's source (how the sentinel names a cell)."""
    try:
        from ipykernel.compiler import get_tmp_hash_seed, murmur2_x86
    except ImportError:
        return {}
    seed = get_tmp_hash_seed()
    return {str(murmur2_x86(c.source, seed)): i for i, c in enumerate(nb.cells)
            if c.cell_type == "code"}


# Modules every forked kernel gets already imported (see kernel_zygote.py); torch when the
# assignment uses it. Only libraries that start no threads at import: threads do not survive
# a fork.
PRELOAD = ["ipykernel.kernelapp", "ipykernel.ipkernel", "IPython", "numpy", "numpy.testing",
           "unittest.mock", "matplotlib",
           "matplotlib.pyplot", "matplotlib_inline.backend_inline"]
TORCH_PRELOAD = ["torch", "torch.nn", "torch.nn.functional", "torch.testing", "torch.utils.data",
                 "torchvision"]


def bound_names(source: str) -> list[str]:
    """The global names a cell binds at its top level (imports, defs, classes, assignments)."""
    import ast

    from IPython.core.inputtransformer2 import TransformerManager

    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _locked(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("locked") and not meta.get("solution"))


class EngineError(RuntimeError):
    pass


@dataclass
class Outcome:
    student: str
    status: str = "graded"        # graded | skipped | error
    score: float | None = None
    max_score: float | None = None
    cells: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0          # notebook execution, in the worker


# ---------------------------------------------------------------- worker side (sandboxed kernel)

_slot = None


def _slot_class(backend: str):
    """Where kernels run: "local" (sandbox.py) or "docker" (docker_backend.py)."""
    if backend == "docker":
        from torchclass_grading.docker_backend import DockerSlot

        return DockerSlot
    if backend != "local":
        raise EngineError(f"unknown backend {backend!r} (choose local or docker)")
    return sandbox.Slot


def _init_worker(limits: sandbox.Limits, env: dict, hide: list[str], preload: list[str],
                 backend: str = "local", options: dict | None = None) -> None:
    global _slot
    _slot = _slot_class(backend)(limits, env, hide=hide, preload=preload, **(options or {}))


def _error(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _check_reply(cell, reply: dict):
    """For a student cell: 'timeout', 'suppressed' (failed, error output hidden) or ''."""
    content = reply.get("content", {})
    has_error = any(o.get("output_type") == "error" for o in cell.outputs)
    if content.get("ename") == TIMEOUT_ENAME:
        if not has_error:
            cell.outputs.append(_error(TIMEOUT_ENAME, "the cell ran past its time limit"))
        return "timeout"
    if content.get("status") == "error" and not has_error:
        cell.outputs.append(_error("Error", "the cell raised an error (output suppressed)"))
        return "suppressed"
    return ""


def _run_locked(client, cell, index: int, scratch: Path, key: bytes, stems: dict[str, int],
                replies: dict):
    """Run a locked cell through the kernel's sentinel; its outputs come from the signed
    verdict only. Returns (timed out, evidence of tampering)."""
    nonce = uuid.uuid4().hex
    graded = bool(cell.metadata.get("nbgrader", {}).get("grade"))
    names = [] if graded else bound_names(cell.source)
    probe = nbformat.v4.new_code_cell(_seal_request(nonce, cell.source, names, graded))
    replies.pop(index, None)
    try:
        client.execute_cell(probe, index, store_history=False)
    finally:
        client.nb.cells[index] = cell  # nbclient stores the cell it ran at that index
    reply = (replies.get(index) or {}).get("content", {})
    timed_out = "timeout" if reply.get("ename") == TIMEOUT_ENAME else ""
    verdict = read_verdict(scratch / ".seal", key, nonce, cell.source, graded)
    if verdict is None and timed_out:
        wait = time.monotonic() + SEAL_WAIT
        while verdict is None and time.monotonic() < wait:
            time.sleep(0.1)
            verdict = read_verdict(scratch / ".seal", key, nonce, cell.source, graded)
    if verdict is None:
        cell.outputs = [_error(TIMEOUT_ENAME, "the cell ran past its time limit")] if timed_out \
            else [_error("IntegrityError", "the grader's sealed result for this cell is missing")]
        if timed_out:
            return timed_out, []
        why = ("no signed result came back (the kernel's input pipeline, its messages or the "
               "grader's sentinel were changed)")
        return timed_out, [f"cell {index}: {why}"]
    cell.outputs = _verdict_outputs(verdict, probe.outputs)
    if verdict.ename == "KeyboardInterrupt" and timed_out:
        cell.outputs.append(_error(TIMEOUT_ENAME, "the cell ran past its time limit"))
    tamper = [f"cell {index}: {p}" for p in verdict.problems]
    for what, stem in verdict.evidence:
        where = stems.get(stem)
        tamper.append(f"{what} (in cell {where})" if where is not None else what)
    if verdict.status == "stopped" or tamper:
        cell.outputs.append(_error("IntegrityError", "the grader found its machinery changed "
                                   "before or during this cell; it scores 0"))
        tamper = tamper or [f"cell {index}: the sentinel stopped it"]
    return timed_out, tamper


def execute(job: dict) -> dict:
    """Run one prepared notebook in this worker's sandbox; return it executed, with notes."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning import LocalProvisioner
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    nb = nbformat.reads(job["nb"], as_version=4)
    notes: list[str] = []
    scratch = _slot.new_scratch()
    t0 = time.monotonic()
    try:
        for src, rel in job["files"]:
            dest = scratch / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(src).read_bytes())
            for p in [dest, *dest.parents]:
                if p == scratch:
                    break
                _slot.give(p)
        # The sentinel's signing key: read and removed by the kernel before any student code.
        key = os.urandom(32)
        seal_dir = scratch / ".seal"
        seal_dir.mkdir(mode=0o700)
        _slot.give(seal_dir)
        key_file = scratch / ".seal-key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        _slot.give(key_file)
        stems = _cell_stems(nb)
        conn = scratch / "kernel.json"
        startup = STARTUP + (TORCH_STARTUP if job["torch"] else []) + [SENTINEL]
        slot = _slot

        class ForkProvisioner(LocalProvisioner):
            """Forks the kernel from the slot's factory; starts it by command if there is none."""

            async def launch_kernel(self, cmd, **kwargs):
                forked = slot.launch(str(conn), scratch, startup)
                if forked is None:
                    return await super().launch_kernel(cmd, **kwargs)
                self.process = forked
                self.pid = forked.pid
                # Born in the group the factory's intermediate process started (kernel_zygote),
                # so the group is right however soon this runs.
                try:
                    self.pgid = os.getpgid(forked.pid)
                except OSError:  # already gone: nothing to signal
                    self.pgid = None
                self.cwd = str(scratch)
                return self.connection_info

        class SandboxKernel(AsyncKernelManager):
            def format_kernel_cmd(self, extra_arguments=None):
                slot.give(conn)  # written by the manager just before, as the grader
                return slot.kernel_cmd(str(conn), scratch, startup)

            async def _async_pre_start_kernel(self, **kw):
                if self.provisioner is None:
                    self.kernel_id = self.kernel_id or uuid.uuid4().hex
                    self.provisioner = ForkProvisioner(
                        kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
                return await super()._async_pre_start_kernel(**kw)

        class Client(NotebookClient):
            out_bytes = 0
            truncated = False

            def output(self, outs, msg, display_id, cell_index):
                self.out_bytes += len(json.dumps(msg["content"]))
                if self.out_bytes > job["max_output"]:
                    if not self.truncated:
                        self.truncated = True
                        notes.append(f"output over {job['max_output']} bytes: the rest was dropped")
                        outs.append(nbformat.v4.new_output(
                            "stream", name="stderr", text="[torchclass: output truncated]\n"))
                    return None
                return super().output(outs, msg, display_id, cell_index)

        replies = {}
        km = SandboxKernel(transport="ipc", ip=str(scratch / "k"), connection_file=str(conn))
        client = Client(
            nb, km=km, timeout=job["cell_timeout"], interrupt_on_timeout=True, allow_errors=True,
            # Without it nbclient waits for the interrupted cell's reply forever, and a kernel
            # that lost it (a fork bomb's children share its sockets) hangs the worker.
            error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": "", "traceback": []},
            startup_timeout=120, resources={"metadata": {"path": str(scratch)}},
            on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(
                cell_index, execute_reply))
        deadline = t0 + job["notebook_timeout"]
        stopped = None  # why the remaining cells did not run
        strikes = 0     # cells that ran past their limit
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                if stopped:
                    cell.outputs = [_error("NotRun", stopped)]
                    continue
                left = deadline - time.monotonic()
                if left <= 1:
                    stopped = f"the notebook ran past its {job['notebook_timeout']} s limit"
                    notes.append(stopped)
                    cell.outputs = [_error("NotRun", stopped)]
                    continue
                client.timeout = int(min(job["cell_timeout"], left))
                try:
                    if _locked(cell):
                        timed_out, tamper = _run_locked(client, cell, i, scratch, key, stems, replies)
                    else:
                        client.execute_cell(cell, i)
                        nb.cells[i] = cell
                        timed_out, tamper = _check_reply(cell, replies.get(i) or {}), []
                except DeadKernelError:
                    stopped = f"the kernel died in cell {i}; later cells did not run"
                    notes.append(stopped)
                    cell.outputs.append(_error("KernelDied", stopped))
                    continue
                except Exception as exc:  # noqa: BLE001 (a timeout the interrupt could not end, etc.)
                    stopped = f"cell {i} could not finish ({type(exc).__name__}); later cells did not run"
                    notes.append(stopped)
                    cell.outputs.append(_error(type(exc).__name__, str(exc)[:500]))
                    continue
                if timed_out == "suppressed":
                    notes.append(f"cell {i} failed but its error output was suppressed")
                elif timed_out:
                    strikes += 1
                    notes.append(f"cell {i} ran past its {client.timeout} s limit and was interrupted")
                    if strikes >= TIMEOUT_STRIKES:
                        stopped = (f"{strikes} cells ran past their time limit: the notebook's other "
                                   "cells were not run")
                        notes.append(stopped)
                if tamper:
                    notes += [f"{INTEGRITY}: {t}" for t in tamper]
                    stopped = "tampering with the grader was found (see the problems); " \
                              "later cells were not run"
    except Exception as exc:
        # The kernel's own last words (its log is removed with the scratch dir).
        log = (_read_private(scratch / "kernel.log", 1 << 20) or b"")[-1500:]
        if log.strip():
            raise RuntimeError(f"{exc}; the kernel's log ends: "
                               f"{log.decode('utf-8', 'replace').strip()}") from exc
        raise
    finally:
        _slot.finish(scratch)
    return {"nb": nbformat.writes(nb), "notes": notes, "seconds": time.monotonic() - t0}


# ---------------------------------------------------------------- grader side (trusted)


def _course_config(course_dir: Path):
    """The literal settings (`c.Section.name = <literal>`) of the course's nbgrader_config.py.

    The grader account owns that file and the engine may run as root: executing it (traitlets'
    PyFileConfigLoader) would run grader-written code as root. It is parsed instead, and only
    assignments of Python literals are kept; anything else in it (imports, classes, computed
    values) is never run here, only by nbgrader as the grader. Opened with O_NOFOLLOW so a link
    cannot make root read another file."""
    import ast
    import stat

    from traitlets.config.loader import Config

    path = course_dir / "nbgrader_config.py"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise EngineError(f"{path}: cannot be read ({e.strerror}; a symbolic link is refused). "
                          "Fix: let torchclass write it (make up), as a plain file.") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EngineError(f"{path}: not a regular file. Fix: let torchclass write it (make up).")
        text = fh.read()
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:  # no quote of the line: root may not show what it read
        raise EngineError(f"{path}, line {e.lineno}: not valid Python ({e.msg}).") from None
    config = Config()
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                and isinstance(target.value.value, ast.Name) and target.value.value.id == "c"):
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # computed: nbgrader (as the grader) sees it, the engine does not
        config[target.value.attr][target.attr] = value
    return config


def _kernel_library() -> Path:
    """A root-owned, world-readable copy of the course library for kernels to import: the
    checkout it comes from is hidden from them."""
    src = REPO / "course" / "torchclass_course"
    files = sorted(p for p in src.rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.relative_to(src).as_posix().encode() + p.read_bytes()
                                     for p in files)).hexdigest()[:16]
    sandbox.private_dir(sandbox.STATE_DIR, 0o711)
    sandbox.private_dir(sandbox.STATE_DIR / "lib", 0o755)
    lib = sandbox.STATE_DIR / "lib" / digest
    if not (lib / "torchclass_course").is_dir():
        tmp = lib.with_name(f"{digest}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp / "torchclass_course", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [*tmp.rglob("*"), tmp]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        try:
            tmp.rename(lib)
        except OSError:  # another grader put it there first
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


# Course-library loaders whose offline fallback builds a dataset into the kernel's cache.
CACHED_LOADERS = ("mnist", "fashion_mnist", "colour_images")


def _shared_cache(source_text: str, library: Path) -> Path | None:
    """The offline datasets an assignment loads, built once by the grader (trusted code, as the
    grader) into a cache kernels may read but not write; None when it uses none of them."""
    import subprocess

    used = [name for name in CACHED_LOADERS if f"data.{name}(" in source_text]
    if not used:
        return None
    cache = sandbox.private_dir(sandbox.STATE_DIR / "cache", 0o755)
    built = cache / f".built-{library.name}-{'-'.join(used)}"
    if built.is_file():
        return cache
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TORCHCLASS_DATA")}
    env.update(TORCHCLASS_CACHE=str(cache), PYTHONPATH=str(library), OMP_NUM_THREADS="1",
               HOME=str(cache))
    code = "from torchclass_course import data\n" + "".join(f"data.{n}()\n" for n in used)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:  # kernels then build their own, as students' servers do
        return None
    for p in [cache, *cache.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    built.touch()
    return cache


def _checkout_paths() -> list[str]:
    """The checkout, or, when the Python running us lives inside it, everything else in it."""
    prefix = Path(sys.prefix).resolve()
    if REPO not in prefix.parents:
        return [str(REPO)]
    return [str(p) for p in REPO.iterdir() if p.is_dir() and p not in prefix.parents and p != prefix]


def _timestamp(sub_dir: Path) -> str:
    ts = sub_dir / "timestamp.txt"
    stamp = (_read_private(ts, 4096) or b"").decode("utf-8", "replace").strip()
    h = hashlib.sha256()
    for p in sorted(sub_dir.glob("*.ipynb")):
        h.update(p.name.encode() + (_read_private(p, 256 << 20) or b""))
    return f"{stamp}|{h.hexdigest()[:16]}"


def read_state(path: Path) -> dict | None:
    """A submission's .done record (stamp, status, problems, seconds); None if absent or torn."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and isinstance(state.get("stamp"), str) and \
        isinstance(state.get("problems"), list)
    return {"status": "graded", "seconds": 0.0, **state} if ok else None


def write_state(path: Path, state: dict) -> None:
    # Replaced in one step: a grader killed mid-write leaves the old record or none, never half.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def _repair_metadata(nb) -> list[str]:
    """Make the metadata nbgrader reads well-formed, saying what was wrong: a notebook-level or
    cell-level value of the wrong type would otherwise stop nbgrader on this submission."""
    problems = []
    if not isinstance(nb.get("metadata"), dict):
        nb["metadata"] = nbformat.NotebookNode()
        problems.append("the notebook's metadata is not a mapping; ignored")
    if "kernelspec" in nb.metadata and not isinstance(nb.metadata.kernelspec, dict):
        del nb.metadata["kernelspec"]
        problems.append("metadata.kernelspec is not a mapping; the assignment's kernel is used")
    for i, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
            problems.append(f"cell {i}'s metadata is not a mapping; ignored")
        meta = cell.metadata.get("nbgrader")
        if meta is not None and (not isinstance(meta, dict)
                                 or not isinstance(meta.get("grade_id", ""), str)):
            del cell.metadata["nbgrader"]
            problems.append(f"cell {i}'s metadata.nbgrader is not a mapping with a text grade_id; "
                            "the cell is treated as the student's own")
        if not isinstance(cell.get("source", ""), str):
            cell["source"] = ""
            problems.append(f"cell {i}'s source is not text; emptied")
    return problems


class Engine:
    def __init__(self, course_dir, assignment_id: str, workers: int | None = None,
                 cell_timeout: int | None = None, notebook_timeout: int | None = None,
                 limits: sandbox.Limits | None = None, max_output: int = MAX_OUTPUT,
                 kernel_pythonpath: list[str] | None = None, hide: list[str] | None = None,
                 progress=sys.stderr, backend: str = "local", image: str | None = None,
                 fork_kernels: bool = True):
        self.course_dir = Path(course_dir).resolve()
        _slot_class(backend)  # an unknown backend fails here, not in every worker
        self.backend = backend
        self.backend_options = {"image": image} if backend == "docker" and image else {}
        self.aid = assignment_id
        self.workers = workers or len(os.sched_getaffinity(0))
        self.config = _course_config(self.course_dir)
        cfg_timeout = self.config.get("Execute", {}).get("timeout") or \
            self.config.get("ExecutePreprocessor", {}).get("timeout")
        self.cell_timeout = cell_timeout or int(cfg_timeout or 60)
        self.notebook_timeout = notebook_timeout or max(600, 4 * self.cell_timeout)
        self.limits = limits or sandbox.Limits(cpu_seconds=self.notebook_timeout + 30)
        self.max_output = max_output
        self.progress = progress
        self.source_dir = self.course_dir / "source" / assignment_id
        if not self.source_dir.is_dir():
            raise EngineError(f"{self.source_dir}: no such assignment source")
        self.db_url = f"sqlite:///{self.course_dir / 'gradebook.db'}"
        self.notebooks = self._notebooks()
        source_text = "".join((self.source_dir / f"{n}.ipynb").read_text() for n in self.notebooks)
        self.torch = "torch" in source_text
        self._test_cells = {n: self._handed_test_cells(n) for n in self.notebooks}
        self._redactors = {n: scrub.Redactor([self.source_dir / f"{n}.ipynb"])
                           for n in self.notebooks}
        try:
            library = _kernel_library()
        except sandbox.SandboxError as exc:
            raise EngineError(str(exc)) from None
        paths = kernel_pythonpath or [str(library)]
        # What kernels must not see: this course (gradebook, source, other submissions), the
        # checkout (every assignment's source and solutions), and what the caller names.
        self.hide = [str(self.course_dir), *_checkout_paths(), *(hide or [])]
        self.preload = PRELOAD + (TORCH_PRELOAD if self.torch else []) if fork_kernels else None
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(paths), "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "NBGRADER_EXECUTION": "autograde",
        }
        if os.environ.get("TORCHCLASS_DATA"):
            self.env["TORCHCLASS_DATA"] = os.environ["TORCHCLASS_DATA"]
        if (cache := _shared_cache(source_text, library)) is not None:
            self.env["TORCHCLASS_SHARED_CACHE"] = str(cache)

    def _notebooks(self) -> list[str]:
        from nbgrader.api import Gradebook, MissingEntry

        if not (self.course_dir / "gradebook.db").is_file():
            raise EngineError(f"{self.course_dir}: no gradebook.db (run generate_assignment first)")
        with Gradebook(self.db_url) as gb:
            try:
                return sorted(n.name for n in gb.find_assignment(self.aid).notebooks)
            except MissingEntry:
                raise EngineError(f"{self.aid}: not in {self.course_dir}/gradebook.db "
                                  "(run generate_assignment first)") from None

    def students(self) -> list[str]:
        sub = self.course_dir / "submitted"
        return sorted(p.parent.name for p in sub.glob(f"*/{self.aid}") if p.is_dir())

    def _done_file(self, student: str) -> Path:
        return self.course_dir / STATE / self.aid / f"{student}.done"

    def _prepare(self, student: str, name: str, out: Outcome) -> str | None:
        """The submitted notebook sanitized as nbgrader's autograde does; None if unreadable."""
        from nbgrader.preprocessors import (
            CheckCellMetadata,
            ClearOutput,
            DeduplicateIds,
            OverwriteCells,
            OverwriteKernelspec,
        )

        path = self.course_dir / "submitted" / student / self.aid / f"{name}.ipynb"
        if path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1):
            # A link to the source notebook (solutions, hidden tests), the gradebook or another
            # student's work would otherwise be graded, and shown to the kernel, as this one.
            out.problems.append(f"{INTEGRITY}: {name}.ipynb in {student}'s submission is a "
                                f"{'symbolic' if path.is_symlink() else 'hard'} link, not a "
                                "file; refused (scored 0)")
            return None
        if not path.is_file():
            out.problems.append(f"{name}.ipynb: missing from the submission (scored 0)")
            return None
        try:
            nb = nbformat.reads(_read_private(path, 256 << 20).decode("utf-8"), as_version=4)
        except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
            out.problems.append(f"{path}: not a readable notebook ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); not graded, the gradebook is left as it was")
            out.status = "error"
            return None
        for problem in _repair_metadata(nb):
            out.problems.append(f"{name}: {problem}")
        submitted = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
        kernel = nb.metadata.get("kernelspec", {}).get("name")
        resources = {"nbgrader": {"db_url": self.db_url, "assignment": self.aid,
                                  "notebook": name, "student": student}}
        try:
            for pp in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
                       CheckCellMetadata):
                nb, resources = pp().preprocess(nb, resources)
        except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
            out.problems.append(f"{path}: cannot be prepared for grading ({str(exc)[:300]})")
            return None
        if kernel != nb.metadata.get("kernelspec", {}).get("name"):
            out.problems.append(f"{name}: kernel {kernel!r} replaced by the assignment's")
        graded, handed = self._test_cells[name]
        for gid in graded:
            if gid not in submitted:
                out.problems.append(f"{name}: test cell {gid} deleted or renamed (scored 0)")
        for gid, text in handed.items():
            if gid in submitted and submitted[gid] != text:
                out.problems.append(f"{name}: test cell {gid} was edited; restored from the source")
        return nbformat.writes(nb)

    def _handed_test_cells(self, name: str) -> tuple[list[str], dict[str, str]]:
        """A notebook's test cells: every name in the gradebook, and the sources students were
        handed (the release: hidden tests left out), to tell deleted and edited ones."""
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url) as gb:
            graded = [gc.name for gc in gb.find_notebook(name, self.aid).grade_cells]
        release = self.course_dir / "release" / self.aid / f"{name}.ipynb"
        handed = {}
        if release.is_file():
            handed = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source
                      for c in nbformat.read(release, as_version=4).cells
                      if c.metadata.get("nbgrader", {}).get("grade")}
        return graded, handed

    def _files(self, student: str) -> list[tuple[str, str]]:
        """The data files the kernel may see: the assignment's (as nbgrader overwrites them)."""
        files = {}
        for base in (self.course_dir / "submitted" / student / self.aid, self.source_dir):
            for p in base.rglob("*"):
                rel = p.relative_to(base)
                if p.is_file() and not p.is_symlink() and p.suffix != ".ipynb" \
                        and rel.name != "timestamp.txt" and ".ipynb_checkpoints" not in rel.parts:
                    files[str(rel)] = str(p)
        return [(src, rel) for rel, src in files.items()]

    def _stage(self, student: str, executed: dict[str, str], out: Outcome) -> Path:
        """What nbgrader records from, instead of the submitted dir itself: the notebooks as they
        ran (well-formed), regular files only, and a readable timestamp. nbgrader then never
        reads a link, a malformed notebook or a timestamp it cannot parse."""
        from nbgrader.utils import parse_utc

        src = self.course_dir / "submitted" / student / self.aid
        # In the grader's own state dir, not the grader account's course dir: as root this
        # writes there, and no other account may swap a link in along the way.
        parent = sandbox.private_dir(sandbox.STATE_DIR / "staging", 0o700)
        root = Path(tempfile.mkdtemp(prefix="record-", dir=parent))
        dest = root / student / self.aid
        dest.mkdir(parents=True)
        for name in self.notebooks:
            if name in executed:
                (dest / f"{name}.ipynb").write_text(executed[name])
            else:  # missing, a link or unreadable: recorded as the untouched release, nothing run
                release = self.course_dir / "release" / self.aid / f"{name}.ipynb"
                blank = release if release.is_file() else self.source_dir / f"{name}.ipynb"
                shutil.copyfile(blank, dest / f"{name}.ipynb")
        for path, rel in self._files(student):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel, follow_symlinks=False)
        stamp_file = src / "timestamp.txt"
        raw = _read_private(stamp_file, 4096)
        if raw is not None:
            text = raw.decode("utf-8", "replace").strip()
            try:
                parse_utc(text)
            except Exception:  # noqa: BLE001 (any unparseable text)
                when = time.gmtime(stamp_file.lstat().st_mtime)
                text = time.strftime("%Y-%m-%d %H:%M:%S.000000 UTC", when)
                out.problems.append(f"timestamp.txt of {student} is not a readable time; the "
                                    f"file's own time ({text}) was used")
            (dest / "timestamp.txt").write_text(text)
        return root

    def _record(self, student: str, executed: dict[str, str], out: Outcome) -> None:
        """nbgrader's Autograde for this student, with the executed notebooks swapped in."""
        from nbconvert.preprocessors import ClearMetadataPreprocessor, Preprocessor
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.preprocessors import (
            AssignLatePenalties,
            CheckCellMetadata,
            IgnorePattern,
            LimitOutput,
            SaveAutoGrades,
        )
        from traitlets.config import Config

        class Replay(Preprocessor):
            enabled = True

            def preprocess(self, nb, resources):
                name = resources["unique_key"]
                if name not in executed:  # unreadable: graded as nothing ran
                    for cell in nb.cells:
                        if cell.cell_type == "code":
                            cell.outputs = [_error("NotRun", "the notebook could not be run")]
                    return nb, resources
                done = nbformat.reads(executed[name], as_version=4)
                if len(done.cells) != len(nb.cells):
                    raise EngineError(f"{student}/{name}: executed notebook does not match")
                # What instructors open and students get back: no hidden test, no active HTML.
                redactors[name].notebook(done)
                scrub.sanitize_notebook(done)
                return done, resources

        redactors = self._redactors
        config = Config(self.config)
        config.Autograde.autograde_preprocessors = [
            Replay, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
            AssignLatePenalties, CheckCellMetadata]
        staging = self._stage(student, executed, out)
        config.CourseDirectory.submitted_directory = str(staging)  # absolute: outside the root
        coursedir = CourseDirectory(config=config, root=str(self.course_dir))
        api = NbGraderAPI(coursedir=coursedir, config=config)
        try:
            result = api.autograde(self.aid, student, force=True, create=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not result["success"]:
            raise EngineError(f"{student}: nbgrader could not record the grade:\n"
                              f"{result.get('error') or result.get('log')}")
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url) as gb:
            sub = gb.find_submission(self.aid, student)
            out.score, out.max_score = float(sub.score), float(sub.max_score)
            for snb in sub.notebooks:
                for g in snb.grades:
                    out.cells[g.name] = float(g.score)

    def run(self, force: bool = False, only: list[str] | None = None) -> list[Outcome]:
        """Grade every submission not graded yet (all with force; only these students if given)."""
        students = [s for s in self.students() if only is None or s in only]
        outcomes: dict[str, Outcome] = {}
        todo = []
        for s in students:
            out = outcomes[s] = Outcome(s)
            stamp = _timestamp(self.course_dir / "submitted" / s / self.aid)
            state = read_state(self._done_file(s))
            if not force and state and state["stamp"] == stamp and state["status"] != "error":
                out.status = "skipped"
                out.problems, out.seconds = list(state["problems"]), state["seconds"]
                continue
            todo.append((s, stamp))
        if self.backend == "local" and sandbox.os.geteuid() != 0:
            self._say("warning: not root, so kernels run as you with rlimits only (no user "
                      "switch, network left on)\n")
        total, finished, failures = len(todo), 0, 0
        stamps = dict(todo)
        pending: dict[str, set[str]] = {}
        executed: dict[str, dict[str, str]] = {}
        ready: list[str] = []
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(min(self.workers, max(total, 1)), mp_context=ctx,
                                    initializer=_init_worker,
                                    initargs=(self.limits, self.env, self.hide, self.preload,
                                              self.backend, self.backend_options)) as pool:
            futures = {}
            # Prepared and handed out one by one, so workers start on the first notebook while
            # the grader prepares the next.
            for s, _stamp in todo:
                prepared = {}
                for n in self.notebooks:
                    try:
                        prepared[n] = self._prepare(s, n, outcomes[s])
                    except Exception as exc:  # noqa: BLE001 (one submission must not stop the rest)
                        outcomes[s].status = "error"
                        outcomes[s].problems.append(f"{n}: cannot be prepared for grading "
                                                    f"({type(exc).__name__}: {str(exc)[:300]})")
                        prepared[n] = None
                pending[s] = {n for n, text in prepared.items() if text is not None}
                executed[s] = {}
                if not pending[s]:
                    ready.append(s)
                files = self._files(s)
                for name in pending[s]:
                    job = {"nb": prepared[name], "files": files, "torch": self.torch,
                           "cell_timeout": self.cell_timeout, "max_output": self.max_output,
                           "notebook_timeout": self.notebook_timeout}
                    futures[pool.submit(execute, job)] = (s, name)
            for fut in cf.as_completed(futures):
                s, name = futures[fut]
                out = outcomes[s]
                try:
                    res = fut.result()
                    executed[s][name] = res["nb"]
                    out.problems += [f"{name}: {n}" for n in res["notes"]]
                    out.seconds += res["seconds"]
                except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
                    # The grader's failure, not the student's: no grade is recorded, and the
                    # next run tries again.
                    out.status = "error"
                    out.problems.append(f"{name}: the grader failed to run it ({exc}); "
                                        "not graded, the gradebook is left as it was")
                pending[s].discard(name)
                if not pending[s]:
                    ready.append(s)
                while ready:
                    s = ready.pop()
                    failures += self._finish(s, stamps[s], executed[s], outcomes[s])
                    finished += 1
                    self._say("\r" + self._bar(finished, total, failures))
            for s in ready:
                failures += self._finish(s, stamps[s], executed[s], outcomes[s])
                finished += 1
        self._say("\r" + self._bar(finished, total, failures) + ", "
                  f"{sum(o.status == 'skipped' for o in outcomes.values())} already done\n")
        return [outcomes[s] for s in students]

    def _finish(self, student: str, stamp: str, executed: dict[str, str], out: Outcome) -> int:
        # An unreadable notebook (status error) is not recorded: nbgrader cannot read it either.
        if out.status != "error":
            try:
                self._record(student, executed, out)
            except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
                out.status = "error"
                out.problems.append(str(exc)[:2000])
        # Errors are written too, for the report; a later run tries them again.
        write_state(self._done_file(student), {
            "stamp": stamp, "status": out.status, "problems": out.problems,
            "seconds": round(out.seconds, 3)})
        return 1 if out.problems or out.status == "error" else 0

    def _bar(self, finished: int, total: int, failures: int, width: int = 30) -> str:
        filled = width * finished // total if total else width
        return (f"{self.aid} [{'#' * filled}{'.' * (width - filled)}] "
                f"{finished}/{total} graded, {failures} with problems")

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress.write(text)
            self.progress.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="torchclass-grade-engine", description=__doc__.split("\n")[0])
    ap.add_argument("course_dir")
    ap.add_argument("assignment")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--force", action="store_true", help="regrade submissions already graded")
    ap.add_argument("--backend", choices=("local", "docker"), default="local",
                    help="where kernels run: the local sandbox or a container of the notebook image")
    ap.add_argument("--image", help="notebook image for --backend docker "
                    "(default: torchclass/notebook:<version>, as `make build-cpu` tags it)")
    args = ap.parse_args(argv)
    try:
        engine = Engine(args.course_dir, args.assignment, workers=args.workers,
                        backend=args.backend, image=args.image)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcomes = engine.run(force=args.force)
    for o in outcomes:
        if o.problems or o.status == "error":
            print(f"{o.student}: {o.status}, score {o.score}: " + "; ".join(o.problems))
    from torchclass_grading import report

    for path in report.write_report(engine.course_dir, args.assignment):
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
