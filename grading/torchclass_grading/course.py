"""One nbgrader course on disk, driven with the stock `nbgrader` commands.

A Course is a course dir (source/, release/, submitted/, autograded/, feedback/, gradebook.db)
plus an exchange. Every command runs as the course's grader Unix account when called as root,
so nbgrader never touches student files with root's rights. The hub builds one from the
classroom file (`Course.from_classroom`); the grading harness builds throw-away ones.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torchclass_exchange

VENV = Path(os.environ.get("TORCHCLASS_VENV", "/opt/torchclass"))


class CourseError(RuntimeError):
    """An nbgrader command failed; the message carries its output."""


def _demote(user: str):
    pw = pwd.getpwnam(user)

    def run():
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)

    return run


@dataclass
class Course:
    root: Path                 # the course dir (holds nbgrader_config.py and gradebook.db)
    course_id: str
    exchange: Path             # the exchange root shared with students
    grader: str | None = None  # Unix account to run as (None: the current one)
    timeout: int = 60          # seconds per cell when autograding
    # One Unix account per student: collect takes a submission only from its owner's uid.
    owner_check: bool = False
    deployment: str = "local"  # a row of torchclass_exchange.EXCHANGE: "local" or "docker"

    @classmethod
    def from_classroom(cls, classroom) -> Course:
        grader = classroom.grader if os.geteuid() == 0 else None
        return cls(classroom.course_dir, classroom.course_id, classroom.exchange_dir, grader,
                   owner_check=classroom.real_unix_users,
                   deployment="docker" if classroom["spawner"]["type"] == "docker" else "local")

    @property
    def gradebook(self) -> Path:
        return self.root / "gradebook.db"

    def config_text(self) -> str:
        # The exchange classes are pasted in, not imported: the grader account need not be able
        # to read the checkout. Feedback keeps hidden tests hidden (HideHiddenTestErrors).
        return torchclass_exchange.config_text(
            header="Written by torchclass (grading/torchclass_grading/course.py); edits are "
                   "overwritten.",
            deployment=self.deployment, role="instructor", course_root=self.root,
            course_id=self.course_id, exchange_root=self.exchange, timeout=self.timeout,
            iopub_timeout=30, require_owner=self.owner_check, hide_hidden_tests=True,
            ship="inline")

    def _chown(self, path: Path) -> None:
        if self.grader and os.geteuid() == 0:
            pw = pwd.getpwnam(self.grader)
            for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.chown(p, pw.pw_uid, pw.pw_gid, follow_symlinks=False)

    def setup(self) -> None:
        """Create the course dir (grader-only: it holds solutions) and its nbgrader config."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "source").mkdir(exist_ok=True)
        (self.root / "nbgrader_config.py").write_text(self.config_text())
        self._chown(self.root)
        os.chmod(self.root, 0o700)

    def add_source(self, assignment_id: str, src: Path) -> None:
        """Copy an assignment's source folder into source/<id>/ (replacing an older copy)."""
        dest = self.root / "source" / assignment_id
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
            "submissions.yaml", ".ipynb_checkpoints", "__pycache__"))
        self._chown(dest)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `nbgrader ARGS` in the course dir as the grader."""
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   PATH=f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin")
        preexec = None
        if self.grader and os.geteuid() == 0 and pwd.getpwuid(os.getuid()).pw_name != self.grader:
            pw = pwd.getpwnam(self.grader)
            env.update(HOME=pw.pw_dir, USER=self.grader, LOGNAME=self.grader)
            preexec = _demote(self.grader)
        # The grader has no personal Jupyter config; read only the course's nbgrader_config.py.
        env.pop("JUPYTER_CONFIG_PATH", None)
        cmd = [str(VENV / "bin" / "nbgrader"), *args]
        proc = subprocess.run(cmd, check=False, cwd=self.root, env=env, preexec_fn=preexec,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise CourseError(f"`nbgrader {' '.join(args)}` failed in {self.root} "
                              f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def released(self) -> set[str]:
        outbound = self.exchange / self.course_id / "outbound"
        return {p.name for p in outbound.iterdir()} if outbound.is_dir() else set()

    def release(self, assignment_id: str, force: bool = False) -> bool:
        """Generate and release an assignment; a released one is left alone unless force."""
        if assignment_id in self.released() and not force:
            return False
        extra = ["--force"] if force else []
        self.run("generate_assignment", assignment_id, "--force")
        self.run("release_assignment", assignment_id, *extra)
        return True

    def add_students(self, students: list[str]) -> None:
        """Put the roster into the gradebook so exports list students with no submission."""
        if not students:
            return
        roster = self.root / "roster.csv"
        with roster.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id"])
            w.writerows([s] for s in students)
        self._chown(roster)
        self.run("db", "student", "import", str(roster))

    def collect(self, assignment_id: str) -> list[str]:
        """Collect the newest submission of each student; return the refusals (one line each,
        naming the student and the file) of submissions that were not taken."""
        proc = self.run("collect", assignment_id, "--update")
        mark = torchclass_exchange.REFUSED_MARK
        return [line.split("] ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines()
                if f"] {mark}" in line or line.startswith(mark)]

    def autograde(self, assignment_id: str, student: str | None = None) -> None:
        args = ["autograde", assignment_id, "--force"]
        if student:
            args.append(f"--student={student}")
        self.run(*args)

    def feedback(self, assignment_id: str) -> None:
        """Render feedback (hidden tests stay hidden) and hand it to the students."""
        self.run("generate_feedback", assignment_id, "--force")
        self.run("release_feedback", assignment_id)

    def gradebook_data(self) -> dict:
        """{'scores': student -> {assignment: score} (0 where nothing was graded),
        'max': assignment -> max score}, read from the gradebook as the grader."""
        code = (
            "import json, sys\n"
            "from nbgrader.api import Gradebook\n"
            "with Gradebook('sqlite:///' + sys.argv[1]) as gb:\n"
            "    out = {s.id: {a.name: 0.0 for a in gb.assignments} for s in gb.students}\n"
            "    for a in gb.assignments:\n"
            "        for sub in gb.assignment_submissions(a.name):\n"
            "            out[sub.student_id][a.name] = float(sub.score)\n"
            "    maxes = {a.name: float(a.max_score) for a in gb.assignments}\n"
            "print(json.dumps({'scores': out, 'max': maxes}))\n"
        )
        preexec = _demote(self.grader) if self.grader and os.geteuid() == 0 else None
        proc = subprocess.run([str(VENV / "bin" / "python"), "-c", code, str(self.gradebook)], check=False,
                              preexec_fn=preexec, capture_output=True, text=True, cwd=self.root)
        if proc.returncode != 0:
            raise CourseError(f"reading {self.gradebook} failed:\n{proc.stderr}")
        return json.loads(proc.stdout)

    def scores(self) -> dict[str, dict[str, float]]:
        return self.gradebook_data()["scores"]

    def export_csv(self, out: Path) -> Path:
        """One row per student: a column per assignment, then total and the maximum possible."""
        data = self.gradebook_data()
        scores, maxes = data["scores"], data["max"]
        assignments = sorted(maxes)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["student_id", *assignments, "total", "max_total"])
            max_total = sum(maxes.values())
            for student in sorted(scores):
                row = [round(scores[student].get(a, 0.0), 2) for a in assignments]
                w.writerow([student, *row, round(sum(row), 2), round(max_total, 2)])
        return out
