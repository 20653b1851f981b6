"""`torchclass-grade collect` on the one-machine classroom takes each submission only as its
owner made it (issue 12, items 3 and 4). Real Unix accounts attack the real exchange the way
`up` lays it out: inbound/ is the grader's 3733, so any student can drop a folder (or a link)
there under any name. Every refusal is named in the collect output; the rest is collected."""

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest
import torchclass_classroom as config
import yaml
from torchclass_hub import accounts, prepare

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

AID = "a1"
STAMP = "2026-12-02 10:00:00.000000 UTC"
LATER = "2026-12-02 11:00:00.000000 UTC"


def _notebook(text: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(text)]
    return nbformat.writes(nb)


@pytest.fixture(scope="module")
def room():
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacks are made by real student accounts (useradd)")
    prefix = "tc" + uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="torchclass-collect-", dir="/tmp"))
    os.chmod(root, 0o755)
    names = {k: f"{prefix}-{k}" for k in ("alice", "bob", "carol", "dave", "mallory")}
    file = root / "classroom.yaml"
    file.write_text(yaml.safe_dump({
        "course_id": f"c{prefix}", "instructors": [f"{prefix}-teach"],
        "students": list(names.values()), "assignments": [],
        "hub": {"data_dir": str(root / "data"), "port": 1}}))
    classroom = config.load(file, env={})
    prepare.data_dirs(classroom)
    for user in names.values():
        accounts.ensure_unix_user(user)
    prepare.grader_account(classroom)
    course = prepare.course(classroom)
    prepare.exchange(classroom)
    source = course.root / "source" / AID
    source.mkdir(parents=True)
    (source / f"{AID}.ipynb").write_text(_notebook("SOLUTION = 'the instructor's answer'"))
    course._chown(course.root / "source")
    yield {"file": file, "classroom": classroom, "course": course, "names": names,
           "inbound": classroom.exchange_dir / classroom.course_id / "inbound",
           "source": source / f"{AID}.ipynb"}
    for user in [*names.values(), classroom.grader]:
        subprocess.run(["userdel", "-r", "-f", user], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def sh(user: str, script: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", "sh", "-ec", script], check=True,
                   capture_output=True, text=True)


def hand_in(room, who: str, as_name: str | None = None, stamp: str = STAMP) -> Path:
    """What `nbgrader submit` makes, made by hand by the account `who`."""
    user = room["names"][who]
    folder = room["inbound"] / f"{room['names'][as_name or who]}+{AID}+{stamp}+{uuid.uuid4().hex[:6]}"
    body = _notebook(f"ANSWER = 'work of {who}'")
    sh(user, f"mkdir '{folder}' && printf %s '{stamp}' > '{folder}/timestamp.txt' && "
             f"cat > '{folder}/{AID}.ipynb' <<'EOF'\n{body}\nEOF")
    return folder


def collected(room, who: str) -> Path:
    return room["course"].root / "submitted" / room["names"][who] / AID / f"{AID}.ipynb"


@pytest.fixture(scope="module")
def collect_run(room):
    n = room["names"]
    hand_in(room, "alice")
    # bob: his notebook is a link to the instructor's source (every hidden test, full marks).
    bob = hand_in(room, "bob")
    sh(n["bob"], f"rm '{bob}/{AID}.ipynb' && ln -s '{room['source']}' '{bob}/{AID}.ipynb'")
    # carol: a hard link (where protected_hardlinks is off, to any file she can name).
    carol = hand_in(room, "carol")
    home = os.path.expanduser(f"~{n['carol']}")
    sh(n["carol"], f"cp '{carol}/{AID}.ipynb' '{home}/keep.ipynb' && rm '{carol}/{AID}.ipynb' "
                   f"&& ln '{home}/keep.ipynb' '{carol}/{AID}.ipynb'")
    # dave: the submission folder itself is a link to the course's source folder.
    sh(n["dave"], f"ln -s '{room['source'].parent}' "
                  f"'{room['inbound']}/{n['dave']}+{AID}+{STAMP}+x'")
    # mallory hands in as alice, later than alice (stock collect takes the newest).
    hand_in(room, "mallory", as_name="alice", stamp=LATER)
    proc = subprocess.run(
        [str(config.VENV / "bin" / "python"), "-m", "torchclass_grading.cli",
         "--classroom", str(room["file"]), "collect", AID],
        capture_output=True, text=True, timeout=240, check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            str(d.parent) for d in config.package_dirs().values())))
    return proc


def test_a_symlink_to_the_instructors_notebook_is_refused_and_named(room, collect_run):
    out = collect_run.stdout + collect_run.stderr
    assert not collected(room, "bob").exists(), "bob's link was followed into submitted/"
    assert f"refused {room['names']['bob']}" in out and f"{AID}.ipynb is a symbolic link" in out, out
    assert "instructor's answer" not in out


def test_a_hard_link_in_a_submission_is_refused(room, collect_run):
    out = collect_run.stdout + collect_run.stderr
    assert not collected(room, "carol").exists()
    assert f"refused {room['names']['carol']}" in out and "hard link" in out, out


def test_a_submission_folder_that_is_a_link_is_refused(room, collect_run):
    out = collect_run.stdout + collect_run.stderr
    assert not collected(room, "dave").exists()
    assert f"refused {room['names']['dave']}" in out, out


def test_handing_in_under_another_students_name_is_refused(room, collect_run):
    out = collect_run.stdout + collect_run.stderr
    n = room["names"]
    assert f"refused {n['alice']}" in out and f"owned by {n['mallory']}" in out, out
    # alice's own (older) submission is the one collected, not mallory's.
    assert "work of alice" in collected(room, "alice").read_text()


def test_the_rest_of_the_class_is_collected_and_the_exit_code_says_some_were_refused(
        room, collect_run):
    assert collect_run.returncode == 1, collect_run.stdout + collect_run.stderr
    print(collect_run.stdout)
    assert "4 refused" in collect_run.stdout, collect_run.stdout
    assert collected(room, "alice").is_file()
