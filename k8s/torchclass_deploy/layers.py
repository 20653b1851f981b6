"""The wrapper chart's values, layered as Helm layers them (k8s/README.md, "Deploying"):
k8s/chart/values.yaml, k8s/values/gpu.yaml (unless left out), the layer made from the classroom
file (optional), the site file, then the files `make deploy` passes with --set-file. Maps merge
and lists are replaced whole, as in Helm. What every other module of the package, and the
tests, read the values through.

The merged `jupyterhub.custom.torchclass` block is checked against custom.schema.yaml: z2jh's
own schema accepts anything under `custom`, so without it a typo in a site file would reach the
hub pod unnoticed. An error names the layer the offending value came from, and the key.
"""

import copy
import difflib
from functools import cache
from pathlib import Path

import jsonschema
import yaml

K8S = Path(__file__).resolve().parents[1]
CHART = K8S / "chart"
BASE_VALUES = CHART / "values.yaml"
GPU_VALUES = K8S / "values" / "gpu.yaml"
CUSTOM_SCHEMA = Path(__file__).with_name("custom.schema.yaml")
SCHEMA_NAME = "k8s/torchclass_deploy/custom.schema.yaml"
BLOCK = ("jupyterhub", "custom", "torchclass")
# --set-file pairs: (values key path, file). The deploy target passes exactly these.
SET_FILES = [
    ("jupyterhub.hub.extraFiles.torchclass-k8s.stringData", K8S / "files/hub/torchclass_k8s.py"),
    ("jupyterhub.singleuser.extraFiles.busy-activity.stringData",
     K8S / "files/singleuser/torchclass_busy_activity.py"),
]


class ValuesError(ValueError):
    """A values file is missing, is not YAML, is not a mapping, or breaks custom.schema.yaml."""


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
    base, gpu, the classroom file's layer, the site; custom.torchclass checked."""
    values, layers = {}, []

    def add(source, doc):
        nonlocal values
        layers.append((source, doc))
        values = merge(values, doc, keep_null=True)

    for path in [BASE_VALUES] + ([GPU_VALUES] if gpu else []):
        add(str(path), load_yaml(path))
    if classroom:
        add(f"the layer made from {classroom}", classroom_values(classroom, values))
    if site:
        add(str(site), load_yaml(site))
    check_custom(values, layers)
    for dotted, path in SET_FILES:
        set_path(values, dotted, path.read_text())
    return values


@cache
def custom_schema() -> dict:
    return yaml.safe_load(CUSTOM_SCHEMA.read_text())


def _without_nulls(node):
    # Between layers a null is kept so that it deletes the subchart's default; for the schema it
    # has done its job: the key is gone.
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _origin(layers, path):
    """The layer the merged value at `path` (under BLOCK) came from: the last one that sets it,
    or that sets a list, a scalar or a null on the way to it (each replaces what was below)."""
    for source, doc in reversed(layers):
        node = doc
        for part in [*BLOCK, *path]:
            if not isinstance(node, dict):
                return source
            if part not in node:
                break
            node = node[part]
            if node is None:
                return source
        else:
            return source
    return None


def _key(path) -> str:
    out = ".".join(BLOCK)
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def check_custom(values, layers):
    """Raise ValuesError for the first (shallowest) way the merged block breaks the schema,
    naming the file it came from, the key and what the key is for."""
    node = values
    for part in BLOCK:
        node = node.get(part) if isinstance(node, dict) else None
    block = _without_nulls(node) if isinstance(node, dict) else node
    if not isinstance(block, dict):
        source = _origin(layers, []) or layers[0][0]
        raise ValuesError(f"{source}: key '{_key([])}' must be a mapping of torchclass's "
                          f"settings, got {block!r}. Fix: see k8s/chart/values.yaml")
    errors = jsonschema.Draft202012Validator(custom_schema()).iter_errors(block)
    err = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]),
              default=None)
    if err is None:
        return
    path = list(err.absolute_path)
    about = f"About the key: {err.schema.get('description') or SCHEMA_NAME}"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = next(k for k in err.instance if k not in allowed)
        close = difflib.get_close_matches(extra, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        source = _origin(layers, [*path, extra])
        raise ValuesError(f"{source}: unknown key '{_key([*path, extra])}'. Fix: {hint}allowed "
                          f"keys here are {', '.join(allowed)}.")
    if err.validator == "required":
        missing = next(k for k in err.validator_value if k not in err.instance)
        source = _origin(layers, [*path, missing]) or _origin(layers, path) or layers[0][0]
        what = err.schema.get("properties", {}).get(missing, {}).get("description")
        raise ValuesError(f"{source}: missing required key '{_key([*path, missing])}'. "
                          f"Fix: set it. About the key: {what or SCHEMA_NAME}")
    source = _origin(layers, path) or layers[0][0]
    if err.validator == "type":
        raise ValuesError(f"{source}: key '{_key(path)}' must be of type {err.validator_value}, "
                          f"got {type(err.instance).__name__} {err.instance!r}. {about}")
    raise ValuesError(f"{source}: key '{_key(path)}': {err.message}. {about}")


def subchart_values(values, defaults):
    """What the jupyterhub subchart sees: its own defaults under our `jupyterhub` block."""
    return merge(defaults, values.get("jupyterhub", {}))


def torchclass_settings(values):
    return values["jupyterhub"]["custom"]["torchclass"]
