"""Grades that student code cannot forge: the attack family (integrity_family.py) graded by the
engine through the local sandbox and through the Docker backend, exact scores and flags; a
kernel leaves nothing for the next; malformed submissions are named and the rest graded."""

import dis
import os
import shutil
import tempfile
import types
from pathlib import Path

import families
import nbformat
import pytest
from integrity_family import ATTACKS, EXPECTED, HONEST, LIARS, MAX_SCORE, write_integrity_assignment
from torchclass_grading import engine, report, sandbox
from toy_assignment import submit, submit_with_cell

pytestmark = pytest.mark.grading

LIMITS = sandbox.Limits(cpu_seconds=120, memory_bytes=8 << 30, file_bytes=64 << 20)


def _build(tmp: Path, members: dict[str, str]):
    family = families.load_family(write_integrity_assignment(tmp))
    course = tmp / "course"
    paths = families.build_family(family, course)
    solution = nbformat.read(paths["solution"], as_version=4)
    for name, code in members.items():
        submit_with_cell(course, family.assignment_id, name, solution, "half", code)
    return family, course, solution


def _flagged(outcome) -> list[str]:
    return [p for p in outcome.problems if f"{engine.INTEGRITY}:" in p]


def _check_family(outcomes: dict):
    wrong = []
    for name, (score, flagged) in EXPECTED.items():
        o = outcomes[name]
        if o.status != "graded" or o.score != score or bool(_flagged(o)) != flagged:
            wrong.append(f"{name}: expected {score}{' flagged' if flagged else ''}, got {o}")
    assert not wrong, "\n".join(wrong)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    family, course, solution = _build(tmp, {**ATTACKS, **LIARS, **HONEST})
    aid = family.assignment_id
    # Malformed submissions: each a named problem on its student, the rest graded.
    bad_meta = nbformat.from_dict(solution)
    bad_meta.cells[1].metadata["nbgrader"] = ["not", "a", "mapping"]
    submit(course, aid, "bad-nbgrader-metadata", bad_meta)
    bad_kernel = nbformat.from_dict(solution)
    bad_kernel.metadata["kernelspec"] = "python3"
    submit(course, aid, "bad-kernelspec", bad_kernel)
    submit(course, aid, "bad-timestamp", nbformat.from_dict(solution))
    (course / "submitted" / "bad-timestamp" / aid / "timestamp.txt").write_bytes(b"\xff\xfe\x00 2026")
    source = course / "source" / aid / f"{aid}.ipynb"
    for kind in ("symlink", "hardlink"):
        dest = course / "submitted" / f"{kind}-to-source" / aid
        dest.mkdir(parents=True)
        (dest / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
        (os.symlink if kind == "symlink" else os.link)(source, dest / f"{aid}.ipynb")
    eng = engine.Engine(course, aid, workers=2, limits=LIMITS)
    outcomes = {o.student: o for o in eng.run()}
    for o in outcomes.values():
        print(o)
    return course, aid, outcomes


def test_attacks_score_nothing_and_are_flagged_honest_work_is_not(local_run):
    _, _, outcomes = local_run
    _check_family(outcomes)


def test_links_to_the_source_are_refused(local_run):
    _, _, outcomes = local_run
    for kind, words in (("symlink", "symbolic link"), ("hardlink", "hard link")):
        o = outcomes[f"{kind}-to-source"]
        assert o.status == "graded" and o.score == 0 and _flagged(o), o
        assert any(words in p for p in o.problems), o


def test_malformed_submissions_are_named_and_graded(local_run):
    _, _, outcomes = local_run
    meta = outcomes["bad-nbgrader-metadata"]
    assert any("metadata.nbgrader is not a mapping" in p for p in meta.problems), meta
    assert meta.status == "graded", meta
    kernel = outcomes["bad-kernelspec"]
    assert kernel.status == "graded" and kernel.score == MAX_SCORE, kernel
    assert any("kernelspec is not a mapping" in p for p in kernel.problems), kernel
    stamp = outcomes["bad-timestamp"]
    assert stamp.status in ("graded", "error") and (stamp.status == "graded" or any(
        "timestamp" in p for p in stamp.problems)), stamp
    # and everyone else was graded
    assert all(outcomes[n].status == "graded" for n in EXPECTED), outcomes


def test_the_report_lists_the_flagged_with_their_evidence(local_run):
    course, aid, _ = local_run
    rep = report.build(course, aid)
    flagged = {r.student for r in rep.flagged}
    assert flagged >= set(ATTACKS) and not flagged & {"solution", "untouched", *HONEST}, flagged
    csv_path, html_path = report.write_report(course, aid)
    rows = csv_path.read_text().splitlines()
    assert rows[0].endswith(",integrity")
    assert sum(line.endswith(",flagged") for line in rows[1:]) == len(flagged)
    html = html_path.read_text()
    assert "flagged: tampering with the grader" in html
    assert "sys.settrace()" in html and "was given student code" in html


def test_hidden_tests_never_reach_the_graded_copy(local_run):
    """The transformer members see every test cell's source; whatever they print of it is cut."""
    course, aid, _ = local_run
    hidden = "np.isclose(half(-5), -2.5) and math.isclose(half(1), 0.5)"
    for student in ("input-transformer-post", "traceback-frames", "solution"):
        nb = nbformat.read(course / "autograded" / student / aid / f"{aid}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert hidden not in str(outputs), student


def test_the_sentinel_reads_no_global_name():
    """Every function in the kernel's sentinel reads only its own and the outer function's
    names: a student's `len = ...` or `type = ...` in the notebook changes none of them."""
    code = compile(engine.SENTINEL_PATH.read_text(), "s", "exec")
    outer = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    bad = []

    def walk(c, in_class=False):
        for sub in c.co_consts:
            if isinstance(sub, types.CodeType):
                is_class_body = sub.co_flags & 0x02 == 0 and sub.co_name[0].isupper()
                for ins in dis.get_instructions(sub):
                    if ins.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "IMPORT_NAME") or (
                            ins.opname == "LOAD_NAME" and not is_class_body):
                        bad.append(f"{sub.co_name}: {ins.opname} {ins.argval}")
                walk(sub)

    walk(outer)
    assert not bad, bad


def test_a_kernel_leaves_nothing_for_the_next(tmp_path):
    """Two submissions in a row on one worker: the first writes to /tmp, /var/tmp, /dev/shm and
    its home (an IPython startup file); the second finds none of it."""
    if os.geteuid() != 0:
        pytest.skip("the kernel's private /tmp, /var/tmp and /dev/shm need its mount namespace (root)")
    marks = ["/tmp/tc-left", "/var/tmp/tc-left", "/dev/shm/tc-left",
             "~/.ipython/profile_default/startup/00-left.py"]
    writer = ("import os\ndef half(x):\n    return x / 2\n"
              f"for p in {marks!r}:\n    p = os.path.expanduser(p)\n"
              "    os.makedirs(os.path.dirname(p), exist_ok=True)\n"
              "    open(p, 'w').write('import math; math.isclose = lambda *a, **k: True')\n"
              "print('wrote', len(os.listdir('/tmp')))")
    reader = ("import os\n"
              f"left = [p for p in {marks!r} if os.path.exists(os.path.expanduser(p))]\n"
              "assert not left, left\ndef half(x):\n    return x / 2\n")
    family, course, _ = _build(tmp_path, {"a-writer": writer, "b-reader": reader})
    for p in (course / "submitted").iterdir():
        if p.name not in ("a-writer", "b-reader"):
            shutil.rmtree(p)
    outcomes = {o.student: o for o in engine.Engine(course, family.assignment_id, workers=1).run()}
    assert outcomes["a-writer"].score == MAX_SCORE, outcomes["a-writer"]
    assert outcomes["b-reader"].score == MAX_SCORE and not outcomes["b-reader"].problems, outcomes["b-reader"]
    for p in marks[:3]:
        assert not Path(p).exists(), f"{p} reached the grader's own namespace"


def test_a_notebook_that_stalls_every_test_stops_at_its_budget(tmp_path):
    stall = "def half(x):\n    while True:\n        pass\n"
    family, course, _ = _build(tmp_path, {"stall": stall})
    for p in (course / "submitted").iterdir():
        if p.name != "stall":
            shutil.rmtree(p)
    o = engine.Engine(course, family.assignment_id, workers=1, cell_timeout=2).run()[0]
    assert o.score == 0, o
    assert any(f"{engine.TIMEOUT_STRIKES} cells ran past their time limit" in p for p in o.problems), o


@pytest.mark.docker
def test_the_attack_family_through_the_docker_backend(tmp_path):
    from test_docker_backend import _docker, _image_builder
    from torchclass_grading import docker_backend

    if not shutil.which(docker_backend.docker_command()):
        pytest.skip("no docker client: run 'make install-system'")
    if _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine answers: run 'make docker-engine'")
    image = _image_builder()._build("build-cpu", docker_backend.default_image())
    family, course, _ = _build(tmp_path, {**ATTACKS, **LIARS, **HONEST})
    eng = engine.Engine(course, family.assignment_id, workers=2, backend="docker", image=image,
                        limits=sandbox.Limits(cpu_seconds=120, memory_bytes=2 << 30,
                                              processes=128, file_bytes=64 << 20))
    outcomes = {o.student: o for o in eng.run()}
    _check_family(outcomes)


def test_a_planted_state_dir_is_refused(tmp_path):
    """A student who creates the grader's state dir first (as one could in /var/tmp) and plants
    a library in it gets a refusal naming the dir, not root importing their code."""
    if os.geteuid() != 0:
        pytest.skip("the planted dir must belong to another account (needs root to make it)")
    import subprocess
    import sys

    assert not os.stat(sandbox.STATE_DIR.parent).st_mode & 0o002, sandbox.STATE_DIR
    planted = tmp_path / "state"
    (planted / "lib" / "x" / "torchclass_course").mkdir(parents=True)
    (planted / "lib" / "x" / "torchclass_course" / "__init__.py").write_text("open('/pwned', 'w')")
    os.chmod(tmp_path, 0o755)
    subprocess.run(["chown", "-R", "65534:65534", str(planted)], check=True)
    family, course, _ = _build(tmp_path, {})
    env = dict(os.environ, TORCHCLASS_GRADE_STATE=str(planted))
    proc = subprocess.run([sys.executable, "-m", "torchclass_grading.engine", str(course),
                           family.assignment_id, "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert f"{planted} belongs to uid 65534" in proc.stderr, proc.stderr[-2000:]
    assert not Path("/pwned").exists()
    link = Path(tempfile.mkdtemp()) / "planted-link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(sandbox.SandboxError, match="symbolic link"):
        sandbox.private_dir(link)


LATE_INTERRUPT = r'''
import hmac, os, signal, sys, threading
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
for callbacks in ip.events.callbacks.values():  # this script's shell is not a kernel's
    callbacks.clear()
os.chdir(sys.argv[2])
os.mkdir(".seal")
with open(".seal-key", "wb") as fh:
    fh.write(b"k" * 32)
phase = {"at": None}


def deliver(event, args):
    """Lets the pending SIGINT in exactly where the grader's own code runs."""
    if event == phase["at"]:
        phase["at"] = None
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


sys.addaudithook(deliver)
signal.signal(signal.SIGINT, signal.default_int_handler)  # as ipykernel has it while a cell runs
exec(compile(open(sys.argv[1]).read(), "sentinel", "exec"), {"get_ipython": lambda: ip})
run = sys.modules["_torchclass_sentinel"].run
for i, at in enumerate(("torchclass.begin", "torchclass.end")):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # The interrupt meant for a cell that already ended, pending on this (the kernel's) thread.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    phase["at"] = at
    nonce = f"{i}" * 32
    try:
        run(nonce, f"answer{i} = 6 * 7")
    except BaseException as exc:
        print(f"{at}: {type(exc).__name__} escaped the grader's run")
        continue
    mac, data = open(f".seal/{nonce}", "rb").read().split(b"\n", 1)
    assert hmac.compare_digest(mac, hmac.new(b"k" * 32, data, "sha256").hexdigest().encode())
    status = data.split(bytes([31]))[3].decode()
    print(f"{at}: {status} {ip.user_ns.get(f'answer{i}')}")
print("handler kept:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
'''


def test_an_interrupt_arriving_late_does_not_break_the_seal(tmp_path):
    """The worker interrupts a cell past its time; on a loaded machine the SIGINT can land after
    that cell ended, inside the grader's own part of the next locked cell. Raised there it broke
    the seal (the cell counted as stopped by an IntegrityError) or escaped with the grader's frames
    (flagged as reading them): an honest student accused of tampering. It must be dropped."""
    import subprocess
    import sys

    script = tmp_path / "late.py"
    script.write_text(LATE_INTERRUPT)
    proc = subprocess.run([sys.executable, str(script), str(engine.SENTINEL_PATH), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["torchclass.begin: ok 42", "torchclass.end: ok 42",
                                          "handler kept: True"], proc.stdout + proc.stderr[-3000:]
