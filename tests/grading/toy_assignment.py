"""A tiny nbgrader assignment written on the fly, to test the family harness itself quickly."""

import copy
from pathlib import Path

import nbformat

SOLUTION_META = {
    "grade": False,
    "locked": False,
    "schema_version": 3,
    "solution": True,
    "task": False,
}
TEST_META = {"grade": True, "locked": True, "schema_version": 3, "solution": False, "task": False}

FAMILY_YAML = """\
max_score: 3
timeout: 3
submissions:
  solution: {score: 3}
  untouched: {score: 0}
  partial:
    score: 2
    cells_scores: {test-square: 2, test-add: 0}
    cells:
      add: |
        def add(a, b):
            return a - b
  cheat:
    score: 1
    cells:
      square: |
        def square(x):
            return 9
      test-square: |
        print("all good")
  infinite-loop:
    score: 1
    cells_scores: {test-square: 0, test-add: 1}
    cells:
      square: |
        while True:
            pass
"""


def write_toy_assignment(parent: Path, family_yaml: str = FAMILY_YAML) -> Path:
    """parent/toy-assignment/ with its source notebook and submissions.yaml."""
    adir = parent / "toy-assignment"
    adir.mkdir(parents=True)
    cells = [
        nbformat.v4.new_markdown_cell("# A toy assignment"),
        nbformat.v4.new_code_cell(
            "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
            metadata={"nbgrader": {**SOLUTION_META, "grade_id": "square"}},
        ),
        nbformat.v4.new_code_cell(
            "assert square(3) == 9\n### BEGIN HIDDEN TESTS\nassert square(-7) == 49\n"
            "### END HIDDEN TESTS",
            metadata={"nbgrader": {**TEST_META, "grade_id": "test-square", "points": 2}},
        ),
        nbformat.v4.new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
            metadata={"nbgrader": {**SOLUTION_META, "grade_id": "add"}},
        ),
        nbformat.v4.new_code_cell(
            "assert add(1, 1) == 2\n### BEGIN HIDDEN TESTS\nassert add(2, 5) == 7\n"
            "### END HIDDEN TESTS",
            metadata={"nbgrader": {**TEST_META, "grade_id": "test-add", "points": 1}},
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, adir / "toy-assignment.ipynb")
    (adir / "submissions.yaml").write_text(family_yaml)
    return adir


# Test cells that lean on helpers (a locked cell's function, math, unittest, NumPy): the shape
# monkeypatching attacks go for. Every attack member has a wrong `half`, so any point it gets
# is a point stolen by its patch.
GUARD_FAMILY_YAML = """\
max_score: 2
timeout: 10
submissions:
  solution: {score: 2}
  untouched: {score: 0}
  patch-helpers:
    score: 0
    cells:
      half: |
        def half(x):
            return 0
        close = lambda a, b: True
        unittest.TestCase.assertEqual = lambda *a, **k: None
        np.testing.assert_allclose = lambda *a, **k: None
  patch-modules:
    score: 0
    cells:
      half: |
        def half(x):
            return 0
        import math
        math.isclose = lambda *a, **k: True
        import unittest
        unittest.TestCase.assertEqual = lambda *a, **k: None
  fake-module:
    score: 0
    cells:
      half: |
        def half(x):
            return 0
        import math, types
        def close(a, b):
            return True
        np = types.SimpleNamespace(testing=types.SimpleNamespace(assert_allclose=lambda *a, **k: None),
                                   arange=lambda n: list(range(int(n))))
        unittest = types.SimpleNamespace(TestCase=lambda: types.SimpleNamespace(assertEqual=lambda *a: None))
"""


def write_guard_assignment(parent: Path) -> Path:
    """parent/toy-guard/: test cells calling helpers that a submission could monkeypatch."""
    adir = parent / "toy-guard"
    adir.mkdir(parents=True)
    locked = {"grade": False, "locked": True, "schema_version": 3, "solution": False, "task": False}
    cells = [
        nbformat.v4.new_code_cell(
            "import math\nimport unittest\n\nimport numpy as np\n\n\n"
            "def close(a, b):\n    return math.isclose(a, b, rel_tol=1e-9)",
            metadata={"nbgrader": {**locked, "grade_id": "setup"}},
        ),
        nbformat.v4.new_code_cell(
            "def half(x):\n    ### BEGIN SOLUTION\n    return x / 2\n    ### END SOLUTION",
            metadata={"nbgrader": {**SOLUTION_META, "grade_id": "half"}},
        ),
        nbformat.v4.new_code_cell(
            "assert close(half(3), 1.5)\n### BEGIN HIDDEN TESTS\nassert math.isclose(half(-5), -2.5)\n"
            "### END HIDDEN TESTS",
            metadata={"nbgrader": {**TEST_META, "grade_id": "test-close", "points": 1}},
        ),
        nbformat.v4.new_code_cell(
            "unittest.TestCase().assertEqual(half(4), 2)\n### BEGIN HIDDEN TESTS\n"
            "np.testing.assert_allclose(half(np.arange(3.0)), [0, 0.5, 1])\n### END HIDDEN TESTS",
            metadata={"nbgrader": {**TEST_META, "grade_id": "test-helpers", "points": 1}},
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, adir / "toy-guard.ipynb")
    (adir / "submissions.yaml").write_text(GUARD_FAMILY_YAML)
    return adir


def submit(course: Path, aid: str, student: str, nb_or_text) -> None:
    """A submission in course/submitted/<student>/<aid>/, as `nbgrader collect` leaves it; a
    string is written as is (corrupt JSON)."""
    dest = course / "submitted" / student / aid
    dest.mkdir(parents=True)
    path = dest / f"{aid}.ipynb"
    if isinstance(nb_or_text, str):
        path.write_text(nb_or_text)
    else:
        nbformat.write(nb_or_text, path)
    # nbgrader reads a submission's time from this file; a fixed one keeps runs identical.
    (dest / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")


def submit_with_cell(course: Path, aid: str, student: str, solution, grade_id: str, code: str):
    """The solution notebook with one cell's source replaced, submitted as student."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = code
    submit(course, aid, student, nb)
