"""spawner.type kubernetes: the classroom runs on a cluster, through the JupyterHub Helm chart.

On Kubernetes the hub is the chart's (z2jh), not this machine's: `make deploy
CLASSROOM=<this file>` turns the classroom file into a layer of the chart's values (course,
instructors, students, limits, image; torchclass_deploy.render) and KubeSpawner is configured
there, with the GPU profiles, the per-student exchange mounts and the rest (k8s/README.md). A
hub started here by `make up` cannot run students' pods, so it stops with directions instead.
"""

from __future__ import annotations

from torchclass_classroom import ConfigError


def configure(c, classroom, env: dict) -> None:
    raise ConfigError(
        f"{classroom.source}: spawner.type is kubernetes, which `make up` (a hub on this "
        "machine) cannot run. Fix: deploy it to your cluster with `make deploy "
        f"CLASSROOM={classroom.source}` (see k8s/README.md), or set spawner.type to local or "
        "docker to run the classroom here.")
