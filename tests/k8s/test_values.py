"""The layered values, as the jupyterhub subchart sees them, against the real chart's schema."""

import json
import re

import jsonschema
import pytest
import yaml
from k8s_support import REPO, reference_file, run_module
from torchclass_deploy import layers

pytestmark = pytest.mark.k8s

SITE = REPO / "k8s/values/site.example.yaml"


@pytest.fixture(scope="module")
def schema():
    return json.loads(reference_file("values.schema.json").read_text())


def schema_errors(schema, sub):
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(sub)]


LIVE_SITE = REPO / "tests/k8s/live/site-k3s.yaml"


@pytest.mark.parametrize("site,gpu", [(None, False), (None, True), (SITE, True),
                                      (LIVE_SITE, False)],
                         ids=["base", "base+gpu", "base+gpu+site", "live-k3s"])
def test_layers_validate_against_chart_schema(schema, z2jh_defaults, site, gpu):
    values = layers.load_values(site=site, gpu=gpu)
    sub = layers.subchart_values(values, z2jh_defaults)
    assert schema_errors(schema, sub) == []


def test_schema_catches_a_wrong_key(schema, z2jh_defaults, tmp_path):
    # Proves the check above has teeth: a typo in a site file is reported.
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub:\n  singleuser:\n    memmory: {limit: 4G}\n")
    sub = layers.subchart_values(layers.load_values(site=site), z2jh_defaults)
    assert any("memmory" in e for e in schema_errors(schema, sub))


def test_layer_order_later_wins_lists_replace(z2jh_defaults, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"jupyterhub": {
        "singleuser": {"profileList": [{"display_name": "only", "slug": "only"}],
                       "memory": {"limit": "8G"}},
        "custom": {"torchclass": {"gpuSharing": {"replicas": 8}}},
        "cull": {"timeout": None}}}))
    sub = layers.subchart_values(layers.load_values(site=site), z2jh_defaults)
    assert [p["slug"] for p in sub["singleuser"]["profileList"]] == ["only"]
    assert sub["singleuser"]["memory"] == {"limit": "8G", "guarantee": "2G"}
    assert sub["custom"]["torchclass"]["gpuSharing"]["replicas"] == 8
    assert sub["custom"]["torchclass"]["gpuSharing"]["devicePluginNamespace"] == "gpu-operator"
    assert "timeout" not in sub["cull"]  # null deletes, as in Helm


def test_default_image_is_the_cpu_image(merged):
    # z2jh's singleuser.image (default server, chart's pre-puller) and torchclass's own setting
    # (Job, formgrader, profiles) must name the same image in every shipped layer.
    _, sub = merged
    assert sub["singleuser"]["image"] == {
        **sub["custom"]["torchclass"]["images"]["cpu"], "pullPolicy": None, "pullSecrets": []}


def test_hub_files_come_from_the_repository(merged):
    values, _ = merged
    hub_file = values["jupyterhub"]["hub"]["extraFiles"]["torchclass-k8s"]
    assert hub_file["stringData"] == (REPO / "k8s/files/hub/torchclass_k8s.py").read_text()
    assert hub_file["mountPath"].startswith("/usr/local/etc/jupyterhub/jupyterhub_config.d/")
    compile(hub_file["stringData"], "torchclass_k8s.py", "exec")


# Keys that hold a credential (client_secret, auth_token, apiToken, password...).
SECRET_KEY = re.compile(r"(secret|token|password|api_?key)s?$", re.IGNORECASE)


def walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, path + (str(i),))
    else:
        yield path, node


@pytest.mark.parametrize("path", ["k8s/chart/values.yaml", "k8s/values/gpu.yaml",
                                  "k8s/values/site.example.yaml",
                                  "tests/k8s/live/site-k3s.yaml"])
def test_no_secret_in_values(path):
    doc = yaml.safe_load((REPO / path).read_text())
    leaks = [".".join(p) for p, value in walk(doc)
             if SECRET_KEY.search(p[-1]) and isinstance(value, str) and value
             and "existingSecret" not in p[-1]]
    assert leaks == [], f"{path} holds secrets in plain text: {leaks}"
    hub = doc.get("jupyterhub", {}).get("hub", {})
    if "existingSecret" in hub:
        assert hub["existingSecret"] == "torchclass-hub-secrets"


def test_every_course_has_its_formgrader_service(merged):
    _, sub = merged
    courses = [c["id"] for c in sub["custom"]["torchclass"]["courses"]]
    services = [s for s in sub["hub"]["services"] if s.startswith("formgrader-")]
    assert sorted(services) == sorted(f"formgrader-{c}" for c in courses)


def test_bad_values_file_names_file_and_problem(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text("jupyterhub: [not, a, mapping\n")
    proc = run_module("torchclass_deploy.render", "values", "--site", bad)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "not valid YAML" in proc.stderr
    missing = tmp_path / "nope.yaml"
    proc = run_module("torchclass_deploy.render", "values", "--site", missing)
    assert proc.returncode == 2 and f"{missing}: no such values file" in proc.stderr
