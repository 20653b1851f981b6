"""Lessons reach a student's home once; the student's own copies are never overwritten, and
no link a student plants in ~/lessons makes root write anywhere (issue 12)."""

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from torchclass_course import lessons
from torchclass_hub.spawners.local import copy_new_lessons

REPO = Path(__file__).resolve().parents[2]


def _lessons(root):
    (root / "stage1").mkdir(parents=True)
    (root / "stage1" / "01-tensors.ipynb").write_text("v1")
    (root / "tools").mkdir()
    (root / "tools" / "01-docker.ipynb").write_text("docker v1")


def test_new_home_gets_every_lesson(tmp_path):
    _lessons(tmp_path / "master")
    home = tmp_path / "home"
    home.mkdir()
    copied = asyncio.run(copy_new_lessons(tmp_path / "master", home, None, None))
    assert {p.relative_to(home).as_posix() for p in copied} == {
        "lessons/stage1/01-tensors.ipynb", "lessons/tools/01-docker.ipynb"}
    assert (home / "lessons/stage1/01-tensors.ipynb").read_text() == "v1"


def test_students_edits_survive_a_course_update_and_deleted_lessons_return(tmp_path):
    master = tmp_path / "master"
    _lessons(master)
    home = tmp_path / "home"
    home.mkdir()
    asyncio.run(copy_new_lessons(master, home, None, None))
    (home / "lessons/stage1/01-tensors.ipynb").write_text("my notes")
    (home / "lessons/tools/01-docker.ipynb").unlink()
    (master / "stage1" / "01-tensors.ipynb").write_text("v2")
    (master / "stage1" / "02-autograd.ipynb").write_text("new lesson")

    copied = asyncio.run(copy_new_lessons(master, home, None, None))

    assert (home / "lessons/stage1/01-tensors.ipynb").read_text() == "my notes"
    assert (home / "lessons/tools/01-docker.ipynb").read_text() == "docker v1"
    assert (home / "lessons/stage1/02-autograd.ipynb").read_text() == "new lesson"
    assert len(copied) == 2


def test_no_lessons_dir_copies_nothing(tmp_path):
    assert asyncio.run(copy_new_lessons(tmp_path / "missing", tmp_path, None, None)) == []


def test_the_master_lays_out_every_lesson_of_the_course_one_way(tmp_path):
    course = REPO / "course"
    count = lessons.build_master(course, tmp_path / "master")
    expected = {f"{nb.parent.parent.name}/{nb.name}" for nb in course.glob("stage*/lessons/*.ipynb")}
    expected |= {f"tools/{nb.name}" for nb in course.glob("tools/*.ipynb")}
    got = {p.relative_to(tmp_path / "master").as_posix()
           for p in (tmp_path / "master").rglob("*.ipynb")}
    assert got == expected and count == len(expected) >= 36
    assert all(p.stat().st_mode & 0o777 in (0o644, 0o755) for p in (tmp_path / "master").rglob("*"))
    assert not (tmp_path / "master.new").exists()


def test_the_images_start_script_runs_the_same_routine(tmp_path):
    # start-notebook calls `python -m torchclass_course.lessons give`: the image's students get
    # the same ~/lessons, with the same never-overwrite rule.
    _lessons(tmp_path / "master")
    home = tmp_path / "home"
    home.mkdir()
    give = [sys.executable, "-m", "torchclass_course.lessons", "give", str(tmp_path / "master"),
            str(home)]
    subprocess.run(give, check=True, capture_output=True)
    (home / "lessons/stage1/01-tensors.ipynb").write_text("my notes")
    subprocess.run(give, check=True, capture_output=True)
    assert (home / "lessons/stage1/01-tensors.ipynb").read_text() == "my notes"
    assert (home / "lessons/tools/01-docker.ipynb").read_text() == "docker v1"
    script = (REPO / "images/notebook/start-notebook").read_text()
    assert "torchclass_course.lessons give /srv/torchclass/lessons" in script
    bad = subprocess.run([sys.executable, "-m", "torchclass_course.lessons", "give",
                          str(tmp_path / "master"), str(tmp_path / "no-home")],
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 1 and "no-home" in bad.stderr, bad.stderr


@pytest.fixture
def student():
    """A real Unix account with a 0700 home, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the attack is a real student's link that root would follow")
    name = "tl" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    pw = pwd.getpwnam(name)
    os.chmod(pw.pw_dir, 0o700)
    yield pw
    subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@pytest.fixture
def readable_tmp():
    """A world-readable scratch dir: the student's copy process must read the master lessons."""
    root = Path(tempfile.mkdtemp(prefix="torchclass-lessons-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _as(pw, *cmd):
    subprocess.run(["runuser", "-u", pw.pw_name, "--", *cmd], check=True)


def _master(root):
    _lessons(root / "master")
    for p in [root / "master", *(root / "master").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return root / "master"


def test_dangling_symlink_to_a_root_path_is_not_created_by_the_copy(student, readable_tmp):
    master = _master(readable_tmp)
    # Stands in for /etc/ld.so.preload: a path in a root-only folder that does not exist yet.
    protected = readable_tmp / "root-only"
    protected.mkdir(mode=0o755)
    target = protected / "ld.so.preload"
    home = Path(student.pw_dir)
    _as(student, "mkdir", "-p", f"{home}/lessons/stage1")
    _as(student, "ln", "-s", str(target), f"{home}/lessons/stage1/01-tensors.ipynb")

    asyncio.run(copy_new_lessons(master, home, student.pw_uid, student.pw_gid))

    assert not target.exists(), "root followed the student's link and created the file"
    assert os.readlink(home / "lessons/stage1/01-tensors.ipynb") == str(target)
    # The rest of the lessons still arrive, and are the student's.
    got = home / "lessons/tools/01-docker.ipynb"
    assert got.read_text() == "docker v1"
    assert got.stat().st_uid == student.pw_uid


def test_symlinked_lesson_folder_does_not_make_root_write_into_its_target(student, readable_tmp):
    master = _master(readable_tmp)
    protected = readable_tmp / "root-only"
    protected.mkdir(mode=0o755)
    home = Path(student.pw_dir)
    _as(student, "mkdir", "-p", f"{home}/lessons")
    _as(student, "ln", "-s", str(protected), f"{home}/lessons/stage1")
    _as(student, "ln", "-s", str(protected), f"{home}/lessons/tools")

    asyncio.run(copy_new_lessons(master, home, student.pw_uid, student.pw_gid))

    assert list(protected.iterdir()) == [], "root wrote through the student's folder link"


def test_lessons_copied_for_a_real_student_are_owned_by_them(student, readable_tmp):
    master = _master(readable_tmp)
    home = Path(student.pw_dir)
    copied = asyncio.run(copy_new_lessons(master, home, student.pw_uid, student.pw_gid))
    assert len(copied) == 2
    for p in [home / "lessons", home / "lessons/stage1", *copied]:
        assert p.stat().st_uid == student.pw_uid, p


def test_the_hub_keeps_serving_while_a_students_lessons_are_copied(student, readable_tmp):
    # The copy runs in a child process as the student; the hub's event loop (every other
    # student's login and start) must keep running while it does. Run synchronously, ten
    # students' copies at once held the loop for a second (hub/README.md, Capacity).
    master = _master(readable_tmp)

    async def copy_while_ticking():
        ticks = []

        async def ticker():
            while True:
                await asyncio.sleep(0.002)
                ticks.append(time.monotonic())

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        start = time.monotonic()
        await copy_new_lessons(master, Path(student.pw_dir), student.pw_uid, student.pw_gid)
        end = time.monotonic()
        tick.cancel()
        return [t for t in ticks if start < t < end], end - start

    during, took = asyncio.run(copy_while_ticking())
    assert len(during) >= 3, f"the event loop ran {len(during)} times in the {took:.3f} s copy"
    assert (Path(student.pw_dir) / "lessons/tools/01-docker.ipynb").read_text() == "docker v1"
