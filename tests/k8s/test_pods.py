"""Every profile's student pod, built by KubeSpawner from the hub's real profile list (values
+ the hub policy file), serialised as it would be sent, and validated against Kubernetes."""

import uuid

import pytest
import torch
from k8s_support import (
    SINGLEUSER_NOT_SPAWNER,
    SINGLEUSER_TRAITS,
    build_pod,
    exec_hub_policy,
    validate_strict,
    z2jh_spawner_config,
)
from torchclass_deploy import layers

pytestmark = pytest.mark.k8s

HANDLED_ELSEWHERE = {"image", "cpu", "memory", "extraEnv", "extraLabels", "storage"}
GPU_RESOURCES = {"gpu": "nvidia.com/gpu", "gpu-shared": "nvidia.com/gpu.shared",
                 "gpu-mig": "nvidia.com/mig-1g.10gb"}


# The hub builds pods with in-cluster credentials; offline, KubeSpawner only needs a client
# configuration to exist. Nothing is ever sent to this address.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: hub, user: {token: unused}}]
contexts: [{name: offline, context: {cluster: offline, user: hub}}]
current-context: offline
"""


@pytest.fixture
def hub(merged, tmp_path, monkeypatch):
    _, sub = merged
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    (tmp_path / "exchange").mkdir()
    sub["custom"]["torchclass"]["exchange"]["hubMountPath"] = str(tmp_path / "exchange")
    config = z2jh_spawner_config(sub)
    exec_hub_policy(config, sub)
    return config, sub, tmp_path / "exchange"


def pod_for(hub, slug):
    config, sub, root = hub
    name = f"s{uuid.uuid4().hex[:8]}"
    pod, _ = build_pod(config, name, slug)
    return pod, name, sub["custom"]["torchclass"], root


def container(pod):
    (notebook,) = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    return notebook


def test_every_singleuser_key_is_mapped():
    shipped = set(layers.load_values(site=None)["jupyterhub"]["singleuser"])
    unknown = shipped - set(SINGLEUSER_TRAITS) - SINGLEUSER_NOT_SPAWNER - HANDLED_ELSEWHERE
    assert not unknown, f"singleuser keys the pod tests would ignore: {sorted(unknown)}"


def test_profiles_offered(hub):
    config, _, _ = hub
    slugs = [p["slug"] for p in config.KubeSpawner.profile_list]
    assert slugs == ["cpu", "gpu-shared", "gpu-mig", "gpu"]
    assert [p["slug"] for p in config.KubeSpawner.profile_list if p.get("default")] == ["cpu"]


@pytest.mark.parametrize("slug", ["cpu", "gpu-shared", "gpu-mig", "gpu"])
def test_profile_pod(hub, slug):
    pod, name, _, root = pod_for(hub, slug)
    validate_strict(pod)
    nb = container(pod)
    limits = nb["resources"]["limits"]
    selector = pod["spec"].get("nodeSelector") or {}
    tolerations = pod["spec"].get("tolerations") or []
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    # The chart's toleration of its dedicated user nodes survives every profile.
    assert {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
            "effect": "NoSchedule"} in tolerations
    if slug == "cpu":
        assert not [k for k in limits if k.startswith("nvidia.com/")]
        assert nb["image"] == "registry.example.edu/torchclass/notebook:0.1.0"
        assert gpu_taint not in tolerations
        assert "nvidia.com/gpu.present" not in selector
    else:
        assert limits[GPU_RESOURCES[slug]] == "1"
        assert nb["image"] == "registry.example.edu/torchclass/notebook:0.1.0-cuda"
        assert selector["nvidia.com/gpu.present"] == "true"
        assert gpu_taint in tolerations
    assert limits["memory"] and limits["cpu"]
    assert nb["args"][0] == "start-notebook"  # the image's entry: lessons, then the server
    env = {e["name"]: e.get("value") for e in nb["env"]}
    assert env["TORCHCLASS_COURSES"] == "torchclass"
    assert env["NBGRADER_EXCHANGE"] == "/srv/nbgrader/exchange"
    assert env["TORCHCLASS_DATA"] == "/srv/torchclass/data"
    assert nb["resources"]["requests"]["memory"]

    # Non-root, no privilege escalation, no privileged init container.
    assert nb["securityContext"]["runAsUser"] == 1000
    assert nb["securityContext"]["allowPrivilegeEscalation"] is False
    assert nb["securityContext"]["runAsNonRoot"] is True
    assert nb["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert nb["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not nb["securityContext"].get("privileged")
    assert pod["spec"]["securityContext"]["fsGroup"] == 100
    assert not pod["spec"].get("initContainers")
    assert pod["spec"]["automountServiceAccountToken"] is False  # no Kubernetes API credentials

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = nb["volumeMounts"]
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in mounts
    assert volumes["datasets"]["persistentVolumeClaim"] == {
        "claimName": "torchclass-datasets", "readOnly": True}
    (data_mount,) = [m for m in mounts if m["name"] == "datasets"]
    assert data_mount["readOnly"] is True and data_mount["mountPath"] == "/srv/torchclass/data"

    # The exchange: only this student's folders, releases and feedback read-only.
    exchange = {m["mountPath"]: m for m in mounts if m["name"] == "exchange"}
    base = "/srv/nbgrader/exchange/torchclass"
    assert exchange[f"{base}/outbound"]["readOnly"] is True
    assert exchange[f"{base}/inbound"]["subPath"] == f"torchclass/students/{name}/inbound"
    assert not exchange[f"{base}/inbound"].get("readOnly")
    assert exchange[f"{base}/feedback"]["subPath"] == f"torchclass/students/{name}/feedback"
    assert exchange[f"{base}/feedback"]["readOnly"] is True
    assert all(m["subPath"].startswith(("torchclass/outbound", f"torchclass/students/{name}/"))
               for m in exchange.values())
    # ...which the hub created beforehand, so the kubelet does not make them root-owned.
    assert (root / f"torchclass/students/{name}/inbound").is_dir()


def test_shared_gpu_caps_cuda_memory(hub):
    pod, _, tc, _ = pod_for(hub, "gpu-shared")
    env = {e["name"]: e.get("value") for e in container(pod)["env"]}
    setting = env["PYTORCH_CUDA_ALLOC_CONF"]
    assert setting == f"per_process_memory_fraction:{1 / tc['gpuSharing']['replicas']:.4f}"
    # torch's own allocator-config parser accepts it (it rejects a bad fraction).
    torch._C._accelerator_setAllocatorSettings(setting)
    try:
        with pytest.raises(ValueError, match="per_process_memory_fraction"):
            torch._C._accelerator_setAllocatorSettings("per_process_memory_fraction:2")
    finally:
        torch._C._accelerator_setAllocatorSettings("per_process_memory_fraction:1.0")
    for slug in ("gpu", "gpu-mig", "cpu"):
        other = {e["name"] for e in container(pod_for(hub, slug)[0])["env"]}
        assert "PYTORCH_CUDA_ALLOC_CONF" not in other


def test_spawn_refused_without_the_hub_exchange_mount(hub):
    config, _, root = hub
    root.rmdir()
    with pytest.raises(RuntimeError, match="exchange volume is not mounted in the hub"):
        build_pod(config, "ana", "cpu")


def test_unsafe_username_is_refused(hub):
    config, _, _ = hub
    with pytest.raises(ValueError, match="cannot name an exchange folder"):
        build_pod(config, "../other", "cpu")


def test_course_groups_and_formgrader_access(hub):
    config, _, _ = hub
    groups = config.JupyterHub.load_groups
    assert set(groups) >= {"nbgrader-torchclass", "formgrade-torchclass"}
    (role,) = [r for r in config.JupyterHub.load_roles if r["name"] == "formgrader-torchclass-users"]
    assert role["groups"] == ["formgrade-torchclass"]
    assert "access:services!service=formgrader-torchclass" in role["scopes"]
    assert "read:users:groups!user" in config.KubeSpawner.server_token_scopes


def test_groups_left_to_an_authenticator_that_manages_them(merged):
    from traitlets.config import Config

    _, sub = merged
    config = Config()
    config.GenericOAuthenticator.manage_groups = True
    exec_hub_policy(config, sub)
    assert "load_groups" not in config.JupyterHub
    assert [r["name"] for r in config.JupyterHub.load_roles] == ["formgrader-torchclass-users"]
