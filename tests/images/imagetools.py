"""Helpers for the image tests: docker calls, uuid-named containers, bounded HTTP polling."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = next(
    line.split('"')[1]
    for line in (REPO / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)
NOTEBOOK_IMAGE = os.environ.get("TORCHCLASS_NOTEBOOK_IMAGE", f"torchclass/notebook:{VERSION}")
HUB_IMAGE = os.environ.get("TORCHCLASS_HUB_IMAGE", f"torchclass/hub:{VERSION}")
# Debian's client has BuildKit built in; a newer client without its buildx plugin does not.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def free_port() -> int:
    """A TCP port nothing listens on now (containers here use the host's network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [DOCKER, *args], check=False, capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


class Container:
    """A detached container named with a uuid, removed (with its logs printed) at teardown."""

    def __init__(self, image: str, *args: str, run_args: tuple = (), prefix: str = "tc-test"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        docker("run", "-d", "--name", self.name, *run_args, image, *args)

    def exec(self, *cmd: str, user: str | None = None, timeout: int = 120, check=True):
        extra = ("--user", user) if user else ()
        return docker("exec", *extra, self.name, *cmd, timeout=timeout, check=check)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)


def wait_for_http(url: str, container: Container | None = None, timeout: float = 90,
                  headers: dict | None = None) -> tuple[float, bytes]:
    """Poll until url answers 200; returns (seconds waited, body)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as response:
                return time.monotonic() - start, response.read()
        except (OSError, http.client.HTTPException) as error:  # not up yet
            last = error
        if container is not None and not container.inspect()["State"]["Running"]:
            break
        time.sleep(0.25)
    logs = container.logs() if container else ""
    raise AssertionError(f"{url} did not answer within {timeout} s ({last})\n{logs[-4000:]}")
