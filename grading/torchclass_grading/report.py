"""The per-assignment grading report: a CSV and one self-contained HTML page.

    python -m torchclass_grading.report COURSE_DIR ASSIGNMENT [--out DIR]

Built from what a grading run leaves on disk, so it can be rebuilt at any time:
- the nbgrader gradebook: each student's total and per grade cell score, and the maximums;
- the autograded notebooks: for each failed test cell, the error's name and message only
  (never the cell's source or traceback, which would quote hidden tests);
- the engine's per-submission records (.torchclass-engine/<aid>/<student>.done): what went
  wrong with a submission (deleted cells, unreadable JSON, a dead kernel, truncated output).

The page needs no network (inline CSS and SVG, no script), and every piece of text that a
student controls (ids, error messages) is escaped. Lines of the source's hidden tests are cut
from any message that quotes them.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from torchclass_grading.engine import INTEGRITY, state
from torchclass_grading.scrub import Redactor

MESSAGE_CHARS = 300      # of one error message kept in the report
TOP_MESSAGES = 5         # per test cell
NAMED_STUDENTS = 8       # listed beside a failure message

# Status of a student's row.
GRADED = "graded"
ERROR = "error"                  # the engine could not grade it (e.g. unreadable notebook)
STALE = "resubmitted"            # changed since it was graded: grade again
NOT_GRADED = "not graded"        # submitted, never graded
NO_SUBMISSION = "no submission"  # on the roster, nothing submitted
# Short of full points with no error to show: a deleted cell, or points given by hand.
NO_ERROR = "(no error output: the cell was deleted or renamed, or graded by hand)"


class ReportError(RuntimeError):
    """The report cannot be built; the message names the file and the fix."""


@dataclass
class Cell:
    key: str          # column name: the grade_id, or notebook/grade_id for several notebooks
    notebook: str
    name: str
    max_score: float
    full: int = 0
    partial: int = 0
    zero: int = 0
    total: float = 0.0
    failures: dict[str, list[str]] = field(default_factory=dict)  # message -> students

    @property
    def graded(self) -> int:
        return self.full + self.partial + self.zero

    @property
    def mean_fraction(self) -> float:
        if not self.graded or not self.max_score:
            return 1.0
        return self.total / (self.graded * self.max_score)


@dataclass
class Row:
    student: str
    status: str
    total: float | None = None
    max_score: float | None = None
    cells: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float | None = None  # the notebook's run time in the engine

    @property
    def integrity(self) -> list[str]:
        """The problems that are evidence of tampering with the grader (engine INTEGRITY)."""
        return [p for p in self.problems if f"{INTEGRITY}:" in p]


@dataclass
class Report:
    assignment: str
    course_dir: Path
    max_score: float
    cells: list[Cell]
    rows: list[Row]
    generated: str

    @property
    def csv_name(self) -> str:
        return f"{self.assignment}-grades.csv"

    @property
    def graded(self) -> list[Row]:
        return [r for r in self.rows if r.total is not None]

    @property
    def flagged(self) -> list[Row]:
        return [r for r in self.rows if r.integrity]

    @property
    def with_problems(self) -> list[Row]:
        return [r for r in self.rows if r.problems or r.status in (ERROR, STALE, NOT_GRADED)]

    def histogram(self) -> list[tuple[str, int]]:
        """(label, count) per bar: one bar per point for small integer maximums, else ten."""
        scores = [r.total for r in self.graded]
        top = self.max_score
        if top <= 20 and float(top).is_integer() and all(float(s).is_integer() for s in scores):
            counts = Counter(int(s) for s in scores)
            return [(str(i), counts.get(i, 0)) for i in range(int(top) + 1)]
        bins = 10
        width = top / bins if top else 1.0
        counts = Counter(min(int(s / width), bins - 1) for s in scores)
        return [(f"{_num(i * width)}–{_num((i + 1) * width)}", counts.get(i, 0))
                for i in range(bins)]


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0")


def _message(out: dict, redact: Redactor) -> str:
    value = " ".join(str(out.get("evalue", "")).split())
    if len(value) > MESSAGE_CHARS:
        value = value[:MESSAGE_CHARS] + "…"
    text = f"{out.get('ename', 'Error')}: {value}" if value else str(out.get("ename", "Error"))
    return redact(text)


def build(course_dir, assignment: str) -> Report:
    """Read the gradebook, the autograded notebooks and the engine's records into a Report."""
    from nbgrader.api import Gradebook, MissingEntry

    course_dir = Path(course_dir).resolve()
    db = course_dir / "gradebook.db"
    if not db.is_file():
        raise ReportError(f"{db}: no gradebook. Fix: release the assignment first "
                          f"(torchclass-grade release {assignment}), then grade it.")
    with Gradebook(f"sqlite:///{db}") as gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            known = ", ".join(x.name for x in gb.assignments) or "none"
            raise ReportError(f"{db}: no assignment {assignment!r} (found: {known}). Fix: "
                              f"torchclass-grade release {assignment}, or check the id.") from None
        max_score = float(a.max_score)
        notebooks = sorted(nb.name for nb in a.notebooks)
        raw_cells = {nb.name: {c.name: float(c.max_score) for c in [*nb.grade_cells, *nb.task_cells]}
                     for nb in a.notebooks}
        roster = [s.id for s in gb.students]
        scores = {}
        for sub in gb.assignment_submissions(assignment):
            cells = {(snb.name, g.name): float(g.score) for snb in sub.notebooks for g in snb.grades}
            scores[sub.student_id] = (float(sub.score), float(sub.max_score), cells)

    sources = [course_dir / "source" / assignment / f"{n}.ipynb" for n in notebooks]
    redact = Redactor([p for p in sources if p.is_file()])
    cells = []
    for name, path in zip(notebooks, sources):
        order = []
        if path.is_file():
            order = [c.metadata.get("nbgrader", {}).get("grade_id")
                     for c in nbformat.read(path, as_version=4).cells]
        ids = sorted(raw_cells[name], key=lambda g: (order.index(g) if g in order else len(order), g))
        for gid in ids:
            key = f"{name}/{gid}" if len(notebooks) > 1 else gid
            cells.append(Cell(key, name, gid, raw_cells[name][gid]))
    by_id = {(c.notebook, c.name): c for c in cells}

    submitted = course_dir / "submitted"
    on_disk = {p.parent.name for p in submitted.glob(f"*/{assignment}") if p.is_dir()}
    rows = []
    for student in sorted(set(roster) | on_disk | set(scores)):
        row = Row(student, GRADED if student in scores else
                  NOT_GRADED if student in on_disk else NO_SUBMISSION)
        done = state.submission_state(course_dir, assignment, student)
        if done:
            row.problems = [redact(str(p)) for p in done["problems"]]
            row.seconds = float(done["seconds"])
            if done["status"] == "error":
                row.status = ERROR
            elif student in on_disk and not done["current"]:
                row.status = STALE
                row.problems.append("submitted again since it was graded: grade it again")
        if student in scores:
            row.total, row.max_score, graded_cells = scores[student]
            for (nb, gid), score in graded_cells.items():
                cell = by_id.get((nb, gid))
                if cell is None:
                    continue
                row.cells[cell.key] = score
                cell.total += score
                if score >= cell.max_score:
                    cell.full += 1
                elif score > 0:
                    cell.partial += 1
                else:
                    cell.zero += 1
            explained = _failures(course_dir, assignment, student, notebooks, by_id, redact)
            for cell in cells:
                score = row.cells.get(cell.key)
                if score is not None and score < cell.max_score and cell.key not in explained:
                    cell.failures.setdefault(NO_ERROR, []).append(student)
        rows.append(row)
    return Report(assignment, course_dir, max_score, cells, rows,
                  datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _cells(path: Path) -> list[dict]:
    # Plain JSON, not nbformat: validating hundreds of notebooks would dominate the report's time.
    try:
        cells = json.loads(path.read_bytes()).get("cells", [])
    except (OSError, ValueError, AttributeError):  # missing or unreadable: no messages to show
        return []
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def _failures(course_dir: Path, assignment: str, student: str, notebooks: list[str],
              by_id: dict, redact: Redactor) -> set[str]:
    """Add each failed test cell's error message (name and value only) to its Cell; return
    the keys of those cells."""
    found = set()
    for name in notebooks:
        for c in _cells(course_dir / "autograded" / student / assignment / f"{name}.ipynb"):
            cell = by_id.get((name, c.get("metadata", {}).get("nbgrader", {}).get("grade_id")))
            errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
            if cell is not None and errors:
                cell.failures.setdefault(_message(errors[0], redact), []).append(student)
                found.add(cell.key)
    return found


# ---------------------------------------------------------------- CSV


def _text(value: str) -> str:
    # A spreadsheet would run a leading = + - @ as a formula; student ids and messages stay text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csv(report: Report, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "status", "total", "max", *(c.key for c in report.cells), "problems",
                    "integrity"])
        for r in report.rows:
            w.writerow([_text(r.student), r.status, _num(r.total), _num(r.max_score),
                        *(_num(r.cells.get(c.key)) for c in report.cells),
                        _text("; ".join(r.problems)), "flagged" if r.integrity else ""])
    return path


# ---------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px}
.sub{color:#5b6472;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:24px}.card span{color:#5b6472;font-size:13px}
.card.warn b{color:#b3261e}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:4px 18px 16px;
margin-top:18px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.hardest td{background:#fff4e5}.tag{font-size:12px;background:#b3261e;color:#fff;
border-radius:10px;padding:1px 8px;margin-left:6px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;
vertical-align:-1px}
.full{fill:#2e7d32;background:#2e7d32}.partial{fill:#f0a202;background:#f0a202}
.zero{fill:#c62828;background:#c62828}
.msg{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;
word-break:break-word}
.who{color:#5b6472;font-size:13px}
.status-error,.status-resubmitted,.status-not-graded{color:#b3261e;font-weight:600}
ul.problems{margin:0;padding-left:18px}.flag{color:#b3261e}.empty{color:#5b6472}
svg text{font:12px system-ui,sans-serif;fill:#1d2430}
"""


def _histogram(bars: list[tuple[str, int]], max_score: float) -> dict:
    """The score histogram's geometry, for the template's SVG."""
    w, h, left, bottom, top = 640, 240, 40, 36, 14
    plot_w, plot_h = w - left - 10, h - bottom - top
    peak = max([c for _, c in bars] + [1])
    slot = plot_w / len(bars)
    shapes = []
    for i, (label, count) in enumerate(bars):
        bh = plot_h * count / peak
        x = left + i * slot + slot * 0.12
        shapes.append({"label": label, "count": count, "x": x, "y": top + plot_h - bh,
                       "w": slot * 0.76, "h": bh})
    return {"w": w, "h": h, "left": left, "right": w - 10, "base": top + plot_h,
            "mid": left + plot_w / 2, "max": _num(max_score), "bars": shapes,
            "ticks": [(t, top + plot_h * (1 - t / peak)) for t in sorted({peak, peak // 2} - {0})]}


def _rates(cell: Cell) -> list[tuple[str, float, float]]:
    """A cell's full/partial/zero bar: (class, x, width) of each part, out of 220 px."""
    parts, x = [], 0.0
    for cls, n in (("full", cell.full), ("partial", cell.partial), ("zero", cell.zero)):
        if n and cell.graded:
            parts.append((cls, x, 220 * n / cell.graded))
            x += 220 * n / cell.graded
    return parts


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "–"


def _escape(value) -> str:
    """Every value the template prints, escaped (quote=True: safe in text and attribute values),
    unless it is Markup (the page's own CSS)."""
    return value if isinstance(value, Markup) else html.escape(str(value))


def _template():
    env = Environment(loader=FileSystemLoader(Path(__file__).parent),
                      autoescape=False, finalize=_escape, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)
    env.filters["f1"] = lambda x: f"{x:.1f}"
    return env.get_template("report.html.j2")


def render_html(report: Report) -> str:
    graded = report.graded
    totals = [r.total for r in graded]
    hardest = sorted(report.cells, key=lambda c: (c.mean_fraction, report.cells.index(c)))
    problems = report.with_problems
    cards = [
        (len([r for r in report.rows if r.status != NO_SUBMISSION]), "submissions", False),
        (len(graded), "graded", False),
        (len(problems), "with problems", bool(problems)),
        (sum(r.status == ERROR for r in report.rows), "could not be graded",
         any(r.status == ERROR for r in report.rows)),
        (_num(round(statistics.mean(totals), 2)) if totals else "–",
         f"mean (of {_num(report.max_score)})", False),
        (_num(statistics.median(totals)) if totals else "–", "median", False),
    ]
    times = [r.seconds for r in report.rows if r.seconds]
    if times:
        cards.append((f"{statistics.median(times):.1f} s", "median run time", False))
    if report.flagged:
        cards.append((len(report.flagged), "flagged: tampering with the grader", True))
    missing = sum(r.status == NO_SUBMISSION for r in report.rows)
    if missing:
        cards.append((missing, "on the roster, no submission", False))
    rows = []
    for i, c in enumerate(hardest):
        mean = c.total / c.graded if c.graded else None
        rows.append((c, i == 0 and c.mean_fraction < 1 and len(hardest) > 1,
                     mean and round(mean, 2)))
    failures = []
    for c in hardest:
        if not c.failures:
            continue
        ranked = sorted(c.failures.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        shown = [(msg, len(who), ", ".join(who[:NAMED_STUDENTS]),
                  f" and {len(who) - NAMED_STUDENTS} more" if len(who) > NAMED_STUDENTS else "")
                 for msg, who in ranked[:TOP_MESSAGES]]
        rest = None
        if len(ranked) > TOP_MESSAGES:
            rest = (sum(len(w) for _, w in ranked[TOP_MESSAGES:]), len(ranked) - TOP_MESSAGES)
        failures.append((c, shown, rest))
    return _template().render(
        r=report, css=Markup(CSS), cards=cards, num=_num, pct=_pct,
        hist=_histogram(report.histogram(), report.max_score) if graded else None,
        hardest=rows, rates={c.key: _rates(c) for c in report.cells}, failures=failures,
        problems=problems)


def write_report(course_dir, assignment: str, out_dir=None) -> tuple[Path, Path]:
    """Write <aid>-grades.csv and <aid>-report.html (default: COURSE_DIR/reports/<aid>/)."""
    report = build(course_dir, assignment)
    out = Path(out_dir) if out_dir else report.course_dir / "reports" / assignment
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(report, out / report.csv_name)
    html_path = out / f"{assignment}-report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return csv_path, html_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchclass_grading.report",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("course_dir")
    ap.add_argument("assignment")
    ap.add_argument("--out", help="folder to write into (default: COURSE_DIR/reports/ASSIGNMENT)")
    args = ap.parse_args(argv)
    try:
        paths = write_report(args.course_dir, args.assignment, args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
