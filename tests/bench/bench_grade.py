"""Grading a class: stock `nbgrader autograde` against the torchclass engine, same submissions.

    python tests/bench/bench_grade.py --out DIR [--submissions 40]
        [--assignment s1-linear-regression] [--workers 1,2,4] [--repeat 1]

It builds one throw-away nbgrader course from the assignment's submission family
(families.build_family: source, real release, gradebook) and turns the family into a class of
--submissions students, each a copy of one member under a distinct student id. The mix is
mostly solution / alternative / partial with a few untouched and cheat submissions. The
infinite-loop member is left out: it waits its per-cell timeout whoever grades it, which
measures the timeout, not the grader (bench_assignments.py times the whole family).

Every grading run starts from a fresh copy of that ungraded course:
- stock: one `nbgrader autograde AID --force` batch, as the instructor would run it;
- engine: torchclass_grading.engine.Engine(...).run() at each --workers count.
Each run's per-student, per-cell gradebook scores must equal stock's, and stock's must equal
submissions.yaml; a difference is printed, written to the results and fails the run (exit 1).

Definitions (also written into the results):
- own run time: the notebook's own work: the autograded notebook's cells (test cells
  restored, hidden tests included) run by nbclient in a kernel that has already imported
  what the engine's kernel factory preloads (torch, numpy, matplotlib, ...), no grader around
  it; the class's own run time is the mix-weighted mean over the members.
- cold run: the same notebook in a plain kernel, kernel start and every import included, as
  stock nbgrader runs each submission.
- core-seconds per submission: wall * min(workers, CPUs) / submissions (stock: one worker).
- overhead per submission: core-seconds (or CPU seconds) per submission minus the own run time.
- engine execute: Outcome.seconds, the notebook's execution in the worker's sandbox (kernel
  start included); engine prepare / record: the grader's serial work per submission
  (nbgrader's sanitizing preprocessors; nbgrader's Autograde recording into the gradebook),
  timed by wrapping those two Engine methods here, not in the engine.
- CPU seconds: user + system time of the grader and everything it started (kernels included);
  steadier than wall time on a shared machine.
- breakdown: a plain kernel's start, `import torch`, `import matplotlib.pyplot, numpy`, the
  rest of the cold run, the own run; stock graded one submission alone and in the batch.
Writes DIR/grade.json and DIR/grade.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "grading"), str(REPO / "course"), str(REPO / "tests" / "grading")]

import families
from torchclass_grading import engine, sandbox

# Share of the class each member makes up (the infinite-loop member is left out, see above).
MIX = {"solution": 14, "alternative": 10, "partial": 10, "untouched": 3, "cheat": 3}


def class_mix(family, n: int) -> list[tuple[str, str]]:
    """[(student id, member)] for n students, shares as MIX, members interleaved."""
    weights = {m: w for m, w in MIX.items() if m in family.members}
    total = sum(weights.values())
    exact = {m: n * w / total for m, w in weights.items()}
    counts = {m: int(x) for m, x in exact.items()}
    # Largest remainders get the students rounding left over.
    for m in sorted(exact, key=lambda m: exact[m] - counts[m], reverse=True)[: n - sum(counts.values())]:
        counts[m] += 1
    # Spread each member evenly through the list, so every worker gets a realistic mix.
    order = sorted(((k + 0.5) / c, m) for m, c in counts.items() for k in range(c))
    return [(f"st{i + 1:03d}-{m}", m) for i, (_, m) in enumerate(order)]


def build_class(family, students: list[tuple[str, str]], course: Path) -> None:
    families.build_family(family, course)
    aid = family.assignment_id
    submitted = course / "submitted"
    for sid, member in students:
        shutil.copytree(submitted / member / aid, submitted / sid / aid)
    for member in family.members:
        shutil.rmtree(submitted / member)


def fresh_copy(family, base: Path, tmp: Path, name: str) -> Path:
    dest = tmp / name
    shutil.copytree(base, dest)
    # nbgrader_config.py names the course root: point it at the copy, or nbgrader grades the base.
    families._write_config(dest, family)
    return dest


def _cpu() -> float:
    sandbox.reap_children()  # descendants that ended after their parent, CPU time with them
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _self_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def load() -> float:
    return round(os.getloadavg()[0], 2)


class LoadDuring:
    """Mean 1-minute load average while a run goes on, sampled every few seconds: how busy the
    shared machine was, which the load just before a run does not tell."""

    def __enter__(self):
        import threading

        self.samples, self._stop = [load()], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(3):
            self.samples.append(load())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.mean = round(statistics.mean(self.samples), 1)


def scores(family40, course: Path) -> dict[str, dict]:
    got, _, _ = families.read_scores(family40, course)
    return {sid: {"total": r.total, "cells": r.cells} for sid, r in got.items()}


def expectation_problems(family40, got: dict[str, dict]) -> list[str]:
    """Where stock's gradebook contradicts submissions.yaml."""
    problems = []
    for sid, member in family40.members.items():
        if sid not in got:
            problems.append(f"{sid}: not in the gradebook")
            continue
        if got[sid]["total"] != member.score:
            problems.append(f"{sid}: stock scored {got[sid]['total']}, submissions.yaml says {member.score}")
        for cell, pts in member.cells_scores.items():
            if got[sid]["cells"].get(cell) != pts:
                problems.append(f"{sid}: stock scored {cell}={got[sid]['cells'].get(cell)}, expected {pts}")
    return problems


def differences(stock: dict, other: dict) -> list[str]:
    out = []
    for sid in sorted(set(stock) | set(other)):
        a, b = stock.get(sid), other.get(sid)
        if a != b:
            out.append(f"{sid}: stock {a}, engine {b}")
    return out


def run_stock(course: Path, aid: str, student: str | None = None) -> dict:
    args = ["autograde", aid, "--force"] + ([f"--student={student}"] if student else [])
    before, cpu = load(), _cpu()
    t0 = time.monotonic()
    with LoadDuring() as during:
        proc = families._nbgrader(args, course)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stock nbgrader autograde failed in {course}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return {"wall": wall, "cpu": _cpu() - cpu, "load_before": before, "load_during": during.mean}


def run_engine(course: Path, aid: str, workers: int) -> dict:
    eng = engine.Engine(course, aid, workers=workers)
    spent = {"prepare": 0.0, "record": 0.0}

    # The grader's two serial steps, timed from outside the engine.
    def timed(step, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t = time.monotonic()
            try:
                return fn(*a, **k)
            finally:
                spent[step] += time.monotonic() - t
        return wrapper

    eng.prepare = timed("prepare", eng.prepare)
    eng.record = timed("record", eng.record)
    before, cpu, own = load(), _cpu(), _self_cpu()
    t0 = time.monotonic()
    with LoadDuring() as during:
        outcomes = eng.run(force=True)
    wall = time.monotonic() - t0
    return {"wall": wall, "cpu": _cpu() - cpu, "grader_cpu": _self_cpu() - own, "load_before": before,
            "load_during": during.mean, "outcomes": outcomes, **spent}


def cold_run(course: Path, aid: str, student: str, repeat: int) -> tuple[float, float]:
    """Wall and CPU seconds for nbclient to run the autograded notebook in a plain kernel.

    Kernel start included; CPU counts this process and the kernel.
    """
    import nbformat
    from nbclient import NotebookClient

    path = course / "autograded" / student / aid / f"{aid}.ipynb"
    runs, cpu = [], []
    for _ in range(repeat):
        nb = nbformat.read(path, as_version=4)
        c0 = _cpu()
        with tempfile.TemporaryDirectory(prefix="bench-own-") as cwd:
            for p in path.parent.iterdir():
                if p.is_file() and p.suffix != ".ipynb":
                    shutil.copy(p, cwd)
            t0 = time.monotonic()
            NotebookClient(nb, timeout=600, allow_errors=True,
                           resources={"metadata": {"path": cwd}}).execute()
            runs.append(time.monotonic() - t0)
        cpu.append(_cpu() - c0)
    return statistics.median(runs), statistics.median(cpu)


KERNEL_CPU = "sum(__import__('resource').getrusage(0)[:2])"


def own_run(course: Path, aid: str, student: str, repeat: int) -> tuple[float, float]:
    """Wall and kernel-CPU seconds of the autograded notebook's cells alone, in a plain kernel
    that has first imported what the engine's kernel factory preloads: the notebook's own work,
    with no kernel start and no library import in it."""
    import nbformat
    from nbclient import NotebookClient

    preload = [*getattr(engine, "PRELOAD", []), *getattr(engine, "TORCH_PRELOAD", [])]
    path = course / "autograded" / student / aid / f"{aid}.ipynb"
    probe = f"print({KERNEL_CPU})"
    runs, cpu = [], []
    for _ in range(repeat):
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory(prefix="bench-warm-") as cwd:
            for p in path.parent.iterdir():
                if p.is_file() and p.suffix != ".ipynb":
                    shutil.copy(p, cwd)
            client = NotebookClient(nb, timeout=600, allow_errors=True,
                                    resources={"metadata": {"path": cwd}})
            with client.setup_kernel():
                warm = nbformat.v4.new_code_cell("\n".join(f"import {m}" for m in preload) + "\n" + probe)
                client.execute_cell(warm, 0)
                t0 = time.monotonic()
                for i, cell in enumerate(nb.cells):
                    if cell.cell_type == "code":
                        client.execute_cell(cell, i)
                runs.append(time.monotonic() - t0)
                end = nbformat.v4.new_code_cell(probe)
                client.execute_cell(end, 0)
            cpu.append(float(end.outputs[-1]["text"]) - float(warm.outputs[-1]["text"]))
    return statistics.median(runs), statistics.median(cpu)
# What a plain kernel pays before the notebook's own work, step by step (each after the last).
IMPORT_STEPS = {"torch_import": "import torch", "plot_import": "import matplotlib.pyplot, numpy"}


def kernel_stages(repeat: int) -> dict:
    """Median wall and CPU seconds to start a plain python kernel (until it answers), then to
    run each of IMPORT_STEPS in it; CPU as the kernel itself counts it."""
    from jupyter_client.manager import KernelManager

    def kernel_cpu(kc) -> float:
        reply = kc.execute_interactive("", user_expressions={"cpu": KERNEL_CPU}, timeout=60)
        return float(reply["content"]["user_expressions"]["cpu"]["data"]["text/plain"])

    wall = {k: [] for k in ["kernel_start", *IMPORT_STEPS]}
    cpu = {k: [] for k in wall}
    for _ in range(repeat):
        km = KernelManager(kernel_name="python3")
        t0 = time.monotonic()
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            wall["kernel_start"].append(time.monotonic() - t0)
            cpu["kernel_start"].append(c0 := kernel_cpu(kc))
            for step, code in IMPORT_STEPS.items():
                t0 = time.monotonic()
                reply = kc.execute_interactive(code, timeout=120)
                wall[step].append(time.monotonic() - t0)
                if reply["content"]["status"] != "ok":
                    raise SystemExit(f"{code!r} failed in a plain kernel: {reply['content']}")
                cpu[step].append((c1 := kernel_cpu(kc)) - c0)
                c0 = c1
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return {**{f"{k}_s": round(statistics.median(v), 2) for k, v in wall.items()},
            **{f"{k}_cpu_s": round(statistics.median(v), 2) for k, v in cpu.items()}}


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def row(grader: str, workers: int, run: dict, n: int, cpus: int, own: float, own_cpu: float,
        stock: dict, problems: list[str]) -> dict:
    core_s = run["wall"] * min(workers, cpus) / n
    r = {
        "grader": grader, "workers": workers,
        "wall_s": round(run["wall"], 1),
        "speedup_vs_stock": round(stock["wall"] / run["wall"], 2),
        # What the CPU time alone predicts on an idle machine, min(workers, CPUs) cores kept busy.
        "idle_machine_speedup_estimate": round(stock["cpu"] * min(workers, cpus) / run["cpu"], 2),
        "submissions_per_min": round(60 * n / run["wall"], 1),
        "cpu_s": round(run["cpu"], 1),
        "cpu_s_per_submission": round(run["cpu"] / n, 2),
        "cpu_overhead_per_submission_s": round(run["cpu"] / n - own_cpu, 2),
        "core_s_per_submission": round(core_s, 2),
        "overhead_per_submission_s": round(core_s - own, 2),
        "load_before": run["load_before"],
        "load_during": run["load_during"],
        "scores_identical_to_stock": not problems,
        "problems": problems,
    }
    if grader == "engine":
        outs = run["outcomes"]
        r.update({
            "engine_execute_mean_s": round(statistics.mean(o.seconds for o in outs), 2),
            "engine_execute_overhead_s": round(statistics.mean(o.seconds for o in outs) - own, 2),
            "grader_prepare_per_submission_s": round(run["prepare"] / n, 3),
            "grader_record_per_submission_s": round(run["record"] / n, 3),
            "grader_cpu_per_submission_s": round(run["grader_cpu"] / n, 3),
            "graded": sum(o.status == "graded" for o in outs),
            "errors": [f"{o.student}: {o.problems}" for o in outs if o.status == "error"],
        })
    return r


def markdown(result: dict) -> str:
    m, b = result["machine"], result["breakdown"]
    lines = [
        (f"# Grading {result['submissions']} submissions of {result['assignment']}: stock nbgrader vs "
         "the torchclass engine\n"),
        f"{m['platform']}, {m['cpus']} CPUs, load average {m['load_average_before']} (1/5/15 min) "
        f"before the runs (the machine is shared, so times are noisy), OMP_NUM_THREADS=1, "
        f"torch {m['torch']}, engine {'sandboxed (root)' if m['sandboxed'] else 'NOT sandboxed (not root)'}"
        f", commit {m['commit']}. Mix: "
        + ", ".join(f"{c} {k}" for k, c in result["mix"].items())
        + " (infinite-loop left out). Mix-weighted per notebook: own run (its cells, libraries "
        f"already imported) {result['own_run_time_s']} s wall, {result['own_run_cpu_s']} s CPU; "
        f"cold run (plain kernel: start, imports, cells) {result['cold_run_time_s']} s wall, "
        f"{result['cold_run_cpu_s']} s CPU.\n",
        ("| grader | workers | wall (s) | speedup | idle estimate | subs/min | core-s/sub "
         "| overhead/sub (s) | CPU/sub (s) | CPU overhead/sub (s) | engine execute (s) "
         "| prepare+record/sub (s) | load before / during | scores |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        eng = r["grader"] == "engine"
        lines.append(
            f"| {r['grader']} | {r['workers']} | {r['wall_s']} | {r['speedup_vs_stock']}x | "
            f"{r['idle_machine_speedup_estimate']}x | "
            f"{r['submissions_per_min']} | {r['core_s_per_submission']} | "
            f"{r['overhead_per_submission_s']} | {r['cpu_s_per_submission']} | "
            f"{r['cpu_overhead_per_submission_s']} | "
            f"{r['engine_execute_mean_s'] if eng else '-'} | "
            f"{round(r['grader_prepare_per_submission_s'] + r['grader_record_per_submission_s'], 3) if eng else '-'} | "
            f"{r['load_before']} / {r['load_during']} | "
            f"{'identical' if r['scores_identical_to_stock'] else 'DIFFERENT: ' + '; '.join(r['problems'][:5])} |"
        )
    lines += [
        "",
        "Where the time goes, per submission (seconds):\n",
        "| stage | wall s | CPU s |", "|---|---|---|",
        f"| plain kernel start (until it answers) | {b['kernel_start_s']} | {b['kernel_start_cpu_s']} |",
        f"| `import torch` in that kernel | {b['torch_import_s']} | {b['torch_import_cpu_s']} |",
        f"| then `import matplotlib.pyplot, numpy` | {b['plot_import_s']} | {b['plot_import_cpu_s']} |",
        (f"| the rest of the solution's cold run (first use of libraries, its cells) | {b['cells_s']} "
         f"| {b['cells_cpu_s']} |"),
        (f"| cold run per member | {', '.join(f'{k} {v}' for k, v in b['cold_run_time_by_member_s'].items())} "
         f"| {', '.join(f'{k} {v}' for k, v in b['cold_run_cpu_by_member_s'].items())} |"),
        (f"| own run per member (cells only, libraries imported) "
         f"| {', '.join(f'{k} {v}' for k, v in b['own_run_time_by_member_s'].items())} "
         f"| {', '.join(f'{k} {v}' for k, v in b['own_run_cpu_by_member_s'].items())} |"),
        f"| stock: one submission alone (`nbgrader autograde --student`, process start included) | {b['stock_single_s']} | {b['stock_single_cpu_s']} |",
        f"| stock: in the batch (per submission) | {b['stock_batch_per_submission_s']} | {b['stock_batch_cpu_per_submission_s']} |",
        (f"| stock: overhead in the batch (per submission minus own run: kernel start, imports, nbgrader) "
         f"| {b['stock_overhead_s']} | {b['stock_cpu_overhead_s']} |"),
        (f"| stock: nbgrader's own share of it (per submission minus cold run) "
         f"| {b['stock_nbgrader_s']} | {b['stock_nbgrader_cpu_s']} |"),
    ]
    for r in result["runs"]:
        if r["grader"] == "engine":
            lines.append(
                f"| engine, {r['workers']} workers: execute in the sandbox (own + "
                f"{r['engine_execute_overhead_s']} wall); the grader's prepare "
                f"{r['grader_prepare_per_submission_s']} + record {r['grader_record_per_submission_s']} wall; "
                f"CPU all told (own + {r['cpu_overhead_per_submission_s']}), of it the grader process "
                f"{r['grader_cpu_per_submission_s']} | {r['engine_execute_mean_s']} | "
                f"{r['cpu_s_per_submission']} |")
    lines += [
        "",
        "Definitions: " + " ".join(f"*{k}*: {v}" for k, v in result["definitions"].items()),
        "",
        f"Target (issue 7): at least 3x faster than stock on 2 cores: {result['target_3x']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--assignment", default="s1-linear-regression")
    parser.add_argument("--workers", default="1,2,4", help="engine worker counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each own-run-time and kernel-stage measurement (median)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    if args.submissions < 1 or not workers or min(workers) < 1:
        parser.error("--submissions and every --workers count must be at least 1")
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TORCHCLASS_NO_DOWNLOAD"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "course"), str(REPO / "grading"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # Plain kernels (own run time, kernel stages) must come from this venv, as nbgrader's do.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    import torch

    sandbox.become_subreaper()
    found = {p.name: p for p in families.find_assignments(REPO)}
    if args.assignment not in found:
        parser.error(f"--assignment {args.assignment}: no course/stage*/projects/{args.assignment}/"
                     f"submissions.yaml (found: {', '.join(sorted(found))})")
    family = families.load_family(found[args.assignment])
    aid = family.assignment_id
    students = class_mix(family, args.submissions)
    member_of = dict(students)
    # The class as a family of its own: read_scores and the expectations key on student ids.
    family40 = dataclasses.replace(family, members={s: family.members[m] for s, m in students})
    cpus = len(os.sched_getaffinity(0))
    n = len(students)
    machine = {
        "platform": platform.platform(), "cpus": cpus,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "omp_num_threads": 1, "torch": torch.__version__, "sandboxed": os.geteuid() == 0,
        "commit": _git("rev-parse", "--short", "HEAD") + ("+dirty" if _git("status", "--porcelain") else ""),
        "engine_commit": _git("log", "-1", "--format=%h %s", "--", "grading/torchclass_grading/engine"),
    }
    print(f"== {n} submissions of {aid} on {cpus} CPUs, load {machine['load_average_before']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        build_class(family, students, base)

        stock_course = fresh_copy(family, base, tmp, "stock")
        print("== stock nbgrader autograde (one batch)", flush=True)
        stock = run_stock(stock_course, aid)
        stock_scores = scores(family40, stock_course)
        stock_problems = expectation_problems(family40, stock_scores)
        print(f"   {stock['wall']:.1f} s", flush=True)

        # Each member's own and cold run, from stock's autograded copy of its first student.
        first = {}
        for sid, m in students:
            first.setdefault(m, sid)
        cold_by_member = {m: cold_run(stock_course, aid, sid, args.repeat) for m, sid in first.items()}
        own_by_member = {m: own_run(stock_course, aid, sid, args.repeat) for m, sid in first.items()}
        own = statistics.mean(own_by_member[m][0] for _, m in students)
        own_cpu = statistics.mean(own_by_member[m][1] for _, m in students)
        cold = statistics.mean(cold_by_member[m][0] for _, m in students)
        cold_cpu = statistics.mean(cold_by_member[m][1] for _, m in students)
        stages = kernel_stages(max(args.repeat, 3))
        single = run_stock(fresh_copy(family, base, tmp, "stock-single"), aid, first["solution"])
        print(f"== own run {own:.2f} s ({own_cpu:.2f} s CPU); {stages}; "
              f"one stock submission alone {single['wall']:.1f} s", flush=True)

        runs = [row("stock", 1, stock, n, cpus, own, own_cpu, stock, stock_problems)]
        for w in workers:
            print(f"== engine, {w} workers", flush=True)
            course = fresh_copy(family, base, tmp, f"engine-{w}")
            run = run_engine(course, aid, w)
            problems = differences(stock_scores, scores(family40, course))
            runs.append(row("engine", w, run, n, cpus, own, own_cpu, stock, problems))
            print(f"   {run['wall']:.1f} s, {runs[-1]['speedup_vs_stock']}x", flush=True)
            shutil.rmtree(course)
        for r in runs:
            if r["problems"] or r.get("errors"):
                failed = True
                for p in r["problems"] + r.get("errors", []):
                    print(f"SCORE MISMATCH ({r['grader']}, {r['workers']} workers): {p}", file=sys.stderr)

    before_cells = ["kernel_start", *IMPORT_STEPS]
    best = max((r for r in runs if r["grader"] == "engine"), key=lambda r: r["speedup_vs_stock"])
    result = {
        "assignment": aid, "submissions": n, "machine": machine,
        "mix": {m: sum(1 for _, x in students if x == m) for m in MIX if m in family.members},
        "students": member_of,
        "own_run_time_s": round(own, 2),
        "own_run_cpu_s": round(own_cpu, 2),
        "cold_run_time_s": round(cold, 2),
        "cold_run_cpu_s": round(cold_cpu, 2),
        "breakdown": {
            **stages,
            "cells_s": round(cold_by_member["solution"][0] - sum(stages[f"{k}_s"] for k in before_cells), 2),
            "cells_cpu_s": round(cold_by_member["solution"][1]
                                 - sum(stages[f"{k}_cpu_s"] for k in before_cells), 2),
            "cold_run_time_by_member_s": {m: round(v[0], 2) for m, v in cold_by_member.items()},
            "cold_run_cpu_by_member_s": {m: round(v[1], 2) for m, v in cold_by_member.items()},
            "own_run_time_by_member_s": {m: round(v[0], 2) for m, v in own_by_member.items()},
            "own_run_cpu_by_member_s": {m: round(v[1], 2) for m, v in own_by_member.items()},
            "stock_single_s": round(single["wall"], 2),
            "stock_batch_per_submission_s": round(stock["wall"] / n, 2),
            "stock_overhead_s": round(stock["wall"] / n - own, 2),
            "stock_single_cpu_s": round(single["cpu"], 2),
            "stock_batch_cpu_per_submission_s": round(stock["cpu"] / n, 2),
            "stock_cpu_overhead_s": round(stock["cpu"] / n - own_cpu, 2),
            "stock_nbgrader_s": round(stock["wall"] / n - cold, 2),
            "stock_nbgrader_cpu_s": round(stock["cpu"] / n - cold_cpu, 2),
        },
        "runs": runs,
        "target_3x": (
            f"{'met' if best['speedup_vs_stock'] >= 3 else 'NOT met'}: best {best['speedup_vs_stock']}x "
            f"at {best['workers']} workers on {cpus} CPUs (idle-machine estimate from CPU time "
            f"{best['idle_machine_speedup_estimate']}x)"),
        "definitions": {
            "own run": "the autograded notebook's cells run by nbclient in a kernel that already "
                       "imported the engine's preloads (torch, numpy, matplotlib, ...), no grader: "
                       "the notebook's own work; mix-weighted mean over the members",
            "cold run": "the same notebook in a plain kernel: start, imports and cells, as stock "
                        "nbgrader runs every submission",
            "core-s/sub": "wall x min(workers, CPUs) / submissions (stock: 1 worker)",
            "idle estimate": "stock CPU seconds x min(workers, CPUs) / engine CPU seconds: the speedup "
                             "the CPU time predicts if the run had min(workers, CPUs) cores to itself",
            "load before / during": "1-min load average just before the run / its mean during the run",
            "overhead/sub": "core-s/sub minus the own run's wall time",
            "CPU overhead/sub": "CPU seconds per submission minus the own run's CPU seconds (as its "
                                "kernel counts them): load-independent, unlike wall time",
            "engine execute": "mean Outcome.seconds: the notebook run in the worker's sandbox, kernel start included",
            "prepare+record/sub": "the engine grader's serial work per submission: nbgrader's sanitizing "
                                  "preprocessors and nbgrader's Autograde recording into the gradebook",
            "rest of the cold run (breakdown)": "the solution's cold run minus plain kernel start and "
                                                "the two imports (wall, and CPU as the kernel counts it)",
            "CPU": "user+system seconds of the grader and all it started, kernels included",
            "grader process CPU": "the engine's own process (preparing, recording, the pool's "
                                  "bookkeeping), without its workers and kernels",
        },
        "total_seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "grade.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "grade.md").write_text(markdown(result))
    print((args.out / "grade.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
