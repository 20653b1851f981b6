"""Every object the wrapper chart adds to z2jh, rendered from the layered values and validated
strictly against the Kubernetes versions the chart supports."""

import copy

import pytest
import yaml
from k8s_support import REPO, run_module, validate_strict
from torchclass_deploy import layers, render

pytestmark = pytest.mark.k8s

SITE = REPO / "k8s/values/site.example.yaml"


@pytest.fixture(scope="module")
def docs():
    return render.render(layers.load_values(site=SITE))


def by_kind(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert found, f"no {kind} {name or ''} rendered"
    return found


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def test_every_object_is_valid(docs):
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "DaemonSet", "Deployment", "Job", "NetworkPolicy",
                     "PersistentVolumeClaim", "PriorityClass", "Service"]
    for doc in docs:
        validate_strict(doc)
    # Strict mode has teeth: an unknown field is an error.
    (job,) = by_kind(docs, "Job")
    typo = copy.deepcopy(job)
    typo["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(AssertionError, match="restartPolicyy"):
        validate_strict(typo)


def test_workloads_run_unprivileged(docs):
    for doc in docs:
        if "template" not in doc.get("spec", {}):
            continue
        spec = pod_spec(doc)
        assert spec["automountServiceAccountToken"] is False, doc["metadata"]["name"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            ctx = c["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, c["name"]
            assert ctx["allowPrivilegeEscalation"] is False, c["name"]
            assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]


def test_time_slicing_config(docs):
    (cm,) = by_kind(docs, "ConfigMap", "torchclass-device-plugin")
    assert cm["metadata"]["namespace"] == "gpu-operator"
    shared = yaml.safe_load(cm["data"]["torchclass-shared"])
    slicing = shared["sharing"]["timeSlicing"]
    assert slicing["renameByDefault"] is True  # advertised as nvidia.com/gpu.shared
    assert slicing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert "sharing" not in yaml.safe_load(cm["data"]["torchclass-whole"])
    assert yaml.safe_load(cm["data"]["torchclass-mig"])["flags"]["migStrategy"] == "mixed"


def test_no_gpu_objects_without_the_gpu_layer():
    docs = render.render(layers.load_values(gpu=False))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ConfigMap", "torchclass-device-plugin") not in kinds
    assert not [k for k in kinds if k[0] in ("DaemonSet", "PriorityClass")]
    assert ("Deployment", "formgrader-torchclass") in kinds
    for doc in docs:
        validate_strict(doc)


def test_replicas_follow_the_values(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {custom: {torchclass: {gpuSharing: {replicas: 8}}}}\n")
    (cm,) = by_kind(render.render(layers.load_values(site=site)), "ConfigMap",
                    "torchclass-device-plugin")
    shared = yaml.safe_load(cm["data"]["torchclass-shared"])
    assert shared["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 8


def test_volumes_and_data_job(docs, tmp_path):
    claims = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolumeClaim")}
    for name in ("torchclass-exchange", "torchclass-datasets"):
        assert claims[name]["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claims[name]["spec"]["storageClassName"] == "nfs-client"
        assert claims[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (job,) = by_kind(docs, "Job")
    assert job["metadata"]["name"].startswith("torchclass-data-")
    (stage,) = pod_spec(job)["containers"]
    assert stage["command"][:3] == ["python", "-m", "torchclass_course.stage"]
    assert stage["command"][-1] == "/srv/torchclass/data"
    assert stage["image"] == "registry.example.edu/torchclass/notebook:0.1.0"
    # A changed spec (a new image) gets a new name, as a Job's template is immutable.
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {custom: {torchclass: {images: {cpu: {tag: '0.2.0'}}}}}\n")
    (newer,) = by_kind(render.render(layers.load_values(site=site)), "Job")
    assert newer["metadata"]["name"] != job["metadata"]["name"]
    # The Job is the only writer of the datasets volume.
    assert [v["persistentVolumeClaim"] for v in pod_spec(job)["volumes"]] == [
        {"claimName": "torchclass-datasets"}]


def test_single_node_host_path(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {custom: {torchclass: {singleNodeHostPath: /srv/torchclass}}}\n")
    docs = render.render(layers.load_values(site=site))
    volumes = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolume")}
    assert volumes["torchclass-exchange"]["spec"]["hostPath"]["path"] == "/srv/torchclass/exchange"
    assert volumes["torchclass-datasets"]["spec"]["hostPath"]["path"] == "/srv/torchclass/datasets"
    (claim,) = by_kind(docs, "PersistentVolumeClaim", "torchclass-exchange")
    assert claim["spec"]["volumeName"] == "torchclass-exchange"
    assert claim["spec"]["storageClassName"] == ""
    for doc in docs:
        if doc["kind"] in ("PersistentVolume", "PersistentVolumeClaim"):
            validate_strict(doc)


def test_formgrader_per_course(tmp_path):
    site = tmp_path / "site.yaml"
    services = {f"formgrader-{c}": {"url": f"http://formgrader-{c}:8888"}
                for c in ("deep1", "deep2")}
    site.write_text(yaml.safe_dump({"jupyterhub": {
        "custom": {"torchclass": {"courses": [
            {"id": "deep1", "instructors": ["ada"]}, {"id": "deep2", "instructors": ["bob"]}]}},
        "hub": {"services": {"formgrader-torchclass": None, **services}}}}))
    docs = render.render(layers.load_values(site=site))
    for cid in ("deep1", "deep2"):
        (dep,) = by_kind(docs, "Deployment", f"formgrader-{cid}")
        (box,) = pod_spec(dep)["containers"]
        env = {e["name"]: e for e in box["env"]}
        assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == f"/services/formgrader-{cid}/"
        assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "hub", "key": f"hub.services.formgrader-{cid}.apiToken"}
        (cm,) = by_kind(docs, "ConfigMap", f"formgrader-{cid}-config")
        assert f"course_id = '{cid}'" in cm["data"]["nbgrader_config.py"]
        assert "PerStudentCollect" in cm["data"]["nbgrader_config.py"]
        assert cm["data"]["torchclass_exchange.py"] == render.GRADER_EXCHANGE.read_text()
        by_kind(docs, "Service", f"formgrader-{cid}")
        by_kind(docs, "PersistentVolumeClaim", f"course-{cid}")
        for doc in docs:
            if doc["metadata"]["name"].endswith(cid):
                validate_strict(doc)


def test_course_without_service_is_refused(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {custom: {torchclass: {courses: [{id: deep3}]}}}\n")
    with pytest.raises(layers.ValuesError, match=r"formgrader-deep3.*formgrader-torchclass"):
        render.render(layers.load_values(site=site))


def test_network_policies(docs):
    (fg,) = by_kind(docs, "NetworkPolicy", "formgrader-torchclass")
    (rule,) = fg["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app": "jupyterhub", "component": "proxy"}}}]
    (data,) = by_kind(docs, "NetworkPolicy", "torchclass-data")
    assert data["spec"]["ingress"] == []
    blocked = data["spec"]["egress"][1]["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in blocked and "10.0.0.0/8" in blocked


def test_gpu_pool_objects(docs):
    (puller,) = by_kind(docs, "DaemonSet", "torchclass-cuda-image-puller")
    spec = pod_spec(puller)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["initContainers"][0]["image"].endswith("torchclass/notebook:0.1.0-cuda")
    (ph,) = by_kind(docs, "Deployment", "torchclass-gpu-placeholder")
    assert ph["spec"]["replicas"] == 1
    resources = pod_spec(ph)["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": 1}
    # It holds a whole-GPU student's seat: the GPU and that profile's CPU and memory.
    assert resources["requests"] == {"cpu": 6, "memory": "48G", "nvidia.com/gpu": 1}
    assert pod_spec(ph)["priorityClassName"] == "torchclass-gpu-placeholder"
    (prio,) = by_kind(docs, "PriorityClass")
    assert prio["value"] < 0


def test_generated_template_is_what_helm_gets(tmp_path):
    out = tmp_path / "torchclass.generated.yaml"
    proc = run_module("torchclass_deploy.render", "manifests", "--site", SITE, "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "{{" not in text  # Helm would evaluate it as a template
    assert list(yaml.safe_load_all(text)) == render.render(layers.load_values(site=SITE))
