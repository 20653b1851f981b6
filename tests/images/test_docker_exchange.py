"""The Docker classroom's nbgrader exchange, with real containers of the notebook image mounted
the way the docker spawner mounts them (hub/torchclass_hub/spawners/docker.py): a student
fetches and submits, the instructor gathers and collects, the engine on the host grades it with
kernels in containers of the same image (never the instructor's container: it holds the
gradebook), and another student's container cannot see the submission (all run as uid 1000)."""

import json
import os
import shutil
import uuid

import nbformat
import pytest
from imagetools import Container
from torchclass_grading import engine
from torchclass_hub.spawners.docker import exchange_mounts

pytestmark = pytest.mark.docker
ASSIGNMENT = "a1"


def _source_notebook() -> nbformat.NotebookNode:
    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": False, "solution": False,
                             "grade": False, **kw}}

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
            metadata=meta(solution=True, grade_id="add")),
        nbformat.v4.new_code_cell(
            "assert add(1, 2) == 3\nassert add(-1, 1) == 0",
            metadata=meta(grade=True, locked=True, points=2, grade_id="test-add")),
    ]
    return nb


def _mount_args(volumes: dict) -> list[str]:
    args = []
    for host, bind in volumes.items():
        args += ["-v", f"{host}:{bind['bind']}:{bind['mode']}"]
    return args


@pytest.fixture
def classroom(notebook_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("docker-exchange")
    root.chmod(0o755)
    course_id = f"c{uuid.uuid4().hex[:8]}"
    exchange, course = root / "exchange", root / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(_source_notebook(), course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.course_id = {course_id!r}\n"
        "c.CourseDirectory.db_assignments = [{'name': 'a1'}]\n"
    )
    exchange.mkdir()
    for path in (exchange, course, *course.rglob("*")):
        os.chown(path, 1000, 100)
    containers = []

    def start(user: str, instructor: bool = False) -> Container:
        volumes = exchange_mounts(exchange, course_id, user, instructor, course)
        extra = ["-e", f"NBGRADER_EXCHANGE={exchange}",
                 "-e", f"NBGRADER_COURSE_ROOT={course}"] if instructor else []
        container = Container(
            notebook_image, "sleep", "infinity", prefix=f"tc-ex-{user[:8]}",
            run_args=("--network", "none", "-e", f"JUPYTERHUB_USER={user}",
                      "-e", f"TORCHCLASS_COURSE_ID={course_id}",
                      "-e", f"TORCHCLASS_ROLE={'instructor' if instructor else 'student'}",
                      *_mount_args(volumes), *extra),
        )
        containers.append(container)
        return container

    try:
        yield start, exchange, course_id, course, notebook_image
    finally:
        for container in containers:
            print(f"--- {container.name}\n{container.logs()[-2000:]}")
            container.remove()
        # Files the containers wrote belong to uid 1000; we are root here, so this succeeds.
        shutil.rmtree(root, ignore_errors=True)


def sh(container: Container, script: str, workdir: str = "/home/jovyan"):
    result = container.exec("bash", "-c", f"cd {workdir} && {script}", timeout=300, check=False)
    assert result.returncode == 0, f"{container.name}: {script}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_submit_collect_grade_and_isolation(classroom):
    start, exchange, course_id, course, image = classroom
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    teacher = start("instructor", instructor=True)
    sh(teacher, f"nbgrader generate_assignment {ASSIGNMENT} --force "
                f"&& nbgrader release_assignment {ASSIGNMENT}", str(course))

    student = start(alice)
    sh(student, f"nbgrader fetch_assignment {ASSIGNMENT}")
    # Alice answers: the released solution cell holds a NotImplementedError stub.
    sh(student, "python - <<'PY'\n"
                "import nbformat\n"
                f"p = '{ASSIGNMENT}/{ASSIGNMENT}.ipynb'\n"
                "nb = nbformat.read(p, as_version=4)\n"
                "cell = next(c for c in nb.cells if c.metadata.get('nbgrader', {}).get('solution'))\n"
                "cell.source = 'def add(a, b):\\n    return a + b'\n"
                "nbformat.write(nb, p)\nPY")
    sh(student, f"nbgrader submit {ASSIGNMENT}")
    private = exchange / course_id / "inbound-private" / alice
    assert [p.name.split("+")[0] for p in private.iterdir()] == [alice]

    other = start(bob)
    sh(other, f"nbgrader fetch_assignment {ASSIGNMENT}")
    seen = sh(other, "find /srv/nbgrader/exchange -mindepth 1")
    assert alice not in seen, f"{bob} can see {alice}'s submission:\n{seen}"
    listed = sh(other, f"nbgrader list --inbound --course {course_id}")
    assert alice not in listed
    # Bob tries to hand in work under Alice's name: gather-submissions refuses it.
    sh(other, f"mkdir -p /srv/nbgrader/exchange/{course_id}/inbound/"
              f"{alice}+{ASSIGNMENT}+2030-01-01 00:00:00.000000 UTC+forged")

    gathered = sh(teacher, f"gather-submissions {course_id}")
    assert "gathered 1 new submission(s)" in gathered and "refused 1" in gathered, gathered
    sh(teacher, f"nbgrader collect {ASSIGNMENT}", str(course))
    outcomes = engine.Engine(course, ASSIGNMENT, workers=1, backend="docker", image=image).run()
    assert [(o.student, o.status) for o in outcomes] == [(alice, "graded")], outcomes
    for path in (course, *course.rglob("*")):  # back to the instructor's container (uid 1000)
        os.lchown(path, 1000, 100)
    scores = sh(teacher, "python - <<'PY'\n"
                         "import json\nfrom nbgrader.api import Gradebook\n"
                         "with Gradebook('sqlite:///gradebook.db') as gb:\n"
                         "    print(json.dumps({s.student.id: s.score for s in "
                         "gb.assignment_submissions('a1')}))\nPY", str(course))
    grades = json.loads(scores.strip().splitlines()[-1])
    assert grades == {alice: 2.0}, grades
