"""What every part of the engine shares: its error, a submission's outcome, and how the grader
reads a file a kernel or a student could have planted a link at."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_ENAME = "CellTimeoutError"
MAX_OUTPUT = 1 << 20  # bytes of output kept per notebook; the rest is dropped as it streams in
# After this many cells of a notebook run past their time limit, its other cells are not run:
# honest solutions stay far inside every limit (grading/README.md), so two such cells mean a
# submission that would only burn the grader's time (a trace function, a slow hook, a loop).
TIMEOUT_STRIKES = 2
INTEGRITY = "integrity"  # the first word of a problem that is evidence of tampering


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


def read_private(path: Path, limit: int) -> bytes | None:
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
