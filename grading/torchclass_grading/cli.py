"""torchclass-grade: the instructor's nbgrader commands for the classroom's course.

    torchclass-grade release ASSIGNMENT [--force]    generate and release to students
    torchclass-grade collect ASSIGNMENT              copy submissions from the exchange (exit 1:
                                                     some refused, each named with why)
    torchclass-grade grade ASSIGNMENT [--workers N] [--force] [--student ID]
                                                     grade in parallel, sandboxed; write the report
    torchclass-grade autograde ASSIGNMENT            switched off (unsandboxed): says to use grade
    torchclass-grade feedback ASSIGNMENT             generate feedback and return it to students
    torchclass-grade export [--out grades.csv]       one row per student, with totals
    torchclass-grade scores                          the gradebook as JSON

Each command runs nbgrader as the course's grader account (grader-<course_id>) in the course
dir of the classroom file, the same one the hub's formgrader uses. `grade` runs the grading
engine itself (as root it needs root to run each kernel as a sandbox account), then hands every
file it wrote back to the grader account; it exits 0 when every submission got a grade, 1 when
some could not be graded (listed, and in the report), 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torchclass_classroom as config

from . import engine, report
from .course import Course, CourseError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchclass-grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classroom", help="classroom file (default: $TORCHCLASS_CLASSROOM "
                        "or hub/classroom.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("release", "collect", "autograde", "feedback"):
        p = sub.add_parser(name)
        p.add_argument("assignment")
        if name == "release":
            p.add_argument("--force", action="store_true", help="release again (replaces it)")
        if name == "autograde":
            p.add_argument("--student", help="grade only this student")
    p = sub.add_parser("grade", help="grade every submission in parallel, sandboxed, and "
                       "write the report into <course dir>/reports/ASSIGNMENT/")
    p.add_argument("assignment")
    p.add_argument("--workers", type=int, help="kernels at once (default: available cores)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded")
    p.add_argument("--student", action="append", help="grade only this student (repeatable)")
    p.add_argument("--backend", choices=("local", "docker"), default="local",
                   help="where kernels run: the local sandbox (default) or containers of the "
                   "course's notebook image")
    p.add_argument("--image", help="notebook image for --backend docker")
    p = sub.add_parser("export")
    p.add_argument("--out", default="grades.csv", help="CSV file to write (default grades.csv)")
    sub.add_parser("scores")
    args = parser.parse_args(argv)
    try:
        classroom = config.load(args.classroom)
        course = Course.from_classroom(classroom)
        if not course.root.is_dir():
            print(f"error: no course dir at {course.root}. Fix: run `make up` first.",
                  file=sys.stderr)
            return 2
        if args.command == "release":
            projects = config.stage_projects(classroom)
            if args.assignment not in projects:
                print(f"error: no assignment {args.assignment!r} (found: "
                      f"{', '.join(projects) or 'none'}).", file=sys.stderr)
                return 2
            course.add_source(args.assignment, projects[args.assignment])
            done = course.release(args.assignment, force=args.force)
            config.prepare_exchange(classroom)
            print(f"{args.assignment}: " + ("released" if done else
                                            "already released (use --force to replace it)"))
        elif args.command == "collect":
            refused = course.collect(args.assignment)
            for line in refused:
                print(line)
            print(f"{args.assignment}: collected" + (
                f"; {len(refused)} refused (above: student, file and why)" if refused else ""))
            return 1 if refused else 0
        elif args.command == "grade":
            return grade(classroom, course, args)
        elif args.command == "autograde":
            # Stock autograde runs student code as the grader account, with the gradebook and
            # the solutions in reach; the engine runs each kernel sandboxed.
            aid = args.assignment
            print(f"error: `torchclass-grade autograde` is switched off: it ran students' code "
                  f"unsandboxed as the grader account. Use the sandboxed engine: "
                  f"torchclass-grade grade {aid}"
                  + (f" --student {args.student}" if args.student else "")
                  + f" (make grade ASSIGNMENT={aid}).", file=sys.stderr)
            return 2
        elif args.command == "feedback":
            course.feedback(args.assignment)
            print(f"{args.assignment}: feedback returned")
        elif args.command == "export":
            out = course.export_csv(Path(args.out))
            print(f"grades written to {out}")
        elif args.command == "scores":
            print(json.dumps(course.gradebook_data(), indent=1))
        return 0
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CourseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def grade(classroom, course: Course, args) -> int:
    aid = args.assignment
    if not course.gradebook.is_file():
        print(f"error: no gradebook at {course.gradebook}. Fix: release the assignment first: "
              f"torchclass-grade release {aid} (make release ASSIGNMENT={aid}).", file=sys.stderr)
        return 2
    if not (course.root / "source" / aid).is_dir():
        known = sorted(p.name for p in (course.root / "source").glob("*") if p.is_dir())
        print(f"error: no assignment {aid!r} in {course.root / 'source'} (found: "
              f"{', '.join(known) or 'none'}). Fix: torchclass-grade release {aid}, or check "
              "the id.", file=sys.stderr)
        return 2
    submitted = sorted(p.parent.name for p in (course.root / "submitted").glob(f"*/{aid}"))
    missing = sorted(set(args.student or []) - set(submitted))
    if not submitted or missing:
        who = f"{', '.join(missing)} submitted nothing" if missing else "no submissions"
        print(f"error: {who} for {aid} in {course.root / 'submitted'}. Fix: collect them first: "
              f"torchclass-grade collect {aid} (make collect ASSIGNMENT={aid}).", file=sys.stderr)
        return 2
    # Kernels see what students' servers see: the shared datasets and the course library.
    if classroom.datasets_dir.is_dir():
        os.environ.setdefault("TORCHCLASS_DATA", str(classroom.datasets_dir))
    lib = [str(classroom.lib_dir)] if (classroom.lib_dir / "torchclass_course").is_dir() else None
    try:
        # Kernels keep the datasets, the course library and the lessons; not the hub's state,
        # any course, the exchange or the shared homes.
        hide = [str(classroom.data_dir / d) for d in ("hub", "courses", "exchange", "homes", "etc")]
        eng = engine.Engine(course.root, aid, workers=args.workers, kernel_pythonpath=lib,
                            hide=hide, backend=args.backend, image=args.image)
        outcomes = eng.run(force=args.force, only=args.student)
        csv_path, html_path = report.write_report(course.root, aid)
    except (engine.EngineError, report.ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        _give_back(course)
    failed = [o for o in outcomes if o.status == "error"]
    noted = [o for o in outcomes if o.problems and o.status != "error"]
    unchanged = sum(o.status == "skipped" for o in outcomes)
    print(f"{aid}: {len(outcomes) - len(failed)} of {len(outcomes)} submissions graded "
          f"({unchanged} unchanged since an earlier run), {len(noted)} with problems noted, "
          f"{len(failed)} could not be graded")
    for o in failed:
        print(f"  {o.student}: " + "; ".join(o.problems))
    print(f"report: {html_path}\ngrades: {csv_path}")
    return 1 if failed else 0


def _give_back(course: Course) -> None:
    """Files the engine (root) wrote go to the grader account, so the formgrader can use them."""
    if not course.grader or os.geteuid() != 0:
        return
    for path in course.root.iterdir():
        if path.name in ("gradebook.db", "autograded", "reports", engine.STATE) \
                or path.lstat().st_uid == 0:
            course._chown(path)


if __name__ == "__main__":
    sys.exit(main())
