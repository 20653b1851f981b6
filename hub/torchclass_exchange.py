"""torchclass's nbgrader classes, which deployment uses which, and the one writer of
nbgrader_config.py files.

This one file reaches every place nbgrader runs for torchclass, always as the module
`torchclass_exchange`, so it imports only the standard library and nbgrader (with the traitlets
and nbconvert that nbgrader brings):

  - one machine (`make up`): copied into <data_dir>/lib/, on every student server's PYTHONPATH;
    pasted whole into the course's and the formgrader's nbgrader_config.py, because the grader
    account may not be able to read the checkout;
  - Docker: in the notebook image (/srv/torchclass/python), for gather-submissions and the
    instructor's Autograde switch; the course's config carries its own pasted copy;
  - Kubernetes: each formgrader pod mounts it from its ConfigMap (k8s/render.py reads this file).

EXCHANGE is the table of which exchange classes each deployment and role sets; config_text writes
every nbgrader_config.py torchclass generates from it. Student code is untrusted: these classes
are what keeps a student to their own submissions, and the grader from following a link a
student handed in (tests/hub/test_collect_refuses.py, tests/k8s/test_exchange.py,
tests/images/test_gather_submissions.py, tests/images/test_docker_exchange.py).
"""

import errno
import fnmatch
import glob
import os
import pwd
import shutil
import stat
from pathlib import Path

from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import Preprocessor
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.exchange.default.release_feedback import ExchangeReleaseFeedback
from nbgrader.exchange.default.submit import ExchangeSubmit
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions
from traitlets import Bool

MODULE = "torchclass_exchange"  # the name every deployment imports this file by
DEPLOYMENTS = ("local", "docker", "kubernetes")
ROLES = ("student", "instructor")

# deployment, role -> {ExchangeFactory trait: class of this module}; a trait not named keeps
# nbgrader's stock class. In containers every user is uid 1000, so permissions cannot keep
# students apart; each student's container or pod mounts only its own part of the exchange,
# which makes the stock classes safe there. The instructor's side sees every student's part.
EXCHANGE = {
    # One Unix account each, one shared inbound/: a submission must stay as its owner made it.
    ("local", "student"): {"submit": "PrivateSubmit"},
    ("local", "instructor"): {"collect": "LinkSafeCollect"},
    ("docker", "student"): {},
    # After gather-submissions has moved each student's own submissions into inbound/.
    ("docker", "instructor"): {"collect": "LinkSafeCollect"},
    ("kubernetes", "student"): {},
    ("kubernetes", "instructor"): {"collect": "PerStudentCollect",
                                   "release_feedback": "PerStudentReleaseFeedback"},
}


def _default(cls, trait):
    return cls.class_traits()[trait].default_value


# nbgrader's own default markers (it finds them anywhere in a line: "### BEGIN SOLUTION").
SOLUTION_DELIMITERS = (_default(ClearSolutions, "begin_solution_delimeter"),
                       _default(ClearSolutions, "end_solution_delimeter"))
HIDDEN_TESTS_DELIMITERS = (_default(ClearHiddenTests, "begin_test_delimeter"),
                           _default(ClearHiddenTests, "end_test_delimeter"))


# --------------------------------------------------------------------------- students' submit


class PrivateSubmit(ExchangeSubmit):
    """Stock submit makes each submission folder in inbound/ world-writable (0777, "so the
    instructor can delete later"): anyone who learns its name could swap the notebook inside.
    Here the folder is 0755: the grader still reads it to collect, nobody else can change it."""

    def copy_files(self):
        super().copy_files()
        os.chmod(os.path.join(self.inbound_path, self.assignment_filename), 0o755)


# --------------------------------------------------------------------------- copying, refusing

REFUSED_MARK = "refused "  # collect output lines that start with this name a refusal


class Refused(Exception):
    """A submission that must not be collected; the message says which file and why."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_refusing_links(src, dest, ignore=(), max_file_bytes=None, log=None):
    """Copy the folder src to a new folder dest; raise Refused (leaving no dest) at the first
    symbolic link, hard-linked file or special file. Names matching `ignore` (fnmatch
    patterns) are skipped, as are files over max_file_bytes.

    The grader sees what students must not (source notebooks with every hidden test, the
    gradebook, others' work), and a copy that follows links would fetch it for them. The check
    happens during the copy, on descriptors opened with O_NOFOLLOW, so swapping a file for a
    link after a first look does not get through either."""
    try:
        top = os.open(src, _DIR_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("the folder is a symbolic link or not a folder") from None
        raise Refused(f"the folder cannot be opened ({e.strerror})") from None
    try:
        _copy_dir(top, dest, "", ignore, max_file_bytes, log)
    except BaseException:
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
            # O_NONBLOCK: a FIFO planted in the folder must not hang the copy.
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


# --------------------------------------------------------------------------- instructors' collect


class _RefusingCollect(ExchangeCollect):
    """What both collects share: nbgrader's choice of submission, a copy that refuses links,
    and every refusal named in the output (the rest of the class is still collected)."""

    def refuse(self, student, path, why):
        self.log.error("%s%s's submission %s: %s; it was not collected", REFUSED_MARK, student,
                       os.path.basename(path), why)

    def _select_latest(self, records):
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
        self.src_records = chosen

    def do_copy(self, src, dest, log=None):
        student = os.path.basename(os.path.dirname(dest))
        try:
            copy_refusing_links(src, dest, ignore=self.coursedir.ignore,
                                max_file_bytes=1000 * self.coursedir.max_file_size,
                                log=self.log)
        except Refused as e:
            self.refuse(student, src, str(e))


class LinkSafeCollect(_RefusingCollect):
    """Collect on one machine, where inbound/ is shared and any student can drop a folder (or a
    link) there under any name. Stock collect follows links and only warns when a folder named
    for alice belongs to bob; this one refuses a submission that sits in a folder not owned by
    the student it is named for (when require_owner), is a link, or holds one."""

    require_owner = Bool(True, help="Refuse a submission folder not owned by the Unix account "
                         "of the student it is named for (one Unix account per student).").tag(
                             config=True)

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
        self._select_latest(records)


def students_dir(root, course_id):
    return os.path.join(root, course_id, "students")


class PerStudentCollect(_RefusingCollect):
    """Collect on Kubernetes, where the exchange volume is laid out per student and each
    student pod mounts only its own folders (the hub does this):

        <root>/<course>/outbound/                  releases; students mount it read-only
        <root>/<course>/students/<name>/inbound/   mounted at <root>/<course>/inbound
        <root>/<course>/students/<name>/feedback/  mounted read-only at <root>/<course>/feedback

    The folder a submission sits in names the student (only that student's pod can write there),
    so a submission whose file name claims another student is refused rather than trusted."""

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
            for path in glob.glob(os.path.join(inbound, f"*+{self.coursedir.assignment_id}+*")):
                record = self._path_to_record(path)
                if record["username"] != owner:
                    self.log.warning(
                        "Ignoring %s: it claims to be from %s but sits in %s's folder",
                        path, record["username"], owner)
                    continue
                if os.path.islink(path):
                    self.refuse(owner, path, "the folder is a symbolic link")
                    continue
                # An absolute path: copy_files joins it onto inbound_path, which keeps it whole.
                record["filename"] = path
                records.append(record)
        self.inbound_path = base
        self._select_latest(records)


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


# --------------------------------------------------------------------------- grading's guards


class HideHiddenTestErrors(Preprocessor):
    """nbgrader's feedback shows the autograded notebook. ClearHiddenTests cuts the hidden
    lines, but a failing hidden check's traceback would still quote its line: errors in cells
    that held hidden tests keep only the exception and its message."""

    enabled = True

    def preprocess(self, nb, resources):
        # The marker ClearHiddenTests itself cuts at, as this course configures it.
        self.begin = ClearHiddenTests(config=self.config).begin_test_delimeter
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and self.begin in cell.source:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = [out["ename"] + ": " + out["evalue"]]
        return cell, resources


# The sandboxed way to grade, named in the refusal ({aid}: the assignment). The Docker spawner
# and the chart set TORCHCLASS_GRADE_COMMAND where grading runs elsewhere.
GRADE_COMMAND = ("torchclass-grade grade {aid} (make grade ASSIGNMENT={aid}), as the instructor "
                 "on the classroom's machine")


class AutogradeSwitchedOff(NotebookExporter):
    """nbgrader's Autograde (the formgrader's button, `nbgrader autograde` in a terminal) would
    run students' code unsandboxed as this server's account, beside the gradebook, the solutions
    and every submission. Refused before anything changes: nbgrader makes the exporter before it
    touches the autograded folder."""

    def __init__(self, *args, **kwargs):
        parent = kwargs.get("parent")
        aid = getattr(getattr(parent, "coursedir", None), "assignment_id", "") or "ASSIGNMENT"
        command = os.environ.get("TORCHCLASS_GRADE_COMMAND") or GRADE_COMMAND
        raise RuntimeError(
            "Autograding here is switched off: it would run students' code unsandboxed next to "
            "the gradebook and the solutions. Grade in the sandbox instead: "
            + command.format(aid=aid) + "; the grades then show in the formgrader.")


# --------------------------------------------------------------------------- the config writer

# nbgrader's feedback preprocessors with this module's (the name without a dot) put in.
_FEEDBACK_PREPROCESSORS = ("nbgrader.preprocessors.GetGrades", "HideHiddenTestErrors",
                           "nbgrader.preprocessors.ClearHiddenTests",
                           "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor")


def config_text(*, header, deployment=None, role=None, course_id=None, course_root=None,
                exchange_root=None, timeout=None, iopub_timeout=None, require_owner=None,
                hide_hidden_tests=False, sanitize_html=False, autograde_off=False,
                ship="import", settings=None):
    """The text of an nbgrader_config.py.

    deployment and role (both or neither) pick the exchange classes from EXCHANGE; neither keeps
    nbgrader's own. Unset (None) settings are left out. `ship` is how the config reaches this
    module's classes: "import" names them as torchclass_exchange.<class> (the module is on the
    server's path); "inline" pastes this file into the config (for the grader account on one
    machine, which may not be able to read the checkout). `settings` adds literal settings,
    {"Section.trait": value}.
    """
    if (deployment is None) != (role is None):
        raise ValueError("give both deployment and role, or neither")
    exchange = EXCHANGE[(deployment, role)] if deployment else {}
    if ship not in ("import", "inline"):
        raise ValueError(f"ship must be 'import' or 'inline', not {ship!r}")

    def cls(name):  # the expression naming one of this module's classes in the config
        return name if ship == "inline" else repr(f"{MODULE}.{name}")

    literal = {"CourseDirectory.root": None if course_root is None else str(course_root),
               "CourseDirectory.course_id": course_id,
               "Exchange.root": None if exchange_root is None else str(exchange_root),
               # nbgrader's Execute is an ExecutePreprocessor: this section reaches both.
               "ExecutePreprocessor.timeout": timeout,
               # nbclient's default 4 s wait for a cell's last outputs fails cells on a busy
               # grader.
               "ExecutePreprocessor.iopub_timeout": iopub_timeout,
               **(settings or {})}
    if sanitize_html:
        # Students write the notebooks an instructor opens: their markdown, raw cells and
        # outputs must reach the browser without scripts or event handlers. The exporter's own
        # switch covers outputs only (nbgrader's formgrade template renders markdown without
        # it), so nbconvert's SanitizeHTML preprocessor cleans the cells first.
        literal["HTMLExporter.sanitize_html"] = True
        literal["HTMLExporter.preprocessors"] = ["nbconvert.preprocessors.sanitize.SanitizeHTML"]
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append("c = get_config()  # noqa: F821")
    lines += [f"c.{key} = {value!r}" for key, value in literal.items() if value is not None]

    named = []  # settings that name classes of this module
    if hide_hidden_tests:
        named.append(("GenerateFeedback.preprocessors",
                      "[" + ", ".join(cls(p) if "." not in p else repr(p)
                                      for p in _FEEDBACK_PREPROCESSORS) + "]"))
    named += [(f"ExchangeFactory.{trait}", cls(name)) for trait, name in exchange.items()]
    if require_owner is not None:
        if "LinkSafeCollect" not in exchange.values():
            raise ValueError(f"require_owner is a LinkSafeCollect setting; {deployment} "
                             f"{role} does not collect with it")
        named.append(("LinkSafeCollect.require_owner", repr(bool(require_owner))))
    if autograde_off:
        named.append(("Autograde.exporter_class", cls("AutogradeSwitchedOff")))
    if named and ship == "inline":
        banner = f"# --- {MODULE}.py (hub/torchclass_exchange.py), pasted: the classes named below"
        lines += ["", "", banner, Path(__file__).read_text().rstrip("\n"), ""]
    lines += [f"c.{key} = {value}" for key, value in named]
    return "\n".join(lines) + "\n"
