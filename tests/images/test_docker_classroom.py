"""The Docker classroom end to end (`make up-docker`'s launcher, torchclass_hub.docker_classroom): the hub
image in a container spawns each user's notebook container through DockerSpawner. A student logs
in and gets a container with limits; fetches and submits an assignment; another student's
container cannot see it; the student's kernel talks over ipc, not TCP on the host's network; the
instructor's container has the formgrader, gathers and collects, refuses to autograde (button and
terminal), and root on the host grades the submission into the gradebook with the engine."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from imagetools import NOTEBOOK_IMAGE, REPO, docker, free_port

pytestmark = [pytest.mark.docker, pytest.mark.hub]
ASSIGNMENT = "s1-linear-regression"


def launcher(action: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchclass_hub.docker_classroom", action, *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.fixture
def classroom(hub_image, notebook_image):
    if os.geteuid() != 0:
        pytest.skip("the Docker classroom prepares the course for uid 1000: needs root")
    if not (REPO / "course" / "stage1" / "projects" / ASSIGNMENT).is_dir():
        pytest.skip(f"assignment {ASSIGNMENT} is not in this checkout")
    tag = uuid.uuid4().hex[:6]
    course_id, port = f"dc{tag}", free_port()
    users = {"teacher": f"teach-{tag}", "alice": f"alice-{tag}", "bob": f"bob-{tag}"}
    # Not under pytest's root-only tmp: the course's grader account must reach the data dir.
    tmp_path = Path(tempfile.mkdtemp(prefix=f"torchclass-dc-{tag}-"))
    tmp_path.chmod(0o755)
    data_dir = tmp_path / "data"
    classroom_file = tmp_path / "classroom.yaml"
    classroom_file.write_text(yaml.safe_dump({
        "course_id": course_id,
        "hub": {"ip": "127.0.0.1", "port": port},
        "instructors": [users["teacher"]],
        "students": [users["alice"], users["bob"]],
        "assignments": [ASSIGNMENT],
        "auth": {"type": "local"},
        "spawner": {"type": "docker", "image": NOTEBOOK_IMAGE, "cpu_limit": 1, "mem_limit": "2G"},
    }))
    env = dict(os.environ, TORCHCLASS_CLASSROOM=str(classroom_file),
               TORCHCLASS_DATA_DIR=str(data_dir), HUB_IMAGE=hub_image)
    started = launcher("up", env)
    hub = f"torchclass-hub-{course_id}"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        passwords = dict(
            line.split() for line in (data_dir / "initial-passwords.txt").read_text().splitlines()
            if line and not line.startswith("#")
        )
        yield {"url": f"http://127.0.0.1:{port}/", "course_id": course_id, "users": users,
               "passwords": passwords, "data_dir": data_dir, "env": env}
    finally:
        print(docker("logs", "--tail", "60", hub, check=False).stderr[-6000:])
        stopped = launcher("down", env)
        print(stopped.stdout, stopped.stderr)
        volumes = docker("volume", "ls", "-q", "--filter", f"name=torchclass-{course_id}-home-",
                         check=False).stdout.split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)


def login_and_spawn(room: dict, role: str) -> tuple[requests.Session, str]:
    user = room["users"][role]
    session = requests.Session()
    session.get(room["url"] + "hub/login", timeout=30)
    xsrf = session.cookies.get("_xsrf")
    reply = session.post(room["url"] + "hub/login", allow_redirects=False, timeout=30,
                         data={"username": user, "password": room["passwords"][user],
                               "_xsrf": xsrf})
    assert reply.status_code == 302, f"login of {user} failed: {reply.status_code} {reply.text[:500]}"
    # Logging in sets a fresh xsrf cookie bound to the session.
    xsrf = [c.value for c in session.cookies if c.name == "_xsrf"][-1]
    headers = {"X-XSRFToken": xsrf}
    reply = session.post(room["url"] + f"hub/api/users/{user}/server", headers=headers,
                         json={}, timeout=60)
    assert reply.status_code in (201, 202), reply.text
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        info = session.get(room["url"] + f"hub/api/users/{user}", headers=headers, timeout=30)
        server = info.json().get("servers", {}).get("")
        if server and server.get("ready"):
            return session, container_of(room["course_id"], user)
        time.sleep(1)
    raise AssertionError(f"{user}'s server was not ready within 180 s: {info.text}")


def container_of(course_id: str, user: str) -> str:
    """The running container DockerSpawner made for user (names escape some characters)."""
    names = docker("ps", "--filter", f"name=torchclass-{course_id}-", "--format",
                   "{{.Names}}").stdout.split()
    for name in names:
        env = json.loads(docker("inspect", "-f", "{{json .Config.Env}}", name).stdout)
        if f"JUPYTERHUB_USER={user}" in env:
            return name
    raise AssertionError(f"no running container for {user} among {names}")


def sh(container: str, script: str, workdir: str = "/home/jovyan") -> str:
    result = docker("exec", "-w", workdir, container, "bash", "-c", script, timeout=300,
                    check=False)
    assert result.returncode == 0, f"{container}: {script}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def xsrf_header(session: requests.Session, path: str) -> dict:
    """The XSRF cookie that applies to path (the hub's and the server's have their own paths)."""
    tokens = [c.value for c in session.cookies
              if c.name == "_xsrf" and path.startswith(c.path.rstrip("/") or "/")]
    assert tokens, f"no _xsrf cookie for {path}: {[(c.name, c.path) for c in session.cookies]}"
    return {"X-XSRFToken": tokens[-1]}


KERNEL_PROBE = """
import json, sys, psutil
from jupyter_client import BlockingKernelClient
kid = sys.argv[1]
(proc,) = [p for p in psutil.process_iter(["cmdline"])
           if any(a.endswith(f"kernel-{kid}.json") for a in p.info["cmdline"] or [])]
(conn_file,) = [a for a in proc.cmdline() if a.endswith(f"kernel-{kid}.json")]
info = json.load(open(conn_file))
listening = [c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"]
client = BlockingKernelClient(connection_file=conn_file)
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=60)
seen = []
client.execute_interactive("print(6 * 7)", timeout=60,
                           output_hook=lambda m: seen.append(m["content"].get("text", "")))
print(json.dumps({"info": info, "listening": listening, "printed": "".join(seen)}))
"""


def kernel_talks_over_ipc_only(session: requests.Session, url: str, user: str, container: str):
    """The containers share the host's network: a kernel on TCP would be reachable by every
    container and host user. Its channels must be ipc sockets in the student's own home."""
    session.get(url + f"user/{user}/lab", timeout=120).raise_for_status()  # the server's xsrf cookie
    reply = session.post(url + f"user/{user}/api/kernels", json={"name": "python3"}, timeout=120,
                         headers=xsrf_header(session, f"/user/{user}/"))
    assert reply.status_code == 201, reply.text[:300]
    kid = reply.json()["id"]
    time.sleep(2)
    probe = json.loads(sh(container, f"python - {kid} <<'PY'\n{KERNEL_PROBE}\nPY").strip().splitlines()[-1])
    info = probe["info"]
    assert info["transport"] == "ipc" and info["ip"].startswith("/home/jovyan/"), info
    channels = {info[k] for k in info if k.endswith("_port")}
    # ipykernel's one receive-only pipe for forked children's output stays on 127.0.0.1
    # (tests/hub/test_classroom.py::test_another_student_cannot_reach_a_students_kernel).
    assert len(probe["listening"]) <= 1 and not channels & set(probe["listening"]), probe
    assert probe["printed"].strip() == "42", probe


def test_docker_classroom_end_to_end(classroom):
    room, course_id = classroom, classroom["course_id"]
    alice = room["users"]["alice"]

    session, container = login_and_spawn(room, "alice")
    spec = json.loads(docker("inspect", container).stdout)[0]
    assert spec["Config"]["User"] == "1000:100"
    host = spec["HostConfig"]
    assert host["NanoCpus"] == 1_000_000_000 or host["CpuQuota"] == host["CpuPeriod"] > 0, host
    assert spec["HostConfig"]["Memory"] == 2 * 1024**3
    assert spec["HostConfig"]["Privileged"] is False
    assert any(m["Type"] == "volume" and m["Destination"] == "/home/jovyan" for m in spec["Mounts"])
    # Through the hub's proxy, with the login cookie (OAuth to the server happens on the way).
    api = session.get(room["url"] + f"user/{alice}/api", timeout=60)
    assert api.status_code == 200 and "version" in api.json(), api.text[:300]

    sh(container, f"nbgrader fetch_assignment {ASSIGNMENT} && nbgrader submit {ASSIGNMENT}")
    kernel_talks_over_ipc_only(session, room["url"], alice, container)

    _, other = login_and_spawn(room, "bob")
    seen = sh(other, "find /srv/nbgrader/exchange -mindepth 1")
    assert alice not in seen, f"another student's container sees {alice}'s submission:\n{seen}"
    assert f"{course_id}/outbound/{ASSIGNMENT}" in seen

    teacher_session, teacher = login_and_spawn(room, "teacher")
    teacher_name = room["users"]["teacher"]
    formgrader = teacher_session.get(room["url"] + f"user/{teacher_name}/formgrader", timeout=60)
    assert formgrader.status_code == 200 and "encountered an error" not in formgrader.text, \
        formgrader.text[-2000:]
    listed = teacher_session.get(room["url"] + f"user/{teacher_name}/formgrader/api/assignments",
                                 timeout=60)
    assert ASSIGNMENT in [a["name"] for a in listed.json()], listed.text[:500]
    course_dir = str(room["data_dir"] / "courses" / course_id)
    out = sh(teacher, f"gather-submissions {course_id} && nbgrader collect {ASSIGNMENT}",
             course_dir)
    assert "gathered 1 new submission(s)" in out, out
    # Stock autograde in the instructor's container would run alice's code beside the gradebook.
    sandboxed = f"make grade-docker ASSIGNMENT={ASSIGNMENT}"
    refused = docker("exec", "-w", course_dir, teacher, "nbgrader", "autograde", ASSIGNMENT,
                     "--force", check=False, timeout=300)
    assert refused.returncode != 0 and sandboxed in refused.stdout + refused.stderr, \
        refused.stdout + refused.stderr
    teacher_session.get(room["url"] + f"user/{teacher_name}/lab", timeout=120).raise_for_status()
    button = teacher_session.post(
        room["url"] + f"user/{teacher_name}/formgrader/api/submission/{ASSIGNMENT}/{alice}/autograde",
        headers=xsrf_header(teacher_session, f"/user/{teacher_name}/"), timeout=120)
    assert button.status_code == 200, button.text[:500]

    answer = button.json()
    assert answer["success"] is False and sandboxed in answer.get("error", "") + answer.get("log", ""), answer
    assert sh(teacher, f"ls autograded/{alice}/{ASSIGNMENT} 2>/dev/null || true", course_dir) == ""

    graded = launcher("grade", room["env"], ASSIGNMENT)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    assert "1 of 1 submissions graded" in graded.stdout, graded.stdout
    scores = sh(teacher, "python - <<'PY'\n"
                         "import json\nfrom nbgrader.api import Gradebook\n"
                         "with Gradebook('sqlite:///gradebook.db') as gb:\n"
                         f"    print(json.dumps({{s.student.id: [s.score, s.max_score] for s in "
                         f"gb.assignment_submissions({ASSIGNMENT!r})}}))\nPY", course_dir)
    grades = json.loads(scores.strip().splitlines()[-1])
    assert list(grades) == [alice], grades
    score, max_score = grades[alice]
    # The untouched release earns no points, but every test cell was graded.
    assert score == 0 and max_score > 0, grades
