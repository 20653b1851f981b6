"""Execute course notebooks the way the tests and benchmarks do: in a fresh kernel, within the
notebook's time budget (``metadata.torchclass.budget_seconds``), reporting the failing cell.

    python -m torchclass_course.notebooks course/stage1/lessons/*.ipynb
    python -m torchclass_course.notebooks --solutions course/stage1/lessons/02-tensors.ipynb

Exercises: a lesson's exercise cells (tag ``exercise``) hold stubs; the worked answers live in
``course/solutions/<stage or tools>/<lesson>.yaml`` (exercise cell id -> source), which never
reach students. ``--solutions`` runs a lesson with its answers in place; ``exercise_outcomes``
reads what each ``checks.exercise`` block printed.
"""

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from torchclass_course import course_dir

EXERCISE_TAG = "exercise"


class LessonFailed(AssertionError):
    """A notebook cell raised, or the notebook ran past its budget."""


@dataclass
class Run:
    path: Path
    seconds: float
    budget: int
    cell_seconds: list[float] = field(default_factory=list)
    notebook: nbformat.NotebookNode | None = None   # the executed notebook, outputs included


def budget_of(nb, path: Path) -> int:
    """The notebook's time budget in seconds; a clear error when it is missing or not a number."""
    budget = nb.metadata.get("torchclass", {}).get("budget_seconds")
    if not isinstance(budget, int) or not 0 < budget <= 600:
        raise LessonFailed(
            f"{path}: metadata.torchclass.budget_seconds must be an integer in 1..600, got {budget!r}"
        )
    return budget


def exercise_cells(nb) -> list:
    """The cells a learner fills in (tagged ``exercise``)."""
    return [c for c in nb.cells if c.cell_type == "code" and EXERCISE_TAG in c.metadata.get("tags", [])]


def solution_path(path: Path) -> Path:
    """``course/stage1/lessons/02-tensors.ipynb`` -> ``course/solutions/stage1/02-tensors.yaml``;
    ``course/tools/01-torchvision.ipynb`` -> ``course/solutions/tools/01-torchvision.yaml``."""
    path = Path(path).resolve()
    group = path.parent.parent.name if path.parent.name == "lessons" else path.parent.name
    return course_dir() / "solutions" / group / (path.stem + ".yaml")


def load_solutions(path: Path) -> dict[str, str]:
    """The worked answers of lesson ``path``: exercise cell id -> source."""
    answers = yaml.safe_load(solution_path(path).read_text())
    if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
        raise LessonFailed(f"{solution_path(path)}: expected a mapping of cell id -> source")
    return answers


def with_solutions(nb, answers: dict[str, str]):
    """A copy of ``nb`` with every exercise cell's stub replaced by its worked answer; an answer
    for a cell that is missing or not an exercise, or an exercise without an answer, is an error
    (so answers and lessons cannot drift apart silently)."""
    nb = nbformat.from_dict(nb)
    cells = {c.get("id"): c for c in exercise_cells(nb)}
    unknown, unanswered = sorted(set(answers) - set(cells)), sorted(set(cells) - set(answers))
    if unknown or unanswered:
        raise LessonFailed(f"answers for cells that are not exercises: {unknown}; "
                           f"exercises without an answer: {unanswered}")
    for cell_id, source in answers.items():
        cells[cell_id].source = source.rstrip("\n")
    return nb


_OUTCOME = re.compile(r"^(\u2714|\u2718) (.+): (solved|not solved yet)$", re.MULTILINE)


def exercise_outcomes(nb) -> dict[str, str]:
    """What every ``checks.exercise`` block of an executed notebook printed: title -> "solved" or
    "not solved yet"."""
    outcomes = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        outcomes.update({m.group(2): m.group(3) for m in _OUTCOME.finditer(text)})
    return outcomes


def execute(path: Path, cwd: Path, kernel_name: str = "python3", solutions: bool = False) -> Run:
    """Run every cell of ``path`` with ``cwd`` as working folder; the whole notebook (kernel start
    included) must finish within its budget. Raises LessonFailed naming the notebook and cell.
    ``solutions=True`` runs it with the worked answers in its exercise cells."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if solutions:
        nb = with_solutions(nb, load_solutions(path))
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
    return Run(path, round(seconds, 2), budget, cell_seconds, nb)


def main(argv: list[str]) -> int:
    failed = 0
    solutions = "--solutions" in argv
    for arg in [a for a in argv if a != "--solutions"]:
        try:
            run = execute(Path(arg), Path.cwd(), solutions=solutions)
            outcomes = exercise_outcomes(run.notebook)
            solved = sum(v == "solved" for v in outcomes.values())
            print(f"ok    {run.seconds:6.1f} s / {run.budget} s  {arg}  (exercises solved {solved}/{len(outcomes)})")
        except LessonFailed as e:
            print(f"FAIL  {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
