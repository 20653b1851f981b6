"""Spawners: one module per `spawner.type` of the classroom file.

Each module has `configure(c, classroom, env)`, where `env` is the environment every
single-user server needs (course id, exchange, datasets, course library), already computed from
the classroom file. A new way of running servers (docker, kubernetes) is a new module here,
not a second copy of the hub config.
"""

from __future__ import annotations

import importlib

from torchclass_classroom import Classroom, ConfigError


def configure(c, classroom: Classroom, env: dict) -> None:
    kind = classroom["spawner"]["type"]
    try:
        module = importlib.import_module(f"{__name__}.{kind}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{kind}":
            raise
        raise ConfigError(f"{classroom.source}: spawner.type {kind!r} has no module "
                          f"torchclass_hub/spawners/{kind}.py in this checkout. "
                          "Fix: use spawner.type local, or merge the branch that adds it.")
    module.configure(c, classroom, env)
