"""Submission families: every assignment's test submissions, graded by the real nbgrader.

An assignment folder (course/stage<N>/projects/<id>/) holds the nbgrader source notebook
<id>.ipynb and submissions.yaml, which names the family of test submissions and the exact
gradebook score each must get. This module builds each member from the *release* (what a
student receives), places them all in a throw-away nbgrader course and runs one stock
`nbgrader autograde` over them, then reads the scores back from the gradebook.

    python tests/grading/families.py build <assignment-dir> <out>   # inspect a family
    python tests/grading/families.py grade <assignment-dir> [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jsonschema
import nbformat
import yaml
from torchclass_exchange import HIDDEN_TESTS_DELIMITERS as HIDDEN_MARKERS
from torchclass_exchange import SOLUTION_DELIMITERS as SOLUTION_MARKERS
from torchclass_exchange import config_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 20
SCHEMA_FILE = Path(__file__).with_name("submissions.schema.yaml")
# SOLUTION_MARKERS, HIDDEN_MARKERS: nbgrader's own, which it finds anywhere in a line.


@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


class FamilyError(ValueError):
    """A submissions.yaml (or its notebook) that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Member:
    name: str
    score: float
    cells: dict[str, str] = field(default_factory=dict)
    cells_scores: dict[str, float] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Family:
    assignment_dir: Path
    assignment_id: str
    max_score: float
    timeout: int
    members: dict[str, Member]

    @property
    def notebook(self) -> Path:
        return self.assignment_dir / f"{self.assignment_id}.ipynb"

    @property
    def yaml_path(self) -> Path:
        return self.assignment_dir / "submissions.yaml"


@dataclass
class MemberResult:
    total: float
    cells: dict[str, float]


@dataclass
class FamilyResult:
    family: Family
    course_dir: Path
    scores: dict[str, MemberResult]
    max_score: float
    cell_max: dict[str, float]
    generate_seconds: float
    autograde_seconds: float
    log: str

    def mismatches(self) -> list[str]:
        """Each expectation of submissions.yaml that the gradebook contradicts, in words."""
        problems = []
        if self.max_score != self.family.max_score:
            problems.append(
                f"gradebook max score {self.max_score} != max_score {self.family.max_score}"
            )
        for name, member in self.family.members.items():
            got = self.scores.get(name)
            if got is None:
                problems.append(f"{name}: no submission in the gradebook")
                continue
            if got.total != member.score:
                problems.append(
                    f"{name}: scored {got.total}, expected {member.score} ({got.cells})"
                )
            for grade_id, points in member.cells_scores.items():
                if got.cells.get(grade_id) != points:
                    problems.append(
                        f"{name}: cell {grade_id} scored {got.cells.get(grade_id)}, expected {points}"
                    )
        return problems


# --------------------------------------------------------------------------- loading


def _grade_cells(nb) -> dict[str, dict]:
    """grade_id -> nbgrader metadata, for every cell nbgrader tracks."""
    out = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta and meta.get("grade_id"):
            out[meta["grade_id"]] = {**meta, "cell_type": cell.cell_type}
    return out


def _where(path: Path, parts) -> str:
    return f"{path}: " + ".".join(str(p) for p in parts) if parts else str(path)


def _explain(error, path: Path) -> str:
    """One jsonschema error in the words of the file: where, what is wrong, what is allowed."""
    where, kind, value, schema = (_where(path, error.absolute_path), error.validator,
                                  error.instance, error.schema)
    if kind == "additionalProperties":
        unknown = sorted(set(value) - set(schema.get("properties", {})))
        return f"{where}: unknown key(s) {unknown}; allowed: {sorted(schema['properties'])}"
    if kind == "required":
        key = next(k for k in error.validator_value if k not in value)
        hint = schema.get("properties", {}).get(key, {}).get("description", "a required member")
        return f"{where}: missing '{key}' ({hint})"
    if "propertyNames" in error.schema_path:
        return f"{where}: {value!r}: {schema.get('description', 'bad name')}"
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where} must be a {expected}, got {value!r}"
    if kind == "minimum":
        return f"{where} must be >= {error.validator_value} ({schema.get('description')}), got {value!r}"
    return f"{where}: {error.message}"


def load_family(assignment_dir: str | os.PathLike) -> Family:
    """Read <assignment_dir>/submissions.yaml, check it against its schema, then against the
    source notebook (grade ids, points, score ranges)."""
    adir = Path(assignment_dir).resolve()
    path = adir / "submissions.yaml"
    aid = adir.name
    nb_path = adir / f"{aid}.ipynb"
    if not path.is_file():
        raise FamilyError(f"{path}: missing (every assignment needs its submission family)")
    if not nb_path.is_file():
        raise FamilyError(f"{path}: the source notebook {nb_path.name} is not beside it")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FamilyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise FamilyError(f"{path}: expected a mapping with max_score and submissions")
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(raw),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise FamilyError(_explain(errors[0], path))
    max_score = float(raw["max_score"])
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)

    try:
        nb = nbformat.read(nb_path, as_version=4)
    except (OSError, ValueError, nbformat.ValidationError) as exc:
        raise FamilyError(f"{nb_path}: not a readable notebook: {exc}") from None
    cells = _grade_cells(nb)
    points = sum(float(m.get("points", 0)) for m in cells.values() if m.get("grade"))
    if points != max_score:
        raise FamilyError(
            f"{path}: max_score is {max_score:g} but the test cells of {nb_path.name} "
            f"are worth {points:g} points"
        )

    subs = raw["submissions"]
    members = {}
    for name, entry in subs.items():
        where = f"{path}: submissions.{name}"
        score = float(entry["score"])
        if not 0 <= score <= max_score:
            raise FamilyError(f"{where}.score: {score:g} is outside 0..{max_score:g}")
        overrides = entry.get("cells") or {}
        if name == "untouched" and overrides:
            raise FamilyError(f"{where}.cells: 'untouched' is the release as is; it takes no cells")
        for grade_id in overrides:
            if grade_id not in cells:
                raise FamilyError(
                    f"{where}.cells: unknown grade_id '{grade_id}' (the notebook has {sorted(cells)})"
                )
        expect = entry.get("cells_scores") or {}
        for grade_id in expect:
            if grade_id not in cells or not cells[grade_id].get("grade"):
                graded = sorted(g for g, m in cells.items() if m.get("grade"))
                raise FamilyError(
                    f"{where}.cells_scores: unknown graded grade_id '{grade_id}' (graded cells: {graded})"
                )
        members[name] = Member(
            name=name,
            score=score,
            cells={k: v for k, v in overrides.items()},
            cells_scores={k: float(v) for k, v in expect.items()},
            description=str(entry.get("description", "")),
        )
    if members["solution"].score != max_score:
        raise FamilyError(
            f"{path}: submissions.solution.score must equal max_score ({max_score:g})"
        )
    return Family(adir, aid, max_score, timeout, members)


def find_assignments(root: str | os.PathLike = REPO) -> list[Path]:
    """Every assignment folder (one with submissions.yaml) under <root>/course/stage*/projects."""
    return sorted(p.parent for p in Path(root).glob("course/stage*/projects/*/submissions.yaml"))


# --------------------------------------------------------------------------- building


def strip_markers(source: str, markers=SOLUTION_MARKERS) -> str:
    """The source with the marker lines removed and the code between them kept."""
    return "\n".join(line for line in source.splitlines() if not any(m in line for m in markers))


def marked_regions(source: str, markers) -> list[str]:
    """The text between each pair of markers (markers excluded)."""
    regions, current = [], None
    for line in source.splitlines():
        if markers[0] in line:
            current = []
        elif markers[1] in line and current is not None:
            regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


def member_notebook(family: Family, member: str, release_nb, source_nb=None):
    """The notebook `member` submits, built from the release notebook (a NotebookNode)."""
    source_nb = source_nb or nbformat.read(family.notebook, as_version=4)
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    if member == "untouched":
        return nb
    spec = family.members[member]
    solutions = {
        meta["grade_id"]: strip_markers(cell.source)
        for cell in source_nb.cells
        if (meta := cell.metadata.get("nbgrader", {})).get("solution") and cell.cell_type == "code"
    }
    seen = set()
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in solutions:
            cell.source = solutions[grade_id]
        if grade_id in spec.cells:
            cell.source = spec.cells[grade_id]
            seen.add(grade_id)
    missing = set(spec.cells) - seen
    if missing:
        raise FamilyError(
            f"{family.yaml_path}: submissions.{member}.cells: {sorted(missing)} not in the release"
        )
    return nb


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Kernels import the course library from this checkout, on one thread, offline.
    paths = [str(REPO / "course"), str(REPO / "grading")]
    env["PYTHONPATH"] = os.pathsep.join(
        paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    # nbgrader runs `alembic` (and kernels) from PATH: the venv's bin must come first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONHASHSEED="0",
        MPLBACKEND="Agg",
    )
    return env


def _nbgrader(args: list[str], course_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        check=False,  # the caller reports the log
        cwd=course_dir,
        env=_env(),
        capture_output=True,
        text=True,
    )


def _write_config(course_dir: Path, family: Family) -> None:
    # interrupt_on_timeout: a cell past the timeout gets a KeyboardInterrupt, is recorded as
    # a CellTimeoutError, and the kernel goes on with the next cell, so the rest is graded.
    # iopub_timeout: nbclient waits only 4 s by default for a cell's last outputs after it
    # finishes; a busy machine (CI, a class's grading run) exceeds that and fails a whole member.
    (course_dir / "nbgrader_config.py").write_text(config_text(
        header="A throw-away course of tests/grading/families.py.",
        course_root=course_dir, course_id="torchclass-families", timeout=family.timeout,
        iopub_timeout=30, settings={
            "ExecutePreprocessor.interrupt_on_timeout": True,
            "ClearSolutions.code_stub": {"python": "# YOUR CODE HERE\nraise NotImplementedError()"},
        }))


def build_family(family: Family, course_dir: str | os.PathLike) -> dict[str, Path]:
    """Make an nbgrader course in course_dir: source, real release, one submission per member.

    Returns member -> path of its submitted notebook.
    """
    course_dir = Path(course_dir).resolve()
    course_dir.mkdir(parents=True, exist_ok=True)
    _write_config(course_dir, family)
    aid = family.assignment_id
    src = course_dir / "source" / aid
    if src.exists():
        shutil.rmtree(src)
    # The notebook and any data files beside it; the family file stays out of the release.
    shutil.copytree(
        family.assignment_dir,
        src,
        ignore=shutil.ignore_patterns("submissions.yaml", ".ipynb_checkpoints", "__pycache__"),
    )
    proc = _nbgrader(["generate_assignment", aid, "--force"], course_dir)
    release_dir = course_dir / "release" / aid
    release_path = release_dir / f"{aid}.ipynb"
    if proc.returncode != 0 or not release_path.is_file():
        raise FamilyError(
            f"{family.notebook}: nbgrader generate_assignment failed:\n{proc.stdout}\n{proc.stderr}"
        )
    release_nb = nbformat.read(release_path, as_version=4)
    source_nb = nbformat.read(family.notebook, as_version=4)
    paths = {}
    for name in family.members:
        dest = course_dir / "submitted" / name / aid
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(release_dir, dest)
        nb = member_notebook(family, name, release_nb, source_nb)
        nbformat.write(nb, dest / f"{aid}.ipynb")
        # nbgrader reads a submission's time from this file; a fixed one keeps runs identical.
        (dest / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
        paths[name] = dest / f"{aid}.ipynb"
    return paths


def read_scores(family: Family, course_dir: Path) -> tuple[dict[str, MemberResult], float, dict]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        assignment = gb.find_assignment(family.assignment_id)
        max_score = float(assignment.max_score)
        cell_max = {}
        for nb in assignment.notebooks:
            for cell in nb.grade_cells:
                cell_max[cell.name] = float(cell.max_score)
        for name in family.members:
            try:
                sub = gb.find_submission(family.assignment_id, name)
            except MissingEntry:
                continue
            cells = {}
            for nb in sub.notebooks:
                for grade in nb.grades:
                    cells[grade.name] = float(grade.score)
            scores[name] = MemberResult(total=float(sub.score), cells=cells)
    return scores, max_score, cell_max


def grade_family(family: Family, course_dir: str | os.PathLike) -> FamilyResult:
    """Build the family in course_dir, autograde it in one nbgrader batch, read the gradebook."""
    course_dir = Path(course_dir).resolve()
    t0 = time.monotonic()
    build_family(family, course_dir)
    t1 = time.monotonic()
    proc = _nbgrader(["autograde", family.assignment_id, "--force"], course_dir)
    t2 = time.monotonic()
    log = proc.stdout + proc.stderr
    scores, max_score, cell_max = read_scores(family, course_dir)
    return FamilyResult(family, course_dir, scores, max_score, cell_max, t1 - t0, t2 - t1, log)


def release_leaks(family: Family, release_path: Path) -> list[str]:
    """Solution or hidden-test lines of the source that reached the release, one entry each."""
    source_nb = nbformat.read(family.notebook, as_version=4)
    release_cells = nbformat.read(release_path, as_version=4).cells
    release_text = "\n".join(c.source for c in release_cells)
    release_lines = {line.strip() for line in release_text.splitlines()}
    # A line that also appears outside every marked region is public, not a secret.
    public = {line.strip() for line in _outside_regions(source_nb)}
    leaks = []
    for markers in (SOLUTION_MARKERS, HIDDEN_MARKERS):
        leaks += [f"marker {m!r} in the release" for m in markers if m in release_text]
        for cell in source_nb.cells:
            for region in marked_regions(cell.source, markers):
                for line in region.splitlines():
                    text = line.strip()
                    if len(text) > 3 and text not in public and text in release_lines:
                        leaks.append(f"{markers[0]}: {text!r}")
    return leaks


def _outside_regions(source_nb) -> list[str]:
    lines = []
    for cell in source_nb.cells:
        inside = False
        for line in cell.source.splitlines():
            s = line.strip()
            if SOLUTION_MARKERS[0] in s or HIDDEN_MARKERS[0] in s:
                inside = True
            elif SOLUTION_MARKERS[1] in s or HIDDEN_MARKERS[1] in s:
                inside = False
            elif not inside:
                lines.append(line)
    return lines


# --------------------------------------------------------------------------- command line


def _table(result: FamilyResult) -> str:
    rows = [f"{'member':<16} {'expected':>8} {'got':>6}  per cell"]
    for name, member in result.family.members.items():
        got = result.scores.get(name)
        cells = " ".join(f"{k}={v:g}" for k, v in got.cells.items()) if got else "-"
        rows.append(
            f"{name:<16} {member.score:>8g} {got.total if got else float('nan'):>6g}  {cells}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/grading/families.py", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build", help="build the nbgrader course (source, release, submitted/<member>) into OUT"
    )
    b.add_argument("assignment_dir", type=Path)
    b.add_argument("out", type=Path)
    g = sub.add_parser(
        "grade", help="grade the family with nbgrader autograde and compare with submissions.yaml"
    )
    g.add_argument("assignment_dir", type=Path)
    g.add_argument(
        "--keep", type=Path, help="grade in this folder and keep it (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    try:
        family = load_family(args.assignment_dir)
        if args.command == "build":
            paths = build_family(family, args.out)
            for name, path in paths.items():
                print(f"{name:<16} {path}")
            return 0
        with tempfile.TemporaryDirectory(prefix="family-") as tmp:
            result = grade_family(family, args.keep or tmp)
            print(_table(result))
            print(
                f"generate {result.generate_seconds:.1f} s, autograde {result.autograde_seconds:.1f} s"
            )
            problems = result.mismatches()
            for p in problems:
                print("MISMATCH", p, file=sys.stderr)
            if problems:
                print(result.log[-4000:], file=sys.stderr)
            return 1 if problems else 0
    except FamilyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
