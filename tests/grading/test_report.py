"""The grading report (CSV + HTML), the engine's persisted outcomes, nbgrader feedback from
engine-graded notebooks, and `torchclass-grade grade` end to end.

One course graded by the engine (report_course.py) serves every test; tests that change
anything work on a copy of it.
"""

import csv
import html
import json
import os
import pwd
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from report_course import HIDDEN_SNIPPETS, INJECTED, ROSTER_ONLY, copy_course, graded_course
from torchclass_grading import engine, report
from torchclass_grading.course import Course

pytestmark = [pytest.mark.grading, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    info = graded_course(tmp_path_factory)
    out = tmp_path_factory.mktemp("report")
    csv_path, html_path = report.write_report(info["course"], info["aid"], out)
    return info, csv_path, html_path


def gradebook(course, aid):
    """student -> (total, {cell: score}), and the roster, read straight from nbgrader."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{Path(course) / 'gradebook.db'}") as gb:
        subs = {s.student_id: (float(s.score), {g.name: float(g.score)
                                                for nb in s.notebooks for g in nb.grades})
                for s in gb.assignment_submissions(aid)}
        roster = {s.id for s in gb.students}
    return subs, roster


def csv_rows(path):
    with open(path, newline="") as fh:
        return {r["student"]: r for r in csv.DictReader(fh)}


def test_csv_rows_equal_the_gradebook(graded):
    info, csv_path, _ = graded
    subs, roster = gradebook(info["course"], info["aid"])
    rows = csv_rows(csv_path)
    assert set(rows) == roster | set(info["outcomes"])
    for student, (total, cells) in subs.items():
        row = rows[student]
        assert row["status"] == "graded" and float(row["total"]) == total and float(row["max"]) == 3
        assert {c: float(row[c]) for c in ("test-square", "test-add")} == cells, student
    assert rows["corrupt-json"]["status"] == "error" and rows["corrupt-json"]["total"] == ""
    assert "not a readable notebook" in rows["corrupt-json"]["problems"]
    assert "test-add deleted or renamed" in rows["deleted-cell"]["problems"]
    assert "test-square was edited" in rows["cheat"]["problems"]
    assert rows[ROSTER_ONLY]["status"] == "no submission"
    assert rows["solution"]["problems"] == ""


def test_html_numbers_match_the_gradebook(graded):
    info, _, html_path = graded
    page = html_path.read_text()
    subs, _ = gradebook(info["course"], info["aid"])
    bars = re.findall(r'<rect class="bar" data-label="([^"]*)" data-count="(\d+)"', page)
    totals = Counter(int(t) for t, _ in subs.values())
    assert [(label, int(n)) for label, n in bars] == [(str(i), totals[i]) for i in range(4)]
    rates = {m[0]: tuple(map(int, m[1:])) for m in re.findall(
        r'data-cell="([^"]+)" data-full="(\d+)" data-partial="(\d+)" data-zero="(\d+)"', page)}
    expected, mean = {}, {}
    for cell, points in (("test-square", 2), ("test-add", 1)):
        scores = [cells[cell] for _, cells in subs.values()]
        expected[cell] = (sum(s == points for s in scores), sum(0 < s < points for s in scores),
                          sum(s == 0 for s in scores))
        mean[cell] = sum(scores) / (points * len(scores))
    assert rates == expected
    # the hardest cell (lowest mean share of its points) comes first and is flagged
    order = re.findall(r'<tr class="cell-row[^"]*" data-cell="([^"]+)"', page)
    assert order == sorted(mean, key=mean.get)
    assert re.search(rf'class="cell-row hardest" data-cell="{order[0]}"', page)
    # each failed test cell's message, counted over the students it hit
    square = page.split('data-cell="test-square"><thead>')[1].split("</table>")[0]
    assert re.search(r'<td class="n">1</td><td class="msg">NotImplementedError</td>'
                     r'<td class="who">untouched</td>', square), square
    assert "script-error" in square and "ValueError: " in square
    # the run time each submission's notebook took, kept in the engine's records
    assert re.search(r'data-student="solution">.*?<td class="n">\d+\.\d s</td></tr>', page)
    assert re.search(r'data-student="corrupt-json">.*?<td class="n"></td></tr>', page)
    problems = re.findall(r'<tr class="problem" data-student="([^"]+)"', page)
    assert set(problems) == {"corrupt-json", "deleted-cell", "cheat", "infinite-loop"}


def test_hidden_tests_stay_out_and_student_markup_is_escaped(graded):
    _, csv_path, html_path = graded
    page = html_path.read_text()
    for text in (page, csv_path.read_text()):
        for snippet in HIDDEN_SNIPPETS:
            assert snippet not in text, snippet
    assert INJECTED not in page and "<script" not in page and "<img" not in page
    assert html.escape(INJECTED) in page
    # nothing fetched from elsewhere: the page works offline
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_messages_quoting_hidden_tests_are_redacted(graded, tmp_path):
    info, _, _ = graded
    course = copy_course(info, tmp_path)
    state = engine.STATE
    done = course / state / info["aid"] / "partial.done"
    record = json.loads(done.read_text())
    record["problems"].append("cell 4 timed out:\nassert square(-7) == 49\n")
    done.write_text(json.dumps(record))
    csv_path, html_path = report.write_report(course, info["aid"], tmp_path / "out")
    for path in (csv_path, html_path):
        text = path.read_text()
        assert "square(-7)" not in text and "[hidden test]" in text


def test_a_resumed_run_still_reports_everything(graded, tmp_path):
    info, first_csv, _ = graded
    course = copy_course(info, tmp_path)
    aid = info["aid"]
    record = json.loads((course / engine.STATE / aid / "deleted-cell.done").read_text())
    assert set(record) == {"stamp", "status", "problems", "seconds"}
    assert record["status"] == "graded" and record["seconds"] > 0
    outcomes = {o.student: o for o in engine.Engine(course, aid, workers=1).run()}
    # graded ones are skipped with their problems restored; the unreadable one is tried again
    assert {s for s, o in outcomes.items() if o.status != "skipped"} == {"corrupt-json"}
    assert outcomes["deleted-cell"].problems == info["outcomes"]["deleted-cell"]["problems"]
    csv_path, _ = report.write_report(course, aid, tmp_path / "out")
    first, again = csv_rows(first_csv), csv_rows(csv_path)
    for student, row in first.items():  # the paths in problems name the copy now
        assert again[student]["status"] == row["status"]
        assert again[student]["total"] == row["total"]
        if student != "corrupt-json":
            assert again[student]["problems"] == row["problems"]
    # a submission changed since it was graded says so
    (course / "submitted" / "partial" / aid / "timestamp.txt").write_text("2026-02-02 10:00:00 UTC")
    csv_path, _ = report.write_report(course, aid, tmp_path / "out2")
    row = csv_rows(csv_path)["partial"]
    assert row["status"] == "resubmitted" and "grade it again" in row["problems"]


def test_report_command_names_the_file_and_the_fix(graded, tmp_path, capsys):
    info, _, _ = graded
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(REPO / d) for d in ("hub", "grading", "course")))
    good = subprocess.run([sys.executable, "-m", "torchclass_grading.report", info["course"],
                           info["aid"], "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, check=False)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "r" / f"{info['aid']}-report.html").is_file()
    assert report.main([info["course"], "no-such-assignment", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gradebook.db: no assignment 'no-such-assignment'" in err and "Fix:" in err
    assert report.main([str(tmp_path), info["aid"]]) == 2
    assert f"{tmp_path / 'gradebook.db'}: no gradebook" in capsys.readouterr().err


def test_feedback_from_engine_graded_notebooks_hides_hidden_tests(graded, tmp_path):
    info, _, _ = graded
    course_dir = copy_course(info, tmp_path)
    aid = info["aid"]
    # the classroom's own nbgrader config, with its feedback preprocessors
    course = Course(course_dir, "torchclass-families", tmp_path / "exchange")
    course.setup()
    course.run("generate_feedback", aid, "--force")
    # as text: highlighted code splits a line into many spans
    pages = {p.parts[-3]: html.unescape(re.sub(r"<[^>]*>", "", p.read_text()))
             for p in (course_dir / "feedback").glob(f"*/{aid}/*.html")}
    subs, _ = gradebook(course_dir, aid)
    assert set(pages) == set(subs)
    for student, page in pages.items():
        for snippet in HIDDEN_SNIPPETS:
            assert snippet not in page, (student, snippet)
        assert "assert square(3) == 9" in page  # the visible test is still shown
    # the cheat passes the visible check and fails the hidden one: the error shows, not the code
    assert "AssertionError" in pages["cheat"]


# ---------------------------------------------------------------- torchclass-grade grade


@pytest.fixture
def classroom_course(graded, tmp_path):
    """A classroom file whose course dir is a copy of the graded course, owned by its grader."""
    if os.geteuid() != 0:
        pytest.skip("handing files to the grader account needs root (CI runs as root)")
    import torchclass_classroom as config
    from torchclass_hub import prepare

    info = graded[0]
    prefix = "t" + uuid.uuid4().hex[:7]
    data = tmp_path / "data"
    file = tmp_path / "classroom.yaml"
    file.write_text(yaml.safe_dump({
        "course_id": f"c{prefix}", "hub": {"ip": "127.0.0.1", "port": 18000, "data_dir": str(data)},
        "instructors": [f"{prefix}-teach"], "students": [f"{prefix}-s1"]}))
    classroom = config.load(file)
    (data / "courses").mkdir(parents=True)
    copy = copy_course(info, tmp_path)
    copy.rename(classroom.course_dir)
    prepare.grader_account(classroom)
    try:
        course = Course.from_classroom(classroom)
        course.setup()  # the classroom's config; everything in the course dir to the grader
        yield file, classroom, info["aid"]
    finally:
        subprocess.run(["userdel", "-r", "-f", classroom.grader], check=False, capture_output=True)


def _grade(file, *args):
    from torchclass_grading import cli

    return cli.main(["--classroom", str(file), "grade", *args])


def test_grade_command_grades_reports_and_hands_files_to_the_grader(classroom_course, capsys):
    file, classroom, aid = classroom_course
    course_dir = classroom.course_dir
    # only the unreadable notebook is left to grade: it cannot be, so the exit status is 1
    assert _grade(file, aid) == 1
    out = capsys.readouterr().out
    assert "7 of 8 submissions graded" in out and "1 could not be graded" in out
    assert "corrupt-json: " in out and "not a readable notebook" in out
    # one student regraded for real, in the sandbox
    before = (course_dir / "autograded" / "solution" / aid / f"{aid}.ipynb").stat().st_mtime
    assert _grade(file, aid, "--student", "solution", "--force", "--workers", "1") == 0
    out = capsys.readouterr().out
    assert "1 of 1 submissions graded" in out
    assert (course_dir / "autograded" / "solution" / aid / f"{aid}.ipynb").stat().st_mtime > before
    html_path = course_dir / "reports" / aid / f"{aid}-report.html"
    assert f"report: {html_path}" in out
    rows = csv_rows(course_dir / "reports" / aid / f"{aid}-grades.csv")
    assert rows["solution"]["total"] == "3" and rows["deleted-cell"]["total"] == "2"
    grader = pwd.getpwnam(classroom.grader).pw_uid
    foreign = [str(p) for p in [course_dir, *course_dir.rglob("*")] if p.lstat().st_uid != grader]
    assert foreign == [], foreign[:10]


def test_grade_command_errors_name_the_file_and_the_fix(classroom_course, capsys):
    file, classroom, aid = classroom_course
    assert _grade(file, "no-such-assignment") == 2
    err = capsys.readouterr().err
    assert f"{classroom.course_dir / 'source'}" in err and "torchclass-grade release" in err
    assert _grade(file, aid, "--student", "nobody") == 2
    err = capsys.readouterr().err
    assert "nobody submitted nothing" in err and "torchclass-grade collect" in err
    (classroom.course_dir / "gradebook.db").unlink()
    assert _grade(file, aid) == 2
    assert f"no gradebook at {classroom.course_dir / 'gradebook.db'}" in capsys.readouterr().err
