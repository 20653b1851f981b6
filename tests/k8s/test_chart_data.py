"""The pinned jupyterhub chart's data kept in k8s/chart/upstream/ (torchclass_deploy.chart_data):
it matches Chart.yaml's pin and its checksums, and a refresh from a chart archive rebuilds it."""

import io
import json
import shutil
import tarfile

import pytest
import yaml
from k8s_support import REPO
from torchclass_deploy import chart_data

pytestmark = pytest.mark.k8s


def test_kept_data_matches_the_pin_and_checksums():
    d = chart_data.verify()
    assert d.name == f"jupyterhub-{chart_data.pinned()['version']}"
    schema = json.loads((d / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False and "singleuser" in schema["properties"]
    assert "singleuser" in yaml.safe_load((d / "values.defaults.yaml").read_text())


@pytest.fixture
def chart(tmp_path):
    """A copy of k8s/chart (Chart.yaml and the kept data) to break and mend."""
    dest = tmp_path / "chart"
    dest.mkdir()
    shutil.copyfile(REPO / "k8s/chart/Chart.yaml", dest / "Chart.yaml")
    shutil.copytree(REPO / "k8s/chart/upstream", dest / "upstream")
    return dest


def test_a_hand_edited_schema_is_refused(chart):
    schema = chart_data.data_dir(chart) / "values.schema.json"
    schema.write_text(schema.read_text().replace('"additionalProperties": false', '"additionalProperties": true', 1))
    with pytest.raises(chart_data.ChartDataError, match="values.schema.json: SHA-256 differs"):
        chart_data.verify(chart)


def test_a_moved_pin_without_its_data_is_refused(chart):
    meta = chart / "Chart.yaml"
    meta.write_text(meta.read_text().replace("version: 4.4.0", "version: 4.5.0"))
    with pytest.raises(chart_data.ChartDataError, match=r"jupyterhub-4\.5\.0: missing .*have: jupyterhub-4\.4\.0"):
        chart_data.verify(chart)


def _archive(path, version, values, schema):
    """A chart archive laid out as `helm pull` writes it (jupyterhub/Chart.yaml, ...)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {"Chart.yaml": f"name: jupyterhub\nversion: {version}\n",
                           "values.yaml": values, "values.schema.json": schema}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"jupyterhub/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_refresh_from_an_archive_rebuilds_the_data(chart, tmp_path):
    kept = chart_data.data_dir(chart)
    schema = (kept / "values.schema.json").read_text()
    defaults = yaml.safe_load((kept / "values.defaults.yaml").read_text())
    # The pin moves; the new release's archive comes with comments in its values.yaml.
    meta = chart / "Chart.yaml"
    meta.write_text(meta.read_text().replace("version: 4.4.0", "version: 4.5.0"))
    tgz = tmp_path / "jupyterhub-4.5.0.tgz"
    _archive(tgz, "4.5.0", "# the hub\n" + yaml.safe_dump(defaults), schema)
    d = chart_data.refresh(tgz, chart)
    assert d.name == "jupyterhub-4.5.0" and not kept.exists()
    assert (d / "values.schema.json").read_text() == schema
    assert yaml.safe_load((d / "values.defaults.yaml").read_text()) == defaults


def test_refresh_refuses_an_archive_of_another_version(chart, tmp_path):
    tgz = tmp_path / "jupyterhub-4.3.0.tgz"
    _archive(tgz, "4.3.0", "{}\n", "{}")
    with pytest.raises(chart_data.ChartDataError, match="chart version 4.3.0, but Chart.yaml pins 4.4.0"):
        chart_data.refresh(tgz, chart)
    chart_data.verify(chart)  # the kept data is untouched
