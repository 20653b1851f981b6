"""Lessons reach a student's home once; the student's own copies are never overwritten."""

from torchclass_hub.spawners.local import copy_new_lessons


def _lessons(root):
    (root / "stage1").mkdir(parents=True)
    (root / "stage1" / "01-tensors.ipynb").write_text("v1")
    (root / "tools").mkdir()
    (root / "tools" / "01-docker.ipynb").write_text("docker v1")


def test_new_home_gets_every_lesson(tmp_path):
    _lessons(tmp_path / "master")
    home = tmp_path / "home"
    home.mkdir()
    copied = copy_new_lessons(tmp_path / "master", home, None, None)
    assert {p.relative_to(home).as_posix() for p in copied} == {
        "lessons/stage1/01-tensors.ipynb", "lessons/tools/01-docker.ipynb"}
    assert (home / "lessons/stage1/01-tensors.ipynb").read_text() == "v1"


def test_students_edits_survive_a_course_update_and_deleted_lessons_return(tmp_path):
    master = tmp_path / "master"
    _lessons(master)
    home = tmp_path / "home"
    home.mkdir()
    copy_new_lessons(master, home, None, None)
    (home / "lessons/stage1/01-tensors.ipynb").write_text("my notes")
    (home / "lessons/tools/01-docker.ipynb").unlink()
    (master / "stage1" / "01-tensors.ipynb").write_text("v2")
    (master / "stage1" / "02-autograd.ipynb").write_text("new lesson")

    copied = copy_new_lessons(master, home, None, None)

    assert (home / "lessons/stage1/01-tensors.ipynb").read_text() == "my notes"
    assert (home / "lessons/tools/01-docker.ipynb").read_text() == "docker v1"
    assert (home / "lessons/stage1/02-autograd.ipynb").read_text() == "new lesson"
    assert len(copied) == 2


def test_no_lessons_dir_copies_nothing(tmp_path):
    assert copy_new_lessons(tmp_path / "missing", tmp_path, None, None) == []
