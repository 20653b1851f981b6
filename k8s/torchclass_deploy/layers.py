"""The wrapper chart's values, layered as Helm layers them (k8s/README.md, "Deploying"):
k8s/chart/values.yaml, k8s/values/gpu.yaml (unless left out), the layer made from the classroom
file (optional), the site file, then the files `make deploy` passes with --set-file. Maps merge
and lists are replaced whole, as in Helm. What every other module of the package, and the
tests, read the values through.
"""

import copy
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[1]
CHART = K8S / "chart"
BASE_VALUES = CHART / "values.yaml"
GPU_VALUES = K8S / "values" / "gpu.yaml"
# --set-file pairs: (values key path, file). The deploy target passes exactly these.
SET_FILES = [
    ("jupyterhub.hub.extraFiles.torchclass-k8s.stringData", K8S / "files/hub/torchclass_k8s.py"),
    ("jupyterhub.singleuser.extraFiles.busy-activity.stringData",
     K8S / "files/singleuser/torchclass_busy_activity.py"),
]


class ValuesError(ValueError):
    """A values file is missing, is not YAML, or is not a mapping."""


def load_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ValuesError(f"{path}: no such values file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValuesError(f"{path}: not valid YAML: {err}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValuesError(f"{path}: a values file must be a mapping, not {type(doc).__name__}")
    return doc


def merge(base, override, keep_null=False):
    """Helm's coalescing: maps merge key by key, null deletes a key, anything else replaces.
    Between layers a null is kept (keep_null) so it still deletes the subchart's default."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            if keep_null:
                out[key] = None
            else:
                out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, keep_null)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(values, dotted, value):
    node = values
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def classroom_values(path, below):
    """A values layer from the classroom file (hub/classroom.yaml, the one-machine hub's
    config): the course, who teaches and takes it, and the per-server limits. `below` is the
    values under this layer, whose other formgrader services it removes. Logins stay in the
    site layer: on a cluster they are OAuth/LTI settings with secrets from the Secret."""
    try:
        # The hub's own loader: the same schema, defaults and error messages as `make up`.
        from torchclass_classroom import ConfigError, load
    except ImportError as err:
        raise ValuesError(f"{path}: reading a classroom file needs the hub package "
                          f"(hub/ on PYTHONPATH, as make sets it): {err}") from err
    try:
        room = load(path, env={})
    except ConfigError as err:
        raise ValuesError(str(err)) from err
    course_id, instructors, students = room.course_id, room.instructors, room.students
    # Only what the file sets: the one-machine defaults (a 120 s start timeout, say) would
    # override the cluster's own.
    spawner = load_yaml(path).get("spawner", {})
    course = {"id": course_id, "instructors": instructors, "students": students}
    services = {name: None for name in below["jupyterhub"]["hub"].get("services", {})
                if name.startswith("formgrader-")}
    services[f"formgrader-{course_id}"] = {
        "url": f"http://formgrader-{course_id}:8888", "oauth_no_confirm": True, "display": True}
    hub = {"services": services, "config": {"Authenticator": {
        "admin_users": instructors, "allowed_users": sorted(set(instructors) | set(students))}}}
    singleuser = {}
    if "mem_limit" in spawner:
        singleuser["memory"] = {"limit": spawner["mem_limit"]}
    if "cpu_limit" in spawner:
        singleuser["cpu"] = {"limit": spawner["cpu_limit"]}
    if "start_timeout" in spawner:
        singleuser["startTimeout"] = spawner["start_timeout"]
    torchclass = {"courses": [course]}
    if "image" in spawner:
        name, _, tag = spawner["image"].rpartition(":")
        if not name or "/" in tag:
            raise ValuesError(f"{path}: spawner.image must be name:tag, got {spawner['image']!r}")
        singleuser["image"] = {"name": name, "tag": tag}
        torchclass["images"] = {"cpu": {"name": name, "tag": tag}}
    return {"jupyterhub": {"custom": {"torchclass": torchclass}, "hub": hub,
                           "singleuser": singleuser}}


def load_values(site=None, gpu=True, classroom=None):
    """The wrapper chart's values after every layer and --set-file, as Helm computes them:
    base, gpu, the classroom file's layer, the site."""
    values = {}
    for path in [BASE_VALUES] + ([GPU_VALUES] if gpu else []):
        values = merge(values, load_yaml(path), keep_null=True)
    if classroom:
        values = merge(values, classroom_values(classroom, values), keep_null=True)
    if site:
        values = merge(values, load_yaml(site), keep_null=True)
    for dotted, path in SET_FILES:
        set_path(values, dotted, path.read_text())
    return values


def subchart_values(values, defaults):
    """What the jupyterhub subchart sees: its own defaults under our `jupyterhub` block."""
    return merge(defaults, values.get("jupyterhub", {}))


def torchclass_settings(values):
    return values["jupyterhub"]["custom"]["torchclass"]
