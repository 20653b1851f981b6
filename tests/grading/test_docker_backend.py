"""The engine's Docker backend: the toy family graded in containers of the real notebook image.

One engine run (two workers) grades the toy family plus probes that try the network, the
course dir and the container's limits from inside a kernel; the image is the one
tests/images builds (`make build-cpu`, built once per test run across workers).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import families
import nbformat
import pytest
from torchclass_grading import docker_backend, engine, sandbox
from toy_assignment import submit_with_cell, write_toy_assignment

pytestmark = [pytest.mark.grading, pytest.mark.docker]

IMAGES_TESTS = Path(__file__).resolve().parents[1] / "images"
SQUARE = "def square(x):\n    return x * x\n"
LIMITS = sandbox.Limits(cpu_seconds=60, memory_bytes=1 << 30, processes=64, file_bytes=16 << 20)
FORK_BOMB = """\
import os, signal, time
kids = []
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        kids.append(pid)
except OSError as e:
    print('capped', type(e).__name__)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print('children', len(kids))
"""


def _image_builder():
    """tests/images' build-once helper, so both areas share one `make build-cpu` per run."""
    sys.path.insert(0, str(IMAGES_TESTS))
    spec = importlib.util.spec_from_file_location("images_conftest", IMAGES_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docker(*args, check=True):
    result = subprocess.run([docker_backend.docker_command(), *args], capture_output=True,
                            text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result


def _probes(course: Path, aid: str, other: Path) -> dict[str, tuple[str, float]]:
    """member -> (code for the `square` cell, expected score out of 3)."""
    secrets = [str(course / "source" / aid / f"{aid}.ipynb"), str(course / "gradebook.db"),
               str(other)]
    return {
        "network": (SQUARE + (
            "import socket\nprint('interfaces', sorted(n for _, n in socket.if_nameindex()))\n"
            "for host in ('1.1.1.1', '127.0.0.1'):\n    try:\n"
            "        socket.create_connection((host, 80), timeout=2)\n        print('NETWORK-OPEN')\n"
            "    except OSError as e:\n        print('blocked', e)\n"
            "try:\n    socket.getaddrinfo('pypi.org', 443)\n    print('DNS-OPEN')\n"
            "except OSError as e:\n    print('blocked', e)"), 3),
        "read-course": (SQUARE + (
            f"import os\nprint('course visible:', os.path.exists({str(course)!r}))\n"
            f"for p in {secrets!r}:\n    try:\n        open(p).read()\n        print('LEAKED')\n"
            "    except OSError as e:\n        print('blocked', type(e).__name__)"), 3),
        "inside": (SQUARE + (
            "import os\nprint('uid', os.getuid(), 'gid', os.getgid())\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', "
            "'CapBnd', 'NoNewPrivs'))])\n"
            "for p in ('/opt/torchclass/evil', '/etc/evil'):\n    try:\n        open(p, 'w')\n"
            "        print('ROOTFS-WRITABLE')\n    except OSError as e:\n"
            "        print('blocked', e.strerror)\n"
            "open('here.txt', 'w').write('scratch is writable')\nprint(open('here.txt').read())"), 3),
        "memory-bomb": (SQUARE + "hog = bytearray(4 << 30)", 3),
        # A separate process forks until the pids cgroup says no, then ends its children. (A
        # kernel that forks itself out of pids can lose a reply, and its grader then waits.)
        "fork-bomb": (SQUARE + (
            f"import subprocess, sys\nbomb = {FORK_BOMB!r}\n"
            "print(subprocess.run([sys.executable, '-c', bomb], capture_output=True, text=True,"
            " timeout=60).stdout)"), 3),
        "os-exit": (SQUARE + "import os\nos._exit(0)", 0),
    }


def _fake_leftover(image: str) -> tuple[str, Path]:
    """A container and a scratch dir of a dead grader (a pid that has exited), as a killed run
    leaves them."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    name = f"tcgrade-leftover-{uuid.uuid4().hex[:12]}"
    _docker("run", "-d", "--name", name, "--network", "none", "--label",
            f"{docker_backend.LABEL}={os.uname().nodename}:{gone.pid}:0", image, "sleep", "600")
    scratch = docker_backend.SCRATCH_ROOT / f"run-{gone.pid}-0-{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    return name, scratch


@pytest.fixture
def graded(tmp_path_factory):
    if not shutil.which(docker_backend.docker_command()):
        pytest.skip("no docker client (Debian docker.io): run 'sudo make provision'")
    if _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine answers: run 'sudo make provision' (it starts one)")
    builder = _image_builder()
    image = builder._build("build-cpu", docker_backend.default_image())
    leftover, stale_scratch = _fake_leftover(image)
    tmp = tmp_path_factory.mktemp("docker-engine")
    family = families.load_family(write_toy_assignment(tmp))
    course = tmp / "course"
    paths = families.build_family(family, course)
    aid = family.assignment_id
    solution = nbformat.read(paths["solution"], as_version=4)
    probes = _probes(course, aid, paths["partial"])
    for name, (code, _) in probes.items():
        submit_with_cell(course, aid, name, solution, "square", code)
    eng = engine.Engine(course, aid, workers=2, backend="docker", image=image, limits=LIMITS)
    t0 = time.monotonic()
    outcomes = {o.student: o for o in eng.run()}
    print(f"docker backend graded {len(outcomes)} submissions in {time.monotonic() - t0:.1f} s")
    for o in outcomes.values():
        print(o)
    try:
        yield family, course, probes, outcomes, (leftover, stale_scratch)
    finally:
        _docker("rm", "-f", leftover, check=False)
        shutil.rmtree(stale_scratch, ignore_errors=True)


def _outputs(course, aid, student, grade_id="square") -> str:
    nb = nbformat.read(course / "autograded" / student / aid / f"{aid}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return "".join(o.get("text", "") + o.get("ename", "") + o.get("evalue", "")
                       for o in cell.get("outputs", []))
    raise AssertionError(f"{student}: no cell {grade_id}")


def check_family_and_probes_get_their_exact_scores(graded):
    family, course, probes, outcomes, _ = graded
    scores, _, _ = families.read_scores(family, course)
    for name, member in family.members.items():
        assert scores[name].total == member.score, (name, outcomes[name])
        for cell, points in member.cells_scores.items():
            assert scores[name].cells[cell] == points, (name, cell)
    for name, (_, expected) in probes.items():
        assert outcomes[name].status == "graded" and outcomes[name].score == expected, \
            outcomes[name]
    assert any("kernel died" in p for p in outcomes["os-exit"].problems), outcomes["os-exit"]


def check_no_network_and_no_view_of_the_course(graded):
    family, course, _, _, _ = graded
    aid = family.assignment_id
    net = _outputs(course, aid, "network")
    assert "interfaces ['lo']" in net, net
    assert "OPEN" not in net and net.count("blocked") == 3, net
    seen = _outputs(course, aid, "read-course")
    assert "course visible: False" in seen, seen
    assert "LEAKED" not in seen and seen.count("blocked FileNotFoundError") == 3, seen


def check_kernel_is_unprivileged_read_only_and_limited(graded):
    family, course, _, _, _ = graded
    aid = family.assignment_id
    inside = _outputs(course, aid, "inside")
    uid = docker_backend.SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    assert f"uid {uid} " in inside, inside
    # No capabilities, none to gain (bounding set empty), no new privileges.
    assert "['0000000000000000', '0000000000000000', '1']" in inside, inside
    assert "ROOTFS-WRITABLE" not in inside and inside.count("Read-only file system") == 2, inside
    assert "scratch is writable" in inside, inside
    assert "MemoryError" in _outputs(course, aid, "memory-bomb")
    forks = _outputs(course, aid, "fork-bomb")
    assert "capped" in forks, forks
    assert int(forks.split("children")[1].split()[0]) < LIMITS.processes, forks


def check_containers_are_removed_and_a_dead_graders_leftovers_too(graded):
    _, _, _, _, (leftover, stale_scratch) = graded
    assert leftover not in _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not stale_scratch.exists()
    listing = _docker("ps", "-a", "--filter", f"label={docker_backend.LABEL}", "--format",
                      "{{.Names}}\t{{.Label \"" + docker_backend.LABEL + "\"}}").stdout
    for line in listing.splitlines():
        name, _, owner = line.partition("\t")
        pid = int(owner.split(":")[1])
        # Another grader may be running beside this one; its containers belong to a live pid.
        assert name.startswith("tcgrade-leftover-") or Path(f"/proc/{pid}").exists(), line


def test_docker_backend_grades_exactly_and_isolates(graded):
    """One engine run serves every check (xdist would repeat a module fixture per worker)."""
    check_family_and_probes_get_their_exact_scores(graded)
    check_no_network_and_no_view_of_the_course(graded)
    check_kernel_is_unprivileged_read_only_and_limited(graded)
    check_containers_are_removed_and_a_dead_graders_leftovers_too(graded)
