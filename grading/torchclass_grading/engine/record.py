"""The grader side, after a kernel ran: nbgrader's own Autograde app records the executed
notebooks (gradebook, late penalties, formgrader, feedback stay nbgrader's), with its Execute
step swapped for one that hands over the notebook as it ran, hidden test lines cut and only
inert HTML kept. nbgrader reads from a private staging copy, never the submitted dir."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from torchclass_grading import sandbox, scrub
from torchclass_grading.engine.common import EngineError, Outcome, read_private
from torchclass_grading.engine.prepare import data_files
from torchclass_grading.engine.run import error_output


def stage(eng, student: str, executed: dict[str, str], out: Outcome) -> Path:
    """What nbgrader records from, instead of the submitted dir itself: the notebooks as they
    ran (well-formed), regular files only, and a readable timestamp. nbgrader then never
    reads a link, a malformed notebook or a timestamp it cannot parse."""
    from nbgrader.utils import parse_utc

    src = eng.course_dir / "submitted" / student / eng.aid
    # In the grader's own state dir, not the grader account's course dir: as root this
    # writes there, and no other account may swap a link in along the way.
    parent = sandbox.private_dir(sandbox.STATE_DIR / "staging", 0o700)
    root = Path(tempfile.mkdtemp(prefix="record-", dir=parent))
    dest = root / student / eng.aid
    dest.mkdir(parents=True)
    for name in eng.notebooks:
        if name in executed:
            (dest / f"{name}.ipynb").write_text(executed[name])
        else:  # missing, a link or unreadable: recorded as the untouched release, nothing run
            release = eng.course_dir / "release" / eng.aid / f"{name}.ipynb"
            blank = release if release.is_file() else eng.source_dir / f"{name}.ipynb"
            shutil.copyfile(blank, dest / f"{name}.ipynb")
    for path, rel in data_files(eng, student):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel, follow_symlinks=False)
    stamp_file = src / "timestamp.txt"
    raw = read_private(stamp_file, 4096)
    if raw is not None:
        text = raw.decode("utf-8", "replace").strip()
        try:
            parse_utc(text)
        except Exception:  # noqa: BLE001 (any unparseable text)
            when = time.gmtime(stamp_file.lstat().st_mtime)
            text = time.strftime("%Y-%m-%d %H:%M:%S.000000 UTC", when)
            out.problems.append(f"timestamp.txt of {student} is not a readable time; the "
                                f"file's own time ({text}) was used")
        (dest / "timestamp.txt").write_text(text)
    return root

def record(eng, student: str, executed: dict[str, str], out: Outcome) -> None:
    """nbgrader's Autograde for this student, with the executed notebooks swapped in."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor, Preprocessor
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )
    from traitlets.config import Config

    class Replay(Preprocessor):
        enabled = True

        def preprocess(self, nb, resources):
            name = resources["unique_key"]
            if name not in executed:  # unreadable: graded as nothing ran
                for cell in nb.cells:
                    if cell.cell_type == "code":
                        cell.outputs = [error_output("NotRun", "the notebook could not be run")]
                return nb, resources
            done = nbformat.reads(executed[name], as_version=4)
            if len(done.cells) != len(nb.cells):
                raise EngineError(f"{student}/{name}: executed notebook does not match")
            # What instructors open and students get back: no hidden test, no active HTML.
            redactors[name].notebook(done)
            scrub.sanitize_notebook(done)
            return done, resources

    redactors = eng.redactors
    config = Config(eng.config)
    config.Autograde.autograde_preprocessors = [
        Replay, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata]
    staging = stage(eng, student, executed, out)
    config.CourseDirectory.submitted_directory = str(staging)  # absolute: outside the root
    coursedir = CourseDirectory(config=config, root=str(eng.course_dir))
    api = NbGraderAPI(coursedir=coursedir, config=config)
    try:
        result = api.autograde(eng.aid, student, force=True, create=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not result["success"]:
        raise EngineError(f"{student}: nbgrader could not record the grade:\n"
                          f"{result.get('error') or result.get('log')}")
    from nbgrader.api import Gradebook

    with Gradebook(eng.db_url) as gb:
        sub = gb.find_submission(eng.aid, student)
        out.score, out.max_score = float(sub.score), float(sub.max_score)
        for snb in sub.notebooks:
            for g in snb.grades:
                out.cells[g.name] = float(g.score)

