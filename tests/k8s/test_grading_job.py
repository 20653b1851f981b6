"""The grading engine's Kubernetes Job backend (grading/torchclass_grading/k8s_job.py), built
for the chart's values by torchclass_deploy.grading_jobs.

No cluster can run here, so this backend has NEVER run on a live cluster. What is checked:
every object validated strictly against the Kubernetes versions the other k8s tests use; GPU
requested only when the assignment declares it; pods non-root, without a token, without
network; and the two programs each pod runs, run for real in two containers of the notebook
image wired as the pod wires them (same commands, users, mounts, no network), grading the toy
family to its exact scores.
"""

import base64
import concurrent.futures as cf
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
import yaml
from k8s_support import REPO, run_module, validate_strict
from torchclass_deploy import grading_jobs, layers, render

sys.path.insert(0, str(REPO / "tests" / "grading"))
import families
from torchclass_grading import docker_backend, k8s_job
from toy_assignment import write_toy_assignment

pytestmark = pytest.mark.k8s

VALUES = layers.load_values()
TC = layers.torchclass_settings(VALUES)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k8s-grading")
    family = families.load_family(write_toy_assignment(tmp))
    course = tmp / "course"
    families.build_family(family, course)
    return family, course


@pytest.fixture(scope="module")
def docs(toy):
    family, course = toy
    return grading_jobs.build(course, family.assignment_id)


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def gpu_course(toy, tmp_path, value):
    """A copy of the toy course whose source notebook declares torchclass.gpu = value."""
    family, course = toy
    copy_dir = tmp_path / "course"
    shutil.copytree(course, copy_dir)
    source = copy_dir / "source" / family.assignment_id / f"{family.assignment_id}.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.metadata["torchclass"] = {"gpu": value}
    nbformat.write(nb, source)
    return copy_dir, source


def test_every_object_is_strictly_valid(toy, docs):
    family, _ = toy
    counts = {k: len(kinds(docs, k)) for k in ("NetworkPolicy", "ConfigMap", "Job")}
    members = len(family.members)
    assert counts == {"NetworkPolicy": 1, "ConfigMap": 1 + members, "Job": members}
    assert len(docs) == sum(counts.values())
    for doc in docs:
        validate_strict(doc)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names)
    for job in kinds(docs, "Job"):
        assert len(job["metadata"]["name"]) <= 63
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["activeDeadlineSeconds"] > 0
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
    # Strict validation has teeth here too.
    typo = copy.deepcopy(kinds(docs, "Job")[0])
    typo["spec"]["template"]["spec"]["containers"][1]["securityContxt"] = {}
    with pytest.raises(AssertionError, match="securityContxt"):
        validate_strict(typo)


def test_pods_are_unprivileged_tokenless_and_offline(docs):
    (policy,) = kinds(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec["egress"] == [] and spec["ingress"] == []
    selector = spec["podSelector"]["matchLabels"]
    configmaps = {d["metadata"]["name"]: d for d in kinds(docs, "ConfigMap")}
    for job in kinds(docs, "Job"):
        pod = job["spec"]["template"]
        assert selector.items() <= pod["metadata"]["labels"].items(), "policy misses a pod"
        ps = pod["spec"]
        assert ps["automountServiceAccountToken"] is False
        assert ps["securityContext"]["runAsNonRoot"] is True
        assert "shareProcessNamespace" not in ps and "hostNetwork" not in ps
        uids = set()
        for c in ps["containers"]:
            ctx = c["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, c["name"]
            assert ctx["allowPrivilegeEscalation"] is False, c["name"]
            assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert ctx["readOnlyRootFilesystem"] is True, c["name"]
            uids.add(ctx["runAsUser"])
        assert len(uids) == 2, "kernel and runner must not share a uid"
        kernel = next(c for c in ps["containers"] if c["name"] == "kernel")
        # The student's code sees only the shared scratch, its own /tmp and the datasets
        # (read-only): not the prepared notebook (hidden tests), the runner's code, the results.
        mounts = {m["name"]: m for m in kernel["volumeMounts"]}
        assert set(mounts) == {"kernel", "kernel-tmp", "datasets"}
        assert mounts["datasets"]["readOnly"] is True
        volumes = {v["name"]: v for v in ps["volumes"]}
        assert volumes["datasets"]["persistentVolumeClaim"]["readOnly"] is True
        assert volumes["submission"]["configMap"]["name"] == job["metadata"]["name"]
        own = configmaps[job["metadata"]["name"]]
        student = job["metadata"]["annotations"]["torchclass/student"]
        assert json.loads(own["data"]["job.json"])["student"] == student


def test_no_gpu_unless_declared(docs):
    for job in kinds(docs, "Job"):
        ps = job["spec"]["template"]["spec"]
        assert "nvidia.com" not in json.dumps([c["resources"] for c in ps["containers"]])
        assert ps["nodeSelector"] == (TC["cpuPool"].get("nodeSelector") or {})
        assert ps["tolerations"] == (TC["cpuPool"].get("tolerations") or [])
        assert {c["image"] for c in ps["containers"]} == {render.image_ref(TC["images"]["cpu"])}


def test_gpu_requested_when_the_notebook_declares_it(toy, tmp_path):
    family, _ = toy
    course, _ = gpu_course(toy, tmp_path, True)
    docs = grading_jobs.build(course, family.assignment_id)
    for doc in docs:
        validate_strict(doc)
    for job in kinds(docs, "Job"):
        ps = job["spec"]["template"]["spec"]
        by_name = {c["name"]: c for c in ps["containers"]}
        assert by_name["kernel"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert "nvidia.com/gpu" not in json.dumps(by_name["runner"]["resources"])
        assert ps["nodeSelector"] == TC["gpuPool"]["nodeSelector"] != {}
        assert ps["tolerations"] == TC["gpuPool"]["tolerations"] != []
        assert by_name["kernel"]["image"] == render.image_ref(TC["images"]["cuda"])


def test_a_bad_gpu_declaration_names_the_file(toy, tmp_path):
    family, _ = toy
    course, source = gpu_course(toy, tmp_path, "yes")
    with pytest.raises(k8s_job.JobError, match=f"{source}.*torchclass.gpu must be true or false"):
        grading_jobs.build(course, family.assignment_id)


def test_limits_come_from_the_classroom_file(toy, tmp_path):
    family, course = toy
    room = yaml.safe_load((REPO / "hub" / "classroom.yaml").read_text())
    room.setdefault("spawner", {}).update(mem_limit="3G", cpu_limit=2)
    path = tmp_path / "classroom.yaml"
    path.write_text(yaml.safe_dump(room))
    docs = grading_jobs.build(course, family.assignment_id, classroom=str(path))
    for job in kinds(docs, "Job"):
        (kernel,) = [c for c in job["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "kernel"]
        assert kernel["resources"]["limits"] == {"cpu": "2", "memory": "3G"}


def test_the_command_line_prints_the_manifests(toy):
    family, course = toy
    out = run_module("torchclass_deploy.grading_jobs", course, family.assignment_id,
                     "--image", "example.org/nb:1", "--namespace", "grading")
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert len(kinds(docs, "Job")) == len(family.members)
    assert {d["metadata"]["namespace"] for d in docs} == {"grading"}
    images = {c["image"] for j in kinds(docs, "Job") for c in j["spec"]["template"]["spec"]["containers"]}
    assert images == {"example.org/nb:1"}
    bad = run_module("torchclass_deploy.grading_jobs", course, "no-such-assignment")
    assert bad.returncode == 2 and "no-such-assignment" in bad.stderr
    # The grading layer cannot read the chart's values, so building is not its command.
    old = run_module("torchclass_grading.k8s_job", course, family.assignment_id)
    assert old.returncode == 2 and "torchclass_deploy.grading_jobs" in old.stderr


# ------------------------------------------------ the pod's two programs, in two containers


def _docker(*args, check=True, timeout=120):
    result = subprocess.run([docker_backend.docker_command(), *args], capture_output=True,
                            text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}...: {result.stdout}\n{result.stderr}")
    return result


def _notebook_image():
    if not shutil.which(docker_backend.docker_command()):
        pytest.skip("no docker client (Debian docker.io): run 'sudo make provision'")
    if _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine answers: run 'sudo make provision' (it starts one)")
    images_tests = REPO / "tests" / "images"
    sys.path.insert(0, str(images_tests))
    spec = importlib.util.spec_from_file_location("images_conftest", images_tests / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._build("build-cpu", docker_backend.default_image())


def _volume_dirs(pod: dict, configmaps: dict, results: Path, root: Path) -> dict[str, Path]:
    """Host folders standing in for the pod's volumes, with the permissions Kubernetes gives."""
    gid = pod["securityContext"]["fsGroup"]
    dirs = {}
    for vol in pod["volumes"]:
        d = root / vol["name"]
        d.mkdir()
        if "emptyDir" in vol:
            os.chown(d, 0, gid)
            os.chmod(d, 0o2777)  # emptyDir: world-writable, fsGroup-owned, setgid
        elif "configMap" in vol:
            cm = configmaps[vol["configMap"]["name"]]
            # Kubernetes puts each key at its item's path when the volume lists items.
            paths = {i["key"]: i["path"] for i in vol["configMap"].get("items", [])}
            for key, text in cm.get("data", {}).items():
                (d / paths.get(key, key)).parent.mkdir(parents=True, exist_ok=True)
                (d / paths.get(key, key)).write_text(text)
            for key, b64 in cm.get("binaryData", {}).items():
                (d / paths.get(key, key)).write_bytes(base64.b64decode(b64))
            os.chmod(d, 0o755)
        elif vol["name"] == "results":
            d = results
        dirs[vol["name"]] = d  # datasets: an empty folder (the offline sources stand in)
    return dirs


def _container_args(c: dict, dirs: dict[str, Path], name: str) -> list[str]:
    ctx = c["securityContext"]
    args = ["run", "--name", name, "--network", "none", "--log-driver", "none",
            "--no-healthcheck", "--user", f"{ctx['runAsUser']}:{ctx['runAsGroup']}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            f"--memory={c['resources']['limits']['memory']}".replace("Mi", "m").replace("G", "g"),
            "--entrypoint", c["command"][0]]
    if ctx.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if c.get("workingDir"):
        args += ["-w", c["workingDir"]]
    for e in c.get("env", []):
        args += ["-e", f"{e['name']}={e['value']}"]
    for m in c["volumeMounts"]:
        args += ["-v", f"{dirs[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    return args


def _run_pod(job: dict, configmaps: dict, image: str, results: Path, root: Path) -> str:
    """Run a Job's pod as two containers of the image; return both containers' logs on error."""
    pod = job["spec"]["template"]["spec"]
    root.mkdir()
    dirs = _volume_dirs(pod, configmaps, results, root)
    by_name = {c["name"]: c for c in pod["containers"]}
    names = {n: f"tc-test-k8sjob-{n}-{uuid.uuid4().hex[:10]}" for n in by_name}
    try:
        kernel = by_name["kernel"]
        _docker(*_container_args(kernel, dirs, names["kernel"]), "-d", image,
                *kernel["command"][1:], *kernel["args"])
        runner = by_name["runner"]
        ran = _docker(*_container_args(runner, dirs, names["runner"]), image,
                      *runner["command"][1:], check=False, timeout=300)
        try:
            kernel_exit = _docker("wait", names["kernel"], check=False, timeout=60).stdout.strip()
        except subprocess.TimeoutExpired:
            kernel_exit = "none: still running 60 s after the runner ended"
        if ran.returncode != 0 or kernel_exit != "0":
            return (f"runner exit {ran.returncode}:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}\n"
                    f"kernel exit {kernel_exit}")
        return ""
    finally:
        _docker("rm", "-f", *names.values(), check=False)


@pytest.mark.docker
def test_the_pods_programs_grade_the_family_exactly(toy, tmp_path):
    """Each Job's runner and kernel, as two containers sharing the kernel emptyDir: the
    executed notebooks go back through `record` into the gradebook with exact scores."""
    if os.geteuid() != 0:
        pytest.skip("giving the stand-in volumes the owners Kubernetes gives them needs root")
    image = _notebook_image()
    family, course = toy
    course_copy = tmp_path / "course"
    shutil.copytree(course, course_copy)
    aid = family.assignment_id
    docs = grading_jobs.build(course_copy, aid, image=image)
    configmaps = {d["metadata"]["name"]: d for d in kinds(docs, "ConfigMap")}
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, k8s_job.RUNNER_UID, k8s_job.GID)
    with cf.ThreadPoolExecutor(2) as pool:
        errors = list(pool.map(
            lambda j: _run_pod(j, configmaps, image, results, tmp_path / j["metadata"]["name"]),
            kinds(docs, "Job")))
    assert not any(errors), "\n".join(errors)
    outcomes = {o.student: o for o in k8s_job.record(course_copy, aid, results)}
    for o in outcomes.values():
        print(o)
    scores, _, _ = families.read_scores(family, course_copy)
    for name, member in family.members.items():
        assert scores[name].total == member.score, (name, outcomes[name])
        for cell, points in member.cells_scores.items():
            assert scores[name].cells[cell] == points, (name, cell)


@pytest.mark.docker
def test_a_runner_that_cannot_start_ends_its_kernel_too(toy, tmp_path):
    """A runner that dies on import (here: its code ConfigMap lacks a module) must end the
    kernel container at once, or the pod holds its node until the Job's deadline."""
    if os.geteuid() != 0:
        pytest.skip("giving the stand-in volumes the owners Kubernetes gives them needs root")
    image = _notebook_image()
    family, course = toy
    docs = grading_jobs.build(course, family.assignment_id, image=image)
    configmaps = {d["metadata"]["name"]: d for d in kinds(docs, "ConfigMap")}
    job = kinds(docs, "Job")[0]
    (code,) = [v["configMap"] for v in job["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "code"]
    broken = configmaps[code["name"]]["data"]
    del broken[k8s_job._code_key("torchclass_classroom/__init__.py")]
    code["items"] = [i for i in code["items"] if i["key"] in broken]
    results = tmp_path / "results"
    results.mkdir()
    error = _run_pod(job, configmaps, image, results, tmp_path / "pod")
    assert "runner exit 1" in error and "torchclass_classroom" in error, error
    assert error.rstrip().endswith("kernel exit 0"), error


def test_the_runner_never_follows_a_link_planted_as_its_flag(tmp_path):
    """The student's code shares the kernel dir with the runner: a link named "done" pointing
    into the results volume must not make the runner create a file there. The runner's PID 1
    is run as the pod runs it, its code unimportable, so its last act is raising the flag."""
    kernel_dir, results = tmp_path / "kernel", tmp_path / "results"
    kernel_dir.mkdir()
    results.mkdir()
    victim = results / "other-student.json"
    (kernel_dir / "done").symlink_to(victim)
    main = k8s_job.RUNNER_MAIN.replace(repr(k8s_job.KERNEL_DIR), repr(str(kernel_dir)))
    ran = subprocess.run([sys.executable, "-I", "-c", main, "run", "x", "y"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and "torchclass_grading" in ran.stderr, ran.stderr
    assert not victim.exists(), "the runner followed the planted link"
    # The in-process flag (PodSlot.kill_all) refuses the link as well.
    k8s_job.raise_flag(str(kernel_dir / "done"))
    assert not victim.exists()
    (kernel_dir / "done").unlink()
    k8s_job.raise_flag(str(kernel_dir / "done"))
    assert (kernel_dir / "done").is_file()


def test_an_oversized_submission_is_a_named_problem_and_the_rest_are_sent(toy, tmp_path):
    """A data file too large for a ConfigMap stops only its own student's Job."""
    family, course = toy
    copy_dir = tmp_path / "course"
    shutil.copytree(course, copy_dir)
    aid = family.assignment_id
    big = copy_dir / "submitted" / "solution" / aid / "weights.bin"
    big.write_bytes(os.urandom(k8s_job.CONFIGMAP_MAX + 1024))
    problems = []
    docs = grading_jobs.build(copy_dir, aid, problems=problems)
    students = {j["metadata"]["annotations"]["torchclass/student"] for j in kinds(docs, "Job")}
    assert "solution" not in students and students == set(family.members) - {"solution"}
    assert any(p.startswith("solution: ") and "more than a ConfigMap holds" in p
               for p in problems), problems
