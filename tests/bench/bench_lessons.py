"""Benchmark: how long every lesson notebook takes to execute, on CPU and (where one is present)
on the GPU. Writes lessons.json and lessons.md into --out.

    python tests/bench/bench_lessons.py --out bench-results [--only 'stage[12]/'] [--threads 1]
"""

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "course"))

from torchclass_course.notebooks import LessonFailed, execute


def lessons(only: str | None) -> list[Path]:
    course = REPO / "course"
    found = sorted([*course.glob("stage*/lessons/*.ipynb"), *course.glob("tools/*.ipynb")])
    return [p for p in found if not only or re.search(only, str(p.relative_to(course)))]


def run_all(paths: list[Path], device: str, cache: Path) -> list[dict]:
    rows = []
    for path in paths:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TORCHCLASS_DATA"] = str(Path(tmp) / "no-staged-data")
            # CPU runs hide the GPU from the kernel; GPU runs leave it visible.
            if device == "cpu":
                os.environ["CUDA_VISIBLE_DEVICES"] = ""
            else:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            os.environ["TORCHCLASS_CACHE"] = str(cache)
            rel = str(path.relative_to(REPO / "course"))
            try:
                run = execute(path, cwd=Path(tmp))
                rows.append({"lesson": rel, "device": device, "seconds": run.seconds,
                             "budget": run.budget, "slowest_cell": max(run.cell_seconds, default=0),
                             "ok": True})
            except LessonFailed as e:
                rows.append({"lesson": rel, "device": device, "seconds": None, "ok": False,
                             "error": str(e)[:2000]})
            print(f"{device:4s} {rel:55s} {rows[-1]['seconds']}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", help="run only lessons whose path (under course/) matches this regex")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for the kernels")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = args.threads
    os.environ["TORCHCLASS_NO_DOWNLOAD"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "course"), *filter(None, [os.environ.get("PYTHONPATH")])])
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    paths = lessons(args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as cache:
        # One warm-up build of the offline data so no lesson's time includes it.
        from torchclass_course import data

        os.environ["TORCHCLASS_CACHE"] = cache
        data.mnist(), data.fashion_mnist(), data.colour_images()
        rows = [row for device in devices for row in run_all(paths, device, Path(cache))]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "omp_num_threads": args.threads, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None},
        "total_seconds": round(time.time() - started, 1),
        "lessons": rows,
    }
    (args.out / "lessons.json").write_text(json.dumps(result, indent=1) + "\n")
    by_lesson: dict[str, dict] = {}
    for row in rows:
        by_lesson.setdefault(row["lesson"], {})[row["device"]] = row
    lines = ["| lesson | budget (s) | " + " | ".join(f"{d} (s)" for d in devices) + " |",
             "|---|---|" + "---|" * len(devices)]
    for lesson, per_device in by_lesson.items():
        cells = [f"{r['seconds']}" if r["ok"] else "FAILED" for r in (per_device[d] for d in devices)]
        budget = next((r.get("budget") for r in per_device.values() if r.get("budget")), "")
        lines.append(f"| {lesson} | {budget} | " + " | ".join(cells) + " |")
    machine = result["machine"]
    header = (f"# Lesson execution times\n\n{machine['platform']}, {machine['cpus']} CPUs, "
              f"OMP_NUM_THREADS={args.threads}, torch {machine['torch']}"
              + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU") + "\n\n")
    (args.out / "lessons.md").write_text(header + "\n".join(lines) + "\n")
    print((args.out / "lessons.md").read_text())
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
