"""The grader side, before a kernel runs: a submitted notebook sanitized exactly as
`nbgrader autograde` does, with nbgrader's own preprocessors (outputs cleared, test cells and
the kernelspec restored from the gradebook, cell metadata checked), and every problem with it
named: links refused, deleted, renamed and edited test cells, malformed metadata."""

from __future__ import annotations

import nbformat

from torchclass_grading.engine.common import INTEGRITY, Outcome, read_private


def repair_metadata(nb) -> list[str]:
    """Make the metadata nbgrader reads well-formed, saying what was wrong: a notebook-level or
    cell-level value of the wrong type would otherwise stop nbgrader on this submission."""
    problems = []
    if not isinstance(nb.get("metadata"), dict):
        nb["metadata"] = nbformat.NotebookNode()
        problems.append("the notebook's metadata is not a mapping; ignored")
    if "kernelspec" in nb.metadata and not isinstance(nb.metadata.kernelspec, dict):
        del nb.metadata["kernelspec"]
        problems.append("metadata.kernelspec is not a mapping; the assignment's kernel is used")
    for i, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
            problems.append(f"cell {i}'s metadata is not a mapping; ignored")
        meta = cell.metadata.get("nbgrader")
        if meta is not None and (not isinstance(meta, dict)
                                 or not isinstance(meta.get("grade_id", ""), str)):
            del cell.metadata["nbgrader"]
            problems.append(f"cell {i}'s metadata.nbgrader is not a mapping with a text grade_id; "
                            "the cell is treated as the student's own")
        if not isinstance(cell.get("source", ""), str):
            cell["source"] = ""
            problems.append(f"cell {i}'s source is not text; emptied")
    return problems



def prepare(eng, student: str, name: str, out: Outcome) -> str | None:
    """The submitted notebook sanitized as nbgrader's autograde does; None if unreadable."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        OverwriteCells,
        OverwriteKernelspec,
    )

    path = eng.course_dir / "submitted" / student / eng.aid / f"{name}.ipynb"
    if path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1):
        # A link to the source notebook (solutions, hidden tests), the gradebook or another
        # student's work would otherwise be graded, and shown to the kernel, as this one.
        out.problems.append(f"{INTEGRITY}: {name}.ipynb in {student}'s submission is a "
                            f"{'symbolic' if path.is_symlink() else 'hard'} link, not a "
                            "file; refused (scored 0)")
        return None
    if not path.is_file():
        out.problems.append(f"{name}.ipynb: missing from the submission (scored 0)")
        return None
    try:
        nb = nbformat.reads(read_private(path, 256 << 20).decode("utf-8"), as_version=4)
    except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
        out.problems.append(f"{path}: not a readable notebook ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); not graded, the gradebook is left as it was")
        out.status = "error"
        return None
    for problem in repair_metadata(nb):
        out.problems.append(f"{name}: {problem}")
    submitted = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    resources = {"nbgrader": {"db_url": eng.db_url, "assignment": eng.aid,
                              "notebook": name, "student": student}}
    try:
        for pp in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
                   CheckCellMetadata):
            nb, resources = pp().preprocess(nb, resources)
    except Exception as exc:  # noqa: BLE001 (one submission's failure must not stop the rest)
        out.problems.append(f"{path}: cannot be prepared for grading ({str(exc)[:300]})")
        return None
    if kernel != nb.metadata.get("kernelspec", {}).get("name"):
        out.problems.append(f"{name}: kernel {kernel!r} replaced by the assignment's")
    graded, handed = eng.test_cells[name]
    for gid in graded:
        if gid not in submitted:
            out.problems.append(f"{name}: test cell {gid} deleted or renamed (scored 0)")
    for gid, text in handed.items():
        if gid in submitted and submitted[gid] != text:
            out.problems.append(f"{name}: test cell {gid} was edited; restored from the source")
    return nbformat.writes(nb)

def handed_test_cells(eng, name: str) -> tuple[list[str], dict[str, str]]:
    """A notebook's test cells: every name in the gradebook, and the sources students were
    handed (the release: hidden tests left out), to tell deleted and edited ones."""
    from nbgrader.api import Gradebook

    with Gradebook(eng.db_url) as gb:
        graded = [gc.name for gc in gb.find_notebook(name, eng.aid).grade_cells]
    release = eng.course_dir / "release" / eng.aid / f"{name}.ipynb"
    handed = {}
    if release.is_file():
        handed = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source
                  for c in nbformat.read(release, as_version=4).cells
                  if c.metadata.get("nbgrader", {}).get("grade")}
    return graded, handed

def data_files(eng, student: str) -> list[tuple[str, str]]:
    """The data files the kernel may see: the assignment's (as nbgrader overwrites them)."""
    files = {}
    for base in (eng.course_dir / "submitted" / student / eng.aid, eng.source_dir):
        for p in base.rglob("*"):
            rel = p.relative_to(base)
            if p.is_file() and not p.is_symlink() and p.suffix != ".ipynb" \
                    and rel.name != "timestamp.txt" and ".ipynb_checkpoints" not in rel.parts:
                files[str(rel)] = str(p)
    return [(src, rel) for rel, src in files.items()]

