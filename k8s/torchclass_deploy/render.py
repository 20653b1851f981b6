"""Render the objects the wrapper chart adds to z2jh, from the layered values (layers.py).

    python -m torchclass_deploy.render values    [--site FILE] [--no-gpu] [--classroom FILE]
    python -m torchclass_deploy.render manifests [--site FILE] [--no-gpu] [--classroom FILE]
                                                 [--out FILE]
    python -m torchclass_deploy.render classroom --classroom FILE [--out FILE]

`values` prints the merged values as YAML; `classroom` only the layer made from the classroom
file, for `helm -f` (make k8s-values, k8s-template and deploy run these, PYTHONPATH set).
`manifests` writes the chart's templates/torchclass.generated.yaml: the device plugin's
time-slicing ConfigMap, the exchange and dataset volumes, the data Job, one formgrader per
course, the CUDA image puller, GPU placeholders and the NetworkPolicies. All are plain objects
built from the same `jupyterhub.custom.torchclass` block the hub policy reads, so the tests
validate exactly what Helm will install.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torchclass_exchange
import yaml

from torchclass_deploy.layers import (
    ValuesError,
    classroom_values,
    load_values,
    torchclass_settings,
)

# torchclass's nbgrader classes and config writer (one file for every deployment).
GRADER_EXCHANGE = Path(torchclass_exchange.__file__)
LABEL_PART_OF = {"app.kubernetes.io/part-of": "torchclass"}


def cpu_pool_pod_spec(tc: dict) -> dict:
    """What every torchclass-run pod on the CPU pool shares (data Job, formgraders): non-root,
    no API credentials, the pool's placement."""
    return {
        "securityContext": {"fsGroup": 100, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "nodeSelector": tc["cpuPool"].get("nodeSelector") or {},
        "tolerations": tc["cpuPool"].get("tolerations") or [],
    }


def image_ref(image):
    return f"{image['name']}:{image['tag']}"


def meta(name, component, namespace=None, labels=None):
    out = {"name": name, "labels": {**LABEL_PART_OF, "app.kubernetes.io/component": component,
                                    **(labels or {})}}
    if namespace:
        out["namespace"] = namespace
    return out


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def device_plugin_config(tc):
    """NVIDIA device plugin configs; a node picks one with the label
    nvidia.com/device-plugin.config=<key> (GPU operator: devicePlugin.config.name)."""
    replicas = tc["gpuSharing"]["replicas"]
    whole = {"version": "v1", "flags": {"migStrategy": "none"}}
    shared = {
        "version": "v1", "flags": {"migStrategy": "none"},
        "sharing": {"timeSlicing": {
            # Renamed to nvidia.com/gpu.shared so a shared pod can never land on a whole GPU
            # (and a whole-GPU pod never on a shared one).
            "renameByDefault": True,
            "failRequestsGreaterThanOne": True,
            "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
        }},
    }
    mig = {"version": "v1", "flags": {"migStrategy": "mixed"}}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(tc["gpuSharing"]["configMapName"], "device-plugin-config",
                         tc["gpuSharing"]["devicePluginNamespace"]),
        "data": {
            "torchclass-whole": yaml.safe_dump(whole, sort_keys=False),
            "torchclass-shared": yaml.safe_dump(shared, sort_keys=False),
            "torchclass-mig": yaml.safe_dump(mig, sort_keys=False),
        },
    }


def rwx_claim(name, component, settings, host_path_root=None):
    """A ReadWriteMany claim; on a single node without an RWX storage class (k3s's local-path
    is ReadWriteOnce), a hostPath volume under host_path_root stands in for it."""
    spec = {"accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": settings["size"]}}}
    # Helm keeps the classroom's submissions and data on uninstall.
    keep = {"helm.sh/resource-policy": "keep"}
    docs = []
    if host_path_root:
        spec["storageClassName"] = ""
        spec["volumeName"] = name
        docs.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {**meta(name, component), "annotations": keep},
            "spec": {"accessModes": ["ReadWriteMany"],
                     "capacity": {"storage": settings["size"]},
                     "persistentVolumeReclaimPolicy": "Retain",
                     "storageClassName": "",
                     "hostPath": {"path": f"{host_path_root.rstrip('/')}/{component}",
                                  "type": "Directory"}},
        })
    elif settings.get("storageClass"):
        spec["storageClassName"] = settings["storageClass"]
    docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {**meta(name, component), "annotations": keep},
                 "spec": spec})
    return docs


def data_job(tc):
    """Stage the real datasets once into the shared volume (students mount it read-only).
    A Job's pod template cannot change in place, so its name carries a digest of the spec:
    an upgrade that changes it (a new image) replaces the Job instead of failing."""
    job = _data_job_spec(tc)
    digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:8]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": meta(f"torchclass-data-{digest}", "data"), "spec": job}


def _data_job_spec(tc):
    ds = tc["datasets"]
    return {
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {"labels": {**LABEL_PART_OF, "app.kubernetes.io/component": "data"}},
            "spec": {
                "restartPolicy": "OnFailure",
                **cpu_pool_pod_spec(tc),
                "containers": [{
                    "name": "stage",
                    "image": image_ref(tc["images"]["cpu"]),
                    "command": ["python", "-m", "torchclass_course.stage",
                                "--root", ds["mountPath"]],
                    "securityContext": RESTRICTED_CONTAINER,
                    "resources": {"requests": {"cpu": "500m", "memory": "2Gi"},
                                  "limits": {"memory": "4Gi"}},
                    "volumeMounts": [{"name": "datasets", "mountPath": ds["mountPath"]}],
                }],
                "volumes": [{"name": "datasets",
                             "persistentVolumeClaim": {"claimName": ds["claimName"]}}],
            },
        },
    }


def grader_config(tc, course):
    return torchclass_exchange.config_text(
        header="The grader's side of the exchange: it sees every student's folder.",
        deployment="kubernetes", role="instructor", hide_hidden_tests=True, sanitize_html=True, course_root=f"/home/jovyan/{course['id']}",
        course_id=course["id"], exchange_root=tc["exchange"]["mountPath"])


def formgrader(tc, course):
    """One formgrader per course: a hub service (hub.services.formgrader-<id>) run as its own
    Deployment with the course folder on its own volume and the whole exchange mounted."""
    cid = course["id"]
    name = f"formgrader-{cid}"
    labels = {"app.kubernetes.io/name": "torchclass-formgrader", "torchclass/course": cid,
              # z2jh's hub NetworkPolicy admits pods with this label to the hub API.
              "hub.jupyter.org/network-access-hub": "true"}
    prefix = f"/services/{name}/"
    env = {
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888" + prefix,
        "JUPYTERHUB_CLIENT_ID": f"service-{name}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:services!service={name}"]),
        "JUPYTERHUB_USER": f"grader-{cid}",
        # The image's switch for the formgrader extension and the instructor's Lab settings.
        "TORCHCLASS_ROLE": "instructor",
        "JUPYTER_CONFIG_PATH": "/etc/jupyter/instructor",
        # The image switches Autograde off (it would run students' code in this pod, beside
        # every submission) and names the sandboxed way instead.
        "TORCHCLASS_GRADE_COMMAND": "grading Jobs: python -m torchclass_deploy.grading_jobs "
                                    "COURSE_DIR {aid} > jobs.yaml, then kubectl apply "
                                    "(grading/README.md, Backends)",
        "PYTHONPATH": "/etc/torchclass/python",
        "TORCHCLASS_DATA": tc["datasets"]["mountPath"],
    }
    env_list = [{"name": k, "value": v} for k, v in env.items()]
    # The chart generates the service's token into its own Secret, named "hub".
    env_list.append({"name": "JUPYTERHUB_API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "hub", "key": f"hub.services.{name}.apiToken"}}})
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(f"{name}-config", "formgrader"),
        "data": {"nbgrader_config.py": grader_config(tc, course),
                 "torchclass_exchange.py": GRADER_EXCHANGE.read_text()},
    }
    claim = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {**meta(f"course-{cid}", "course"),
                     "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": course.get("courseStorage", "10Gi")}}},
    }
    pod_labels = {**LABEL_PART_OF, "app.kubernetes.io/component": "formgrader", **labels}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(name, "formgrader", labels=labels),
        "spec": {
            "replicas": 1,
            # One writer of the course's gradebook at a time.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": "torchclass-formgrader",
                                         "torchclass/course": cid}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    **cpu_pool_pod_spec(tc),
                    "containers": [{
                        "name": "formgrader",
                        "image": image_ref(tc["images"]["cpu"]),
                        "command": ["jupyterhub-singleuser", "--ip=0.0.0.0", "--port=8888",
                                    f"--ServerApp.root_dir=/home/jovyan/{cid}",
                                    "--ServerApp.default_url=/formgrader"],
                        "env": env_list,
                        "ports": [{"name": "http", "containerPort": 8888}],
                        "securityContext": RESTRICTED_CONTAINER,
                        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}},
                        "readinessProbe": {"tcpSocket": {"port": "http"},
                                           "periodSeconds": 10},
                        "volumeMounts": [
                            {"name": "course", "mountPath": "/home/jovyan"},
                            {"name": "exchange", "mountPath": tc["exchange"]["mountPath"]},
                            {"name": "datasets", "mountPath": tc["datasets"]["mountPath"],
                             "readOnly": True},
                            {"name": "config", "mountPath": "/etc/jupyter/nbgrader_config.py",
                             "subPath": "nbgrader_config.py", "readOnly": True},
                            {"name": "config",
                             "mountPath": "/etc/torchclass/python/torchclass_exchange.py",
                             "subPath": "torchclass_exchange.py", "readOnly": True},
                        ],
                    }],
                    "volumes": [
                        {"name": "course", "persistentVolumeClaim": {"claimName": f"course-{cid}"}},
                        {"name": "exchange", "persistentVolumeClaim": {
                            "claimName": tc["exchange"]["claimName"]}},
                        {"name": "datasets", "persistentVolumeClaim": {
                            "claimName": tc["datasets"]["claimName"], "readOnly": True}},
                        {"name": "config", "configMap": {"name": f"{name}-config"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(name, "formgrader", labels=labels),
        "spec": {"selector": {"app.kubernetes.io/name": "torchclass-formgrader",
                              "torchclass/course": cid},
                 "ports": [{"name": "http", "port": 8888, "targetPort": "http"}]},
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta(name, "formgrader"),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "torchclass-formgrader",
                                            "torchclass/course": cid}},
            "policyTypes": ["Ingress", "Egress"],
            # Only the proxy reaches the formgrader: never a student pod directly.
            "ingress": [{"from": [{"podSelector": {"matchLabels": {
                "app": "jupyterhub", "component": "proxy"}}}],
                "ports": [{"port": 8888, "protocol": "TCP"}]}],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "jupyterhub", "component": "hub"}}}],
                 "ports": [{"port": 8081, "protocol": "TCP"}]},
                DNS_EGRESS,
            ],
        },
    }
    return [config_map, claim, deployment, service, policy]


DNS_EGRESS = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def data_job_policy():
    """The data Job downloads from the internet, and reaches nothing inside the cluster."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta("torchclass-data", "data"),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "data",
                                            **LABEL_PART_OF}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [DNS_EGRESS, {"to": [{"ipBlock": {
                "cidr": "0.0.0.0/0",
                "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]}}]}],
        },
    }


PAUSE = {"name": "registry.k8s.io/pause", "tag": "3.10.1"}
PAUSE_CONTAINER = {
    "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def cuda_image_puller(tc):
    """Pull the CUDA image on GPU nodes only (the chart's puller stays on the CPU pool)."""
    labels = {**LABEL_PART_OF, "app.kubernetes.io/component": "cuda-image-puller"}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": meta("torchclass-cuda-image-puller", "cuda-image-puller"),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": tc["gpuPool"].get("nodeSelector") or {},
                    "tolerations": tc["gpuPool"].get("tolerations") or [],
                    "initContainers": [{
                        "name": "pull-cuda-image",
                        "image": image_ref(tc["images"]["cuda"]),
                        "command": ["/bin/sh", "-c", "echo pulled"],
                        # The CUDA image asks for every GPU by default; this pod needs none.
                        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}],
                        "securityContext": RESTRICTED_CONTAINER,
                        "resources": {"requests": {"cpu": "0", "memory": "0"}},
                    }],
                    "containers": [{
                        "name": "pause", "image": image_ref(PAUSE),
                        "securityContext": PAUSE_CONTAINER,
                        "resources": {"requests": {"cpu": "0", "memory": "0"}},
                    }],
                },
            },
        },
    }


def placeholder_requests(values, resource):
    """CPU and memory of the profile using `resource`, so a placeholder holds a whole seat."""
    for profile in values["jupyterhub"]["singleuser"].get("profileList") or []:
        override = profile.get("kubespawner_override", {})
        if resource in override.get("extra_resource_limits", {}):
            return {key: override[trait] for key, trait in
                    (("cpu", "cpu_guarantee"), ("memory", "mem_guarantee")) if trait in override}
    return {}


def gpu_placeholders(tc, values):
    """Pods that hold GPUs so the next GPU student starts at once; any student pod preempts
    them (lower priority), and the cluster autoscaler sees their demand and adds a node."""
    ph = tc["gpuPlaceholders"]
    requests = {**placeholder_requests(values, ph["resource"]), ph["resource"]: 1}
    labels = {**LABEL_PART_OF, "app.kubernetes.io/component": "gpu-placeholder"}
    priority = {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": meta("torchclass-gpu-placeholder", "gpu-placeholder"),
        "value": -10, "globalDefault": False, "preemptionPolicy": "Never",
        "description": "torchclass GPU placeholders: preempted by any student pod.",
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta("torchclass-gpu-placeholder", "gpu-placeholder"),
        "spec": {
            "replicas": ph["replicas"],
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "torchclass-gpu-placeholder",
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": tc["gpuPool"].get("nodeSelector") or {},
                    "tolerations": tc["gpuPool"].get("tolerations") or [],
                    "containers": [{
                        "name": "pause", "image": image_ref(PAUSE),
                        "securityContext": PAUSE_CONTAINER,
                        "resources": {"requests": requests, "limits": {ph["resource"]: 1}},
                    }],
                },
            },
        },
    }
    return [priority, deployment]


def check_courses(values):
    """Each course needs its hub service (the formgrader's token and route) and vice versa."""
    tc = torchclass_settings(values)
    courses = {f"formgrader-{c['id']}" for c in tc.get("courses", [])}
    services = {name for name, spec in values["jupyterhub"]["hub"].get("services", {}).items()
                if name.startswith("formgrader-") and spec is not None}
    if courses != services:
        raise ValuesError(
            "courses and formgrader services disagree: courses want "
            f"{sorted(courses)}, jupyterhub.hub.services has {sorted(services)}; add or remove "
            "hub.services.formgrader-<id> with the course (k8s/README.md, 'Adding a course')")


def render(values):
    check_courses(values)
    tc = torchclass_settings(values)
    host_root = tc.get("singleNodeHostPath")
    docs = rwx_claim(tc["exchange"]["claimName"], "exchange", tc["exchange"], host_root)
    docs += rwx_claim(tc["datasets"]["claimName"], "datasets", tc["datasets"], host_root)
    docs += [data_job(tc), data_job_policy()]
    if tc.get("gpu"):
        docs += [device_plugin_config(tc), cuda_image_puller(tc)]
        docs += gpu_placeholders(tc, values)
    for course in tc.get("courses", []):
        docs += formgrader(tc, course)
    return docs


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (embedded configs and code) as readable | blocks."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump_all(docs):
    # Helm treats every file under templates/ as a Go template; this output has no "{{".
    text = yaml.dump_all(docs, Dumper=_BlockDumper, sort_keys=False)
    if "{{" in text:
        raise ValueError("rendered manifests contain '{{', which Helm would try to evaluate")
    return "# Generated by torchclass_deploy.render from the layered values; do not edit.\n" + text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["values", "manifests", "classroom"],
                        help="classroom: only the layer made from --classroom")
    parser.add_argument("--site", help="the site's values file (layer 3)")
    parser.add_argument("--no-gpu", action="store_true", help="leave out k8s/values/gpu.yaml")
    parser.add_argument("--classroom", help="the classroom file (hub/classroom.yaml)")
    parser.add_argument("--out", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        if args.what == "classroom":
            if not args.classroom:
                parser.error("classroom needs --classroom FILE")
            below = load_values(gpu=not args.no_gpu)
            text = yaml.dump(classroom_values(args.classroom, below), Dumper=_BlockDumper,
                             sort_keys=False)
        else:
            values = load_values(args.site, gpu=not args.no_gpu, classroom=args.classroom)
            text = (yaml.dump(values, Dumper=_BlockDumper, sort_keys=False)
                    if args.what == "values" else dump_all(render(values)))
    except ValuesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
