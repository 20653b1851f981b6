"""Benchmark of the classroom on this machine (`make bench`): hub start time, login-to-server-
ready latency for 10 students one after another and 10 at once, and hub memory with 10 servers.

    python tests/bench/bench_hub.py --out bench-results/

Runs a throw-away classroom (uuid-named Unix users, removed afterwards); needs root. Writes
hub.json and hub.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hub"))

import psutil
from classroom_fixture import TestClassroom
from hubclient import HubClient

N = 10


def login_to_ready(room: TestClassroom, user: str, password: str) -> float:
    t0 = time.monotonic()
    client = HubClient(room.url, user)
    r = client.login(password)
    if r.status_code != 302:
        raise RuntimeError(f"login of {user}: {r.status_code}")
    client.start_server()
    return time.monotonic() - t0


def stop_all(room: TestClassroom, users, passwords) -> None:
    for user in users:
        c = HubClient(room.url, user)
        c.login(passwords[user])
        c.stop_server()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not c.api("GET", f"users/{user}").json().get("servers"):
                break
            time.sleep(0.2)


def pct(values, q) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values) -> dict:
    return {"n": len(values), "p50_s": round(pct(values, 0.5), 3),
            "p95_s": round(pct(values, 0.95), 3), "max_s": round(max(values), 3),
            "mean_s": round(statistics.mean(values), 3)}


def rss_mb(pid: int, children: bool = False) -> float:
    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)] if children else [p]
    return round(sum(x.memory_info().rss for x in procs if x.is_running()) / 2**20, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_hub: skipped, needs root (creates real Unix users)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    room = TestClassroom(n_students=2 * N)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_avg_at_start": os.getloadavg()}}
    try:
        t0 = time.monotonic()
        room.up()
        results["first_up_s"] = round(time.monotonic() - t0, 2)  # accounts, course, release
        room.down()
        t0 = time.monotonic()
        room.up()
        results["hub_start_s"] = round(time.monotonic() - t0, 2)  # everything already prepared
        passwords = room.passwords()
        first, second = room.students[:N], room.students[N:]

        seq = [login_to_ready(room, u, passwords[u]) for u in first]
        results["sequential"] = summary(seq)
        stop_all(room, first, passwords)

        with ThreadPoolExecutor(N) as pool:
            conc = list(pool.map(lambda u: login_to_ready(room, u, passwords[u]), second))
        results["concurrent"] = summary(conc)

        pid = room.hub_pid()
        hub = psutil.Process(pid)
        # Users' servers run in their own sessions, not as the hub's children: find them by owner.
        servers = [p for p in psutil.process_iter(["username", "cmdline"])
                   if p.info["username"] in second
                   and "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or [])]
        results["memory_with_10_servers_mb"] = {
            "hub": rss_mb(pid),
            "proxy": sum(rss_mb(p.pid) for p in hub.children()
                         if "configurable-http-proxy" in " ".join(p.cmdline())),
            "servers_running": len(servers),
            "all_servers": round(sum(p.memory_info().rss for p in servers) / 2**20, 1),
        }
    finally:
        room.teardown()
    (args.out / "hub.json").write_text(json.dumps(results, indent=1))
    mem = results["memory_with_10_servers_mb"]
    md = "\n".join([
        "# Hub benchmark",
        "",
        (f"{results['machine']['cpus']} CPUs, load average at start "
         f"{results['machine']['load_avg_at_start'][0]:.1f}."),
        "",
        "| measure | value |",
        "|---|---|",
        f"| first `up` (accounts, course, release, hub start) | {results['first_up_s']} s |",
        f"| hub start (`up` again, data kept) | {results['hub_start_s']} s |",
        (f"| login to server ready, {N} one after another, p50 / p95 | "
         f"{results['sequential']['p50_s']} / {results['sequential']['p95_s']} s |"),
        (f"| login to server ready, {N} at once, p50 / p95 | "
         f"{results['concurrent']['p50_s']} / {results['concurrent']['p95_s']} s |"),
        f"| hub RSS with {mem['servers_running']} servers | {mem['hub']} MiB |",
        f"| proxy RSS | {mem['proxy']} MiB |",
        f"| the {mem['servers_running']} servers' RSS together | {mem['all_servers']} MiB |",
        "",
    ])
    (args.out / "hub.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
