"""The classroom model, the bottom layer above the course: the classroom file's loading,
layering and validation, and the data dir's layout that hub and grading both read.

It imports none of torchclass_hub, torchclass_grading or the k8s renderer.

Layers, lowest first: the schema's defaults, the classroom file (hub/classroom.yaml or
$TORCHCLASS_CLASSROOM), then environment overrides for the few things people change per run
(TORCHCLASS_PORT, TORCHCLASS_IP, TORCHCLASS_DATA_DIR). jupyterhub_config.d/*.py comes last,
inside JupyterHub itself. Errors name the file, the key and the fix, before anything starts.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pwd
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import yaml

PACKAGE = Path(__file__).resolve().parent
SCHEMA_FILE = PACKAGE / "schema.yaml"
# A checkout's hub/classroom.yaml; an installed package has none, so ./classroom.yaml.
DEFAULT_CLASSROOM = (PACKAGE.parent / "classroom.yaml" if (PACKAGE.parent / "classroom.yaml").is_file()
                     else Path("classroom.yaml"))
# pyproject.toml's version (tests/hub/test_installed.py keeps them equal); images are tagged with it.
VERSION = "0.1.0"
NOTEBOOK_IMAGE = f"torchclass/notebook:{VERSION}"
VENV = Path(os.environ.get("TORCHCLASS_VENV", "/opt/torchclass"))


# torchclass's packages, lowest layer first (README.md, Layers).
PACKAGES = ("torchclass_course", "torchclass_classroom", "torchclass_grading", "torchclass_hub")


def package_dirs() -> dict[str, Path]:
    """Where each of torchclass's importable packages is (a checkout's hub/, grading/ and course/
    folders, or site-packages), found without importing them."""
    found = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            found[name] = Path(spec.origin).resolve().parent
    return found


def _course_dir() -> Path:
    # Imported late: the hub image carries the classroom and hub packages, not the course's.
    import torchclass_course

    return torchclass_course.course_dir()


class ConfigError(Exception):
    """A classroom file that must not start a hub; the message says file, key and fix."""


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _subschema(path) -> dict:
    """The schema node that describes the value at `path`, following $ref and items."""
    node = schema()
    for p in path:
        if "$ref" in node:
            node = schema()["$defs"][node["$ref"].rsplit("/", 1)[1]]
        node = node["items"] if isinstance(p, int) else node.get("properties", {}).get(p, {})
    if "$ref" in node:
        node = schema()["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _explain(err: jsonschema.ValidationError, source: str) -> str:
    where = _key_path(err.absolute_path)
    node = _subschema(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        key = extra[0] if extra else "?"
        full = f"{where}.{key}" if err.absolute_path else key
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (f"{source}: unknown key '{full}'. Fix: {hint}allowed keys here are "
                f"{', '.join(allowed)}.")
    if err.validator == "type":
        return (f"{source}: key '{where}' must be of type {err.validator_value}, "
                f"got {type(err.instance).__name__} {err.instance!r}. "
                f"Fix: {node.get('description', 'see hub/README.md')}")
    if err.validator == "required":
        missing = next(k for k in err.validator_value if k not in err.instance)
        desc = _subschema([*err.absolute_path, missing]).get("description", "")
        full = f"{where}.{missing}" if err.absolute_path else missing
        return f"{source}: missing required key '{full}'. Fix: add it ({desc})"
    if err.validator == "uniqueItems":
        seen, dups = set(), []
        for item in err.instance:
            if item in seen:
                dups.append(item)
            seen.add(item)
        return (f"{source}: key '{where}' lists {', '.join(map(repr, dups))} more than once. "
                "Fix: keep one entry per person.")
    if err.validator == "enum":
        return (f"{source}: key '{where}' is {err.instance!r}. "
                f"Fix: use one of {', '.join(map(str, err.validator_value))}.")
    return (f"{source}: key '{where}': {err.message}. "
            f"Fix: {node.get('description', 'see hub/README.md')}")


def _defaults(node: dict) -> dict:
    out = {}
    for key, sub in node.get("properties", {}).items():
        if "default" in sub:
            out[key] = sub["default"]
        elif sub.get("type") == "object" and "required" not in sub:
            out[key] = _defaults(sub)
    return out


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def running_as_root() -> bool:
    return os.geteuid() == 0


def default_data_dir() -> Path:
    if running_as_root():
        return Path("/var/lib/torchclass")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "torchclass"


@dataclass(frozen=True)
class Classroom:
    """A validated classroom: the merged settings plus where they came from."""

    source: Path
    settings: dict

    def __getitem__(self, key):
        return self.settings[key]

    @property
    def course_id(self) -> str:
        return self.settings["course_id"]

    @property
    def instructors(self) -> list[str]:
        return list(self.settings["instructors"])

    @property
    def students(self) -> list[str]:
        return list(self.settings["students"])

    @property
    def users(self) -> list[str]:
        return self.instructors + self.students

    @property
    def data_dir(self) -> Path:
        return Path(self.settings["hub"]["data_dir"])

    @property
    def ip(self) -> str:
        return self.settings["hub"]["ip"]

    @property
    def port(self) -> int:
        return self.settings["hub"]["port"]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.ip in ("0.0.0.0", "") else self.ip
        return f"http://{host}:{self.port}/"

    @property
    def grader(self) -> str:
        """The Unix account that owns the course dir and runs the formgrader."""
        return f"grader-{self.course_id}" if running_as_root() else pwd.getpwuid(os.getuid()).pw_name

    @property
    def real_unix_users(self) -> bool:
        """One Unix account per user (root + local spawner); otherwise one shared account."""
        return running_as_root() and self.settings["spawner"]["type"] == "local"

    @property
    def curriculum_dir(self) -> Path:
        """The course content the classroom's lessons and assignments come from."""
        if self.settings["curriculum_dir"] is not None:
            return Path(self.settings["curriculum_dir"])
        return _course_dir()

    # Layout of the data dir, in one place so hub, CLI and grading agree.
    @property
    def state_dir(self) -> Path:  # hub DB, cookie secret, hashed passwords, pid/log: root only
        return self.data_dir / "hub"

    @property
    def course_dir(self) -> Path:
        return self.data_dir / "courses" / self.course_id

    @property
    def exchange_dir(self) -> Path:
        return self.data_dir / "exchange"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def lib_dir(self) -> Path:  # read-only copy of torchclass_course for student servers
        return self.data_dir / "lib"

    @property
    def lessons_dir(self) -> Path:  # master copy of the lessons, copied into each new home
        return self.data_dir / "lessons"

    @property
    def student_config_dir(self) -> Path:  # JUPYTER_CONFIG_PATH of student servers
        return self.data_dir / "etc" / "student"

    @property
    def homes_dir(self) -> Path:  # per-user dirs when all users share one Unix account
        return self.data_dir / "homes"

    @property
    def password_file(self) -> Path:
        """Initial passwords in plain text, readable by the (first) instructor only."""
        return self.data_dir / "initial-passwords.txt"

    @property
    def password_hashes(self) -> Path:
        return self.state_dir / "passwords.json"


def load(path: str | os.PathLike | None = None, env: dict | None = None) -> Classroom:
    """Load, layer and validate a classroom file; raise ConfigError naming file, key and fix."""
    env = os.environ if env is None else env
    path = Path(path or env.get("TORCHCLASS_CLASSROOM") or DEFAULT_CLASSROOM).resolve()
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found. Fix: copy hub/classroom.yaml and edit it.")
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e}). Fix: correct the syntax there.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level. "
                          "Fix: start from hub/classroom.yaml.")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(_explain(errors[0], source))
    both = sorted(set(raw["instructors"]) & set(raw.get("students", [])))
    if both:
        raise ConfigError(f"{source}: key 'students' repeats instructor(s) {', '.join(both)}. "
                          "Fix: list each person once, under instructors or students.")
    settings = _merge(_defaults(schema()), raw)
    for section in ("oauth", "lti13"):
        if section in settings["auth"]:
            node = schema()["properties"]["auth"]["properties"][section]
            settings["auth"][section] = _merge(_defaults(node), settings["auth"][section])
    hub = settings["hub"]
    if env.get("TORCHCLASS_PORT"):
        try:
            hub["port"] = int(env["TORCHCLASS_PORT"])
        except ValueError:
            raise ConfigError(f"PORT={env['TORCHCLASS_PORT']!r} (TORCHCLASS_PORT): not a number. "
                              "Fix: give a port such as 8001.")
    if env.get("TORCHCLASS_IP"):
        hub["ip"] = env["TORCHCLASS_IP"]
    data_dir = env.get("TORCHCLASS_DATA_DIR") or hub.get("data_dir") or default_data_dir()
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_absolute():
        data_dir = (path.parent / data_dir).resolve()
    hub["data_dir"] = str(data_dir)
    if settings["curriculum_dir"] is not None:
        settings["curriculum_dir"] = str((path.parent / settings["curriculum_dir"]).resolve())
    auth = settings["auth"]
    if auth["type"] in ("oauth", "lti13") and auth["type"] not in raw.get("auth", {}):
        raise ConfigError(f"{source}: auth.type is {auth['type']} but key 'auth.{auth['type']}' "
                          "is missing. Fix: add that section (see hub/README.md, Logging in).")
    return Classroom(source=path, settings=settings)


def stage_projects(classroom: Classroom | None = None) -> dict[str, Path]:
    """Assignment id -> its source folder: <id>/<id>.ipynb in the classroom's assignment_dirs,
    then in course/stage*/projects/."""
    found = {}
    content = classroom.curriculum_dir if classroom is not None else _course_dir()
    notebooks = sorted(content.glob("stage*/projects/*/*.ipynb"))
    if classroom is not None:
        for d in reversed(classroom["assignment_dirs"]):
            notebooks += sorted((classroom.source.parent / d).glob("*/*.ipynb"))
    for nb in notebooks:
        if nb.stem == nb.parent.name:
            found[nb.stem] = nb.parent.resolve()
    return found



def _owner(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def prepare_exchange(classroom: Classroom) -> None:
    """The nbgrader exchange, tightened beyond nbgrader's own defaults.

    nbgrader makes the root and inbound/ world-writable without the sticky bit, so anyone who
    learns a directory name could rename or delete it. Here the root is root-owned 1777 and
    inbound/ is the grader's 3733 (write-only for students, sticky: only a file's owner or the
    grader may remove or rename it). nbgrader leaves existing directories' modes alone.
    """
    root = classroom.exchange_dir
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o1777)
    course = root / classroom.course_id
    modes = {course: 0o755, course / "outbound": 0o755, course / "inbound": 0o3733,
             course / "feedback": 0o711}
    for path, mode in modes.items():
        path.mkdir(exist_ok=True)
        _owner(path, classroom.grader)
        os.chmod(path, mode)
