"""The classroom file: its schema, and bad files stopping `up` before anything starts."""

import json
import socket

import jsonschema
import pytest
import torchclass_classroom as config
import yaml
from classroom_fixture import REPO
from torchclass_hub import cli

pytestmark = pytest.mark.hub


def test_schema_is_a_valid_schema_with_a_description_on_every_key():
    schema = config.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    missing, open_objects = [], []

    def walk(node, where):
        if node.get("type") == "object":
            if node.get("additionalProperties") is not False:
                open_objects.append(where)
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{where}.{key}")
                walk(sub, f"{where}.{key}")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        if "description" not in sub:
            missing.append(f"$defs.{name}")
    assert not missing, f"keys without a description: {missing}"
    assert not open_objects, f"objects that accept unknown keys: {open_objects}"


def test_shipped_classroom_file_is_valid():
    room = config.load(config.DEFAULT_CLASSROOM, env={})
    assert room.instructors and room.students
    assert room.port == 8000 and room.ip == "127.0.0.1"


def test_port_override_from_environment():
    room = config.load(config.DEFAULT_CLASSROOM, env={"TORCHCLASS_PORT": "8123"})
    assert room.port == 8123


def test_readme_reference_matches_schema():
    from torchclass_hub.cli import schema_docs

    assert schema_docs() in (REPO / "hub" / "README.md").read_text()


GOOD = {"course_id": "demo", "instructors": ["teacher"], "students": ["alice", "bob"]}

BAD = [
    ({**GOOD, "studnets": ["carol"]}, ["studnets", "did you mean 'students'"]),
    ({**GOOD, "hub": {"port": "eighty"}}, ["hub.port", "integer", "Fix:"]),
    ({**GOOD, "students": ["alice", "bob", "alice"]}, ["students", "'alice'", "more than once"]),
    ({**GOOD, "students": ["teacher"]}, ["students", "teacher", "Fix:"]),
    ({**GOOD, "auth": {"type": "ldap"}}, ["auth.type", "local, oauth, lti13"]),
    ({**GOOD, "auth": {"type": "oauth"}}, ["auth.oauth", "missing"]),
    ({"instructors": ["teacher"]}, ["course_id", "missing required key"]),
    ({**GOOD, "hub": {"port": 8000, "bogus": 1}}, ["hub.bogus", "unknown key"]),
]


@pytest.mark.parametrize("content,words", BAD, ids=[w[0] for _, w in BAD])
def test_bad_classroom_file_stops_up_before_anything_starts(tmp_path, monkeypatch, capsys,
                                                            content, words):
    path = tmp_path / "classroom.yaml"
    path.write_text(yaml.safe_dump(content))
    data = tmp_path / "data"
    monkeypatch.setenv("TORCHCLASS_DATA_DIR", str(data))
    assert cli.main(["up", "--classroom", str(path)]) == 2
    err = capsys.readouterr().err
    for word in [str(path), *words]:
        assert word in err, f"{word!r} not in: {err}"
    assert not data.exists(), "nothing may be created for a bad classroom file"


def test_busy_port_is_named(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = tmp_path / "classroom.yaml"
        path.write_text(json.dumps({**GOOD, "hub": {"port": port,
                                                    "data_dir": str(tmp_path / "d")}}))
        assert cli.main(["up", "--classroom", str(path)]) == 3
    out = capsys.readouterr().out
    assert f"port {port}" in out and "busy" in out and "PORT=" in out
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("auth", [
    {"type": "oauth", "oauth": {"authorize_url": "https://idp.example.edu/authorize",
                                "token_url": "https://idp.example.edu/token",
                                "userdata_url": "https://idp.example.edu/userinfo",
                                "client_id": "torchclass"}},
    {"type": "lti13", "lti13": {"issuer": "https://canvas.example.edu",
                                "authorize_url": "https://canvas.example.edu/api/lti/authorize",
                                "jwks_endpoint": "https://canvas.example.edu/api/lti/jwks",
                                "client_id": "1000001"}},
], ids=["oauth", "lti13"])
def test_institution_login_configures_the_real_authenticator(tmp_path, monkeypatch, auth):
    from torchclass_hub import auth as tc_auth
    from traitlets.config import Config

    path = tmp_path / "classroom.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "auth": auth}))
    room = config.load(path, env={})
    c = Config()
    if auth["type"] == "oauth":
        with pytest.raises(config.ConfigError, match="TORCHCLASS_OAUTH_CLIENT_SECRET"):
            tc_auth.configure(c, room)
        monkeypatch.setenv("TORCHCLASS_OAUTH_CLIENT_SECRET", "s3cret")
    tc_auth.configure(c, room)
    cls = c.JupyterHub.authenticator_class
    authenticator = cls(config=c)  # the real class accepts every setting we made
    assert authenticator.allowed_users == {"teacher", "alice", "bob"}
    assert authenticator.admin_users == {"teacher"}
    if auth["type"] == "oauth":
        assert authenticator.client_secret == "s3cret"
        assert authenticator.token_url == auth["oauth"]["token_url"]
    else:
        assert authenticator.issuer == auth["lti13"]["issuer"]


def test_oauth_name_comes_from_a_claim_the_user_cannot_edit(tmp_path, monkeypatch):
    """A student who renames themselves at the provider (preferred_username is editable at many)
    to an instructor's name must not log in as the instructor (issue 12, item 9)."""
    from torchclass_hub import auth as tc_auth
    from traitlets.config import Config

    path = tmp_path / "classroom.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "auth": {"type": "oauth", "oauth": {
        "authorize_url": "https://idp.example.edu/authorize",
        "token_url": "https://idp.example.edu/token",
        "userdata_url": "https://idp.example.edu/userinfo", "client_id": "torchclass"}}}))
    monkeypatch.setenv("TORCHCLASS_OAUTH_CLIENT_SECRET", "s3cret")
    c = Config()
    tc_auth.configure(c, config.load(path, env={}))
    authenticator = c.JupyterHub.authenticator_class(config=c)
    forged = {"sub": "alice", "preferred_username": "teacher", "name": "teacher"}
    assert authenticator.user_info_to_username(forged) == "alice"


def _listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_busy_internal_ports_kept_from_an_earlier_run_are_replaced(tmp_path):
    """ports.json keeps the internal ports between runs; one another program took meanwhile
    (perhaps to pose as the proxy's API or the formgrader) is not reused (issue 12, item 9)."""
    from torchclass_hub import hubconfig

    path = tmp_path / "classroom.yaml"
    path.write_text(json.dumps({**GOOD, "hub": {"data_dir": str(tmp_path / "d")}}))
    room = config.load(path, env={})
    room.state_dir.mkdir(parents=True)
    taken = [_listening(), _listening()]
    try:
        hub_api = _free_port_number()
        (room.state_dir / "ports.json").write_text(json.dumps(
            {"hub_api": hub_api, "proxy_api": taken[0][1], "formgrader": taken[1][1]}))
        notes = []
        assert hubconfig.check_internal_ports(room, cli.port_busy, notes.append) is None
        ports = json.loads((room.state_dir / "ports.json").read_text())
        assert ports["hub_api"] == hub_api
        assert ports["proxy_api"] != taken[0][1] and ports["formgrader"] != taken[1][1]
        assert not cli.port_busy("127.0.0.1", ports["proxy_api"])
        assert any(str(taken[0][1]) in n and "proxy_api" in n for n in notes), notes
    finally:
        for s, _ in taken:
            s.close()


def test_a_busy_hub_api_port_stops_up_with_its_name(tmp_path, capsys, monkeypatch):
    """Servers left running after a crash reach the hub at its old API port, so that one is not
    moved: `up` stops, names the port and the file that keeps it, and creates nothing."""
    from torchclass_hub import prepare

    def must_not_prepare(*a, **k):
        raise AssertionError("up went on to create accounts with its hub API port busy")

    monkeypatch.setattr(prepare, "everything", must_not_prepare)
    path = tmp_path / "classroom.yaml"
    path.write_text(json.dumps({**GOOD, "hub": {"port": _free_port_number(),
                                                "data_dir": str(tmp_path / "d")}}))
    room = config.load(path, env={})
    room.state_dir.mkdir(parents=True)
    s, port = _listening()
    with s:
        (room.state_dir / "ports.json").write_text(json.dumps({"hub_api": port}))
        assert cli.main(["up", "--classroom", str(path)]) == 3
    out = capsys.readouterr().out
    assert f"hub_api port {port}" in out and "busy" in out and "ports.json" in out, out


def _free_port_number() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_only_the_hubs_database_commits_without_waiting_for_the_disk(tmp_path):
    # JupyterHub commits on its event loop: with sqlite's fsync on every commit, 10 students
    # logging in at once spent 29% of the loop waiting on the disk (hub/README.md, Capacity).
    from sqlalchemy import create_engine, text
    from torchclass_hub import hubconfig

    hubconfig.fast_hub_commits(tmp_path / "jupyterhub.sqlite")
    pragmas = {}
    for name in ("jupyterhub.sqlite", "gradebook.db"):
        engine = create_engine(f"sqlite:///{tmp_path / name}")
        with engine.connect() as conn:
            pragmas[name] = (conn.execute(text("PRAGMA journal_mode")).scalar(),
                             conn.execute(text("PRAGMA synchronous")).scalar())
        engine.dispose()
    assert pragmas["jupyterhub.sqlite"] == ("wal", 1)  # 1: NORMAL
    # Any other database in the process keeps sqlite's defaults (a journal, FULL sync).
    assert pragmas["gradebook.db"] == ("delete", 2)
