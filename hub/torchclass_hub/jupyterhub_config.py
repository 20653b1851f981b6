"""JupyterHub configuration of a torchclass classroom.

Layers, each overriding the one before:
  1. torchclass defaults (torchclass_classroom/schema.yaml defaults, torchclass_hub/hubconfig.py),
  2. the classroom file ($TORCHCLASS_CLASSROOM, default hub/classroom.yaml), validated by the
     schema, plus PORT/IP/data-dir overrides from the environment,
  3. jupyterhub_config.d/*.py beside the classroom file (hub/jupyterhub_config.d/ for the
     default one), run in sorted order with `c` and `classroom` in scope: the escape hatch for
     anything the classroom file does not cover.
Start it with `make up` (which prepares accounts and the course first, and puts torchclass's
packages on PYTHONPATH), not by hand.
"""

import logging
import runpy

import torchclass_classroom as config

from torchclass_hub import hubconfig

c = get_config()  # noqa: F821
classroom = config.load()
hubconfig.apply(c, classroom)
hubconfig.log_isolation_warning(logging.getLogger("JupyterHub"), classroom)

for extra in sorted((classroom.source.parent / "jupyterhub_config.d").glob("*.py")):
    runpy.run_path(str(extra), init_globals={"c": c, "classroom": classroom})
