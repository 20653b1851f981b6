"""Everything `up` does before the hub starts: data dir, accounts, course, released assignments.

Each step is idempotent, so `up` after `down` (or after a crash) keeps every account, home,
submission and grade, and only adds what the classroom file newly asks for.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

import torchclass_course
import torchclass_exchange
from torchclass_classroom import Classroom, prepare_exchange, stage_projects
from torchclass_course import lessons as course_lessons
from torchclass_grading.course import Course

from . import accounts, hubconfig

STUDENT_LAB_DISABLED = [
    # Instructor tools: students keep only the assignment list (and validate button).
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
]


def _owner(classroom: Classroom, path: Path, user: str) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def data_dirs(classroom: Classroom) -> None:
    d = classroom.data_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    for sub in ("courses", "etc", "datasets"):
        (d / sub).mkdir(exist_ok=True)
        os.chmod(d / sub, 0o755)
    classroom.state_dir.mkdir(exist_ok=True)
    os.chmod(classroom.state_dir, 0o700)
    if not classroom.real_unix_users:
        classroom.homes_dir.mkdir(exist_ok=True)


def course_library(classroom: Classroom) -> None:
    """A read-only copy of torchclass_course that student servers import (not the checkout,
    which may sit in root's home where students cannot read)."""
    src = Path(torchclass_course.__file__).resolve().parent
    dest = classroom.lib_dir / "torchclass_course"
    classroom.lib_dir.mkdir(exist_ok=True)
    os.chmod(classroom.lib_dir, 0o755)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [dest, *dest.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    # The students' submit class (torchclass_exchange.EXCHANGE) comes from here.
    exchange_module = classroom.lib_dir / f"{torchclass_exchange.MODULE}.py"
    shutil.copyfile(torchclass_exchange.__file__, exchange_module)
    os.chmod(exchange_module, 0o644)


def lessons(classroom: Classroom) -> None:
    """The master copy of the lesson notebooks that each student's server copies into
    ~/lessons at start (spawners/local.py). Replaced on every `up`, so a course update reaches
    students; their own copies are never touched."""
    course_lessons.build_master(classroom.curriculum_dir, classroom.lessons_dir)


def student_config(classroom: Classroom) -> None:
    """JUPYTER_CONFIG_PATH of every student (and instructor) server: course id, exchange,
    instructor UI off, kernels over ipc."""
    etc = classroom.student_config_dir
    (etc / "labconfig").mkdir(parents=True, exist_ok=True)
    (etc / "nbgrader_config.py").write_text(torchclass_exchange.config_text(
        header="Written by torchclass-hub up (hub/torchclass_hub/prepare.py); edits are "
               "overwritten.",
        deployment=classroom["spawner"]["type"], role="student",
        course_id=classroom.course_id, exchange_root=classroom.exchange_dir))
    (etc / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": False,
                                              "nbgrader.server_extensions.course_list": False}},
        # Kernels on 127.0.0.1 TCP ports can be reached by every local user (code, outputs, and
        # a way to run code as their owner); ipc sockets sit in the owner's 0700 runtime dir
        # (spawners/local.py puts it in the home). Instructors' servers read this config too.
        "KernelManager": {"transport": "ipc"},
    }, indent=1))
    (etc / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {name: True for name in STUDENT_LAB_DISABLED}}, indent=1))
    for p in [etc.parent, etc, *etc.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# The formgrader's own pages need inline scripts, so this policy is not the XSS defence
# (sanitizing the notebooks is, below): it keeps a script that slipped through from loading code
# or sending what it read anywhere but this server. MathJax comes from cdnjs, as nbconvert has it.
_FORMGRADER_CSP = (
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' https://cdnjs.cloudflare.com",
    "style-src 'self' 'unsafe-inline' https://cdnjs.cloudflare.com",
    "img-src 'self' data: blob:", "font-src 'self' data: https://cdnjs.cloudflare.com",
    "connect-src 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'",
    "frame-ancestors 'self'",
)

# The formgrader service runs as the grader account beside the gradebook and the solutions, and
# shows students' notebooks to instructors. Nothing in it may become a shell as the grader: no
# terminals, no kernels, no proxy to local ports, no language servers.
FORMGRADER_SERVER_CONFIG = {
    "ServerApp": {
        "terminals_enabled": False,
        "jpserver_extensions": {"jupyter_server_terminals": False, "jupyter_server_proxy": False,
                                "jupyter_lsp": False},
        "tornado_settings": {"headers": {"Content-Security-Policy": "; ".join(_FORMGRADER_CSP)}},
    },
}

# allowed_kernelspecs only hides kernels from the list (python3 still starts by name): the
# formgrader gets a kernel spec manager that knows no kernel at all.
FORMGRADER_KERNELS_CONFIG = '''# Written by torchclass-hub up (hub/torchclass_hub/prepare.py); edits are overwritten.
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

c = get_config()  # noqa: F821


class NoKernels(KernelSpecManager):
    """The formgrader service runs as the grader account: a kernel there is a shell as the
    grader, next to the gradebook and the solutions. It needs none to grade."""

    def find_kernel_specs(self):
        return {}

    def get_kernel_spec(self, kernel_name):
        raise NoSuchKernel(kernel_name)


c.ServerApp.kernel_spec_manager_class = NoKernels
'''


def formgrader_config(classroom: Classroom) -> None:
    """The formgrader service's JUPYTER_CONFIG_PATH: root-owned, so the grader cannot undo it."""
    etc = hubconfig.formgrader_config_dir(classroom)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "jupyter_server_config.json").write_text(json.dumps(FORMGRADER_SERVER_CONFIG, indent=1))
    (etc / "jupyter_server_config.py").write_text(FORMGRADER_KERNELS_CONFIG)
    # Students write the notebooks the instructor opens here: they are cleaned of scripts first.
    # The Autograde button would run their code as the grader account, beside the gradebook
    # and the solutions: it is refused and names the sandboxed command instead.
    (etc / "nbgrader_config.py").write_text(torchclass_exchange.config_text(
        header="Written by torchclass-hub up (hub/torchclass_hub/prepare.py); edits are "
               "overwritten.\nRead by the formgrader service only (its JUPYTER_CONFIG_PATH), "
               "before the course's config.",
        sanitize_html=True, autograde_off=True, ship="inline"))
    for p in [etc, *etc.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# Loaded by every student's server; see student_server_trim.
STUDENT_SERVER_TRIM = {
    # No language server is installed for it to serve, and it searches for them at every start.
    "ServerApp": {"jpserver_extensions": {"jupyter_lsp": False}},
    # Students cannot install into the shared environment; the default manager queries PyPI.
    "LabApp": {"extension_manager": "readonly"},
}


def student_server_trim(classroom: Classroom) -> None:
    """Make each student's server start on about half the CPU, in less memory (measured in
    hub/README.md, Capacity): at a deadline every start competes for the same cores.

    - lib/rfc3987_syntax.py stands in for a package whose import alone is a third of a start
      (student_site/rfc3987_syntax.py says why that is safe);
    - STUDENT_SERVER_TRIM is merged into the students' jupyter_server_config.json that
      student_config() writes (merged, not a second file: a jpserver_extensions dict in that
      file replaces any other file's).
    """
    shim = classroom.lib_dir / "rfc3987_syntax.py"
    shutil.copyfile(Path(__file__).with_name("student_site") / "rfc3987_syntax.py", shim)
    os.chmod(shim, 0o644)
    path = classroom.student_config_dir / "jupyter_server_config.json"
    settings = json.loads(path.read_text()) if path.exists() else {}
    for section, values in STUDENT_SERVER_TRIM.items():
        for key, value in values.items():
            mine = settings.setdefault(section, {})
            mine[key] = {**mine.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(settings, indent=1))
    os.chmod(path, 0o644)


def exchange(classroom: Classroom) -> None:
    """The nbgrader exchange; its layout and modes belong to the classroom model."""
    prepare_exchange(classroom)


def grader_account(classroom: Classroom) -> None:
    if os.geteuid() == 0:
        accounts.ensure_unix_user(classroom.grader, home=classroom.course_dir.parent
                                  / f".{classroom.grader}-home", system=True)


def course(classroom: Classroom) -> Course:
    c = Course.from_classroom(classroom)
    c.setup()
    return c


def release(classroom: Classroom, c: Course, log=print) -> list[str]:
    """Release every listed assignment not yet released. One that is not in the checkout is
    reported, not fatal: the classroom still starts with the others."""
    projects = stage_projects(classroom)
    done = []
    for a in classroom["assignments"]:
        if a not in projects:
            log(f"warning: {classroom.source}: key 'assignments' names {a!r}, but there is no "
                f"course/stage*/projects/{a}/{a}.ipynb (found: {', '.join(projects) or 'none'}). "
                "Fix: add the notebook or remove the entry; it was not released.")
            continue
        if a not in c.released():
            c.add_source(a, projects[a])
            if c.release(a):
                done.append(a)
    c.add_students(classroom.students)
    return done


def everything(classroom: Classroom, log=print) -> dict:
    data_dirs(classroom)
    accounts.ensure_unix_users(classroom)
    new_users = accounts.ensure_passwords(classroom)
    grader_account(classroom)
    course_library(classroom)
    lessons(classroom)
    student_config(classroom)
    formgrader_config(classroom)
    student_server_trim(classroom)
    c = course(classroom)
    exchange(classroom)
    released = release(classroom, c, log)
    if new_users:
        log(f"New accounts: {', '.join(new_users)} (passwords in {classroom.password_file})")
    if released:
        log(f"Released: {', '.join(released)}")
    return {"new_users": new_users, "released": released}
