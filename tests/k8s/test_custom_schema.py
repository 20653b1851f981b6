"""The schema of the values' custom.torchclass block (k8s/torchclass_deploy/custom.schema.yaml):
every key described, the shipped layers valid, and a bad layer stopped with its file and key."""

import jsonschema
import pytest
from k8s_support import REPO, run_module
from torchclass_deploy import layers

pytestmark = pytest.mark.k8s

BLOCK = "jupyterhub.custom.torchclass"


def test_schema_is_a_valid_schema_with_a_description_on_every_key():
    schema = layers.custom_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    missing, open_objects = [], []

    def walk(node, where):
        if node.get("type") == "object":
            extra = node.get("additionalProperties")
            if extra is not False and not isinstance(extra, dict):
                open_objects.append(where or "(top)")
            if isinstance(extra, dict):
                if "description" not in extra:
                    missing.append(f"{where}.*")
                walk(extra, f"{where}.*")
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{where}.{key}")
                walk(sub, f"{where}.{key}")
        if "items" in node:
            if "description" not in node["items"]:
                missing.append(f"{where}[]")
            walk(node["items"], f"{where}[]")

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        if "description" not in sub:
            missing.append(f"$defs.{name}")
        walk(sub, f"$defs.{name}")
    assert not missing, f"keys without a description: {missing}"
    assert not open_objects, f"objects that accept unknown keys: {open_objects}"


@pytest.mark.parametrize("layer", ["base", "gpu", "site.example", "live k3s site", "classroom"])
def test_shipped_layers_are_valid(layer):
    site = {"site.example": REPO / "k8s/values/site.example.yaml",
            "live k3s site": REPO / "tests/k8s/live/site-k3s.yaml"}.get(layer)
    classroom = REPO / "hub/classroom.yaml" if layer == "classroom" else None
    values = layers.load_values(site=site, gpu=layer != "base", classroom=classroom)
    # load_values checked the block; the schema itself agrees, independently of the messages.
    jsonschema.validate(layers._without_nulls(layers.torchclass_settings(values)),
                        layers.custom_schema())


def site_error(tmp_path, text):
    site = tmp_path / "site.yaml"
    site.write_text(text)
    with pytest.raises(layers.ValuesError) as caught:
        layers.load_values(site=site)
    message = str(caught.value)
    assert message.startswith(f"{site}: "), message
    return message


@pytest.mark.parametrize("torchclass, key, says", [
    ("{gpuSharing: {replicas: four}}", "gpuSharing.replicas", "must be of type integer"),
    # An unquoted tag is a number to YAML, and an image name:0.2 to nobody.
    ("{images: {cpu: {tag: 0.2}}}", "images.cpu.tag", "must be of type string, got float 0.2"),
    ("{gpuPool: {nodeSelector: {nvidia.com/gpu.present: true}}}",
     "gpuPool.nodeSelector.nvidia.com/gpu.present", "must be of type string"),
    ("{courses: wrong}", "courses", "must be of type array"),
])
def test_a_wrong_type_names_the_file_and_the_key(tmp_path, torchclass, key, says):
    message = site_error(tmp_path, f"jupyterhub: {{custom: {{torchclass: {torchclass}}}}}\n")
    assert f"key '{BLOCK}.{key}' {says}" in message
    assert "About the key: " in message


@pytest.mark.parametrize("torchclass, key, hint", [
    ("{gpuSharng: {replicas: 2}}", "gpuSharng", "did you mean 'gpuSharing'?"),
    ("{exchange: {storageclass: nfs-client}}", "exchange.storageclass",
     "did you mean 'storageClass'?"),
    ("{courses: [{id: deep3, instructor: [ann]}]}", "courses[0].instructor",
     "did you mean 'instructors'?"),
])
def test_an_unknown_key_names_the_file_and_the_key(tmp_path, torchclass, key, hint):
    message = site_error(tmp_path, f"jupyterhub: {{custom: {{torchclass: {torchclass}}}}}\n")
    assert f"unknown key '{BLOCK}.{key}'. Fix: {hint}" in message


@pytest.mark.parametrize("torchclass, key", [
    # A null deletes the base's value, as in Helm: the layer that deleted it is named.
    ("{images: {cuda: null}}", "images.cuda"),
    ("{exchange: null}", "exchange"),
    # Lists are replaced whole: a course the site lists must be complete.
    ("{courses: [{instructors: [ann]}]}", "courses[0].id"),
])
def test_a_missing_required_key_names_the_file_and_the_key(tmp_path, torchclass, key):
    message = site_error(tmp_path, f"jupyterhub: {{custom: {{torchclass: {torchclass}}}}}\n")
    assert f"missing required key '{BLOCK}.{key}'. Fix: set it. About the key: " in message


def test_other_rules_name_the_file_and_the_key(tmp_path):
    message = site_error(tmp_path, "jupyterhub: {custom: {torchclass: {gpuPlaceholders: "
                                   "{replicas: -1}}}}\n")
    assert f"key '{BLOCK}.gpuPlaceholders.replicas': -1 is less than the minimum of 0" in message
    message = site_error(tmp_path, "jupyterhub: {custom: null}\n")
    assert f"key '{BLOCK}' must be a mapping" in message


def test_a_value_the_site_overrides_is_blamed_on_the_site_not_the_base(tmp_path):
    # The base sets gpuSharing.replicas too; the merged value, and so the error, is the site's.
    message = site_error(tmp_path, "jupyterhub: {custom: {torchclass: {gpuSharing: "
                                   "{replicas: 0}}}}\n")
    assert "chart/values.yaml" not in message and "gpuSharing.replicas" in message


def test_the_command_line_stops_with_the_file_and_the_key(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {custom: {torchclass: {gpuSharing: {replicas: four}}}}\n")
    for what in ("values", "manifests"):
        proc = run_module("torchclass_deploy.render", what, "--site", site)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert f"error: {site}: key '{BLOCK}.gpuSharing.replicas'" in proc.stderr
