"""The worker side: run one prepared notebook's cells in a kernel that a KernelBackend started,
sandboxed, while this process (the worker) stays outside it.

Student cells go through nbclient as usual. Locked cells (setup and tests) are sent to the
kernel's sentinel (kernel_sentinel.py), which runs them itself and signs their verdict; their
outputs are built from that signed verdict only (see grading/README.md, "Grades student code
cannot forge"). A kernel that dies loses the rest of its cells (each gets an error output, so
scores 0); a cell past its time is interrupted; the kernel's own reply status counts, so
swallowing a test's exception in the kernel does not turn it into a pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat

from torchclass_grading.engine.backends import KernelBackend, backend_class
from torchclass_grading.engine.common import (
    INTEGRITY,
    TIMEOUT_ENAME,
    TIMEOUT_STRIKES,
    read_private,
)

# Run in the kernel before any student cell: same submission, same result, every time.
STARTUP = [
    "import random as _r; _r.seed(0); del _r",
    "exec('try:\\n import numpy as _np; _np.random.seed(0); del _np\\nexcept ImportError: pass')",
]
TORCH_STARTUP = [
    ("import torch as _t; _t.manual_seed(0); _t.use_deterministic_algorithms(True, warn_only=True);"
     " _t.set_num_threads(1); del _t"),
]
SENTINEL_PATH = Path(__file__).resolve().parents[1] / "kernel_sentinel.py"
SENTINEL = SENTINEL_PATH.read_text()
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


def read_verdict(seal_dir: Path, key: bytes, nonce: str, source: str,
                 graded: bool = True) -> Verdict | None:
    """The signed verdict for nonce; None when it is missing or was not signed with key."""
    raw = read_private(seal_dir / nonce, 1 << 20)
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
        details = json.loads(read_private(seal_dir / f"{nonce}.txt", 8 << 20) or b"{}")
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
            for target in targets:  # `x_train, y_train = ...` binds both
                while isinstance(target, ast.Starred):
                    target = target.value
                if isinstance(target, ast.Name):
                    names.append(target.id)
                elif isinstance(target, (ast.Tuple, ast.List)):
                    names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _locked(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("locked") and not meta.get("solution"))


# ---------------------------------------------------------------- this worker's backend

_backend: KernelBackend | None = None


def init_worker(backend: str, limits, env: dict, hide: list[str], preload: list[str] | None,
                options: dict | None = None) -> None:
    """A worker process's initializer: the backend named `backend`, for every job it runs."""
    global _backend
    _backend = backend_class(backend)(limits, env, hide=hide, preload=preload, **(options or {}))


def error_output(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _check_reply(cell, reply: dict):
    """For a student cell: 'timeout', 'suppressed' (failed, error output hidden) or ''."""
    content = reply.get("content", {})
    has_error = any(o.get("output_type") == "error" for o in cell.outputs)
    if content.get("ename") == TIMEOUT_ENAME:
        if not has_error:
            cell.outputs.append(error_output(TIMEOUT_ENAME, "the cell ran past its time limit"))
        return "timeout"
    if content.get("status") == "error" and not has_error:
        cell.outputs.append(error_output("Error", "the cell raised an error (output suppressed)"))
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
        cell.outputs = [error_output(TIMEOUT_ENAME, "the cell ran past its time limit")] if timed_out \
            else [error_output("IntegrityError", "the grader's sealed result for this cell is missing")]
        if timed_out:
            return timed_out, []
        why = ("no signed result came back (the kernel's input pipeline, its messages or the "
               "grader's sentinel were changed)")
        return timed_out, [f"cell {index}: {why}"]
    cell.outputs = _verdict_outputs(verdict, probe.outputs)
    if verdict.ename == "KeyboardInterrupt" and timed_out:
        cell.outputs.append(error_output(TIMEOUT_ENAME, "the cell ran past its time limit"))
    tamper = [f"cell {index}: {p}" for p in verdict.problems]
    for what, stem in verdict.evidence:
        where = stems.get(stem)
        tamper.append(f"{what} (in cell {where})" if where is not None else what)
    if verdict.status == "stopped" or tamper:
        cell.outputs.append(error_output("IntegrityError", "the grader found its machinery changed "
                                   "before or during this cell; it scores 0"))
        tamper = tamper or [f"cell {index}: the sentinel stopped it"]
    return timed_out, tamper


def execute(job: dict, backend: KernelBackend | None = None) -> dict:
    """Run one prepared notebook in a kernel of `backend` (default: this worker's, set by
    init_worker); return it executed, with notes: {"nb", "notes", "seconds"}.

    job: {"nb": the prepared notebook's JSON, "files": [(path, relative name)] copied into the
    scratch dir, "torch", "cell_timeout", "notebook_timeout", "max_output"}."""
    backend = backend or _backend
    if backend is None:
        raise RuntimeError("execute: no kernel backend (pass one, or run in a worker that "
                           "init_worker set up)")
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning import LocalProvisioner
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    nb = nbformat.reads(job["nb"], as_version=4)
    notes: list[str] = []
    scratch = backend.new_scratch()
    t0 = time.monotonic()
    try:
        for src, rel in job["files"]:
            dest = scratch / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(src).read_bytes())
            for p in [dest, *dest.parents]:
                if p == scratch:
                    break
                backend.give(p)
        # The sentinel's signing key: read and removed by the kernel before any student code.
        key = os.urandom(32)
        seal_dir = scratch / ".seal"
        seal_dir.mkdir(mode=0o700)
        backend.give(seal_dir)
        key_file = scratch / ".seal-key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        backend.give(key_file)
        stems = _cell_stems(nb)
        conn = scratch / "kernel.json"
        startup = STARTUP + (TORCH_STARTUP if job["torch"] else []) + [SENTINEL]
        slot = backend

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
                    cell.outputs = [error_output("NotRun", stopped)]
                    continue
                left = deadline - time.monotonic()
                if left <= 1:
                    stopped = f"the notebook ran past its {job['notebook_timeout']} s limit"
                    notes.append(stopped)
                    cell.outputs = [error_output("NotRun", stopped)]
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
                    cell.outputs.append(error_output("KernelDied", stopped))
                    continue
                except Exception as exc:  # noqa: BLE001 (a timeout the interrupt could not end, etc.)
                    stopped = f"cell {i} could not finish ({type(exc).__name__}); later cells did not run"
                    notes.append(stopped)
                    cell.outputs.append(error_output(type(exc).__name__, str(exc)[:500]))
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
        log = (read_private(scratch / "kernel.log", 1 << 20) or b"")[-1500:]
        if log.strip():
            raise RuntimeError(f"{exc}; the kernel's log ends: "
                               f"{log.decode('utf-8', 'replace').strip()}") from exc
        raise
    finally:
        backend.finish(scratch)
    return {"nb": nbformat.writes(nb), "notes": notes, "seconds": time.monotonic() - t0}

