"""torchclass installed as a package (`pip install .`), away from any checkout: it finds its own
files from the installed packages, the course content from $TORCHCLASS_COURSE_DIR or the
classroom file's curriculum_dir, and a classroom it starts imports nothing from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests
import torchclass_classroom as config
import yaml
from classroom_fixture import REPO, TestClassroom

pytestmark = pytest.mark.hub


def test_the_classroom_version_is_the_projects():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config.VERSION == pyproject["project"]["version"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --target` from a copy of the project's sources (pip builds in the source
    folder; the checkout stays clean). World-readable: the hub's children run as students."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "hub/torchclass_exchange.py"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("hub/torchclass_classroom", "hub/torchclass_hub", "grading/torchclass_grading",
                   "course/torchclass_course"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    target = Path("/tmp") / f"torchclass-installed-{os.getpid()}"
    shutil.rmtree(target, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for p in [target, *target.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield target
    shutil.rmtree(target, ignore_errors=True)


def run_installed(installed: Path, *code_or_args: str, env: dict | None = None, module=None):
    """Python with only the installed copy of torchclass importable, from a folder outside it."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCHCLASS_COURSE_DIR")}
    cmd = [sys.executable, "-m", module, *code_or_args] if module else [sys.executable, "-c",
                                                                        *code_or_args]
    return subprocess.run(cmd, cwd="/", env=dict(base, PYTHONPATH=str(installed), **(env or {})),
                          capture_output=True, text=True, timeout=240, check=False)


def test_installed_packages_carry_their_files_and_no_course_content(installed):
    for f in ("torchclass_exchange.py", "torchclass_hub/jupyterhub_config.py", "torchclass_hub/bin/configurable-http-proxy",
              "torchclass_hub/templates/error.html", "torchclass_hub/student_site/rfc3987_syntax.py",
              "torchclass_classroom/schema.yaml", "torchclass_grading/report.html.j2",
              "torchclass_grading/kernel_sentinel.py", "torchclass_grading/kernel_zygote.py"):
        assert (installed / f).is_file(), f
    assert not list(installed.rglob("solutions")), "worked answers must not be installed"
    proc = run_installed(installed, "import torchclass_classroom as c, json; "
                         "print(json.dumps({k: str(v) for k, v in c.package_dirs().items()}))")
    assert proc.returncode == 0, proc.stderr
    dirs = yaml.safe_load(proc.stdout)
    assert sorted(dirs) == sorted(config.PACKAGES)
    assert all(Path(d).parent == installed for d in dirs.values()), dirs


def test_without_course_content_the_error_says_how_to_point_at_it(installed):
    proc = run_installed(installed, "import torchclass_course; torchclass_course.course_dir()")
    assert proc.returncode != 0
    assert "is not a course folder (no outline.yaml)" in proc.stderr
    assert "TORCHCLASS_COURSE_DIR" in proc.stderr


def test_kernels_are_kept_from_the_installed_packages_and_the_course_content(installed):
    proc = run_installed(installed, "from torchclass_grading.engine import kernel_env; "
                         "print('\\n'.join(kernel_env.torchclass_paths()))",
                         env={"TORCHCLASS_COURSE_DIR": str(REPO / "course")})
    assert proc.returncode == 0, proc.stderr
    hidden = proc.stdout.split()
    assert str(installed / "torchclass_grading") in hidden
    assert str(installed / "torchclass_course") in hidden
    assert str(REPO / "course") in hidden  # the solutions live there
    assert str(installed) not in hidden  # site-packages itself: kernels import torch from it


def test_an_installed_classroom_validates_starts_and_logs_in(installed):
    """`python -m torchclass_hub up` from the installed copy: the hub, its proxy, its pages and
    the lessons all come from the package and the classroom's curriculum_dir."""
    room = TestClassroom(n_students=1, extra_settings={"curriculum_dir": str(REPO / "course")})
    try:
        proc = run_installed(installed, "validate", "--classroom", str(room.file),
                             module="torchclass_hub")
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
        proc = run_installed(installed, "up", "--classroom", str(room.file),
                             module="torchclass_hub")
        assert proc.returncode == 0, proc.stdout + proc.stderr + room.hub_log()
        pid = room.hub_pid()
        environ = dict(kv.split("=", 1) for kv in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        assert environ["PYTHONPATH"] == str(installed), environ["PYTHONPATH"]
        assert requests.get(room.url + "hub/health", timeout=10).ok
        student = room.students[0]
        s = requests.Session()
        page = s.get(room.url + "hub/login", timeout=10)
        xsrf = s.cookies.get("_xsrf") or ""
        r = s.post(room.url + "hub/login", timeout=30, allow_redirects=False,
                   data={"username": student, "password": room.passwords()[student], "_xsrf": xsrf})
        assert page.ok and r.status_code == 302, (r.status_code, r.text[:300])
        lessons = room.classroom.lessons_dir
        assert sorted(p.name for p in lessons.iterdir()) == sorted(
            p.parent.name for p in (REPO / "course").glob("stage*/lessons")) + ["tools"]
    finally:
        room.teardown()
