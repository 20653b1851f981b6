"""The grading engine on a tiny assignment: its family, an attack family, kill-and-resume.

One graded run serves every attack check (a run costs seconds of kernel start-ups).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import families
import nbformat
import pytest
from second_account import readable_checkout
from torchclass_grading import engine, sandbox
from toy_assignment import submit, submit_with_cell, write_guard_assignment, write_toy_assignment

pytestmark = pytest.mark.grading

SQUARE = "def square(x):\n    return x * x\n"
# member -> (code put in the `square` solution cell, expected total score out of 3); tampering
# with the grader (a custom exception handler) scores 0 from there on (test_integrity.py).
ATTACKS = {
    "sys-exit": (SQUARE + "import sys\nsys.exit(1)", 3),          # IPython survives SystemExit
    "os-exit": (SQUARE + "import os\nos._exit(0)", 0),            # kernel gone: nothing after runs
    "kill-parent": (SQUARE + "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", 3),
    "fake-output": ("def square(x):\n    return 9\nprint('All tests passed! 3/3')", 1),
    "swallow-errors": (("def square(x):\n    return 9\n"
                        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)"), 0),
    "memory-bomb": (SQUARE + "hog = bytearray(4 << 30)", 3),
    "disk-filler": (SQUARE + "with open('fill', 'wb') as f:\n    while True:\n"
                    "        f.write(b'x' * (1 << 20))", 3),
    "network": (SQUARE + "import socket\nfor host in ('1.1.1.1', '127.0.0.1'):\n    try:\n"
                "        socket.create_connection((host, 80), timeout=2)\n        print('NETWORK-OPEN')\n"
                "    except OSError as e:\n        print('blocked', e)", 3),
    "huge-output": (SQUARE + "for _ in range(200):\n    print('x' * 100_000)", 3),
}
# Only where each kernel has an account of its own: as the caller, the bomb would eat the
# caller's own process limit. Its score is not fixed: its spinning processes starve its own
# kernel, whose cells may time out on a loaded machine; what is fixed is that it is graded, the
# grader goes on, and nothing of it survives. Its processes write nowhere: the kernel forwards whatever a child
# writes into the cell running at the time, so a noisy bomb would (rightly, but at random) fail
# one of its own tests.
FORK_BOMB = (SQUARE + "import os\nprint('bomb-cwd', os.getcwd())\nif os.fork() == 0:\n"
             "    null = os.open(os.devnull, os.O_WRONLY)\n    os.dup2(null, 1)\n    os.dup2(null, 2)\n"
             "    while True:\n        try:\n            os.fork()\n        except OSError:\n"
             "            pass\n", None)
SOURCE_NOTEBOOK = (Path(__file__).resolve().parents[2] / "course" / "stage1" / "projects" / "s1-linear-regression"
                   / "s1-linear-regression.ipynb")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    family = families.load_family(write_toy_assignment(tmp))
    course = tmp / "course"
    paths = families.build_family(family, course)
    aid = family.assignment_id
    solution = nbformat.read(paths["solution"], as_version=4)
    secret_paths = [course / "source" / aid / f"{aid}.ipynb", course / "gradebook.db",
                    paths["partial"], SOURCE_NOTEBOOK]
    targets = [str(p) for p in secret_paths]
    db = str(course / "gradebook.db")
    reader = SQUARE + (
        f"for p in {targets!r}:\n    try:\n        print(open(p).read()[:300])\n"
        "        print('LEAKED')\n    except OSError as e:\n        print('blocked', e)\n"
        f"try:\n    open({db!r}, 'a').write('x')\n    print('LEAKED')\nexcept OSError as e:\n"
        "    print('blocked', e)")
    attacks = dict(ATTACKS, **{"read-secrets": (reader, 3)})
    if os.geteuid() == 0:
        attacks["fork-bomb"] = FORK_BOMB
    for name, (code, _) in attacks.items():
        submit_with_cell(course, aid, name, solution, "square", code)
    deleted = nbformat.from_dict(json.loads(json.dumps(solution)))
    deleted.cells = [c for c in deleted.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test-add"]
    submit(course, aid, "deleted-cell", deleted)
    wrong_kernel = nbformat.from_dict(json.loads(json.dumps(solution)))
    wrong_kernel.metadata.kernelspec = {"name": "evil", "display_name": "evil", "language": "python"}
    submit(course, aid, "wrong-kernel", wrong_kernel)
    submit(course, aid, "corrupt-json", '{"cells": [ this is not json')
    eng = engine.Engine(course, aid, workers=2, max_output=200_000,
                        limits=sandbox.Limits(cpu_seconds=60, memory_bytes=1 << 30,
                                              file_bytes=16 << 20))
    t0 = time.monotonic()
    outcomes = {o.student: o for o in eng.run()}
    print(f"engine graded {len(outcomes)} submissions in {time.monotonic() - t0:.1f} s")
    for o in outcomes.values():
        print(o)
    return family, course, attacks, outcomes


def _cell_text(course, aid, student, grade_id):
    nb = nbformat.read(course / "autograded" / student / aid / f"{aid}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return json.dumps(cell.get("outputs", []))
    raise AssertionError(f"{student}: no cell {grade_id}")


def test_family_scores_match_the_expected_ones(graded):
    family, course, _, outcomes = graded
    scores, _, _ = families.read_scores(family, course)
    for name, member in family.members.items():
        assert scores[name].total == member.score, (name, outcomes[name])
        for cell, points in member.cells_scores.items():
            assert scores[name].cells[cell] == points, (name, cell)


def test_attacks_are_scored_honestly(graded):
    _, _, attacks, outcomes = graded
    for name, (_, expected) in attacks.items():
        assert outcomes[name].status == "graded", outcomes[name]
        if expected is not None:
            assert outcomes[name].score == expected, outcomes[name]


def test_nothing_leaks_and_the_sandbox_holds(graded):
    family, course, _, outcomes = graded
    aid = family.assignment_id
    if os.geteuid() != 0:
        pytest.skip("the sandbox's user switch and network namespace need root")
    secrets = _cell_text(course, aid, "read-secrets", "square")
    assert SOURCE_NOTEBOOK.is_file()  # readable here, so "blocked" below means hidden
    assert "LEAKED" not in secrets and secrets.count("blocked") == 5, secrets
    net = _cell_text(course, aid, "network", "square")
    assert "NETWORK-OPEN" not in net and net.count("blocked") == 2, net
    assert "MemoryError" in _cell_text(course, aid, "memory-bomb", "square")
    assert "File too large" in _cell_text(course, aid, "disk-filler", "square")
    assert any("kernel died" in p for p in outcomes["os-exit"].problems), outcomes["os-exit"]
    huge = course / "autograded" / "huge-output" / aid / f"{aid}.ipynb"
    assert huge.stat().st_size < 1_000_000
    assert any("truncated" in p or "dropped" in p for p in outcomes["huge-output"].problems)


def test_a_fork_bomb_is_contained_and_leaves_nothing_behind(graded):
    family, course, _, outcomes = graded
    if os.geteuid() != 0:
        pytest.skip("the fork bomb member runs only where kernels get accounts of their own (root)")
    bomb = outcomes["fork-bomb"]
    assert bomb.status == "graded" and 0 <= bomb.score <= 3, bomb
    assert all("ran past" in p for p in bomb.problems), bomb
    text = json.loads(_cell_text(course, family.assignment_id, "fork-bomb", "square"))
    cwd = next(o["text"] for o in text if "bomb-cwd" in o.get("text", "")).split()[1]
    survivors = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd").startswith(cwd):
                survivors.append(proc.name)
        except OSError:
            continue
    assert not survivors, f"fork bomb processes outlived grading: {survivors}"


def test_broken_submissions_are_reported_and_the_rest_graded(graded):
    _, _, _, outcomes = graded
    assert any("test-add deleted or renamed" in p for p in outcomes["deleted-cell"].problems)
    assert outcomes["deleted-cell"].score == 2
    assert any("kernel 'evil' replaced" in p for p in outcomes["wrong-kernel"].problems)
    assert outcomes["wrong-kernel"].score == 3
    corrupt = outcomes["corrupt-json"]
    assert any("not a readable notebook" in p for p in corrupt.problems), corrupt
    assert corrupt.status == "error" and corrupt.score is None
    assert any("edited; restored" in p for p in outcomes["cheat"].problems)


def test_killed_grader_resumes_without_lost_or_duplicate_grades(tmp_path):
    family = families.load_family(write_toy_assignment(tmp_path))
    course = tmp_path / "course"
    families.build_family(family, course)
    aid = family.assignment_id
    cmd = [sys.executable, "-m", "torchclass_grading.engine", str(course), aid, "--workers", "1"]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    done_dir = course / engine.STATE / aid
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (done_dir.is_dir() and any(done_dir.iterdir())):
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.2)
    assert done_dir.is_dir() and any(done_dir.iterdir()), "no grade landed within 180 s"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert len(list(done_dir.iterdir())) < len(family.members), "the grader finished before the kill"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    assert "already done" in second.stderr
    scores, _, _ = families.read_scores(family, course)
    assert {n: scores[n].total for n in family.members} == \
        {n: m.score for n, m in family.members.items()}
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert len(gb.assignment_submissions(aid)) == len(family.members)


def test_monkeypatched_helpers_do_not_steal_points(tmp_path):
    """A wrong answer plus patched helpers (a locked cell's function, math, unittest, NumPy,
    or a fake module bound over the real one) still scores 0; the solution keeps its points."""
    family = families.load_family(write_guard_assignment(tmp_path))
    course = tmp_path / "course"
    families.build_family(family, course)
    outcomes = {o.student: o for o in engine.Engine(course, family.assignment_id, workers=2).run()}
    scores, _, _ = families.read_scores(family, course)
    assert {n: scores[n].total for n in family.members} == \
        {n: m.score for n, m in family.members.items()}, outcomes


def test_kernels_started_without_the_factory_get_the_same_sandbox(tmp_path):
    """The slow path (no kernel factory): exact scores, a timed-out cell interrupted, and the
    same namespaces: no network beyond loopback, the course and the checkout hidden."""
    family = families.load_family(write_toy_assignment(tmp_path))
    course = tmp_path / "course"
    paths = families.build_family(family, course)
    aid = family.assignment_id
    probe = SQUARE + (
        f"for p in {[str(course / 'gradebook.db'), str(SOURCE_NOTEBOOK)]!r}:\n    try:\n"
        "        open(p).read(1)\n        print('LEAKED')\n    except OSError as e:\n"
        "        print('blocked', e)\n"
        "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n"
        "    print('NETWORK-OPEN')\nexcept OSError as e:\n    print('blocked', e)\n")
    submit_with_cell(course, aid, "probe", nbformat.read(paths["solution"], as_version=4),
                     "square", probe)
    eng = engine.Engine(course, aid, workers=2, fork_kernels=False)
    outcomes = {o.student: o for o in eng.run()}
    scores, _, _ = families.read_scores(family, course)
    for name, member in family.members.items():
        assert scores[name].total == member.score, (name, outcomes[name])
    assert outcomes["probe"].score == 3, outcomes["probe"]
    if os.geteuid() != 0:
        pytest.skip("the sandbox's user switch and namespaces need root")
    text = _cell_text(course, aid, "probe", "square")
    assert "LEAKED" not in text and "NETWORK-OPEN" not in text and text.count("blocked") == 3, text


def test_an_instructor_without_root_grades_with_rlimits_only():
    """Run as an ordinary account (as root here: a throw-away one), the engine warns that
    kernels run as the caller and still grades the family to its exact scores."""
    if os.geteuid() != 0:
        pytest.skip("already not root: every other test here covers this path")
    user = f"tcnr{os.getpid() % 100000}"
    subprocess.run(["useradd", "--create-home", user], check=True, capture_output=True)
    # Not under pytest's tmp dirs: those are root's, 0700.
    work = Path(tempfile.mkdtemp(prefix="torchclass-nonroot-", dir="/var/tmp"))
    try:
        family = families.load_family(write_toy_assignment(work))
        course = work / "course"
        families.build_family(family, course)
        subprocess.run(["chown", "-R", user, str(work)], check=True)
        # The checkout, and so pytest's cwd, may sit where the account cannot read (a clone
        # under /root): its code comes from a readable copy, and it works in its own folder.
        pythonpath = readable_checkout(work / "checkout")
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": pythonpath,
               "OMP_NUM_THREADS": "1", "HOME": f"/home/{user}"}
        proc = subprocess.run(
            ["runuser", "-u", user, "--", sys.executable, "-m", "torchclass_grading.engine",
             str(course), family.assignment_id, "--workers", "2"],
            env=env, cwd=work, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "not root" in proc.stderr
        scores, _, _ = families.read_scores(family, course)
        assert {n: scores[n].total for n in family.members} == \
            {n: m.score for n, m in family.members.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)
        subprocess.run(["userdel", "-r", "-f", user], check=False, capture_output=True)
