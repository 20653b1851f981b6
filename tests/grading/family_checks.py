"""Checks shared by the family tests: a graded family against its submissions.yaml."""

import families
import nbformat


def source_test_cells(family) -> dict[str, str]:
    """grade_id -> source of each test cell of the assignment's source notebook."""
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nbformat.read(family.notebook, 4).cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def assert_family(result, grader="nbgrader"):
    """Exact scores, full marks for the solution, edited test cells restored, nothing leaked."""
    family = result.family
    problems = result.mismatches()
    assert not problems, (
        f"{grader}: " + "\n".join(problems) + f"\n--- {grader} log ---\n" + result.log[-6000:]
    )
    # The solution gets every point of every graded cell, not just the right total.
    assert result.scores["solution"].cells == result.cell_max, grader
    assert result.scores["solution"].total == family.max_score, grader
    # A member that edited a test cell was graded with the source's test cell, hidden checks included.
    source = source_test_cells(family)
    for name, member in family.members.items():
        edited = set(member.cells) & set(source)
        if not edited:
            continue
        nb_path = result.course_dir / "autograded" / name / family.assignment_id
        graded = nbformat.read(nb_path / f"{family.assignment_id}.ipynb", 4)
        restored = set()
        for cell in graded.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in edited:
                assert cell.source == source[grade_id], (
                    f"{grader}: {name}: test cell {grade_id} not restored"
                )
                restored.add(grade_id)
        assert restored == edited, f"{grader}: {name}: test cells {edited - restored} missing"
    release = result.course_dir / "release" / family.assignment_id / f"{family.assignment_id}.ipynb"
    leaks = families.release_leaks(family, release)
    assert not leaks, f"{release} leaks source code: {leaks}"
