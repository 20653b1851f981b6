"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TORCHCLASS_TEST_ARTIFACTS", REPO / "test-artifacts"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def artifacts_dir(request) -> Path:
    """A folder kept after the run (screenshots, logs), one per test."""
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
