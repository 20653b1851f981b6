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
"""

import glob
import os

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.exchange.default.release_feedback import ExchangeReleaseFeedback


def students_dir(root, course_id):
    return os.path.join(root, course_id, "students")


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
