"""Every lesson notebook executes on CPU within its time budget; every committed notebook is
clean; every item of the course outline has its notebook."""

import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from torchclass_course.notebooks import LessonFailed, budget_of, execute

REPO = Path(__file__).resolve().parents[2]
COURSE = REPO / "course"
OUTLINE = COURSE / "OUTLINE.md"
MAPPING = COURSE / "outline.yaml"

LESSONS = sorted([*COURSE.glob("stage*/lessons/*.ipynb"), *COURSE.glob("tools/*.ipynb")])


def _rel(path: Path) -> str:
    return str(path.relative_to(COURSE))


@pytest.mark.lessons
@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_lesson_executes_on_cpu_within_budget(notebook, tmp_path, shared_cache, monkeypatch):
    data_root = tmp_path / "no-staged-data"
    data_root.mkdir()
    # The kernel inherits this environment: CPU only, offline sources, no downloads.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TORCHCLASS_DATA", str(data_root))
    monkeypatch.setenv("TORCHCLASS_CACHE", str(shared_cache))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        run = execute(notebook, cwd=work)
    except LessonFailed as e:
        pytest.fail(str(e), pytrace=False)
    print(f"{_rel(notebook)}: {run.seconds} s of {run.budget} s; slowest cell {max(run.cell_seconds)} s")


def test_lessons_are_found():
    assert any("stage1/lessons" in str(p) for p in LESSONS), f"no lessons found under {COURSE}"


def _committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=COURSE, capture_output=True,
                             text=True, check=True).stdout
        return sorted(COURSE / line for line in out.splitlines() if line)
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked tarball)
        return sorted(COURSE.rglob("*.ipynb"))


def test_committed_notebooks_have_no_outputs():
    dirty = []
    for path in _committed_notebooks():
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                dirty.append(f"{_rel(path)} cell {i}")
    assert not dirty, "notebooks committed with outputs (clear them): " + ", ".join(dirty)


@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_lesson_metadata_is_valid(notebook):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    budget_of(nb, notebook)  # raises naming the file when the budget is missing or absurd
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{notebook}: kernelspec"
    assert nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def outline_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """OUTLINE.md's items by section: {"Stage 1": {"topics": [...], "projects": [...]},
    "Tools to learn alongside": {"topics": [...]}}. Resources are reading, not notebooks."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = kind = None
    for line in text.splitlines():
        heading = re.match(r"^## (.+?)(:.*)?$", line)
        if heading:
            name = heading.group(1).strip()
            section = None if name.lower().startswith("suggested resources") else name
            kind = "topics" if section and section.lower().startswith("tools") else None
            if section:
                sections[section] = {}
            continue
        label = re.match(r"^(Topics|Projects):\s*$", line)
        if label and section:
            kind = label.group(1).lower()
            continue
        item = re.match(r"^- (.+?)\s*$", line)
        if item and section and kind:
            sections[section].setdefault(kind, []).append(item.group(1))
    return sections


def _outline() -> dict:
    assert OUTLINE.is_file(), f"{OUTLINE}: missing (the course outline is part of the course)"
    return outline_sections(OUTLINE.read_text())


def _mapping() -> dict:
    try:
        mapping = yaml.safe_load(MAPPING.read_text()) or {}
    except yaml.YAMLError as e:
        raise AssertionError(f"{MAPPING}: not valid YAML: {e}") from e
    assert isinstance(mapping, dict), f"{MAPPING}: expected a mapping of sections"
    return mapping


def test_outline_parser_reads_every_stage():
    sections = _outline()
    stages = [s for s in sections if s.startswith("Stage")]
    assert len(stages) >= 2 and all(sections[s].get("topics") for s in stages), sections
    assert "Installing PyTorch for CPU or GPU" in sections["Stage 1"]["topics"]
    assert sections["Tools to learn alongside"]["topics"], sections
    assert not any(s.lower().startswith("suggested") for s in sections), "reading is not a section"


def _targets(value) -> list[str]:
    """A mapping entry's notebooks: one path, or a list of paths for an outline item taught by
    several notebooks (the tools line "torchvision, torchaudio, torchtext")."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("section", ["Stage 1", "Stage 2", "Stage 3", "Stage 4", "Tools to learn alongside"])
def test_every_outline_item_has_its_notebook(section):
    sections = _outline()
    assert section in sections, f"{OUTLINE}: no section {section!r} (found: {', '.join(sections)})"
    mapped = _mapping().get(section) or {}
    missing = []
    for kind, items in sections[section].items():
        for item in items:
            targets = _targets((mapped.get(kind) or {}).get(item))
            if not targets:
                missing.append(f"{kind[:-1]} {item!r}: no notebook in {MAPPING.name}")
            missing += [f"{kind[:-1]} {item!r}: {t} does not exist" for t in targets if not (COURSE / t).is_file()]
    assert not missing, f"{section} of {OUTLINE.name} is not fully covered:\n  " + "\n  ".join(missing)


def test_mapping_names_only_outline_items():
    sections = _outline()
    unknown = [
        f"{section} / {kind} / {item}"
        for section, kinds in _mapping().items()
        for kind, items in (kinds or {}).items()
        for item in (items or {})
        if item not in sections.get(section, {}).get(kind, [])
    ]
    assert not unknown, f"{MAPPING} names items that are not in {OUTLINE}: {unknown}"


def test_every_lesson_is_in_the_mapping():
    mapped = {
        target
        for kinds in _mapping().values()
        for items in (kinds or {}).values()
        for value in (items or {}).values()
        for target in _targets(value)
    }
    orphans = [_rel(p) for p in LESSONS if _rel(p) not in mapped]
    assert not orphans, f"lessons not mapped to an outline topic in {MAPPING.name}: {orphans}"
