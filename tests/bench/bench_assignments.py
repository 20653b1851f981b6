"""Grading time of every assignment: its solution alone, and its whole submission family.

    python tests/bench/bench_assignments.py --out DIR [--only s1-mnist-mlp,...] [--repeat 1]

For each assignment found (course/stage*/projects/*/submissions.yaml) it builds a throw-away
nbgrader course and times, with the real `nbgrader generate_assignment` and `autograde`:
the solution graded alone (what one student costs), the whole family in one autograde batch
(what the family test costs), and the solution notebook executed straight through with
nbclient (no nbgrader). Every kernel runs with OMP_NUM_THREADS=1, as in grading. Scores are
checked too: a family that grades wrong is reported, not timed silently.
Writes DIR/assignments.json and DIR/assignments.md.
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "grading"), str(REPO / "course"), str(REPO / "tests" / "grading")]

import families


def execute_solution(family, course_dir: Path) -> float:
    """Seconds to run the solution notebook top to bottom with nbclient (kernel start included)."""
    import nbformat
    from nbclient import NotebookClient

    path = course_dir / "submitted" / "solution" / family.assignment_id / f"{family.assignment_id}.ipynb"
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.monotonic() - started


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench(family, repeat: int) -> dict:
    solution_only = dataclasses.replace(family, members={"solution": family.members["solution"]})
    solo, solo_cpu, whole, execute, problems = [], [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-solution-") as tmp:
            # CPU seconds of nbgrader and its kernel: steadier than wall time on a busy machine.
            cpu = _child_cpu()
            result = families.grade_family(solution_only, tmp)
            solo_cpu.append(_child_cpu() - cpu)
            problems += result.mismatches()
            solo.append(result.autograde_seconds)
            generate = result.generate_seconds
            execute.append(execute_solution(family, Path(tmp)))
        with tempfile.TemporaryDirectory(prefix="bench-family-") as tmp:
            result = families.grade_family(family, tmp)
            problems += result.mismatches()
            whole.append(result.autograde_seconds)
    return {
        "assignment": family.assignment_id,
        "members": len(family.members),
        "timeout_per_cell": family.timeout,
        "generate_and_build_seconds": round(generate, 1),
        "execute_solution_seconds": round(statistics.median(execute), 1),
        "grade_solution_seconds": round(statistics.median(solo), 1),
        "generate_and_grade_solution_cpu_seconds": round(statistics.median(solo_cpu), 1),
        "grade_family_seconds": round(statistics.median(whole), 1),
        "scores_ok": not problems,
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated assignment ids")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TORCHCLASS_NO_DOWNLOAD"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "course"), str(REPO / "grading"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    import torch
    from torchclass_course import data

    # Build the offline data once, so no assignment's time includes it.
    data.mnist(), data.colour_images()
    wanted = set(filter(None, args.only.split(",")))
    found = [p for p in families.find_assignments(REPO) if not wanted or p.name in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    for path in found:
        print(f"== {path.name}", flush=True)
        rows.append(bench(families.load_family(path), args.repeat))
        print(json.dumps(rows[-1]), flush=True)
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_num_threads": 1,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    result = {"machine": machine, "total_seconds": round(time.monotonic() - started, 1), "assignments": rows}
    (args.out / "assignments.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        (
            "| assignment | members | execute solution (s) | grade solution (s) "
            "| generate + grade solution, CPU (s) | grade family (s) | scores |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['assignment']} | {r['members']} | {r['execute_solution_seconds']} | "
            f"{r['grade_solution_seconds']} | {r['generate_and_grade_solution_cpu_seconds']} | "
            f"{r['grade_family_seconds']} | "
            f"{'ok' if r['scores_ok'] else 'WRONG: ' + '; '.join(r['problems'])} |"
        )
    header = (
        f"# Assignment grading times\n\n{machine['platform']}, {machine['cpus']} CPUs "
        f"(1-min load {machine['load_average_1min']}), OMP_NUM_THREADS=1, torch {machine['torch']}, "
        f"{'GPU ' + machine['gpu'] if machine['gpu'] else 'no GPU'}. Grading times are one "
        "`nbgrader autograde` batch (kernel starts included); the family includes the "
        "infinite-loop member's per-cell timeout.\n\n"
    )
    (args.out / "assignments.md").write_text(header + "\n".join(lines) + "\n")
    print((args.out / "assignments.md").read_text())
    return 0 if all(r["scores_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
