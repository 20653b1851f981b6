"""The course helper library every torchclass notebook imports.

- ``data``: datasets and pretrained models, from the classroom's staged data directory when the
  instructor has staged it (``make data``), else from offline sources that installed packages ship.
- ``device``: ``get_device()`` picks the GPU when there is one.
- ``checks``: self-checks for lesson exercises.
- ``judges``: the digit judge generated images are graded with (recognised share, Fréchet
  distance, near copies).
- ``plots``: small plotting helpers (image grids, loss curves).
"""

import os
from pathlib import Path

__all__ = ["checks", "course_dir", "data", "device", "judges", "plots"]


def course_dir() -> Path:
    """The course's content: stage*/lessons, stage*/projects, tools, solutions, outline.yaml.

    $TORCHCLASS_COURSE_DIR when set (the classroom file's course_dir sets it for the hub); else
    the folder this package sits in, when that folder is a course (a checkout, or the notebook
    image's /srv/torchclass/course). An installed package carries the library only."""
    if os.environ.get("TORCHCLASS_COURSE_DIR"):
        found = Path(os.environ["TORCHCLASS_COURSE_DIR"]).expanduser().resolve()
        where = "$TORCHCLASS_COURSE_DIR"
    else:
        found = Path(__file__).resolve().parents[1]
        where = f"the folder holding torchclass_course ({found})"
    if not (found / "outline.yaml").is_file():
        raise FileNotFoundError(
            f"torchclass: {where} is not a course folder (no outline.yaml). Fix: set "
            "TORCHCLASS_COURSE_DIR, or course_dir in the classroom file, to the course/ folder of "
            "a torchclass checkout.")
    return found

