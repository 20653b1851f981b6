"""The live k3s workflow: it deploys through the documented make targets with layers that
exist, and says plainly that it needs a real cluster."""

import shlex

import pytest
import yaml
from k8s_support import REPO

pytestmark = pytest.mark.k8s
WORKFLOW = REPO / ".github/workflows/k8s-live.yaml"


def test_live_workflow_deploys_the_documented_way():
    text = WORKFLOW.read_text()
    assert "needs a real cluster" in text.splitlines()[0].lower()
    flow = yaml.safe_load(text)
    steps = flow["jobs"]["k3s"]["steps"]
    script = "\n".join(s.get("run", "") for s in steps)
    assert "get.k3s.io" in script and "make deploy" in script and "make k8s-secret" in script
    words = shlex.split(script.replace("\\\n", " "))
    site = next(w.split("=", 1)[1] for w in words if w.startswith("SITE_VALUES="))
    assert (REPO / site).is_file()
    checker = next(w for w in words if w.endswith("check_k3s.py"))
    assert (REPO / checker).is_file()
    compile((REPO / checker).read_text(), checker, "exec")
