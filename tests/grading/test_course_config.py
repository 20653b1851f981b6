"""`torchclass-grade grade` runs as root and reads the course's nbgrader_config.py, which the
grader account owns and can rewrite (issue 12, item 6): root must take only literal settings
from it and never execute it."""

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from torchclass_grading import engine
from torchclass_grading.course import Course

pytestmark = pytest.mark.grading


@pytest.fixture
def grader_course():
    """A course dir owned by a real grader account, in a folder root alone can write."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the attack is a grader-owned config that root would run")
    name = "tg" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    root = Path(tempfile.mkdtemp(prefix="torchclass-cfg-", dir="/tmp"))
    course = root / "course"
    course.mkdir()
    Course(course, "c1", root / "exchange", grader=name).setup()
    yield course, pwd.getpwnam(name), root
    subprocess.run(["userdel", "-f", name], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_a_grader_written_config_is_not_executed_by_root(grader_course):
    course, grader, root = grader_course
    marker = root / "ran-as-root"
    cfg = course / "nbgrader_config.py"
    # What a compromised grader account would write: code that runs when the file is executed.
    cfg.write_text(cfg.read_text() + (
        "import os\n"
        f"open({str(marker)!r}, 'w').write(str(os.getuid()))\n"
        "c.ExecutePreprocessor.timeout = 77\n"
        "c.Execute.timeout = __import__('os').getuid()\n"))
    os.chown(cfg, grader.pw_uid, grader.pw_gid)

    loaded = engine.course_config(course)

    assert not marker.exists(), f"root executed the grader's config (wrote {marker})"
    assert loaded.ExecutePreprocessor.timeout == 77
    assert "timeout" not in loaded.get("Execute", {}), "a computed value must not be taken"


def test_the_config_torchclass_writes_is_read_as_literals(grader_course):
    course, _, _ = grader_course
    loaded = engine.course_config(course)
    assert loaded.CourseDirectory.course_id == "c1"
    assert loaded.CourseDirectory.root == str(course)
    assert loaded.ExecutePreprocessor.timeout == 60
    assert loaded.ExecutePreprocessor.iopub_timeout == 30


def test_a_config_that_is_a_link_is_refused_with_its_name(grader_course):
    course, _, root = grader_course
    secret = root / "root-secret"
    secret.write_text("c.Foo.bar = 'secret'\n")
    (course / "nbgrader_config.py").unlink()
    (course / "nbgrader_config.py").symlink_to(secret)
    with pytest.raises(engine.EngineError, match="nbgrader_config.py"):
        engine.course_config(course)
