"""Grade an assignment on Kubernetes: one Job per submitted notebook (manifests only, dry run).

    python -m torchclass_deploy.grading_jobs COURSE_DIR AID [--image IMG] [--classroom FILE]
        [--site FILE] [--namespace NS] > jobs.yaml          # build; `kubectl apply -f jobs.yaml`
    python -m torchclass_grading.k8s_job record COURSE_DIR AID RESULTS_DIR
                                                           # the results, into the gradebook

`build` takes what it needs of the cluster as a `Cluster`; the k8s layer above
(torchclass_deploy.grading_jobs) fills it from the chart's values, which grading never reads.

Never run against a live cluster (none can run where this was written): the objects are
validated offline against the Kubernetes schemas, and the two programs each pod runs are
tested in two containers of the notebook image wired as the pod wires them.

The grader prepares every submission as the engine does (nbgrader's own preprocessors: test
cells, hidden tests included, restored from the gradebook). Each notebook becomes a Job whose
pod has two containers of the course image and no network (a NetworkPolicy denies all
ingress and egress to grading pods):

- `runner` (uid 1000): the engine's notebook runner (engine.run.execute, the same code as the
  local and Docker backends). It alone mounts the prepared notebook (a ConfigMap of its own,
  so no pod sees another student's work) and the results volume, where it writes the executed
  notebook;
- `kernel` (uid 61000, read-only root, rlimits): the student's code. It mounts only an
  emptyDir shared with the runner, holding the connection file, the ipc sockets and the
  assignment's data files. The two containers share no process namespace and no uid, so the
  kernel cannot read the runner's files (the hidden tests before they run) or its memory.

An interrupt travels as a message on the kernel's control channel (a different container
cannot be signalled). No pod has a service account token. The kernel container asks for
`nvidia.com/gpu: 1`, the CUDA image and the GPU pool's node selector and tolerations only when
an assignment declares it needs a GPU: notebook metadata `"torchclass": {"gpu": true}` in one
of its source notebooks (course/stage<N>/projects/<id>/<id>.ipynb, kept by nbgrader in the
release). The kernel's memory and CPU limits are the Cluster's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import inspect
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torchclass_classroom import package_dirs

from torchclass_grading.engine.backends import KernelBackend

KERNEL_UID = 61000
RUNNER_UID = 1000
GID = 100                      # both containers' group: the kernel's sockets are group-writable
KERNEL_DIR = "/kernel"         # the emptyDir both containers share
GRADING_DIR = "/grading"       # the prepared notebook (runner only)
CODE_DIR = "/etc/torchclass/grading"
RESULTS_DIR = "/results"
RESULTS_CLAIM = "torchclass-grading-results"
CONFIGMAP_MAX = 1_000_000      # a ConfigMap holds at most 1 MiB (keys included)
LABEL_PART_OF = {"app.kubernetes.io/part-of": "torchclass"}
_GRADING = Path(__file__).resolve().parent
# The runner's code, shipped in a ConfigMap so the pod runs the grader's own version: the
# engine and the bottom layer it imports (torchclass_classroom; the image has torchclass_course).
RUNNER_FILES = (
    *(f"torchclass_grading/{m}" for m in ("__init__.py", "sandbox.py", "kernel_sentinel.py",
                                          "scrub.py", "k8s_job.py")),
    *sorted(f"torchclass_grading/engine/{p.name}" for p in (_GRADING / "engine").glob("*.py")),
    *sorted(f"torchclass_classroom/{p.name}" for p in package_dirs()["torchclass_classroom"].iterdir()
            if p.suffix in (".py", ".yaml")),
)
# The kernel container's PID 1: rlimits, then the kernel once the runner has written its
# connection file, ended when the runner says it is done.
KERNEL_MAIN = f"""\
import json, os, resource, subprocess, sys, time
cpu, fsize, nofile = map(int, sys.argv[1:4])
for res, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
                   (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(res, (value, value))
os.umask(0o007)
path = lambda name: os.path.join({KERNEL_DIR!r}, name)
flag = lambda name: os.path.exists(path(name))
while not flag("kernel.ready"):
    if flag("done"):
        sys.exit(0)
    time.sleep(0.2)
startup = json.load(open(path("startup.json")))
kernel = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", path("kernel.json"),
                           "--HistoryManager.enabled=False",
                           *["--IPKernelApp.exec_lines=" + line for line in startup]])
while kernel.poll() is None and not flag("done"):
    time.sleep(0.2)
kernel.kill()
kernel.wait()
open(path("exited"), "w").close()
"""


def raise_flag(path: str) -> None:
    """Create a flag file in the dir shared with the kernel. The student's code can write there
    too, so a link planted under the flag's name is never followed (it could point into the
    results volume, which holds every student's results); a planted link stalls only the
    student's own pod."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o660))
    except OSError:
        pass


# The runner container's PID 1. Whatever ends the runner (an import error included) tells the
# kernel container to end too, so a broken runner fails its pod at once instead of leaving the
# kernel waiting until the Job's deadline. It carries raise_flag's own source: it must work when
# nothing of torchclass imports.
RUNNER_MAIN = f"""\
import os, sys
{inspect.getsource(raise_flag)}
try:
    from torchclass_grading.k8s_job import main
    code = main(sys.argv[1:])
finally:
    raise_flag(os.path.join({KERNEL_DIR!r}, "done"))
sys.exit(code)
"""


class JobError(ValueError):
    pass


@dataclass(frozen=True)
class Cluster:
    """What the Jobs take from the cluster they run on."""

    cpu_image: str
    cuda_image: str            # for an assignment that declares it needs a GPU
    cpu_pool: dict             # nodeSelector, tolerations
    gpu_pool: dict
    limits: dict               # the kernel container's {"cpu": ..., "memory": ...}
    datasets: dict             # the staged datasets' claimName and mountPath


# ---------------------------------------------------------------- building the manifests


def _code_key(path: str) -> str:
    """A runner file's key in the code ConfigMap (keys cannot hold a /)."""
    return path.replace("/", "--")


def _runner_file(path: str) -> Path:
    package, rel = path.split("/", 1)
    return package_dirs()[package] / rel


def needs_gpu(source_dir: Path) -> bool:
    """True when a source notebook's metadata says {"torchclass": {"gpu": true}}."""
    import nbformat

    wanted = False
    for path in sorted(source_dir.glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata.get("torchclass", {})
        if not isinstance(meta, dict):
            raise JobError(f"{path}: notebook metadata 'torchclass' must be a mapping, "
                           f"not {meta!r}")
        gpu = meta.get("gpu", False)
        if not isinstance(gpu, bool):
            raise JobError(f"{path}: notebook metadata torchclass.gpu must be true or false, "
                           f"not {gpu!r}")
        wanted = wanted or gpu
    return wanted


def dns_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 name from free text (student ids may hold '_' or capitals), kept unique by a
    digest of the original parts."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return f"{text[:limit - 9].rstrip('-')}-{digest}"


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("-._") or "x"


def build(course_dir, aid: str, cluster: Cluster, image: str | None = None,
          namespace: str | None = None, problems: list[str] | None = None) -> list[dict]:
    """Every object that grades `aid`'s submissions: a NetworkPolicy, the runner code's
    ConfigMap, then per submitted notebook its ConfigMap and Job. `image` replaces the
    cluster's for both containers."""
    from torchclass_grading.engine import Engine, Outcome

    eng = Engine(course_dir, aid, progress=None)
    gpu = needs_gpu(eng.source_dir)
    pool = cluster.gpu_pool if gpu else cluster.cpu_pool
    image = image or (cluster.cuda_image if gpu else cluster.cpu_image)
    kernel_resources = {"requests": dict(cluster.limits), "limits": dict(cluster.limits)}
    if gpu:
        kernel_resources["limits"]["nvidia.com/gpu"] = 1
    ns = {"namespace": namespace} if namespace else {}
    group = {"torchclass/assignment": _label(aid)}
    selector = {"app.kubernetes.io/component": "grading", **group}
    code_name = dns_name("tcgrade", aid, "runner")
    docs = [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": dns_name("tcgrade", aid, "no-network"), **ns,
                      "labels": {**LABEL_PART_OF, **selector}},
         # Both directions, no rule: nothing in, nothing out, not even DNS.
         "spec": {"podSelector": {"matchLabels": selector},
                  "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": code_name, **ns, "labels": {**LABEL_PART_OF, **selector}},
         "data": {_code_key(f): _runner_file(f).read_text() for f in RUNNER_FILES}},
    ]
    for student in eng.students():
        out = Outcome(student)
        for nb_name in eng.notebooks:
            text = eng.prepare(student, nb_name, out)
            if text is None:
                continue
            try:
                docs += _submission(eng, student, nb_name, text, image=image, pool=pool,
                                    resources=kernel_resources, ns=ns,
                                    datasets=cluster.datasets,
                                    labels={**LABEL_PART_OF, **selector}, code_name=code_name)
            except JobError as err:  # this notebook is not sent; the rest of the class is
                out.problems.append(f"{nb_name}: not graded: {err}")
        if problems is not None:
            problems += [f"{student}: {p}" for p in out.problems]
    return docs


def _submission(eng, student, nb_name, text, *, image, pool, resources, ns, datasets, labels,
                code_name) -> list[dict]:
    name = dns_name("tcgrade", eng.aid, student, nb_name)
    files = eng.files(student)
    job = {"cell_timeout": eng.cell_timeout, "notebook_timeout": eng.notebook_timeout,
           "max_output": eng.max_output, "torch": eng.torch,
           "files": [[f"f{i}", rel] for i, (_, rel) in enumerate(files)],
           "student": student, "notebook": nb_name}
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, **ns, "labels": labels},
        "data": {"notebook.ipynb": text, "job.json": json.dumps(job)},
    }
    if files:
        config_map["binaryData"] = {f"f{i}": base64.b64encode(Path(src).read_bytes()).decode()
                                    for i, (src, _) in enumerate(files)}
    size = len(json.dumps(config_map))
    if size > CONFIGMAP_MAX:
        raise JobError(f"{eng.course_dir}/submitted/{student}/{eng.aid}/{nb_name}.ipynb: the "
                       f"prepared notebook and its data files take {size} bytes, more than a "
                       f"ConfigMap holds ({CONFIGMAP_MAX}); clear large outputs or data files")
    lim = eng.limits
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsGroup": GID,
                  "seccompProfile": {"type": "RuntimeDefault"}}
    kernel_env = {k: v for k, v in eng.env.items() if k not in ("PATH", "PYTHONPATH")}
    kernel_env.update(HOME=KERNEL_DIR, TMPDIR=KERNEL_DIR, MPLCONFIGDIR=KERNEL_DIR)
    # The classroom's staged datasets, read-only, as students' servers see them.
    kernel_env["TORCHCLASS_DATA"] = datasets["mountPath"]
    kernel = {
        "name": "kernel", "image": image,
        "command": ["python", "-c", KERNEL_MAIN],
        "args": [str(lim.cpu_seconds), str(lim.file_bytes), str(lim.open_files)],
        "workingDir": KERNEL_DIR,
        "env": [{"name": k, "value": v} for k, v in sorted(kernel_env.items())],
        "securityContext": {**restricted, "runAsUser": KERNEL_UID},
        "resources": resources,
        "volumeMounts": [{"name": "kernel", "mountPath": KERNEL_DIR},
                         {"name": "kernel-tmp", "mountPath": "/tmp"},
                         {"name": "datasets", "mountPath": datasets["mountPath"],
                          "readOnly": True}],
    }
    runner = {
        "name": "runner", "image": image,
        "command": ["python", "-c", RUNNER_MAIN, "run", GRADING_DIR,
                    f"{RESULTS_DIR}/{eng.aid}/{student}"],
        "env": [{"name": "PYTHONPATH", "value": CODE_DIR},
                {"name": "HOME", "value": "/tmp"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
        "securityContext": {**restricted, "runAsUser": RUNNER_UID},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [{"name": "kernel", "mountPath": KERNEL_DIR},
                         {"name": "runner-tmp", "mountPath": "/tmp"},
                         {"name": "submission", "mountPath": GRADING_DIR, "readOnly": True},
                         {"name": "code", "mountPath": CODE_DIR, "readOnly": True},
                         {"name": "results", "mountPath": RESULTS_DIR}],
    }
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": GID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": pool.get("nodeSelector") or {},
        "tolerations": pool.get("tolerations") or [],
        "containers": [runner, kernel],
        "volumes": [
            {"name": "kernel", "emptyDir": {"sizeLimit": f"{max(lim.file_bytes * 4, 1 << 30)}"}},
            {"name": "kernel-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "runner-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "submission", "configMap": {"name": name}},
            # A ConfigMap's keys are flat: items put each file back at its package path.
            {"name": "code", "configMap": {"name": code_name, "items": [
                {"key": _code_key(f), "path": f} for f in RUNNER_FILES]}},
            {"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_CLAIM}},
            {"name": "datasets", "persistentVolumeClaim": {"claimName": datasets["claimName"],
                                                           "readOnly": True}},
        ],
    }
    job_obj = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, **ns, "labels": labels,
                     "annotations": {"torchclass/student": student,
                                     "torchclass/notebook": nb_name}},
        "spec": {
            "backoffLimit": 0,  # a rerun would grade the same code again: report, never retry
            # Kernel start (and an image pull) on top of the notebook's own time limit.
            "activeDeadlineSeconds": eng.notebook_timeout + 300,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    return [config_map, job_obj]


# ---------------------------------------------------------------- inside the pod (runner)


class PodSlot(KernelBackend):
    """The engine's KernelBackend for the runner container: the kernel is the other container,
    so `kernel_cmd` starts a stand-in that tells it to start and relays interrupts."""

    def launch(self, connection_file: str, scratch: Path, startup: list[str]) -> None:
        """Not forked: the engine starts the stand-in of `kernel_cmd`."""

    def new_scratch(self) -> Path:
        return Path(KERNEL_DIR)

    def give(self, path: Path) -> None:
        # The kernel's uid differs but its group is ours: group-readable files are enough; dirs
        # are group-writable (the kernel writes its signed results into .seal/).
        os.chmod(path, 0o770 if path.is_dir() else 0o640)

    def kernel_cmd(self, connection_file: str, scratch: Path, startup: list[str]) -> list[str]:
        # The engine's startup lines (seeds, the sentinel) reach the kernel container
        # in a file it reads before the kernel starts, before any student code runs.
        path = Path(KERNEL_DIR, "startup.json")
        path.write_text(json.dumps(startup))
        self.give(path)
        return [sys.executable, "-m", "torchclass_grading.k8s_job", "attach", connection_file]

    def kill_all(self) -> None:
        raise_flag(str(Path(KERNEL_DIR, "done")))

    def finish(self, scratch: Path) -> None:
        self.kill_all()


def attach(connection_file: str) -> int:
    """The kernel as jupyter_client sees it: alive while the kernel container's kernel runs;
    SIGINT becomes an interrupt_request on the control channel."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
    interrupts = []
    signal.signal(signal.SIGINT, lambda *_: interrupts.append(1))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    Path(KERNEL_DIR, "kernel.ready").touch()
    while not Path(KERNEL_DIR, "exited").exists():
        if interrupts:
            interrupts.clear()
            client.control_channel.send(client.session.msg("interrupt_request", {}))
        time.sleep(0.1)
    return 0


def run(grading_dir: str, out_dir: str) -> int:
    """Execute the prepared notebook with the engine's runner; write it and its notes."""
    from torchclass_grading.engine import execute

    src = Path(grading_dir)
    job = json.loads((src / "job.json").read_text())
    job["nb"] = (src / "notebook.ipynb").read_text()
    job["files"] = [(str(src / key), rel) for key, rel in job["files"]]
    result = execute(job, backend=PodSlot())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{job['notebook']}.ipynb").write_text(result.pop("nb"))
    (out / f"{job['notebook']}.json").write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------- back in the course (grader)


def record(course_dir, aid: str, results_dir) -> list:
    """Record the executed notebooks the Jobs left in RESULTS_DIR/<aid>/<student>/ with
    nbgrader's Autograde, as the engine does; a submission without results is reported."""
    from torchclass_grading.engine import Engine, Outcome, submission_stamp

    eng = Engine(course_dir, aid, progress=None)
    outcomes = []
    for student in eng.students():
        out = Outcome(student)
        executed = {}
        for nb_name in eng.notebooks:
            if eng.prepare(student, nb_name, out) is None:
                continue
            base = Path(results_dir) / aid / student / nb_name
            if not base.with_suffix(".ipynb").is_file():
                out.problems.append(f"{nb_name}: no result in {base.parent} (did its Job run?)")
                continue
            executed[nb_name] = base.with_suffix(".ipynb").read_text()
            notes = json.loads(base.with_suffix(".json").read_text())
            out.problems += [f"{nb_name}: {n}" for n in notes["notes"]]
            out.seconds += notes["seconds"]
        stamp = submission_stamp(eng.course_dir / "submitted" / student / aid)
        eng.finish(student, stamp, executed, out)
        outcomes.append(out)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["attach"]:
        return attach(argv[1])
    if argv[:1] == ["run"]:
        return run(argv[1], argv[2])
    if argv[:1] != ["record"]:
        # Building needs the cluster's values, which the k8s layer reads, not this one.
        print("error: build the Jobs with python -m torchclass_deploy.grading_jobs COURSE_DIR "
              "AID (k8s/ on PYTHONPATH); this module only records their results: "
              "record COURSE_DIR AID RESULTS_DIR", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(prog="torchclass_grading.k8s_job record",
                                 description="Record the grading Jobs' results in the gradebook.")
    ap.add_argument("course_dir")
    ap.add_argument("assignment")
    ap.add_argument("results_dir")
    args = ap.parse_args(argv[1:])
    for o in record(args.course_dir, args.assignment, args.results_dir):
        print(f"{o.student}: {o.status}, score {o.score}/{o.max_score}"
              + (": " + "; ".join(o.problems) if o.problems else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
