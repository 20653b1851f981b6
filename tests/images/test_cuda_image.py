"""The CUDA notebook image on a GPU machine: torch sees the GPU inside the container.
CI has no GPU (and the ~6 GB CUDA build does not fit its time budget), so there this skips;
tests/images/test_dockerfiles.py checks the CUDA variant's recipe and lock instead."""

import shutil

import pytest
from imagetools import VERSION, docker

pytestmark = [pytest.mark.docker, pytest.mark.gpu]
CUDA_IMAGE = f"torchclass/notebook:{VERSION}-cuda"


def test_cuda_image_uses_the_gpu(docker_engine):
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi not found)")
    if docker("image", "inspect", CUDA_IMAGE, check=False).returncode != 0:
        pytest.skip(f"{CUDA_IMAGE} is not built: run 'make build-cuda'")
    out = docker("run", "--rm", "--gpus", "all", CUDA_IMAGE, "python", "-c",
                 "import torch; x = torch.ones(2, device='cuda'); "
                 "print(torch.version.cuda, torch.cuda.get_device_name(0), (x * 2).sum().item())",
                 timeout=300).stdout
    assert out.strip().endswith("4.0"), out
