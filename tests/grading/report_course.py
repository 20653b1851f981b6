"""One course graded by the engine, shared by the report tests (grading and browser).

The toy assignment's family plus submissions the report must cope with: a notebook that is
not JSON, one whose error message carries HTML, one with a deleted test cell, and a roster
student who submitted nothing. Grading it costs ~15 s, so it is built once per test session:
under pytest-xdist the workers share it through a lock in the run's common temp dir.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import families
import nbformat
from torchclass_grading import engine, sandbox
from toy_assignment import submit, submit_with_cell, write_toy_assignment

INJECTED = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
EXTRA = {
    # the square cell raises with markup in its message: the report must show it as text
    "script-error": f"def square(x):\n    raise ValueError({INJECTED!r})\n",
}
ROSTER_ONLY = "absent"
HIDDEN_SNIPPETS = ("square(-7)", "add(2, 5)", "== 49", "== 7")


def _build(root: Path) -> dict:
    family = families.load_family(write_toy_assignment(root))
    course = root / "course"
    paths = families.build_family(family, course)
    aid = family.assignment_id
    solution = nbformat.read(paths["solution"], as_version=4)
    for name, code in EXTRA.items():
        submit_with_cell(course, aid, name, solution, "square", code)
    deleted = nbformat.from_dict(json.loads(json.dumps(solution)))
    deleted.cells = [c for c in deleted.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") != "test-add"]
    submit(course, aid, "deleted-cell", deleted)
    submit(course, aid, "corrupt-json", '{"cells": [ not json at all')
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_student(ROSTER_ONLY)
    eng = engine.Engine(course, aid, workers=2,
                        limits=sandbox.Limits(cpu_seconds=60, memory_bytes=2 << 30))
    t0 = time.monotonic()
    outcomes = eng.run()
    info = {"course": str(course), "aid": aid, "family": str(family.assignment_dir),
            "seconds": round(time.monotonic() - t0, 1),
            "outcomes": {o.student: {"status": o.status, "score": o.score,
                                     "problems": o.problems} for o in outcomes}}
    return info


def graded_course(tmp_path_factory) -> dict:
    """{'course', 'aid', 'family', 'seconds', 'outcomes'} of the shared graded course.

    Treat the course as read-only; copy it (copy_course) to change anything."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by this run's workers, fresh for every run
    root = base / "report-course"
    root.mkdir(exist_ok=True)
    ready = root / "ready.json"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.is_file():
            for leftover in root.iterdir():  # a worker that failed half-way
                if leftover.name != "lock":
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            info = _build(root)
            ready.write_text(json.dumps(info))
            print(f"engine graded the report course in {info['seconds']} s")
    return json.loads(ready.read_text())


def copy_course(info: dict, dest: Path) -> Path:
    """A private copy of the graded course (its .done records and gradebook included)."""
    target = dest / "course"
    shutil.copytree(info["course"], target, symlinks=True)
    return target
