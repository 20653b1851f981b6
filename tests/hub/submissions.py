"""Build test submissions from what a student really fetched (the release), following the
assignment's submissions.yaml: `solution` fills every solution cell from the source notebook,
`untouched` is the release itself, other members are the solution with some cells replaced."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import yaml
from torchclass_exchange import HIDDEN_TESTS_DELIMITERS, SOLUTION_DELIMITERS


def family(assignment_dir: Path) -> dict:
    return yaml.safe_load((assignment_dir / "submissions.yaml").read_text())


def source_notebook(assignment_dir: Path):
    return nbformat.read(assignment_dir / f"{assignment_dir.name}.ipynb", as_version=4)


def _solution_cells(source) -> dict[str, str]:
    out = {}
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            lines = [ln for ln in cell.source.splitlines()
                     if not any(d in ln for d in SOLUTION_DELIMITERS)]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def build(member: str, release: dict, assignment_dir: Path) -> dict:
    """The notebook JSON a student with this member's answers would submit."""
    nb = copy.deepcopy(release)
    if member == "untouched":
        return nb
    replace = _solution_cells(source_notebook(assignment_dir))
    replace.update((family(assignment_dir)["submissions"][member] or {}).get("cells", {}))
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in replace:
            cell["source"] = replace[gid]
    return nb


def hidden_test_lines(assignment_dir: Path) -> list[str]:
    """Lines of hidden test code that never appear in the release (so must not reach students)."""
    source = source_notebook(assignment_dir)
    lines = set()
    begin, end = HIDDEN_TESTS_DELIMITERS
    for cell in source.cells:
        inside = False
        for ln in cell.source.splitlines():
            if begin in ln:
                inside = True
            elif end in ln:
                inside = False
            elif inside and len(ln.strip()) > 12:
                lines.add(ln.strip())
    return sorted(lines)
