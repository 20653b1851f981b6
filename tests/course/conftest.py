"""Fixtures for the course tests: nothing may download, and every test reads data from a root
with nothing staged unless it stages something itself."""

import os
import socket

import pytest

# Set before any course code runs so that neither staging nor transformers can reach the network.
os.environ["TORCHCLASS_NO_DOWNLOAD"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One offline-build cache for all workers of the run (builds are atomic, so sharing is safe
    and each dataset is built once per run, not once per test)."""
    path = tmp_path_factory.getbasetemp().parent / "torchclass-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def offline_env(tmp_path, shared_cache, monkeypatch):
    """An empty data root (nothing staged) and the shared offline cache."""
    root = tmp_path / "data-root"
    root.mkdir()
    monkeypatch.setenv("TORCHCLASS_DATA", str(root))
    monkeypatch.setenv("TORCHCLASS_CACHE", str(shared_cache))
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Fail any connection to a non-loopback address made in this process."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise AssertionError(f"a course test tried to connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
