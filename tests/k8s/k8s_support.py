"""Helpers for the offline Kubernetes tests: the layered values, the chart's reference data,
strict validation, and the hub's KubeSpawner configuration built the way z2jh 4.4.0's hub does.
(A uniquely named module: `conftest` is ambiguous when every test area has one.)"""

import asyncio
import copy
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import yaml
from torchclass_deploy import chart_data, layers

REPO = Path(__file__).resolve().parents[2]
# The oldest Kubernetes z2jh 4.4.0 supports, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.28.0", None]


def run_module(module, *args, timeout=120):
    """`python -m module args` as make runs it: the checkout's packages on PYTHONPATH, whatever
    the environment pytest was started from."""
    path = os.pathsep.join(str(REPO / p) for p in ("hub", "grading", "course", "k8s"))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": path})


def reference_file(name):
    """A file of the pinned jupyterhub chart's data (k8s/chart/upstream/), checked against its
    checksum first: values validated against a hand-edited schema would prove nothing."""
    try:
        return chart_data.verify() / name
    except chart_data.ChartDataError as e:
        raise AssertionError(str(e)) from None


def z2jh_defaults():
    return yaml.safe_load(reference_file("values.defaults.yaml").read_text())


def free_port():
    """tests/conftest.py's free_port, loaded by path for the same reason."""
    spec = importlib.util.spec_from_file_location("torchclass_tests_root", REPO / "tests/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.free_port()


def kube_versions():
    import kubernetes_validate.utils as kv

    return [v or kv.latest_version() for v in KUBE_VERSIONS]


def validate_strict(obj):
    """Validate one object against every supported Kubernetes version, strictly (unknown fields
    are errors). Returns the versions checked."""
    import kubernetes_validate

    versions = kube_versions()
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            name = obj.get("metadata", {}).get("name")
            raise AssertionError(f"{obj['kind']} {name} is invalid for Kubernetes {version}: "
                                 f"{err}") from None
    return versions


# z2jh's jupyterhub_config.py turns these singleuser values into KubeSpawner traits (the subset
# torchclass sets). A singleuser key the project sets that is missing here fails
# test_every_singleuser_key_is_mapped, so the pods below never silently ignore a value.
SINGLEUSER_TRAITS = {
    "uid": "uid", "fsGid": "fs_gid", "allowPrivilegeEscalation": "allow_privilege_escalation",
    "startTimeout": "start_timeout", "profileList": "profile_list", "cmd": "cmd",
    "nodeSelector": "node_selector", "extraEnv": "environment", "extraLabels": "extra_labels",
}
# Keys consumed elsewhere in the chart (templates, NetworkPolicies), or by the mapping below.
SINGLEUSER_NOT_SPAWNER = {"networkPolicy", "cloudMetadata", "extraFiles", "extraTolerations"}


def z2jh_spawner_config(sub):
    """KubeSpawner config as z2jh 4.4.0's hub builds it from the subchart's values (its
    jupyterhub_config.py, for the keys torchclass sets), including its data shapes: volumes
    and volume mounts are dicts, which the hub policy must extend correctly."""
    from traitlets.config import Config

    su = sub["singleuser"]
    c = Config()
    ks = c.KubeSpawner
    for key, trait in SINGLEUSER_TRAITS.items():
        if su.get(key) not in (None, {}, []):
            setattr(ks, trait, copy.deepcopy(su[key]))
    ks.image = f"{su['image']['name']}:{su['image']['tag']}"
    ks.cpu_limit, ks.cpu_guarantee = su["cpu"]["limit"], su["cpu"]["guarantee"]
    ks.mem_limit, ks.mem_guarantee = su["memory"]["limit"], su["memory"]["guarantee"]
    # The chart's own tolerations for user pods come first, then singleuser.extraTolerations.
    ks.tolerations = (sub["scheduling"]["userPods"]["tolerations"]
                      + list(su.get("extraTolerations") or []))
    if sub["scheduling"]["userPods"]["nodeAffinity"]["matchNodePurpose"] == "prefer":
        ks.node_affinity_preferred = [{"weight": 100, "preference": {"matchExpressions": [
            {"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]}}]
    if sub["scheduling"]["userScheduler"]["enabled"]:
        ks.scheduler_name = "user-scheduler"
    storage = su["storage"]
    home = storage["dynamic"]["volumeNameTemplate"]
    volumes = {home: {"name": home, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    mounts = {home: {"name": home, "mountPath": storage["homeMountPath"]}}
    if su.get("extraFiles"):
        volumes["files"] = {"name": "files", "secret": {
            "secretName": "singleuser",
            "items": [{"key": key, "path": key} for key in su["extraFiles"]]}}
        for i, (key, spec) in enumerate(su["extraFiles"].items()):
            mounts[f"{i}-files"] = {"name": "files", "mountPath": spec["mountPath"],
                                    "subPath": key}
    for volume in storage.get("extraVolumes") or []:
        volumes[volume["name"]] = copy.deepcopy(volume)
    for i, mount in enumerate(storage.get("extraVolumeMounts") or []):
        mounts[f"{i}-{mount['name']}"] = copy.deepcopy(mount)
    ks.volumes, ks.volume_mounts = volumes, mounts
    ks.storage_pvc_ensure = True
    ks.storage_capacity = storage["capacity"]
    c.JupyterHub.load_roles = []
    return c


def exec_hub_policy(config, sub):
    """Run files/hub/torchclass_k8s.py as the chart does: exec'd with its `c`, importing the
    chart's z2jh.get_config (here answered from the same subchart values)."""
    def get_config(key, default=None):
        node = sub
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    shim = types.ModuleType("z2jh")
    shim.get_config = get_config
    saved = sys.modules.get("z2jh")
    sys.modules["z2jh"] = shim
    try:
        namespace = {"c": config, "__name__": "torchclass_k8s"}
        path = REPO / "k8s/files/hub/torchclass_k8s.py"
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - as z2jh does
    finally:
        if saved is None:
            sys.modules.pop("z2jh", None)
        else:
            sys.modules["z2jh"] = saved
    return namespace


class Student:
    """The hub's user object as KubeSpawner reads it."""

    def __init__(self, name):
        self.name, self.id, self.url = name, 7, f"/user/{name}/"


def build_pod(config, username, profile_slug):
    """The pod KubeSpawner would create for `username` choosing `profile_slug`, serialised
    by the Kubernetes client exactly as it would be sent to the API server."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    async def make():
        spawner = KubeSpawner(_mock=True, user=Student(username), config=config)
        spawner.user_options = {"profile": profile_slug}
        # The hub's order: pre_spawn_hook, then start() loads the profile and builds the pod.
        spawner.pre_spawn_hook(spawner)
        await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(pod), spawner

    return asyncio.run(make())


def load_values_with_site():
    return layers.load_values(site=REPO / "k8s/values/site.example.yaml")
