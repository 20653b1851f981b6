"""The CPU notebook image, tested inside running containers of it."""

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from imagetools import REPO, Container, free_port, wait_for_http

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def server(notebook_image):
    """The image's own command (tini -> start-notebook -> JupyterLab) on a free host port."""
    port, token = free_port(), secrets.token_hex(16)
    container = Container(
        notebook_image, "start-notebook", f"--ServerApp.token={token}",
        run_args=("--network", "host", "-e", f"JUPYTER_PORT={port}"), prefix="tc-nb",
    )
    try:
        ready_s, _ = wait_for_http(f"http://127.0.0.1:{port}/api", container)
        print(f"server ready {ready_s:.1f} s after docker run")
        yield container, f"http://127.0.0.1:{port}", token
    finally:
        print(container.logs()[-3000:])
        container.remove()


def test_server_answers_api(server):
    _, url, _ = server
    with urllib.request.urlopen(f"{url}/api", timeout=10) as response:
        assert "version" in json.load(response)


def test_runs_as_jovyan_under_tini(server):
    container, _, _ = server
    assert container.exec("id", "-u").stdout.strip() == "1000"
    assert container.exec("id", "-g").stdout.strip() == "100"
    assert container.exec("id", "-un").stdout.strip() == "jovyan"
    assert container.inspect()["Config"]["User"] == "1000:100"
    pid1 = container.exec("cat", "/proc/1/comm").stdout.strip()
    assert pid1 == "tini", f"PID 1 is {pid1}, not tini"


def test_healthcheck_reports_healthy(server):
    container, _, _ = server
    out = container.exec("healthcheck").stdout
    assert "healthy:" in out and "/api" in out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = container.inspect()["State"]["Health"]["Status"]
        if state == "healthy":
            break
        time.sleep(1)
    assert state == "healthy", container.inspect()["State"]["Health"]


def test_course_and_data_helper_are_there(server):
    container, _, _ = server
    check = (
        "import torchclass_course, torchclass_course.data as data\n"
        "from torchclass_course.device import get_device\n"
        "print('device', get_device())\n"
        "ds = data.fashion_mnist(train=False)\n"
        "print('fashion', len(ds))\n"
        "print('source', data.SOURCES['fashion_mnist'].kind)\n"
    )
    out = container.exec("python", "-c", check, timeout=180).stdout
    assert "fashion 10000" in out, out
    assert "device cpu" in out, out
    # ~/lessons/<stage>/ as in every deployment (torchclass_course/lessons.py), tools included.
    home = container.exec("ls", "/home/jovyan/lessons").stdout.split()
    stages = sorted({p.parent.parent.name for p in (REPO / "course").glob("stage*/lessons/*.ipynb")})
    assert home == [*stages, "tools"], home


def test_torch_compile_builds_cpu_kernels_as_jovyan(server):
    # inductor compiles C++ at run time (stage4/02's lesson): the image must carry g++ and
    # Python's headers, and the student's kernel must be able to use them.
    container, _, _ = server
    check = ("import torch\n"
             "f = torch.compile(lambda x: torch.sin(x) * 2 + 1)\n"
             "x = torch.linspace(0, 3, 7)\n"
             "assert torch.allclose(f(x), torch.sin(x) * 2 + 1)\n"
             "print('compiled ok')\n")
    proc = container.exec("python", "-c", check, timeout=300)
    assert "compiled ok" in proc.stdout, proc.stdout + proc.stderr
    assert "Python.h" not in proc.stderr, proc.stderr


def test_the_image_ships_the_one_exchange_module(server):
    # gather-submissions and the instructor's Autograde switch import it from there.
    container, _, _ = server
    shipped = container.exec("python", "-c", "import torchclass_exchange as m; print(m.__file__)")
    assert shipped.stdout.strip() == "/srv/torchclass/python/torchclass_exchange.py"
    text = container.exec("cat", "/srv/torchclass/python/torchclass_exchange.py").stdout
    assert text == (REPO / "hub" / "torchclass_exchange.py").read_text()


def test_no_assignment_solutions_in_image(server):
    container, _, _ = server
    found = container.exec(
        "find", "/srv/torchclass/course", "(", "-path", "*/projects/*", "-o", "-path",
        "*/solutions/*", ")", check=False
    ).stdout.strip()
    assert found == "", f"assignment sources or lesson answers leaked into the image:\n{found}"


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _disabled_lab_extensions(container: Container, env: str = "") -> str:
    out = container.exec("bash", "-c", f"{env} jupyter labextension list 2>&1").stdout
    assert "@jupyter/nbgrader v0.9.6" in out, out
    return out.split("Disabled extensions:")[1] if "Disabled extensions:" in out else ""


def test_nbgrader_student_extensions(server):
    """Asked of the running server: its nbgrader routes exist for students, the formgrader's not."""
    container, url, token = server
    assert _status(f"{url}/nbgrader_version?version=0.9.6", token) == 200
    assert _status(f"{url}/assignments?course_id=torch101", token) == 200
    assert _status(f"{url}/formgrader", token) == 404
    disabled = _disabled_lab_extensions(container)
    for ext in ("formgrader", "create-assignment"):
        assert f"@jupyter/nbgrader:{ext}" in disabled, disabled
    assert "assignment-list" not in disabled, disabled


def test_instructor_role_gets_formgrader(notebook_image):
    port, token = free_port(), secrets.token_hex(16)
    container = Container(
        notebook_image, "start-notebook", f"--ServerApp.token={token}", prefix="tc-nb-teacher",
        run_args=("--network", "host", "-e", f"JUPYTER_PORT={port}",
                  "-e", "TORCHCLASS_ROLE=instructor"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/api", container)
        assert _status(f"{url}/formgrader", token) == 200
        disabled = _disabled_lab_extensions(
            container, "JUPYTER_CONFIG_PATH=/etc/jupyter/instructor")
        assert "nbgrader:formgrader" not in disabled, disabled
    finally:
        print(container.logs()[-3000:])
        container.remove()


def test_tensorboard_opens_from_jupyterlab(server):
    container, url, token = server
    container.exec("mkdir", "-p", "/home/jovyan/runs/demo")
    container.exec(
        "python", "-c",
        "from torch.utils.tensorboard import SummaryWriter\n"
        "w = SummaryWriter('/home/jovyan/runs/demo')\n"
        "[w.add_scalar('loss', 1.0 / (i + 1), i) for i in range(5)]\nw.close()",
        timeout=120,
    )
    auth = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/server-proxy/servers-info", headers=auth), timeout=10
    ) as response:
        info = json.load(response)
    entry = next(s for s in info["server_processes"] if s["name"] == "tensorboard")
    assert entry["launcher_entry"]["enabled"] and entry["launcher_entry"]["title"] == "TensorBoard"
    # The first request starts TensorBoard behind the proxy; its data API then lists our run.
    _, page = wait_for_http(f"{url}/tensorboard/", container, timeout=120, headers=auth)
    assert b"<tf-tensorboard" in page or b"TensorBoard" in page
    deadline = time.monotonic() + 60
    runs = {}
    while time.monotonic() < deadline and "runs/demo" not in runs:
        _, body = wait_for_http(f"{url}/tensorboard/data/runs", container, headers=auth)
        runs = set(json.loads(body))
        time.sleep(1)
    assert "runs/demo" in runs, runs


def test_stage1_lesson_executes(server):
    container, _, _ = server
    lessons = sorted((REPO / "course" / "stage1" / "lessons").glob("*.ipynb"))
    if not lessons:
        pytest.skip("no Stage 1 lesson in course/stage1/lessons yet")
    lesson = lessons[0]
    folder = "/home/jovyan/lessons/stage1"
    # Executed where a student opens it (its own folder), one thread as in class.
    run = (
        "import nbformat; from nbclient import NotebookClient\n"
        f"nb = nbformat.read({lesson.name!r}, as_version=4)\n"
        f"NotebookClient(nb, timeout=300, kernel_name='python3', "
        f"resources={{'metadata': {{'path': {folder!r}}}}}).execute()\n"
        "print('executed', len(nb.cells), 'cells')\n"
    )
    result = container.exec(
        "bash", "-c", f"cd {folder} && OMP_NUM_THREADS=1 python -c \"$0\"", run,
        timeout=600, check=False,
    )
    assert result.returncode == 0, f"{lesson.name} failed inside the container:\n{result.stderr[-4000:]}"
    assert "executed" in result.stdout
