"""torchclass-grade: the instructor's nbgrader commands for the classroom's course.

    torchclass-grade release ASSIGNMENT [--force]    generate and release to students
    torchclass-grade collect ASSIGNMENT              copy submissions from the exchange
    torchclass-grade autograde ASSIGNMENT [--student ID]
    torchclass-grade feedback ASSIGNMENT             generate feedback and return it to students
    torchclass-grade export [--out grades.csv]       one row per student, with totals
    torchclass-grade scores                          the gradebook as JSON

Each command runs nbgrader as the course's grader account (grader-<course_id>) in the course
dir of the classroom file, the same one the hub's formgrader uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchclass_hub import config, prepare

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
            prepare.exchange(classroom)
            print(f"{args.assignment}: " + ("released" if done else
                                            "already released (use --force to replace it)"))
        elif args.command == "collect":
            course.collect(args.assignment)
            print(f"{args.assignment}: collected")
        elif args.command == "autograde":
            course.autograde(args.assignment, args.student)
            print(f"{args.assignment}: autograded")
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


if __name__ == "__main__":
    sys.exit(main())
