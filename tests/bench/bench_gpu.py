"""How many students can share one GPU: N concurrent ResNet-18 trainers (bf16, batch 256).

    python tests/bench/bench_gpu.py --out DIR [--students 1,2,4,8] [--seconds 30] [--cap]

For each N, N processes train on GPU 0 at once (as N time-sliced student pods do) and each
measures its own images/s over the same window after a warm-up. Reported per N: every
student's throughput and its share of the solo (N=1) throughput, the total, and each process's
peak CUDA memory. --cap applies the shared profile's memory cap (1/N of the card, through
PYTORCH_CUDA_ALLOC_CONF=per_process_memory_fraction, exactly as the pods get it).
Writes DIR/bench_gpu.json and DIR/bench_gpu.md. Without a CUDA GPU it says so, writes the
reason to the same files, and exits 0: the numbers need real hardware.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from queue import Empty

BATCH = 256
IMAGE = 224


def worker(rank, ready, start_at, seconds, result_queue):
    import torch
    import torchvision

    torch.manual_seed(rank)
    device = torch.device("cuda", 0)
    model = torchvision.models.resnet18(num_classes=1000).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(BATCH, 3, IMAGE, IMAGE, device=device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (BATCH,), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    torch.cuda.synchronize()
    ready.put(rank)
    while start_at.value == 0:
        time.sleep(0.01)
    while time.time() < start_at.value:  # warm-up: every process already competing
        step()
    torch.cuda.synchronize()
    done, begin = 0, time.time()
    while time.time() - begin < seconds:
        step()
        done += 1
    torch.cuda.synchronize()
    elapsed = time.time() - begin
    result_queue.put({
        "rank": rank,
        "images_per_s": done * BATCH / elapsed,
        "max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "max_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    })


def collect(queue, procs, timeout):
    """The next message, or a clear error as soon as a trainer dies (e.g. out of memory)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1)
        except Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise SystemExit(f"error: trainer {procs.index(dead[0])} exited with "
                                 f"{dead[0].exitcode}; see its traceback above")
    raise SystemExit(f"error: no trainer reported within {timeout:.0f} s")


def run_group(n, seconds, warmup, cap):
    if cap:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = f"per_process_memory_fraction:{1 / n:.4f}"
    else:
        os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    start_at = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=worker, args=(r, ready, start_at, seconds, results))
             for r in range(n)]
    for p in procs:
        p.start()
    for _ in range(n):
        collect(ready, procs, 600)
    start_at.value = time.time() + warmup
    out = [collect(results, procs, warmup + seconds + 600) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    return sorted(out, key=lambda r: r["rank"])


def table(report):
    header = ("| students | per-student img/s (min / mean) | of solo (min-max) | total img/s "
              "| peak reserved GiB/process |")
    rows = [header, "|---|---|---|---|---|"]
    for g in report["groups"]:
        rows.append(
            f"| {g['students']} | {g['min_images_per_s']:.0f} / {g['mean_images_per_s']:.0f} "
            f"| {g['min_of_solo']:.0%}-{g['max_of_solo']:.0%} | {g['total_images_per_s']:.0f} "
            f"| {max(p['max_reserved_gib'] for p in g['processes']):.2f} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--students", default="1,2,4,8", help="group sizes (first is the solo)")
    parser.add_argument("--seconds", type=float, default=30, help="measured window per group")
    parser.add_argument("--warmup", type=float, default=10, help="warm-up, all competing")
    parser.add_argument("--cap", action="store_true", help="cap CUDA memory at 1/N per process")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "bench_gpu.json", args.out / "bench_gpu.md"

    import torch

    if not torch.cuda.is_available():
        reason = ("skipped: no CUDA GPU here (torch.cuda.is_available() is False); "
                  "run `make bench-gpu` on a GPU node to measure students per GPU")
        print(reason)
        json_path.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        md_path.write_text(f"# GPU sharing benchmark\n\n{reason}\n")
        return 0

    sizes = [int(s) for s in args.students.split(",")]
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "batch": BATCH, "precision": "bf16 autocast", "model": "resnet18",
              "seconds": args.seconds, "warmup": args.warmup, "cap": args.cap, "groups": []}
    solo = None
    for n in sizes:
        print(f"== {n} concurrent trainer(s) ...", flush=True)
        procs = run_group(n, args.seconds, args.warmup, args.cap)
        rates = [p["images_per_s"] for p in procs]
        solo = solo or statistics.mean(rates)
        report["groups"].append({
            "students": n, "processes": procs,
            "min_images_per_s": min(rates), "mean_images_per_s": statistics.mean(rates),
            "total_images_per_s": sum(rates),
            "min_of_solo": min(rates) / solo, "max_of_solo": max(rates) / solo,
        })
        print(table({"groups": report["groups"][-1:]}).splitlines()[-1], flush=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(f"# GPU sharing benchmark: {report['gpu']}, ResNet-18, bf16, batch {BATCH}"
                       f"{', memory capped at 1/N' if args.cap else ''}\n\n{table(report)}\n")
    print(table(report))
    print(f"Results in {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
