"""The classroom file's spawner.type kubernetes sends `make up` to `make deploy`."""

import pytest
import torchclass_classroom as config
from torchclass_hub import spawners
from traitlets.config import Config

pytestmark = pytest.mark.k8s


def test_make_up_with_kubernetes_points_to_make_deploy(tmp_path):
    path = tmp_path / "classroom.yaml"
    path.write_text("course_id: torch101\ninstructors: [teacher]\n"
                    "spawner: {type: kubernetes}\n")
    room = config.load(path, env={"TORCHCLASS_DATA_DIR": str(tmp_path / "state")})
    with pytest.raises(config.ConfigError) as err:
        spawners.configure(Config(), room, {})
    assert str(path) in str(err.value) and f"make deploy CLASSROOM={path}" in str(err.value)
