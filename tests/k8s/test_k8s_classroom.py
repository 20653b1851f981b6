"""The classroom file (the one-machine hub's config) drives the cluster too: its course,
roster and limits become a values layer between the GPU layer and the site."""


import jsonschema
import pytest
import yaml
from k8s_support import REPO, reference_file, run_module
from torchclass_deploy import layers, render

pytestmark = pytest.mark.k8s

CLASSROOM = """\
course_id: torch101
instructors: [teacher]
students: [alice, bob]
auth: {type: local}
spawner: {type: kubernetes, mem_limit: 6G, cpu_limit: 3, start_timeout: 300,
          image: "registry.example.edu/torchclass/notebook:0.2.0"}
"""


@pytest.fixture
def classroom(tmp_path):
    path = tmp_path / "classroom.yaml"
    path.write_text(CLASSROOM)
    return path


def test_classroom_layer(classroom, z2jh_defaults):
    values = layers.load_values(classroom=classroom)
    sub = layers.subchart_values(values, z2jh_defaults)
    schema = yaml.safe_load(reference_file("values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(sub)
    (course,) = sub["custom"]["torchclass"]["courses"]
    assert course == {"id": "torch101", "instructors": ["teacher"], "students": ["alice", "bob"]}
    assert sorted(sub["hub"]["services"]) == ["formgrader-torch101"]  # the base course's is gone
    assert sub["hub"]["config"]["Authenticator"]["allowed_users"] == ["alice", "bob", "teacher"]
    assert sub["singleuser"]["memory"]["limit"] == "6G" and sub["singleuser"]["cpu"]["limit"] == 3
    assert sub["singleuser"]["image"]["tag"] == "0.2.0"
    assert sub["singleuser"]["startTimeout"] == 300
    docs = render.render(values)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} >= {
        "formgrader-torch101"}


def test_unset_classroom_keys_keep_cluster_values(tmp_path):
    path = tmp_path / "classroom.yaml"
    path.write_text("course_id: torch101\ninstructors: [teacher]\n")
    values = layers.load_values(classroom=path)
    assert values["jupyterhub"]["singleuser"]["startTimeout"] == 600  # not the hub's 120 default
    assert values["jupyterhub"]["singleuser"]["memory"]["limit"] == "4G"


def test_site_still_wins_over_classroom(classroom, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("jupyterhub: {singleuser: {memory: {limit: 8G}}}\n")
    values = layers.load_values(site=site, classroom=classroom)
    assert values["jupyterhub"]["singleuser"]["memory"]["limit"] == "8G"


def test_bad_classroom_names_file_and_key(tmp_path):
    bad = tmp_path / "classroom.yaml"
    bad.write_text("course_id: [oops]\ninstructors: [teacher]\n")
    proc = run_module("torchclass_deploy.render", "classroom", "--classroom", bad)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "course_id" in proc.stderr


def test_the_repository_classroom_file(z2jh_defaults):
    path = REPO / "hub/classroom.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout yet (the hub part brings it)")
    values = layers.load_values(classroom=path)
    sub = layers.subchart_values(values, z2jh_defaults)
    schema = yaml.safe_load(reference_file("values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(sub)
    room = yaml.safe_load(path.read_text())
    assert f"formgrader-{room['course_id']}" in sub["hub"]["services"]
    render.render(values)
