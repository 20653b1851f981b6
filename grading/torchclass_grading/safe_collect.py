"""nbgrader collect that takes a submission only as its owner made it.

The grader account reads everything a student can name: the course's source notebooks (with
every hidden test), the gradebook, every collected submission. Stock collect copies with
shutil.copytree, which follows links, and only warns when a folder named for alice belongs to
bob. This collect refuses, and names in its output, any submission that

  - sits in a folder whose owner is not the student it is named for (when require_owner),
  - is itself a symbolic link, or holds one,
  - holds a file with more than one hard link, or anything that is not a file or folder.

The check happens during the copy, on descriptors opened with O_NOFOLLOW, so swapping a file
for a link after a first look does not get through either. The rest of the class is collected.

Course.config_text puts this file's source into the course's nbgrader_config.py (the grader
account may not be able to read the checkout), so it uses only the standard library and nbgrader.
"""

import errno
import fnmatch
import glob
import os
import pwd
import stat

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect
from traitlets import Bool

REFUSED_MARK = "refused "  # collect output lines that start with this name a refusal


class Refused(Exception):
    """A submission that must not be collected; the message says which file and why."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_refusing_links(src, dest, ignore=(), max_file_bytes=None, log=None):
    """Copy the folder src to a new folder dest; raise Refused (leaving no dest) at the first
    symbolic link, hard-linked file or special file. Names matching `ignore` (fnmatch
    patterns) are skipped, as are files over max_file_bytes."""
    try:
        top = os.open(src, _DIR_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("the folder is a symbolic link or not a folder") from None
        raise
    try:
        _copy_dir(top, dest, "", ignore, max_file_bytes, log)
    except BaseException:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.close(top)


def _copy_dir(src_fd, dest, rel, ignore, max_file_bytes, log):
    os.mkdir(dest, 0o755)
    for name in sorted(os.listdir(src_fd)):
        where = f"{rel}{name}"
        if any(fnmatch.fnmatch(name, pat) for pat in ignore):
            continue
        try:
            # O_NONBLOCK: a FIFO planted in the folder must not hang the collect.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=src_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Refused(f"{where} is a symbolic link") from None
            raise Refused(f"{where} cannot be opened ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                _copy_dir(fd, os.path.join(dest, name), f"{where}/", ignore, max_file_bytes, log)
            elif not stat.S_ISREG(st.st_mode):
                raise Refused(f"{where} is not a regular file or folder")
            elif st.st_nlink > 1:
                raise Refused(f"{where} is a hard link ({st.st_nlink} names for one file)")
            elif max_file_bytes is not None and st.st_size > max_file_bytes:
                if log:
                    log.warning("Skipping %s: %d bytes, over the limit", where, st.st_size)
            else:
                out = os.open(os.path.join(dest, name),
                              os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              (st.st_mode & 0o755) | 0o600)
                with os.fdopen(out, "wb") as dst:
                    while chunk := os.read(fd, 1 << 20):
                        dst.write(chunk)
        finally:
            os.close(fd)


def owner_problem(path, student):
    """Why the submission folder at path may not count as student's, or None."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "the folder is a symbolic link"
    try:
        uid = pwd.getpwnam(student).pw_uid
    except KeyError:
        return f"there is no Unix account {student!r} to own the folder"
    if st.st_uid != uid:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = f"uid {st.st_uid}"
        return f"the folder is named for {student} but is owned by {owner}"
    return None


class LinkSafeCollect(ExchangeCollect):
    require_owner = Bool(True, help="Refuse a submission folder not owned by the Unix account "
                         "of the student it is named for (one Unix account per student).").tag(
                             config=True)

    def refuse(self, student, path, why):
        self.log.error("%s%s's submission %s: %s; it was not collected", REFUSED_MARK, student,
                       os.path.basename(path), why)

    def init_src(self):
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"Course not found: {self.inbound_path}")
        wanted = self.coursedir.student_id or "*"
        records = []
        for path in sorted(glob.glob(os.path.join(
                glob.escape(self.inbound_path), f"{wanted}+{self.coursedir.assignment_id}+*"))):
            record = self._path_to_record(path)
            # Refused before the newest is chosen: a forged later folder must not hide the
            # student's own submission.
            why = owner_problem(path, record["username"]) if self.require_owner else (
                "the folder is a symbolic link" if os.path.islink(path) else None)
            if why:
                self.refuse(record["username"], path, why)
                continue
            records.append(record)
        self.src_records = self._latest(records)

    def _latest(self, records):
        """Per student the newest submission, or with before_duedate the newest one in time."""
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                duedate = gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                duedate = None
        by_student = {}
        for record in records:
            by_student.setdefault(record["username"], []).append(record)
        chosen = []
        for recs in by_student.values():
            recs = self._sort_by_timestamp(recs)
            if duedate is not None and self.before_duedate:
                recs = [r for r in recs if r["timestamp"] <= duedate] or recs
            chosen.append(recs[0])
        return chosen

    def do_copy(self, src, dest, log=None):
        student = os.path.basename(os.path.dirname(dest))
        try:
            copy_refusing_links(src, dest, ignore=self.coursedir.ignore,
                                max_file_bytes=1000 * self.coursedir.max_file_size,
                                log=self.log)
        except Refused as e:
            self.refuse(student, src, str(e))
