"""Live check of a deployed torchclass on a real cluster (NOT part of `make test`: it needs a
Kubernetes API server, which CI's machine cannot run). Run by .github/workflows/k8s-live.yaml
after `make deploy` on k3s, or by hand against any test deployment:

    kubectl -n torchclass port-forward svc/proxy-public 8080:80 &
    python3 tests/k8s/live/check_k3s.py --url http://127.0.0.1:8080 --namespace torchclass

Two students log in through the hub's login form (the chart's dummy login) and get their pods;
the check then asserts, inside those real pods, what the offline tests assert on paper.
Standard library and kubectl only.
"""

import argparse
import http.cookiejar
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

EXCHANGE = "/srv/nbgrader/exchange/torchclass"


def kubectl(ns, *args, check=True):
    proc = subprocess.run(["kubectl", "-n", ns, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def in_pod(ns, pod, script, check=True):
    return kubectl(ns, "exec", pod, "-c", "notebook", "--", "sh", "-c", script, check=check)


def login_and_spawn(url, user):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/hub/login", timeout=30).read()
    xsrf = next((c.value for c in jar if c.name == "_xsrf"), "")
    form = urllib.parse.urlencode({"username": user, "password": "live-test", "_xsrf": xsrf})
    opener.open(f"{url}/hub/login?next=/hub/spawn", data=form.encode(), timeout=60).read()


def wait_ready(ns, pod, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = kubectl(ns, "get", "pod", pod, "-o", "json", check=False)
        if proc.returncode == 0:
            status = json.loads(proc.stdout)["status"]
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in status.get("conditions", [])):
                return
        time.sleep(5)
    print(kubectl(ns, "describe", "pod", pod, check=False).stdout)
    raise SystemExit(f"{pod} was not ready within {timeout} s")


def expect(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the proxy's address, e.g. a port-forward")
    parser.add_argument("--namespace", default="torchclass")
    args = parser.parse_args(argv)
    ns, results = args.namespace, []
    for user in ("ana", "ben"):
        login_and_spawn(args.url, user)
    for user in ("ana", "ben"):
        wait_ready(ns, f"jupyter-{user}")

    ana, ben = "jupyter-ana", "jupyter-ben"
    results.append(expect(in_pod(ns, ana, "id -u").stdout.strip() == "1000", "runs as uid 1000"))
    results.append(expect(
        in_pod(ns, ana, "touch /srv/torchclass/data/x", check=False).returncode != 0,
        "datasets are read-only"))
    results.append(expect("tmpfs" in in_pod(ns, ana, "df /dev/shm").stdout + in_pod(
        ns, ana, "mount | grep /dev/shm || true").stdout, "/dev/shm is memory-backed"))
    results.append(expect(
        sorted(in_pod(ns, ana, f"ls {EXCHANGE}").stdout.split()) == ["feedback", "inbound",
                                                                       "outbound"],
        "the exchange view holds only outbound, own inbound, own feedback"))
    in_pod(ns, ana, f"mkdir {EXCHANGE}/inbound/ana+live+t && echo mine > "
                    f"{EXCHANGE}/inbound/ana+live+t/answer.txt")
    results.append(expect(in_pod(ns, ben, f"ls -A {EXCHANGE}/inbound").stdout.strip() == "",
                          "ben cannot see ana's submission"))
    results.append(expect(
        in_pod(ns, ben, f"touch {EXCHANGE}/outbound/x", check=False).returncode != 0,
        "releases are read-only for students"))
    grader = kubectl(ns, "exec", "deploy/formgrader-torchclass", "--", "cat",
                     f"{EXCHANGE}/students/ana/inbound/ana+live+t/answer.txt", check=False)
    results.append(expect(grader.stdout.strip() == "mine", "the grader sees ana's submission"))
    direct = in_pod(ns, ben, "python -c \"import urllib.request; urllib.request.urlopen("
                             "'http://formgrader-torchclass:8888/', timeout=5)\"", check=False)
    results.append(expect(direct.returncode != 0,
                          "a student pod cannot reach the formgrader directly (NetworkPolicy)"))
    if not all(results):
        raise SystemExit(f"{results.count(False)} live check(s) failed")
    print("all live checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
