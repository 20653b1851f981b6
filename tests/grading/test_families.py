"""The submission-family harness itself, on a toy assignment.

The course's own families are graded (by stock nbgrader and by the engine) in
test_engine_families.py.
"""

import families
import nbformat
import pytest
from families import FamilyError, load_family
from family_checks import assert_family
from toy_assignment import FAMILY_YAML, write_toy_assignment

pytestmark = pytest.mark.grading


def _grade(family, tmp_path):
    result = families.grade_family(family, tmp_path / "course")
    print(families._table(result))
    print(f"generate {result.generate_seconds:.1f} s, autograde {result.autograde_seconds:.1f} s")
    return result


def test_course_assignments_are_found(repo):
    """Discovery finds the course's projects (a broken glob would silently test nothing)."""
    found = {p.name for p in families.find_assignments(repo)}
    assert {"s1-linear-regression", "s1-mnist-mlp", "s2-cifar10-cnn"} <= found, found


def test_toy_family_graded_by_nbgrader(tmp_path):
    """The harness on a tiny assignment: exact scores, a timed-out cell, a restored test cell."""
    family = load_family(write_toy_assignment(tmp_path))
    result = _grade(family, tmp_path)
    assert_family(result)
    autograded = result.course_dir / "autograded"
    # The infinite loop was cut off by the per-cell timeout and the later part still scored.
    nb = nbformat.read(autograded / "infinite-loop/toy-assignment/toy-assignment.ipynb", 4)
    enames = {o.get("ename") for c in nb.cells if c.cell_type == "code" for o in c.outputs}
    assert "CellTimeoutError" in enames
    assert result.scores["infinite-loop"].cells["test-add"] == 1
    # The cheat replaced a test cell; the autograder ran the source's test cell instead.
    nb = nbformat.read(autograded / "cheat/toy-assignment/toy-assignment.ipynb", 4)
    test_cell = next(
        c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test-square"
    )
    assert "all good" not in test_cell.source and "assert square(3) == 9" in test_cell.source
    submitted = result.course_dir / "submitted/cheat/toy-assignment/toy-assignment.ipynb"
    assert "all good" in submitted.read_text()


def test_build_writes_every_member(tmp_path):
    family = load_family(write_toy_assignment(tmp_path))
    paths = families.build_family(family, tmp_path / "out")
    assert set(paths) == set(family.members)
    release = tmp_path / "out/release/toy-assignment/toy-assignment.ipynb"
    assert nbformat.read(paths["untouched"], 4) == nbformat.read(release, 4)
    solution = nbformat.read(paths["solution"], 4)
    assert "return x * x" in solution.cells[1].source
    assert "BEGIN SOLUTION" not in solution.cells[1].source
    assert "NotImplementedError" in nbformat.read(release, 4).cells[1].source


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda y: y.replace("      add: |", "      ad: |"), "unknown grade_id 'ad'"),
        (lambda y: y.replace("    score: 2\n", ""), "submissions.partial: missing 'score'"),
        (lambda y: y.replace("timeout: 3", "timeout: 3\ncolour: red"), "unknown key(s) ['colour']"),
        (
            lambda y: y.replace("  cheat:\n    score: 1", "  cheat:\n    scor: 1"),
            "unknown key(s) ['scor']",
        ),
        (
            lambda y: y.replace("max_score: 3", "max_score: 4"),
            "test cells of toy-assignment.ipynb are worth 3",
        ),
        (lambda y: y.replace("  solution: {score: 3}\n", ""), "submissions: missing 'solution'"),
        (
            lambda y: y.replace(
                "  untouched: {score: 0}", "  untouched: {score: 0, cells: {add: x}}"
            ),
            "takes no cells",
        ),
        (
            lambda y: y.replace("test-square: 2, test-add: 0", "square: 2"),
            "unknown graded grade_id 'square'",
        ),
        (lambda y: y.replace("score: 2", "score: two"), "partial.score must be a number"),
        (lambda y: y.replace("score: 2", "score: 7"), "outside 0..3"),
        (lambda y: y.replace("timeout: 3", "timeout: 0"), "timeout must be"),
        (lambda y: y + "  Bad Name: {score: 0}\n", "lower-case letters"),
        (lambda y: "max_score: [", "not valid YAML"),
    ],
)
def test_bad_submissions_yaml_is_named_and_explained(tmp_path, edit, problem):
    adir = write_toy_assignment(tmp_path, edit(FAMILY_YAML))
    with pytest.raises(FamilyError) as info:
        load_family(adir)
    message = str(info.value)
    assert str(adir / "submissions.yaml") in message or str(adir) in message
    assert problem in message


def test_missing_submissions_yaml(tmp_path):
    adir = write_toy_assignment(tmp_path)
    (adir / "submissions.yaml").unlink()
    with pytest.raises(FamilyError, match="submissions.yaml: missing"):
        load_family(adir)


def test_good_toy_yaml_loads(tmp_path):
    family = load_family(write_toy_assignment(tmp_path))
    assert family.max_score == 3 and family.timeout == 3
    assert family.members["partial"].cells_scores == {"test-square": 2.0, "test-add": 0.0}
    assert list(family.members) == ["solution", "untouched", "partial", "cheat", "infinite-loop"]


def test_the_submissions_schema_is_valid_and_describes_every_key():
    import jsonschema
    from families import _schema

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    missing = []

    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{where}.{key}")
            walk(sub, f"{where}.{key}")

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        walk(sub, f"$defs.{name}")
    assert not missing, missing
