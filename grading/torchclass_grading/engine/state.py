"""Each submission's outcome on disk: `<course>/.torchclass-engine/<assignment>/<student>.done`,
JSON {"stamp", "status", "problems", "seconds"}, replaced atomically, so a killed run resumes
without regrading or duplicates. The report reads these through this module only."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from torchclass_grading.engine.common import read_private

STATE = ".torchclass-engine"


def done_file(course_dir, assignment: str, student: str) -> Path:
    """Where a submission's .done record lives."""
    return Path(course_dir) / STATE / assignment / f"{student}.done"


def submission_stamp(sub_dir: Path) -> str:
    """What identifies a submission's version: its timestamp.txt and a hash of its notebooks."""
    ts = sub_dir / "timestamp.txt"
    stamp = (read_private(ts, 4096) or b"").decode("utf-8", "replace").strip()
    h = hashlib.sha256()
    for p in sorted(sub_dir.glob("*.ipynb")):
        h.update(p.name.encode() + (read_private(p, 256 << 20) or b""))
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


def submission_state(course_dir, assignment: str, student: str) -> dict | None:
    """A submission's record as read_state gives it, plus "current": False when the submission
    changed since (resubmitted); None when there is no readable record."""
    state = read_state(done_file(course_dir, assignment, student))
    if state is None:
        return None
    stamp = submission_stamp(Path(course_dir) / "submitted" / student / assignment)
    return {**state, "current": state["stamp"] == stamp}
