"""The Engine: grades every submission of an assignment in parallel, each kernel sandboxed.

nbgrader stays the format and the gradebook. Per submission:
1. the grader (this process) prepares the notebook exactly as `nbgrader autograde` does
   (prepare.py);
2. a worker process executes it cell by cell, while ONLY the kernel runs in the sandbox of the
   chosen backend (run.py, backends.py): hidden tests reach the kernel when their cell runs;
3. the grader records it with nbgrader's own Autograde app (record.py). The grader is the
   gradebook's only writer.

Each submission's outcome is kept with its stamp (state.py), so a killed run picks up where it
stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from pathlib import Path

from torchclass_grading import sandbox, scrub
from torchclass_grading.engine import kernel_env, prepare, record, run
from torchclass_grading.engine.backends import backend_class
from torchclass_grading.engine.common import MAX_OUTPUT, EngineError, Outcome
from torchclass_grading.engine.state import done_file, read_state, submission_stamp, write_state


class Engine:
    def __init__(self, course_dir, assignment_id: str, workers: int | None = None,
                 cell_timeout: int | None = None, notebook_timeout: int | None = None,
                 limits: sandbox.Limits | None = None, max_output: int = MAX_OUTPUT,
                 kernel_pythonpath: list[str] | None = None, hide: list[str] | None = None,
                 progress=sys.stderr, backend: str = "local", image: str | None = None,
                 fork_kernels: bool = True):
        self.course_dir = Path(course_dir).resolve()
        backend_class(backend)  # an unknown backend fails here, not in every worker
        self.backend = backend
        self.backend_options = {"image": image} if backend == "docker" and image else {}
        self.aid = assignment_id
        self.workers = workers or len(os.sched_getaffinity(0))
        self.config = kernel_env.course_config(self.course_dir)
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
        self.test_cells = {n: prepare.handed_test_cells(self, n) for n in self.notebooks}
        self.redactors = {n: scrub.Redactor([self.source_dir / f"{n}.ipynb"])
                           for n in self.notebooks}
        try:
            library = kernel_env.kernel_library()
        except sandbox.SandboxError as exc:
            raise EngineError(str(exc)) from None
        paths = kernel_pythonpath or [str(library)]
        # What kernels must not see: this course (gradebook, source, other submissions),
        # torchclass itself (every assignment's source and solutions), and what the caller names.
        self.hide = [str(self.course_dir), *kernel_env.torchclass_paths(), *(hide or [])]
        self.preload = run.PRELOAD + (run.TORCH_PRELOAD if self.torch else []) if fork_kernels else None
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(paths), "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "NBGRADER_EXECUTION": "autograde",
        }
        if os.environ.get("TORCHCLASS_DATA"):
            self.env["TORCHCLASS_DATA"] = os.environ["TORCHCLASS_DATA"]
        if (cache := kernel_env.shared_cache(source_text, library)) is not None:
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

    def done_file(self, student: str) -> Path:
        """Where this submission's .done record lives (state.py)."""
        return done_file(self.course_dir, self.aid, student)

    def prepare(self, student: str, name: str, out: Outcome) -> str | None:
        """The submitted notebook sanitized as nbgrader's autograde does, as JSON; None when it
        cannot be graded (its problems are added to out)."""
        return prepare.prepare(self, student, name, out)

    def files(self, student: str) -> list[tuple[str, str]]:
        """The data files the kernel may see, as (path, relative name)."""
        return prepare.data_files(self, student)

    def record(self, student: str, executed: dict[str, str], out: Outcome) -> None:
        """Record the executed notebooks (name -> JSON) with nbgrader's Autograde; the score
        and per-cell grades go to out. EngineError when nbgrader fails."""
        record.record(self, student, executed, out)

    def run(self, force: bool = False, only: list[str] | None = None) -> list[Outcome]:
        """Grade every submission not graded yet (all with force; only these students if given)."""
        students = [s for s in self.students() if only is None or s in only]
        outcomes: dict[str, Outcome] = {}
        todo = []
        for s in students:
            out = outcomes[s] = Outcome(s)
            stamp = submission_stamp(self.course_dir / "submitted" / s / self.aid)
            state = read_state(self.done_file(s))
            if not force and state and state["stamp"] == stamp and state["status"] != "error":
                out.status = "skipped"
                out.problems, out.seconds = list(state["problems"]), state["seconds"]
                continue
            todo.append((s, stamp))
        if self.backend == "local" and sandbox.os.geteuid() != 0:
            self._say("warning: not root, so kernels run as you with rlimits only (no user "
                      "switch, network left on)\n")
        total, failures = len(todo), 0
        skipped = sum(o.status == "skipped" for o in outcomes.values())
        bar = self._progress_bar(total)
        stamps = dict(todo)
        pending: dict[str, set[str]] = {}
        executed: dict[str, dict[str, str]] = {}
        ready: list[str] = []
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(min(self.workers, max(total, 1)), mp_context=ctx,
                                    initializer=run.init_worker,
                                    initargs=(self.backend, self.limits, self.env, self.hide,
                                              self.preload, self.backend_options)) as pool:
            futures = {}
            # Prepared and handed out one by one, so workers start on the first notebook while
            # the grader prepares the next.
            for s, _stamp in todo:
                prepared = {}
                for n in self.notebooks:
                    try:
                        prepared[n] = self.prepare(s, n, outcomes[s])
                    except Exception as exc:  # noqa: BLE001 (one submission must not stop the rest)
                        outcomes[s].status = "error"
                        outcomes[s].problems.append(f"{n}: cannot be prepared for grading "
                                                    f"({type(exc).__name__}: {str(exc)[:300]})")
                        prepared[n] = None
                pending[s] = {n for n, text in prepared.items() if text is not None}
                executed[s] = {}
                if not pending[s]:
                    ready.append(s)
                files = self.files(s)
                for name in pending[s]:
                    job = {"nb": prepared[name], "files": files, "torch": self.torch,
                           "cell_timeout": self.cell_timeout, "max_output": self.max_output,
                           "notebook_timeout": self.notebook_timeout}
                    futures[pool.submit(run.execute, job)] = (s, name)
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
                    failures += self.finish(s, stamps[s], executed[s], outcomes[s])
                    bar.set_postfix_str(f"{failures} with problems", refresh=False)
                    bar.update()
            for s in ready:
                failures += self.finish(s, stamps[s], executed[s], outcomes[s])
                bar.update()
        bar.set_postfix_str(f"{failures} with problems, {skipped} already done", refresh=False)
        bar.close()
        return [outcomes[s] for s in students]

    def finish(self, student: str, stamp: str, executed: dict[str, str], out: Outcome) -> int:
        """Record a submission whose notebooks ran (executed: name -> notebook JSON) and write
        its .done record; 1 when it has problems or could not be graded, else 0."""
        # An unreadable notebook (status error) is not recorded: nbgrader cannot read it either.
        if out.status != "error":
            try:
                self.record(student, executed, out)
            except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
                out.status = "error"
                out.problems.append(str(exc)[:2000])
        # Errors are written too, for the report; a later run tries them again.
        write_state(self.done_file(student), {
            "stamp": stamp, "status": out.status, "problems": out.problems,
            "seconds": round(out.seconds, 3)})
        return 1 if out.problems or out.status == "error" else 0

    def _progress_bar(self, total: int):
        """tqdm's bar on self.progress (none when it is None): `aid [###...] n/total graded,
        f with problems`, and at the end how many were already done."""
        from tqdm import tqdm

        return tqdm(total=total, desc=self.aid, file=self.progress or sys.stderr,
                    disable=self.progress is None, ascii=".#", dynamic_ncols=False,
                    bar_format="{desc} [{bar:30}] {n_fmt}/{total_fmt} graded{postfix}",
                    postfix="0 with problems")

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress.write(text)
            self.progress.flush()


