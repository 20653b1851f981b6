"""Where students find the lessons, the same in every deployment: ``~/lessons/<stage>/NN-topic.ipynb``
and ``~/lessons/tools/NN-topic.ipynb``, their own copies.

Two steps, each written once:

- ``build_master(course_dir, dest)`` lays the course's lesson notebooks out in that shape in a
  read-only master folder: the one-machine classroom's data dir (``make up``), the notebook
  image's /srv/torchclass/lessons (at build time).
- ``copy_missing(master, home)`` copies into a home every lesson its owner does not have yet,
  at each server start (the local spawner; the image's start-notebook, so Docker and Kubernetes
  too). A lesson the student has, perhaps edited, is never overwritten; one they deleted comes
  back.

    python -m torchclass_course.lessons master COURSE_DIR DEST
    python -m torchclass_course.lessons give MASTER HOME
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

FOLDER = "lessons"  # under the home


def lesson_files(course_dir: Path) -> list[tuple[str, Path]]:
    """(path under the master folder, source notebook) for every lesson of the course."""
    course_dir = Path(course_dir)
    found = [(f"{nb.parent.parent.name}/{nb.name}", nb)
             for nb in sorted(course_dir.glob("stage*/lessons/*.ipynb"))]
    found += [(f"tools/{nb.name}", nb) for nb in sorted(course_dir.glob("tools/*.ipynb"))]
    return found


def build_master(course_dir: Path, dest: Path) -> int:
    """Replace dest by a fresh, world-readable master copy of the lessons; returns their count.
    Built beside dest and swapped in, so a server starting meanwhile sees the old or the new."""
    dest = Path(dest)
    files = lesson_files(course_dir)
    if not files:
        raise FileNotFoundError(f"{course_dir}: no lessons (stage*/lessons/*.ipynb, tools/*.ipynb)")
    tmp = dest.with_name(dest.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for rel, src in files:
        (tmp / rel).parent.mkdir(exist_ok=True)
        shutil.copyfile(src, tmp / rel)
    for p in [tmp, *tmp.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return len(files)


def copy_missing(master: str, home: str) -> list[str]:
    """Copy every lesson not yet in home/lessons; returns the paths written. It runs as the
    home's owner and, from the hub, is sent to a child process as source (the child may not be
    able to read this package), so it uses the standard library only and no name from this
    module. Nothing in the student's tree is followed: folders are walked by descriptor with
    O_NOFOLLOW, files are created with O_EXCL, so a link planted there is never written through."""
    import os

    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    copied = []
    home_fd = os.open(home, flags_dir)
    try:
        for top, _, files in sorted(os.walk(master)):
            rel = os.path.relpath(top, master)
            parts = ["lessons"] + ([] if rel == "." else rel.split(os.sep))
            fd = os.dup(home_fd)
            try:
                for part in parts:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    try:
                        nxt = os.open(part, flags_dir, dir_fd=fd)
                    except OSError:  # a file or a link where the folder should be: leave it
                        break
                    os.close(fd)
                    fd = nxt
                else:
                    for name in sorted(f for f in files if f.endswith(".ipynb")):
                        try:
                            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                          | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
                        except FileExistsError:  # theirs, perhaps edited, or a link: untouched
                            continue
                        with open(os.path.join(top, name), "rb") as src, os.fdopen(out, "wb") as dst:
                            dst.write(src.read())
                        copied.append(os.path.join(home, *parts, name))
            finally:
                os.close(fd)
    finally:
        os.close(home_fd)
    return copied


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("master", "give"):
        print(__doc__.split("\n\n")[-1].rstrip(), file=sys.stderr)
        return 2
    what, src, dest = args
    try:
        if what == "master":
            print(f"{build_master(Path(src), Path(dest))} lessons in {dest}")
        elif Path(src).is_dir():
            copy_missing(src, dest)
    except OSError as e:
        print(f"torchclass lessons: {what} {src} -> {dest} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
