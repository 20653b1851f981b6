"""Running project code as a second Unix account (a throw-away user) from any checkout.

A clone may live where other accounts cannot read (root's home is 0700), so such a test runs
the account from a copy of the project's Python packages in a place it can read, laid out like
the checkout (hub/, grading/, course/), since the packages find their siblings through it.
"""

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("hub", "grading", "course")


def readable_checkout(dest: Path) -> str:
    """Copy every torchclass_* package to dest/<root>/, world-readable and owned by the caller
    (so the second account cannot change the code it runs); returns the PYTHONPATH for it."""
    paths = []
    for root in PACKAGE_ROOTS:
        for package in sorted((REPO / root).glob("torchclass_*")):
            (dest / root).mkdir(parents=True, exist_ok=True)
            if package.is_file():  # a top-level module (hub/torchclass_exchange.py)
                shutil.copy(package, dest / root / package.name)
                continue
            shutil.copytree(package, dest / root / package.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(dest / root))
    for p in [dest, *dest.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return os.pathsep.join(paths)
