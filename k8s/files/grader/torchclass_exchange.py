"""nbgrader exchange for the grader on Kubernetes, where every pod runs as uid 1000.

Unix permissions cannot keep students apart when they share a uid, so the exchange volume is
laid out per student and each student pod mounts only its own folders (the hub does this):

    <root>/<course>/outbound/                     releases; students mount it read-only
    <root>/<course>/students/<name>/inbound/      mounted at <root>/<course>/inbound
    <root>/<course>/students/<name>/feedback/     mounted read-only at <root>/<course>/feedback

Students run nbgrader's stock exchange against that view. The grader sees the whole volume;
these two classes let its collect and release_feedback use the per-student layout. The folder
a submission sits in names the student (only that student's pod can write there), so a
submission whose file name claims another student is refused rather than trusted.

Links are refused too: the grader pod sees the course (source notebooks with every hidden test,
the gradebook) and the other students' folders, and stock collect's copytree follows a link a
student put in their submission. This file ships alone in the grader's ConfigMap, so it carries
its own copy of the check (the one-machine classroom's is torchclass_grading/safe_collect.py).
"""

import errno
import fnmatch
import glob
import os
import shutil
import stat

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.exchange.default.release_feedback import ExchangeReleaseFeedback


def students_dir(root, course_id):
    return os.path.join(root, course_id, "students")


class Refused(Exception):
    pass


def copy_refusing_links(src, dest, ignore=()):
    """Copy folder src to new folder dest by descriptor (O_NOFOLLOW), raising Refused, with
    nothing left at dest, at a symbolic link, a file with several hard links or a special file."""
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def walk(src_fd, dest, rel):
        os.mkdir(dest, 0o755)
        for name in sorted(os.listdir(src_fd)):
            if any(fnmatch.fnmatch(name, pat) for pat in ignore):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=src_fd)
            except OSError as e:
                why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be opened ({e.strerror})"
                raise Refused(f"{rel}{name} {why}") from None
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    walk(fd, os.path.join(dest, name), f"{rel}{name}/")
                elif not stat.S_ISREG(st.st_mode):
                    raise Refused(f"{rel}{name} is not a regular file or folder")
                elif st.st_nlink > 1:
                    raise Refused(f"{rel}{name} is a hard link ({st.st_nlink} names for one file)")
                else:
                    out = os.open(os.path.join(dest, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                  | os.O_NOFOLLOW, (st.st_mode & 0o755) | 0o600)
                    with os.fdopen(out, "wb") as fh:
                        while chunk := os.read(fd, 1 << 20):
                            fh.write(chunk)
            finally:
                os.close(fd)

    try:
        top = os.open(src, dir_flags)
    except OSError:
        raise Refused("the folder is a symbolic link or not a folder") from None
    try:
        walk(top, dest, "")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.close(top)


class PerStudentCollect(ExchangeCollect):
    # Every submission is owned by uid 1000; the folder, not the owner, identifies the student.
    check_owner = False

    def init_src(self):
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        base = students_dir(self.root, self.coursedir.course_id)
        if not os.path.isdir(base):
            self.fail(f"Course not found: {base}")
        wanted = self.coursedir.student_id or "*"
        records = []
        for inbound in sorted(glob.glob(os.path.join(base, wanted, "inbound"))):
            owner = os.path.basename(os.path.dirname(inbound))
            pattern = os.path.join(inbound, f"*+{self.coursedir.assignment_id}+*")
            for path in glob.glob(pattern):
                record = self._path_to_record(path)
                if record["username"] != owner:
                    self.log.warning(
                        "Ignoring %s: it claims to be from %s but sits in %s's folder",
                        path, record["username"], owner)
                    continue
                if os.path.islink(path):
                    self.log.error("refused %s's submission %s: the folder is a symbolic link; "
                                   "it was not collected", owner, os.path.basename(path))
                    continue
                # An absolute path: copy_files joins it onto inbound_path, which keeps it whole.
                record["filename"] = path
                records.append(record)
        self.inbound_path = base
        self._select_latest(records)

    def _select_latest(self, records):
        # Same choice as nbgrader's: the newest submission, or the newest before the due date.
        by_student = {}
        for record in records:
            by_student.setdefault(record["username"], []).append(record)
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                duedate = gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                duedate = None
        self.src_records = []
        for recs in by_student.values():
            recs = self._sort_by_timestamp(recs)
            if duedate is not None and self.before_duedate:
                before = [r for r in recs if r["timestamp"] <= duedate]
                recs = before or recs
            self.src_records.append(recs[0])

    def do_copy(self, src, dest, log=None):
        student = os.path.basename(os.path.dirname(dest))
        try:
            copy_refusing_links(src, dest, ignore=self.coursedir.ignore)
        except Refused as e:
            self.log.error("refused %s's submission %s: %s; it was not collected", student,
                           os.path.basename(src), e)


class PerStudentReleaseFeedback(ExchangeReleaseFeedback):
    def copy_files(self):
        # nbgrader writes every student's feedback into one folder; here each student's goes
        # into their own feedback folder, the only one their pod mounts.
        pattern = self.coursedir.format_path(
            self.coursedir.feedback_directory, self.coursedir.student_id or "*",
            self.coursedir.assignment_id)
        base = students_dir(self.root, self.coursedir.course_id)
        for folder in sorted(glob.glob(pattern)):
            student = os.path.basename(os.path.dirname(folder))
            dest = os.path.join(base, student, "feedback")
            if not os.path.isdir(dest):
                self.log.warning("No exchange folder for student %s; skipping their feedback",
                                 student)
                continue
            self.src_path, self.dest_path = folder, dest
            super().copy_files()
