"""Execute course notebooks the way the tests and benchmarks do: in a fresh kernel, within the
notebook's time budget (``metadata.torchclass.budget_seconds``), reporting the failing cell.

    python -m torchclass_course.notebooks course/stage1/lessons/*.ipynb
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat


class LessonFailed(AssertionError):
    """A notebook cell raised, or the notebook ran past its budget."""


@dataclass
class Run:
    path: Path
    seconds: float
    budget: int
    cell_seconds: list[float] = field(default_factory=list)


def budget_of(nb, path: Path) -> int:
    """The notebook's time budget in seconds; a clear error when it is missing or not a number."""
    budget = nb.metadata.get("torchclass", {}).get("budget_seconds")
    if not isinstance(budget, int) or not 0 < budget <= 600:
        raise LessonFailed(
            f"{path}: metadata.torchclass.budget_seconds must be an integer in 1..600, got {budget!r}"
        )
    return budget


def execute(path: Path, cwd: Path, kernel_name: str = "python3") -> Run:
    """Run every cell of ``path`` with ``cwd`` as working folder; the whole notebook (kernel start
    included) must finish within its budget. Raises LessonFailed naming the notebook and cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    budget = budget_of(nb, path)
    start = time.monotonic()
    deadline = start + budget
    cell_seconds: list[float] = []
    current = {"index": None, "started": start}

    def remaining(cell) -> int:
        return max(1, int(deadline - time.monotonic()))

    client = NotebookClient(
        nb, kernel_name=kernel_name, timeout_func=remaining, allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )

    def on_start(cell, cell_index, **_):
        current["index"], current["started"] = cell_index, time.monotonic()

    def on_done(cell, cell_index, **_):
        cell_seconds.append(round(time.monotonic() - current["started"], 3))

    client.on_cell_start = on_start
    client.on_cell_executed = on_done
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        index = current["index"]
        source = nb.cells[index].source if index is not None else "(kernel start)"
        what = "ran past the budget" if isinstance(e, CellTimeoutError) else "failed"
        raise LessonFailed(
            f"{path}: cell {index} {what} (budget {budget} s, "
            f"{time.monotonic() - start:.1f} s elapsed)\n--- cell source ---\n{source}\n"
            f"--- error ---\n{e}"
        ) from None
    seconds = time.monotonic() - start
    if seconds > budget:
        raise LessonFailed(f"{path}: took {seconds:.1f} s, over its budget of {budget} s")
    return Run(path, round(seconds, 2), budget, cell_seconds)


def main(argv: list[str]) -> int:
    failed = 0
    for arg in argv:
        try:
            run = execute(Path(arg), Path.cwd())
            print(f"ok    {run.seconds:6.1f} s / {run.budget} s  {arg}")
        except LessonFailed as e:
            print(f"FAIL  {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
