"""A real, throw-away classroom for tests and benchmarks: uuid-named Unix users, a private data
dir, a free port, started and stopped through the same code as `make up` / `make down`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
for sub in ("hub", "grading", "course"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

import torchclass_classroom as config
from torchclass_grading.course import Course
from torchclass_hub import cli

FIXTURE_ASSIGNMENTS = Path(__file__).resolve().parent / "fixtures" / "assignments"
STAGE1 = "s1-linear-regression"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assignment_under_test() -> str:
    """The real Stage 1 project when it is in the checkout, else the tiny fixture assignment."""
    return STAGE1 if STAGE1 in config.stage_projects() else "tc-demo"


class TestClassroom:
    """One classroom: write its file, `up`, `down`, and remove every trace in teardown."""

    __test__ = False

    def __init__(self, n_students: int = 3, assignments: list[str] | None = None,
                 root: Path | None = None, extra_settings: dict | None = None):
        self.prefix = "t" + uuid.uuid4().hex[:7]
        self.root = Path(root or tempfile.mkdtemp(prefix="torchclass-test-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # students' servers must reach the data dir inside
        self.instructor = f"{self.prefix}-teach"
        self.students = [f"{self.prefix}-s{i}" for i in range(1, n_students + 1)]
        self.assignments = assignments if assignments is not None else [assignment_under_test()]
        self.file = self.root / "classroom.yaml"
        self.file.write_text(yaml.safe_dump({
            "course_id": f"c{self.prefix}",
            "hub": {"ip": "127.0.0.1", "port": free_port(), "data_dir": str(self.root / "data")},
            "instructors": [self.instructor],
            "students": self.students,
            "assignments": self.assignments,
            "assignment_dirs": [str(FIXTURE_ASSIGNMENTS)],
            **(extra_settings or {}),
        }))
        self.classroom = config.load(self.file, env={})
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return self.classroom.url

    @property
    def course_id(self) -> str:
        return self.classroom.course_id

    @property
    def course(self) -> Course:
        return Course.from_classroom(self.classroom)

    def up(self) -> None:
        rc = cli.up(self.classroom, timeout=120, log=self.log.append)
        if rc != 0:
            raise RuntimeError(f"up failed ({rc}):\n" + "\n".join(self.log) + self.hub_log())

    def down(self) -> None:
        cli.down(self.classroom, log=self.log.append)

    def passwords(self) -> dict[str, str]:
        lines = self.classroom.password_file.read_text().splitlines()
        return dict(line.split() for line in lines if line and not line.startswith("#"))

    def hub_log(self, n: int = 60) -> str:
        return "\n--- hub log ---\n" + cli._tail(self.classroom.state_dir / "jupyterhub.log", n)

    def hub_pid(self) -> int | None:
        return cli.hub_pid(self.classroom)

    def as_user(self, user: str, *cmd: str) -> subprocess.CompletedProcess:
        """Run a command as one of the classroom's Unix users (isolation checks)."""
        return subprocess.run(check=False, args=["runuser", "-u", user, "--", *cmd], capture_output=True,
                              text=True, timeout=60)

    def _leftover_processes(self) -> list:
        """Processes this classroom started: run by its users, or working inside its dir."""
        import psutil

        users = {self.instructor, *self.students, self.classroom.grader}
        found = []
        for p in psutil.process_iter(["username", "cwd"]):
            if p.info["username"] in users or (p.info["cwd"] or "").startswith(f"{self.root}/"):
                found.append(p)
        return found

    def teardown(self) -> None:
        import psutil

        try:
            self.down()
        finally:
            # `down` stops everything the hub knows of; a test that failed half-way may have
            # left more. Nothing of ours may outlive the users (their uids get reused).
            leftovers = self._leftover_processes()
            for p in leftovers:
                try:
                    p.kill()
                except psutil.Error:
                    continue
            psutil.wait_procs(leftovers, timeout=10)
            if leftovers:
                print(f"teardown: killed {len(leftovers)} leftover processes; log: {self.log}")
            for user in [self.instructor, *self.students, self.classroom.grader]:
                subprocess.run(["userdel", "-r", "-f", user], check=False, capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)

    def info(self) -> str:
        return json.dumps({"url": self.url, "root": str(self.root)})


_SHARED: TestClassroom | None = None


def shared_classroom(config) -> TestClassroom:
    """One classroom per test process, shared by the hub and browser tests (starting one costs
    half a minute or more on a busy machine); removed when the test session ends. Under
    `-n 2` the tests may spread over both workers: each then has its own classroom. (xdist's
    loadgroup would keep them together, but xdist 3.8 cannot rename pytest 9.2's node ids.)"""
    global _SHARED
    if _SHARED is None:
        room = TestClassroom(n_students=3)
        config.add_cleanup(room.teardown)
        try:
            room.up()
        except Exception:
            print(room.hub_log())
            raise
        _SHARED = room
    return _SHARED
