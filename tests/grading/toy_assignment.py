"""A tiny nbgrader assignment written on the fly, to test the family harness itself quickly."""

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
