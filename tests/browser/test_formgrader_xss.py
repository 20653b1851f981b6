"""A student's notebook opened by the instructor in the formgrader runs none of the student's
HTML or JavaScript (issue 12, item 5), in a real Chromium against a real classroom.

The student hands in the tiny fixture assignment with scripts in a markdown cell and in outputs
(display(HTML(...)), display(Javascript(...)), an <img onerror>); the instructor collects and
grades it with the project's commands (torchclass-grade collect, torchclass-grade grade), then
opens the manual-grading view of the autograded notebook. Every payload would set a global and
request a URL with "tc-exfil" in it; neither may happen. Its own classroom: submitting this
would change the shared classroom's submissions the hub tests count."""

import os
import subprocess

import pytest
from classroom_fixture import REPO, TestClassroom
from hubclient import HubClient
from torchclass_classroom import VENV

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.timeout(900)]

AID = "tc-demo"
MARK = "TC-VISIBLE-MARKER"


def _payload(tag: str) -> str:
    return (f"window.__tc_pwned = (window.__tc_pwned || []).concat(['{tag}']);"
            f"fetch('/tc-exfil-{tag}?' + document.cookie).catch(() => 0);")


MARKDOWN = (f"Notes from the student: {MARK}\n\n<script>{_payload('md-script')}</script>\n\n"
            f"<img src=\"data:,\" onerror=\"{_payload('md-img')}\">\n\n"
            f"<a href=\"javascript:{_payload('md-link')}\">a link</a>")
OUT_SCRIPT = "<script>" + _payload("out-script") + "</script>"
OUT_IMG = '<img src=x onerror="' + _payload("out-img") + '">'
SOLUTION = (
    "def square(x):\n    return x * x\n\n"
    "from IPython.display import HTML, Javascript, display\n"
    f"display(HTML({OUT_SCRIPT!r}))\n"
    f"display(HTML({OUT_IMG!r}))\n"
    f"display(Javascript({_payload('out-js')!r}))\n"
)


def login(page, url: str, user: str, password: str) -> None:
    # tests/browser/conftest.py has the same helper; imported from `conftest` it can resolve to
    # another folder's conftest when several test folders run together.
    page.goto(url + "hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")


def _grade_cmd(room, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        str(REPO / d) for d in ("hub", "grading", "course")))
    return subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "torchclass_grading.cli",
         "--classroom", str(room.file), *args],
        capture_output=True, text=True, timeout=600, env=env, check=False)


@pytest.fixture(scope="module")
def room():
    if os.geteuid() != 0:
        pytest.skip("the classroom creates real Unix users (useradd): run as root")
    r = TestClassroom(n_students=1, assignments=[AID])
    try:
        r.up()
        yield r
    finally:
        r.teardown()


@pytest.fixture(scope="module")
def graded_attack(room):
    student = room.students[0]
    c = HubClient(room.url, student)
    assert c.login(room.passwords()[student]).status_code == 302
    c.start_server()
    c.assignment_action("fetch", room.course_id, AID)
    nb = c.get_file(f"{AID}/{AID}.ipynb").json()["content"]
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "square":
            cell["source"] = SOLUTION
    nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": MARKDOWN})
    c.put_notebook(f"{AID}/{AID}.ipynb", nb)
    c.assignment_action("submit", room.course_id, AID)
    collected = _grade_cmd(room, "collect", AID)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    graded = _grade_cmd(room, "grade", AID)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    course = room.classroom.course_dir
    return {"student": student,
            "submitted": (course / "submitted" / student / AID / f"{AID}.ipynb").read_text(),
            "autograded": (course / "autograded" / student / AID / f"{AID}.ipynb").read_text()}


def test_student_scripts_do_not_run_in_the_formgrader(room, browser, graded_attack,
                                                      artifacts_dir):
    teacher = room.instructor
    api = HubClient(room.url, teacher)
    assert api.login(room.passwords()[teacher]).status_code == 302
    base = f"{room.url}services/formgrader-{room.course_id}/formgrader/"
    api.s.get(base, timeout=60).raise_for_status()
    (sub,) = api.s.get(f"{base}api/submitted_notebooks/{AID}/{AID}", timeout=60).json()

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    requests, dialogs = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        login(page, room.url, teacher, room.passwords()[teacher])
        # Logged in once the hub moves on from its login page (no need to wait for the
        # instructor's own server to spawn).
        page.wait_for_url(lambda url: "/hub/login" not in url, timeout=120_000)
        page.goto(f"{base}submissions/{sub['id']}/?index=0")
        page.wait_for_selector(f"text={MARK}", timeout=60_000)
        page.wait_for_timeout(2000)  # onerror handlers and fetches would have fired by now
        page.screenshot(path=str(artifacts_dir / "formgrader-malicious-submission.png"),
                        full_page=True)
        ran = page.evaluate("window.__tc_pwned || []")
        exfil = [u for u in requests if "tc-exfil" in u]
        assert ran == [] and exfil == [] and dialogs == [], (ran, exfil, dialogs)
        # The instructor still sees the student's work: the text and the graded code.
        assert "def square(x)" in page.inner_text("body")
    finally:
        context.close()


def test_the_attack_reached_the_grader(graded_attack):
    """Else the browser test proves nothing: every payload was handed in and collected, and the
    graded notebook the formgrader renders holds the markdown one. (What the grading engine
    does to outputs is its own business; the formgrader must be safe either way.)"""
    for tag in ("md-script", "md-img", "md-link", "out-script", "out-img", "out-js"):
        assert f"tc-exfil-{tag}" in graded_attack["submitted"], tag
    assert "tc-exfil-md-script" in graded_attack["autograded"]
