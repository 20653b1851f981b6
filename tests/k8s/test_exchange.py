"""The nbgrader exchange on Kubernetes, run for real with nbgrader: every pod is uid 1000, so
isolation comes from what each student pod mounts. Each student's view is built from the very
mounts the hub policy gives their pod (subPaths of the exchange volume, emulated with links)."""

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from k8s_support import REPO, exec_hub_policy
from torchclass_deploy import layers, render
from traitlets.config import Config

pytestmark = [pytest.mark.k8s, pytest.mark.grading]

COURSE, ASSIGNMENT = "torchclass", "k8s-check"
# The formgrader pod mounts this file from its ConfigMap, on its PYTHONPATH.
sys.path.insert(0, str(REPO / "hub"))


def source_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    answer = nbformat.v4.new_code_cell(
        "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                   "grade_id": "double", "schema_version": 3}
    check = nbformat.v4.new_code_cell("assert double(3) == 6")
    check.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                  "points": 1, "grade_id": "check-double", "schema_version": 3}
    nb.cells = [answer, check]
    return nb


@pytest.fixture
def classroom(tmp_path, z2jh_defaults):
    sub = layers.subchart_values(layers.load_values(), z2jh_defaults)
    policy = exec_hub_policy(Config(), sub)
    tc = sub["custom"]["torchclass"]
    volume = tmp_path / "exchange-volume"
    volume.mkdir()
    return policy, tc, volume, tmp_path


def student_view(policy, tc, volume, tmp_path, name):
    """Prepare the student's folders as the hub does, then give them exactly their pod's
    exchange mounts: <view>/<mountPath> -> <volume>/<subPath>."""
    policy["prepare_exchange"](name, tc, hub_root=str(volume))
    view = tmp_path / f"pod-{name}"
    for mount in policy["exchange_mounts"](name, tc):
        target = view / mount["mountPath"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(volume / mount["subPath"], target_is_directory=True)
    home = tmp_path / f"home-{name}"
    home.mkdir()
    return view / tc["exchange"]["mountPath"].lstrip("/"), home


def student_config(exchange_root, home, monkeypatch):
    """The students' nbgrader config shipped in the values, run with the environment the hub
    policy gives their pods (exchange root moved to this test's view of it)."""
    monkeypatch.setenv("NBGRADER_EXCHANGE", str(exchange_root))
    monkeypatch.setenv("TORCHCLASS_COURSES", COURSE)
    source = layers.load_values()["jupyterhub"]["singleuser"]["extraFiles"]["nbgrader-config"]
    cfg = Config()
    exec(source["stringData"], {"get_config": lambda: cfg})  # noqa: S102 - as nbgrader does
    assert cfg.CourseDirectory.course_id == COURSE
    cfg.Exchange.assignment_dir = str(home)
    cfg.Exchange.cache = str(home / ".nbgrader-cache")
    return cfg


def as_student(cls, exchange_root, home, name, monkeypatch, **traits):
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory

    cfg = student_config(exchange_root, home, monkeypatch)
    coursedir = CourseDirectory(config=cfg, root=str(home), course_id=COURSE,
                                assignment_id=ASSIGNMENT, student_id=name)
    app = cls(coursedir=coursedir, authenticator=Authenticator(config=cfg), config=cfg)
    for key, value in traits.items():
        setattr(app, key, value)
    return app.start()


def test_students_see_only_their_own_submissions(classroom, monkeypatch):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import (
        ExchangeFetchAssignment,
        ExchangeFetchFeedback,
        ExchangeList,
        ExchangeSubmit,
    )

    policy, tc, volume, tmp = classroom
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # nbgrader runs the venv's `alembic` for its gradebook.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp)
    views = {name: student_view(policy, tc, volume, tmp, name) for name in ("ana", "ben", "cy")}

    # The grader's pod: the whole volume, the per-student exchange classes.
    course = tmp / "course"
    src = course / "source" / ASSIGNMENT
    src.mkdir(parents=True)
    nbformat.write(source_notebook(), src / f"{ASSIGNMENT}.ipynb")
    # The formgrader's config as render.py writes it, with this test's paths.
    gcfg = Config()
    exec(render.grader_config({"exchange": {"mountPath": str(volume)}}, {"id": COURSE}),  # noqa: S102
         {"get_config": lambda: gcfg})
    assert gcfg.ExchangeFactory.collect == "torchclass_exchange.PerStudentCollect"
    gcfg.CourseDirectory.root = str(course)
    gcfg.CourseDirectory.db_students = [{"id": "ana"}, {"id": "ben"}, {"id": "cy"}]
    gcfg.ExecutePreprocessor.timeout = 60
    api = NbGraderAPI(coursedir=CourseDirectory(config=gcfg), config=gcfg)
    for step in (api.generate_assignment(ASSIGNMENT), api.release_assignment(ASSIGNMENT)):
        assert step["success"], step.get("log")

    answers = {"ana": "return 2 * x", "ben": "return x + x + 0", "cy": "return 0"}
    for name, (root, home) in views.items():
        as_student(ExchangeFetchAssignment, root, home, name, monkeypatch)
        path = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].source = nb.cells[0].source.replace(
            "# YOUR CODE HERE\n    raise NotImplementedError()", answers[name])
        nbformat.write(nb, path)
        as_student(ExchangeSubmit, root, home, name, monkeypatch)

    # Each pod's inbound holds only its own student's submission.
    for name, (root, home) in views.items():
        listed = os.listdir(root / COURSE / "inbound")
        assert len(listed) == 1 and listed[0].startswith(f"{name}+{ASSIGNMENT}+"), listed
        mine = as_student(ExchangeList, root, home, name, monkeypatch, inbound=True)
        assert {a["student_id"] for a in mine} == {name}

    # Ben forges a newer submission in Ana's name; his folder names him, so it is refused.
    ben_root = views["ben"][0] / COURSE / "inbound"
    (real,) = os.listdir(ben_root)
    forged = ben_root / f"ana+{ASSIGNMENT}+2999-01-01 00:00:00.000000 UTC+forged"
    shutil.copytree(ben_root / real, forged)

    # Cy's notebook becomes a link to the instructor's source (every pod runs as uid 1000, and
    # the grader pod, which sees the course, would follow it).
    cy_root = views["cy"][0] / COURSE / "inbound"
    (cy_sub,) = os.listdir(cy_root)
    (cy_root / cy_sub / f"{ASSIGNMENT}.ipynb").unlink()
    (cy_root / cy_sub / f"{ASSIGNMENT}.ipynb").symlink_to(src / f"{ASSIGNMENT}.ipynb")

    result = api.collect(ASSIGNMENT)
    assert result["success"], result.get("log")
    assert "claims to be from ana but sits in ben's folder" in result["log"]
    assert f"refused cy's submission {cy_sub}: {ASSIGNMENT}.ipynb is a symbolic link" \
        in result["log"], result["log"]
    assert not (course / "submitted" / "cy").exists() or not any(
        (course / "submitted" / "cy").rglob("*.ipynb")), "cy's link was followed"
    del answers["cy"]
    for name, answer in answers.items():
        got = nbformat.read(course / "submitted" / name / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
        assert answer in got.cells[0].source, f"{name}'s collected notebook is not theirs"

    for step in (api.autograde(ASSIGNMENT, "ana"), api.generate_feedback(ASSIGNMENT, "ana"),
                 api.release_feedback(ASSIGNMENT, "ana")):
        assert step["success"], step.get("log")
    # Feedback lands in Ana's folder only; Ben's pod sees none of it.
    assert len(list((volume / COURSE / "students/ana/feedback").glob("*.html"))) == 1
    assert os.listdir(views["ben"][0] / COURSE / "feedback") == []
    root, home = views["ana"]
    as_student(ExchangeFetchFeedback, root, home, "ana", monkeypatch)
    fetched = list((home / ASSIGNMENT / "feedback").rglob("*.html"))
    assert len(fetched) == 1 and "double" in fetched[0].read_text()


def test_hub_policy_mounts_no_one_elses_folder(classroom):
    policy, tc, _, _ = classroom
    for mount in policy["exchange_mounts"]("ana", tc):
        assert mount["subPath"] in (f"{COURSE}/outbound", f"{COURSE}/students/ana/inbound",
                                    f"{COURSE}/students/ana/feedback")
        assert mount.get("readOnly") is (not mount["subPath"].endswith("inbound") or None)
    assert Path(tc["exchange"]["mountPath"]).is_absolute()


def test_the_students_config_in_the_values_sets_what_the_writer_sets(monkeypatch, tmp_path):
    """The values' student config is env-driven (the hub policy sets the course and exchange);
    for one course it must set what torchclass_exchange writes for a Kubernetes student."""
    import torchclass_exchange

    root = "/srv/nbgrader/exchange"
    home = tmp_path / "home"
    cfg = student_config(root, home, monkeypatch)
    del cfg.Exchange["assignment_dir"], cfg.Exchange["cache"]  # this test's own additions
    written = Config()
    exec(torchclass_exchange.config_text(  # noqa: S102 - as nbgrader does
        header="", deployment="kubernetes", role="student", course_id=COURSE,
        exchange_root=root), {"get_config": lambda: written})
    assert cfg == written
