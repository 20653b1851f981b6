"""Benchmark the images: build time and uncompressed size of each, and container start-to-ready
time (docker run until the server answers /api). Builds go through the Makefile, cold by
default (image removed, --no-cache), so the build time is what a fresh machine pays.

    python tests/bench/bench_images.py --out DIR [--cuda] [--warm]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "images"))
from imagetools import (
    DOCKER,
    HUB_IMAGE,
    NOTEBOOK_IMAGE,
    REPO,
    VERSION,
    Container,
    docker,
    free_port,
    wait_for_http,
)

BUDGET_GB = {"notebook (CPU)": 3.0, "notebook (CUDA)": 7.0}
DOCKER_STACKS_GB = {"notebook (CPU)": 4.4, "notebook (CUDA)": 8.8}


def build(target: str, image: str, cold: bool) -> float:
    if cold:
        docker("rmi", "-f", image, check=False)
    start = time.monotonic()
    cmd = ["make", "--no-print-directory", target]
    if cold:
        cmd.append("DOCKER_BUILD_FLAGS=--no-cache")
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def image_facts(image: str) -> dict:
    info = json.loads(docker("image", "inspect", image).stdout)[0]
    torch = docker("run", "--rm", "--entrypoint", "python", image, "-c",
                   "import importlib.metadata as m\n"
                   "try: print(m.version('torch'))\nexcept m.PackageNotFoundError: print('-')",
                   timeout=120).stdout.strip()
    return {"size_bytes": info["Size"], "size_gb": round(info["Size"] / 1e9, 2), "torch": torch}


def start_to_ready(image: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        port = free_port()
        start = time.monotonic()
        container = Container(image, "start-notebook", "--ServerApp.token=bench",
                              run_args=("--network", "host", "-e", f"JUPYTER_PORT={port}"),
                              prefix="tc-bench")
        try:
            wait_for_http(f"http://127.0.0.1:{port}/api", container, timeout=120)
            times.append(round(time.monotonic() - start, 2))
        finally:
            container.remove()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cuda", action="store_true", help="also build the CUDA image (~6 GB)")
    parser.add_argument("--warm", action="store_true", help="keep the layer cache (rebuild time)")
    parser.add_argument("--runs", type=int, default=3, help="container starts to time")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode != 0:
        sys.exit("bench_images: no Docker engine answers; run 'make docker-engine'")
    targets = [("notebook (CPU)", "build-cpu", NOTEBOOK_IMAGE), ("hub", "build-hub", HUB_IMAGE)]
    if args.cuda:
        targets.append(("notebook (CUDA)", "build-cuda", f"torchclass/notebook:{VERSION}-cuda"))
    results = {"machine": f"{platform.node()} {os.cpu_count()} cores", "cold": not args.warm,
               "images": {}}
    for name, target, image in targets:
        seconds = build(target, image, cold=not args.warm)
        entry = {"image": image, "build_s": round(seconds, 1), **image_facts(image)}
        if name.startswith("notebook"):
            ready = start_to_ready(image, args.runs)
            entry["start_to_ready_s"] = ready
            entry["start_to_ready_median_s"] = statistics.median(ready)
        if name in BUDGET_GB:
            entry["budget_gb"] = BUDGET_GB[name]
            entry["docker_stacks_gb"] = DOCKER_STACKS_GB[name]
        results["images"][name] = entry
        print(name, entry, flush=True)
    (args.out / "images.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| image | tag | torch wheel | size (GB) | budget | build (s) | start-to-ready (s) |",
            "|---|---|---|---|---|---|---|"]
    for name, e in results["images"].items():
        rows.append(f"| {name} | `{e['image']}` | {e['torch']} | {e['size_gb']} | "
                    f"{e.get('budget_gb', '-')} | {e['build_s']} | "
                    f"{e.get('start_to_ready_median_s', '-')} |")
    note = ("\nA torch version without `+cpu` in the CPU row means this machine could not reach "
            "download.pytorch.org and built with PyPI's CUDA wheel; users' CPU builds get "
            "`2.14.1+cpu`.\n")
    (args.out / "images.md").write_text("\n".join(rows) + "\n" + note)
    print((args.out / "images.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
