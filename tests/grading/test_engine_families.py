"""Every assignment's submission family, graded by stock nbgrader AND by the engine.

One test per assignment found under course/stage*/projects/*/submissions.yaml, so a new
assignment is picked up without touching this file and xdist spreads them over workers. Each
builds the family once; the engine (sandboxed kernels, seeded start-up, guard before each test
cell) grades every member, one stock `nbgrader autograde` batch grades the honest ones, and both
are checked against submissions.yaml. Honest members must also get the very same per-cell
scores from both: the sandbox and the determinism settings must never change a fair grade.
"""

import dataclasses
import json
import shutil
import time

import families
import nbformat
import pytest
from families import FamilyResult, load_family
from family_checks import assert_family
from torchclass_grading import engine

pytestmark = pytest.mark.grading

ASSIGNMENTS = families.find_assignments()
# Members whose code plays fair: what they score must not depend on who runs it.
HONEST = ("solution", "partial", "alternative", "untouched")
# Two workers: a member stuck in its timeout does not hold up the rest of the family.
ENGINE_WORKERS = 2


def _stock(family, course_dir):
    t0 = time.monotonic()
    proc = families._nbgrader(["autograde", family.assignment_id, "--force"], course_dir)
    seconds = time.monotonic() - t0
    scores, max_score, cell_max = families.read_scores(family, course_dir)
    return FamilyResult(
        family, course_dir, scores, max_score, cell_max, 0.0, seconds, proc.stdout + proc.stderr
    )


def _engine(family, course_dir):
    eng = engine.Engine(course_dir, family.assignment_id, workers=ENGINE_WORKERS, progress=None)
    t0 = time.monotonic()
    outcomes = {o.student: o for o in eng.run()}
    seconds = time.monotonic() - t0
    scores, max_score, cell_max = families.read_scores(family, course_dir)
    log = "\n".join(str(o) for o in outcomes.values())
    result = FamilyResult(family, course_dir, scores, max_score, cell_max, 0.0, seconds, log)
    return result, outcomes


@pytest.mark.parametrize("assignment_dir", ASSIGNMENTS, ids=[p.name for p in ASSIGNMENTS])
def test_family_scores_stock_and_engine(assignment_dir, tmp_path, artifacts_dir):
    family = load_family(assignment_dir)
    aid = family.assignment_id
    t0 = time.monotonic()
    stock_dir = tmp_path / "stock"
    families.build_family(family, stock_dir)
    # The engine grades a copy of the same build (nbgrader's config names its own root).
    engine_dir = tmp_path / "engine"
    shutil.copytree(stock_dir, engine_dir)
    families._write_config(engine_dir, family)
    build_seconds = time.monotonic() - t0

    # Stock nbgrader grades the honest members only: what the others score is checked through
    # the engine, and leaving them out (a timed-out cell alone costs its timeout) keeps CI short.
    honest = dataclasses.replace(
        family, members={k: v for k, v in family.members.items() if k in HONEST}
    )
    for name in set(family.members) - set(honest.members):
        shutil.rmtree(stock_dir / "submitted" / name)
    stock = _stock(honest, stock_dir)
    print("stock nbgrader:\n" + families._table(stock))
    graded, outcomes = _engine(family, engine_dir)
    print("engine:\n" + families._table(graded))
    for o in outcomes.values():
        print(o)
    times = {
        "build_s": build_seconds,
        "stock_s": stock.autograde_seconds,
        "engine_s": graded.autograde_seconds,
    }
    print(json.dumps(times))
    (artifacts_dir / "times.json").write_text(json.dumps({aid: times}, indent=1))

    assert_family(stock, "stock nbgrader")
    assert_family(graded, "engine")
    for name in honest.members:
        assert graded.scores[name].cells == stock.scores[name].cells, (
            f"{name}: engine {graded.scores[name].cells} != stock {stock.scores[name].cells}"
        )
        assert graded.scores[name].total == stock.scores[name].total, name
    # The engine's own report agrees with the gradebook and names exactly the edited test cells.
    handed = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nbformat.read(stock_dir / "release" / aid / f"{aid}.ipynb", 4).cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    for name, member in family.members.items():
        out = outcomes[name]
        assert out.status == "graded" and out.score == graded.scores[name].total, out
        edited = {g for g, src in member.cells.items() if g in handed and src != handed[g]}
        noted = {g for g in handed if any(f"test cell {g} was edited" in p for p in out.problems)}
        assert noted == edited, out
        if name in HONEST:
            assert not out.problems, out

    # Every graded part has its hidden checks: the release must differ from the source there.
    source = nbformat.read(family.notebook, as_version=4)
    hidden = [
        c.metadata["nbgrader"]["grade_id"]
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("grade")
        and families.marked_regions(c.source, families.HIDDEN_MARKERS)
    ]
    graded_cells = [g for g, m in families._grade_cells(source).items() if m.get("grade")]
    assert sorted(hidden) == sorted(graded_cells), "every test cell should hold hidden tests"
    for member in ("partial", "alternative", "cheat", "infinite-loop"):
        assert member in family.members, f"{family.yaml_path} lacks the '{member}' member"
