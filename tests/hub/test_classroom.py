"""The classroom end to end against real services: JupyterHub, real Unix users, nbgrader.

One hub serves the whole module (starting it costs ~30 s); tests that change it (the crash test)
leave it running again. Students s1/s2/s3 submit the solution, the untouched release and a
half-right notebook of a Stage 1 project (or the fixture assignment when Stage 1 is absent).
"""

import csv
import html
import json
import os
import pwd
import re
import signal
import sqlite3
import time

import pytest
import requests
import submissions
import torchclass_classroom as config
from classroom_fixture import REPO, assignment_under_test
from hubclient import HubClient
from torchclass_hub import hubconfig

pytestmark = [pytest.mark.hub, pytest.mark.timeout(600)]

MEMBERS = ["solution", "untouched", "partial"]


def _login(room, user) -> HubClient:
    client = HubClient(room.url, user)
    r = client.login(room.passwords()[user])
    assert r.status_code == 302, f"login of {user} failed: {r.status_code} {r.text[:300]}"
    assert client.logged_in()
    return client


@pytest.fixture(scope="module")
def graded(classroom):
    """Each student logs in, starts a server, fetches, writes their member and submits; the
    instructor collects, autogrades and returns feedback. Done once per classroom: xdist may
    tear module fixtures down between batches, and a second submission would change the
    state the tests check."""
    if getattr(classroom, "graded", None) is None:
        classroom.graded = _submit_and_grade(classroom)
    return classroom.graded


def _submit_and_grade(classroom):
    aid = assignment_under_test()
    adir = config.stage_projects(classroom.classroom)[aid]
    family = submissions.family(adir)
    clients = {}
    for student, member in zip(classroom.students, MEMBERS):
        c = _login(classroom, student)
        c.start_server()
        listed = c.assignments(classroom.course_id)
        assert [a["assignment_id"] for a in listed if a["status"] == "released"] == [aid]
        statuses = c.assignment_action("fetch", classroom.course_id, aid)["value"]
        assert [a["status"] for a in statuses if a["assignment_id"] == aid] == ["fetched"]
        r = c.get_file(f"{aid}/{aid}.ipynb")
        r.raise_for_status()
        release = r.json()["content"]
        c.put_notebook(f"{aid}/{aid}.ipynb", submissions.build(member, release, adir))
        value = c.assignment_action("submit", classroom.course_id, aid)["value"]
        assert "submitted" in [a["status"] for a in value]
        clients[student] = c
    course = classroom.course
    t0 = time.monotonic()
    course.collect(aid)
    course.autograde(aid)
    course.feedback(aid)
    print(f"collect + autograde + feedback of 3 submissions: {time.monotonic() - t0:.1f} s")
    expected = {s: family["submissions"][m]["score"]
                for s, m in zip(classroom.students, MEMBERS)}
    return {"aid": aid, "dir": adir, "clients": clients, "expected": expected,
            "release": release, "max": family["max_score"]}


def test_students_find_every_lesson_in_their_home(classroom, graded):
    client = next(iter(graded["clients"].values()))
    for stage_dir in sorted(REPO.glob("course/stage*/lessons")):
        stage = stage_dir.parent.name
        r = client.get_file(f"lessons/{stage}")
        assert r.status_code == 200, f"{stage}: {r.status_code} {r.text[:200]}"
        listed = {f["name"]: f for f in r.json()["content"]}
        expected = {nb.name for nb in stage_dir.glob("*.ipynb")}
        assert set(listed) == expected
        assert all(f["writable"] for f in listed.values()), "lessons must be the student's own"


def test_wrong_password_is_refused(classroom):
    client = HubClient(classroom.url, classroom.students[0])
    r = client.login("not-the-password")
    assert r.status_code == 403
    assert not client.logged_in()


def test_gradebook_scores_solution_untouched_and_partial(classroom, graded):
    scores = classroom.course.scores()
    got = {s: scores[s][graded["aid"]] for s in classroom.students}
    assert got == pytest.approx(graded["expected"])
    assert got[classroom.students[0]] == graded["max"]
    assert got[classroom.students[1]] == 0


def test_feedback_reaches_student_without_hidden_tests(classroom, graded):
    aid, student = graded["aid"], classroom.students[2]
    client = graded["clients"][student]
    client.assignment_action("fetch_feedback", classroom.course_id, aid)
    r = client.get_file(f"{aid}/feedback")
    r.raise_for_status()
    (stamp,) = [e["name"] for e in r.json()["content"]]
    r = client.server("GET", f"files/{aid}/feedback/{stamp}/{aid}.html")
    r.raise_for_status()
    page = html.unescape(re.sub(r"<[^>]+>", "", r.text))
    score, top = graded["expected"][student], graded["max"]
    # The score the gradebook holds, as the feedback shows it ("5.0 / 10.0").
    assert re.search(rf"\b{score:g}(\.0+)?\s*/\s*{top:g}(\.0+)?\b", page), page[:2000]
    release_text = "".join("".join(c["source"]) for c in graded["release"]["cells"])
    hidden = [ln for ln in submissions.hidden_test_lines(graded["dir"]) if ln not in release_text]
    assert hidden, "the assignment has hidden tests to look for"
    leaked = [ln for ln in hidden if ln in page]
    assert not leaked and "HIDDEN TESTS" not in page, f"hidden test code in feedback: {leaked}"


def test_csv_export_has_one_row_per_student(classroom, graded, tmp_path):
    out = classroom.course.export_csv(tmp_path / "grades.csv")
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["student_id"] for r in rows) == sorted(classroom.students)
    for row in rows:
        assert float(row["total"]) == pytest.approx(graded["expected"][row["student_id"]])
        assert float(row["max_total"]) == graded["max"]


def test_student_cannot_use_another_students_server_or_the_formgrader(classroom, graded):
    a, b = classroom.students[:2]
    intruder = graded["clients"][b]
    r = intruder.s.get(f"{classroom.url}user/{a}/lab", timeout=30)
    assert r.status_code == 403
    r = intruder.s.get(f"{classroom.url}user/{a}/api/contents", timeout=30)
    assert r.status_code == 403
    assert intruder.api("POST", f"users/{a}/server").status_code in (403, 404)
    assert intruder.api("GET", f"users/{a}").status_code in (403, 404)
    r = intruder.s.get(f"{classroom.url}services/formgrader-{classroom.course_id}/formgrader",
                       timeout=60)
    assert r.status_code == 403


def test_instructor_opens_the_formgrader(classroom):
    teacher = _login(classroom, classroom.instructor)
    base = f"{classroom.url}services/formgrader-{classroom.course_id}/"
    r = teacher.s.get(base + "formgrader", timeout=60)
    assert r.status_code == 200 and "formgrader" in r.url
    r = teacher.s.get(base + "formgrader/api/assignments", timeout=60)
    assert r.status_code == 200
    assert assignment_under_test() in [a["name"] for a in r.json()]


def test_anonymous_gets_the_login_page_or_403(classroom):
    anon = requests.Session()
    for path in ("hub/home", f"user/{classroom.students[0]}/lab",
                 f"services/formgrader-{classroom.course_id}/formgrader"):
        r = anon.get(classroom.url + path, timeout=30)
        assert r.status_code == 403 or "/hub/login" in r.url, (path, r.status_code, r.url)
        if r.status_code == 200:
            assert 'name="password"' in r.text
    assert anon.get(classroom.url + f"hub/api/users/{classroom.students[0]}",
                    timeout=30).status_code == 403


def test_students_cannot_read_or_overwrite_each_others_files_and_submissions(classroom, graded):
    a, b = classroom.students[:2]
    inbound = classroom.classroom.exchange_dir / classroom.course_id / "inbound"
    home_a = os.path.expanduser(f"~{a}")
    # Homes are private.
    assert classroom.as_user(b, "ls", home_a).returncode != 0
    assert classroom.as_user(b, "cat", f"{home_a}/{graded['aid']}/{graded['aid']}.ipynb"
                             ).returncode != 0
    # The inbound cannot be listed, so others' submission names (with a random part) stay secret.
    assert classroom.as_user(b, "ls", str(inbound)).returncode != 0
    # Even knowing the name, b can neither replace a's notebook nor move a's submission away.
    (sub_a,) = [p for p in inbound.iterdir() if p.name.startswith(f"{a}+")]
    nb_a = sub_a / f"{graded['aid']}.ipynb"
    assert classroom.as_user(b, "sh", "-c", f"echo x > '{nb_a}'").returncode != 0
    assert classroom.as_user(b, "rm", "-f", str(nb_a)).returncode != 0
    assert nb_a.exists()
    assert classroom.as_user(b, "touch", str(sub_a / "extra.ipynb")).returncode != 0
    assert classroom.as_user(b, "mv", str(sub_a), str(inbound / "stolen")).returncode != 0
    assert classroom.as_user(b, "rm", "-rf", str(sub_a)).returncode != 0 or sub_a.exists()
    assert sub_a.exists()
    # Nor read the course dir (solutions, gradebook).
    assert classroom.as_user(b, "ls", str(classroom.classroom.course_dir)).returncode != 0


def test_hub_killed_and_restarted_loses_nothing(classroom, graded):
    """kill -9 the hub; `up` again: same accounts and passwords, submissions, grades."""
    pid = classroom.hub_pid()
    # The database the crash must not lose commits with WAL and synchronous=NORMAL
    # (hubconfig.fast_hub_commits): a killed process loses nothing the disk has not synced.
    db = sqlite3.connect(hubconfig.state_files(classroom.classroom)["db"])
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    before_passwords = classroom.classroom.password_file.read_text()
    before_scores = classroom.course.scores()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while classroom.hub_pid() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert classroom.hub_pid() is None
    classroom.up()
    assert classroom.hub_pid() != pid
    assert classroom.classroom.password_file.read_text() == before_passwords
    assert classroom.course.scores() == before_scores
    inbound = classroom.classroom.exchange_dir / classroom.course_id / "inbound"
    assert len([p for p in inbound.iterdir()]) == len(classroom.students)
    # The student's server survived the crash and is adopted; login still works.
    client = _login(classroom, classroom.students[0])
    user = client.api("GET", f"users/{classroom.students[0]}").json()
    assert user["servers"][""]["ready"]
    client.s.get(client.server_url("lab"), timeout=60).raise_for_status()
    r = client.get_file(f"{graded['aid']}/{graded['aid']}.ipynb")
    assert r.status_code == 200


def _formgrader(classroom) -> tuple[HubClient, str]:
    teacher = _login(classroom, classroom.instructor)
    base = f"services/formgrader-{classroom.course_id}/"
    teacher.s.get(classroom.url + base + "formgrader", timeout=60).raise_for_status()
    return teacher, base


def _service(teacher: HubClient, base: str, method: str, path: str, **kw):
    headers = teacher._xsrf("/" + base)
    return teacher.s.request(method, teacher.base + base + path, headers=headers, timeout=120,
                             **kw)


def test_formgrader_opens_no_terminal_and_starts_no_kernel(classroom):
    """The formgrader runs as the grader account, next to the gradebook and the solutions:
    a terminal or a kernel there is a shell as the grader for anyone (or any script) in it."""
    teacher, base = _formgrader(classroom)
    r = _service(teacher, base, "POST", "api/terminals")
    assert r.status_code in (403, 404), f"terminal opened: {r.status_code} {r.text[:200]}"
    r = _service(teacher, base, "GET", "api/kernelspecs")
    assert r.status_code == 200 and r.json()["kernelspecs"] == {}, r.text[:300]
    r = _service(teacher, base, "POST", "api/kernels", json={"name": "python3"})
    assert r.status_code >= 400, f"kernel started: {r.status_code} {r.text[:200]}"
    assert _service(teacher, base, "GET", "proxy/1/").status_code in (403, 404)
    csp = _service(teacher, base, "GET", "formgrader").headers.get("Content-Security-Policy", "")
    assert "object-src 'none'" in csp and "connect-src 'self'" in csp, csp


def test_formgrader_autograde_button_refuses_and_names_the_sandboxed_command(classroom, graded):
    teacher, base = _formgrader(classroom)
    student = classroom.students[0]
    r = _service(teacher, base, "POST",
                 f"formgrader/api/submission/{graded['aid']}/{student}/autograde")
    r.raise_for_status()
    answer = r.json()
    assert answer["success"] is False, answer
    assert f"torchclass-grade grade {graded['aid']}" in answer.get("error", "") + answer.get("log", "")


def test_torchclass_grade_autograde_refuses_and_names_the_sandboxed_command(classroom, capsys):
    from torchclass_grading import cli as grade_cli

    rc = grade_cli.main(["--classroom", str(classroom.file), "autograde", "a1"])
    err = capsys.readouterr().err
    assert rc == 2 and "torchclass-grade grade a1" in err, err


def test_another_student_cannot_reach_a_students_kernel(classroom, graded):
    """A kernel started through alice's server listens on no TCP port (any local user could
    connect to 127.0.0.1 and read her iopub); its ipc sockets are in a folder only she can enter."""
    import psutil

    alice, bob = classroom.students[:2]
    client = graded["clients"][alice]
    r = client.server("POST", "api/kernels", json={"name": "python3"})
    assert r.status_code == 201, r.text[:300]
    kid = r.json()["id"]
    try:
        deadline = time.monotonic() + 60
        kernel = None
        while kernel is None and time.monotonic() < deadline:
            for p in psutil.process_iter(["username", "cmdline"]):
                if p.info["username"] == alice and any(kid in a for a in p.info["cmdline"] or []):
                    kernel = p
            time.sleep(0.3)
        assert kernel is not None, f"no process of {alice} for kernel {kid}"
        (conn_file,) = [a for a in kernel.cmdline() if a.endswith(f"kernel-{kid}.json")]
        with open(conn_file) as fh:
            info = json.load(fh)
        assert info["transport"] == "ipc", info
        time.sleep(1)
        listening = [c.laddr.port for c in kernel.net_connections("tcp") if c.status == "LISTEN"]
        channels = {info[k] for k in info if k.endswith("_port")}
        # ipykernel always binds one more socket on 127.0.0.1: the pipe that forked children
        # send their output into (a PULL socket that sends nothing and drops any message without
        # its random 16-byte key). No channel of the kernel may be among the TCP listeners.
        assert len(listening) <= 1 and not channels & set(listening), (listening, info)
        runtime = os.path.dirname(conn_file)
        assert os.stat(runtime).st_mode & 0o077 == 0 and os.stat(runtime).st_uid == \
            pwd.getpwnam(alice).pw_uid, runtime
        iopub = f"{info['ip']}-{info['iopub_port']}"
        assert os.path.exists(iopub), iopub
        probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                 "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    sys.exit(f'refused: {e}')\n"
                 "print('connected')")
        out = classroom.as_user(bob, str(config.VENV / "bin" / "python"), "-c", probe, iopub)
        assert out.returncode != 0 and "connected" not in out.stdout, out.stdout + out.stderr
        # alice herself still can.
        mine = classroom.as_user(alice, str(config.VENV / "bin" / "python"), "-c", probe, iopub)
        assert mine.returncode == 0, mine.stdout + mine.stderr
    finally:
        client.server("DELETE", f"api/kernels/{kid}")
