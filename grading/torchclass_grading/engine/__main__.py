"""`python -m torchclass_grading.engine COURSE_DIR ASSIGNMENT`: grade, then write the report.
(`torchclass-grade grade` is the classroom's command; this one takes any course dir.)"""

from __future__ import annotations

import argparse
import sys

from torchclass_grading.engine import Engine, EngineError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="torchclass-grade-engine", description=(
        "Grade every submission of an assignment in parallel, each kernel sandboxed."))
    ap.add_argument("course_dir")
    ap.add_argument("assignment")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--force", action="store_true", help="regrade submissions already graded")
    ap.add_argument("--backend", choices=("local", "docker"), default="local",
                    help="where kernels run: the local sandbox or a container of the notebook image")
    ap.add_argument("--image", help="notebook image for --backend docker "
                    "(default: torchclass/notebook:<version>, as `make build-cpu` tags it)")
    args = ap.parse_args(argv)
    try:
        engine = Engine(args.course_dir, args.assignment, workers=args.workers,
                        backend=args.backend, image=args.image)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcomes = engine.run(force=args.force)
    for o in outcomes:
        if o.problems or o.status == "error":
            print(f"{o.student}: {o.status}, score {o.score}: " + "; ".join(o.problems))
    from torchclass_grading import report

    for path in report.write_report(engine.course_dir, args.assignment):
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
