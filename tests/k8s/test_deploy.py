"""`make deploy` hands Helm exactly the layers, in exactly the order, that the offline tests
validate (torchclass_deploy.render's notion of them): checked on the command make would run."""

import shlex
import shutil
import subprocess

import pytest
from k8s_support import REPO
from torchclass_deploy import layers

pytestmark = pytest.mark.k8s


def planned(*args):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-n", "--no-print-directory", "deploy", "PY=python3", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    helm = next(line for line in proc.stdout.replace("\\\n", " ").splitlines()
                if line.strip().startswith("helm upgrade --install"))
    return proc.stdout, shlex.split(helm)


def flags(words, name):
    return [words[i + 1] for i, w in enumerate(words) if w == name]


def test_deploy_layers_in_documented_order():
    out, helm = planned("SITE_VALUES=k8s/values/site.example.yaml", "CLASSROOM=hub/classroom.yaml")
    assert helm[3:5] == ["torchclass", "k8s/chart"]
    assert flags(helm, "-f") == ["k8s/values/gpu.yaml", "build/k8s-classroom-values.yaml",
                                 "k8s/values/site.example.yaml"]
    assert flags(helm, "--set-file") == [f"{key}={path.relative_to(REPO)}"
                                         for key, path in layers.SET_FILES]
    # The objects torchclass adds are rendered from the same layers just before.
    assert ("-m torchclass_deploy.render manifests --site k8s/values/site.example.yaml "
            "--classroom hub/classroom.yaml --out k8s/chart/templates/torchclass.generated.yaml"
            in " ".join(out.split()))
    assert "helm dependency build k8s/chart" in out


def test_deploy_without_gpu_layer():
    _, helm = planned("SITE_VALUES=k8s/values/site.example.yaml", "GPU_VALUES=")
    assert flags(helm, "-f") == ["k8s/values/site.example.yaml"]
