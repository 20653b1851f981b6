"""Fixtures for the image tests: a Docker engine, the images built once per run. Builds go
through the Makefile (the same path users take); a lock file keeps the two xdist workers from
building the same image at once."""

import fcntl
import os
import subprocess
from pathlib import Path

import pytest
from imagetools import DOCKER, HUB_IMAGE, NOTEBOOK_IMAGE, REPO

BUILD_TIMEOUT = 1500


@pytest.fixture(scope="session")
def docker_engine():
    if not Path(DOCKER).exists() and subprocess.run(["which", DOCKER], check=False).returncode != 0:
        pytest.skip("no docker client (Debian docker.io): run 'sudo make provision'")
    if subprocess.run([DOCKER, "info"], check=False, capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers: run 'sudo make provision' (it starts one)")
    return DOCKER


def _build(target: str, image: str) -> str:
    """`make <target>` once per run across workers; later calls find the image and a fresh mark."""
    lock_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "torchclass-image-builds"
    lock_dir.mkdir(exist_ok=True)
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getppid()))
    mark = lock_dir / f"{image.replace('/', '_')}.{run_id}"
    with open(lock_dir / f"{image.replace('/', '_')}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not mark.exists():
            log = lock_dir / f"{image.replace('/', '_')}.build.log"
            with open(log, "w") as out:
                result = subprocess.run(
                    ["make", "--no-print-directory", target], check=False, cwd=REPO, stdout=out,
                    stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT,
                )
            if result.returncode != 0:
                print(log.read_text()[-6000:])
                raise AssertionError(f"make {target} failed; log above and in {log}")
            mark.touch()
    return image


@pytest.fixture(scope="session")
def notebook_image(docker_engine) -> str:
    return _build("build-cpu", NOTEBOOK_IMAGE)


@pytest.fixture(scope="session")
def hub_image(docker_engine) -> str:
    return _build("build-hub", HUB_IMAGE)


