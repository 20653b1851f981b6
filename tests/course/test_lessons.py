"""Every lesson notebook executes on CPU within its time budget, with its exercises' stubs in
place (each exercise reports "not solved yet") and with the worked answers from
course/solutions/ in place (each reports "solved"); every committed notebook is clean; every
item of the course outline has its notebook."""

import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from torchclass_course.checks import NOT_SOLVED, SOLVED
from torchclass_course.notebooks import (
    LessonFailed,
    budget_of,
    execute,
    exercise_cells,
    exercise_outcomes,
    load_solutions,
    solution_path,
    with_solutions,
)

REPO = Path(__file__).resolve().parents[2]
COURSE = REPO / "course"
OUTLINE = COURSE / "OUTLINE.md"
MAPPING = COURSE / "outline.yaml"

LESSONS = sorted([*COURSE.glob("stage*/lessons/*.ipynb"), *COURSE.glob("tools/*.ipynb")])


def _rel(path: Path) -> str:
    return str(path.relative_to(COURSE))


def _exercise_titles(nb) -> list[str]:
    """The titles of the lesson's ``with checks.exercise("...")`` blocks, in order."""
    return [m.group(1) for c in nb.cells if c.cell_type == "code"
            for m in re.finditer(r"checks\.exercise\(\s*\"([^\"]+)\"", c.source)]


def _run_lesson(notebook, tmp_path, shared_cache, monkeypatch, solutions):
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
        run = execute(notebook, cwd=work, solutions=solutions)
    except LessonFailed as e:
        pytest.fail(str(e), pytrace=False)
    print(f"{_rel(notebook)}{' (solutions)' if solutions else ''}: {run.seconds} s of {run.budget} s; "
          f"slowest cell {max(run.cell_seconds)} s")
    titles = _exercise_titles(run.notebook)
    outcomes = exercise_outcomes(run.notebook)
    assert sorted(outcomes) == sorted(titles), f"exercise blocks {titles} reported {outcomes}"
    return outcomes


@pytest.mark.lessons
@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_lesson_executes_on_cpu_within_budget(notebook, tmp_path, shared_cache, monkeypatch):
    # As shipped to students: every exercise is a stub, its check says so, the lesson runs on.
    outcomes = _run_lesson(notebook, tmp_path, shared_cache, monkeypatch, solutions=False)
    solved = [t for t, v in outcomes.items() if v != NOT_SOLVED]
    assert not solved, f"{_rel(notebook)}: exercises pass with their stubs in place: {solved}"


@pytest.mark.lessons
@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_lesson_solutions_solve_every_exercise(notebook, tmp_path, shared_cache, monkeypatch):
    # The instructors' worked answers, run in the lesson as it is now, so they cannot rot.
    outcomes = _run_lesson(notebook, tmp_path, shared_cache, monkeypatch, solutions=True)
    unsolved = [t for t, v in outcomes.items() if v != SOLVED]
    assert not unsolved, f"{solution_path(notebook)}: these exercises are not solved: {unsolved}"


@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_lesson_exercises_are_stubs_with_answers_kept_aside(notebook):
    nb = nbformat.read(notebook, as_version=4)
    stubs = {c.id: c.source for c in exercise_cells(nb)}
    assert stubs, f"{_rel(notebook)}: no exercise cell (a code cell tagged 'exercise')"
    assert solution_path(notebook).is_file(), f"{_rel(notebook)}: no worked answers at {solution_path(notebook)}"
    answers = load_solutions(notebook)
    with_solutions(nb, answers)  # raises when answers and exercise cells do not match one to one
    for cell_id, stub in stubs.items():
        assert "TODO" in stub, f"{_rel(notebook)} cell {cell_id}: a stub says what to do with a TODO"
        assert stub.strip() != answers[cell_id].strip(), f"{_rel(notebook)} cell {cell_id}: the stub is the answer"
    titles = _exercise_titles(nb)
    assert len(titles) >= len(stubs) and len(set(titles)) == len(titles), (
        f"{_rel(notebook)}: every exercise needs its own checks.exercise block with a unique title: {titles}")


def test_solutions_belong_to_lessons_and_are_not_notebooks():
    # Students get course/stage*/lessons/*.ipynb and tools/*.ipynb; answers must not be among them.
    solutions = COURSE / "solutions"
    assert not list(solutions.rglob("*.ipynb")), "answers kept as notebooks could be copied as lessons"
    lesson_answers = {solution_path(p) for p in LESSONS}
    strays = [str(p) for p in solutions.rglob("*.yaml") if p not in lesson_answers]
    assert not strays, f"answer files without a lesson: {strays}"


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


def test_hub_gives_students_the_lessons_but_not_their_answers(tmp_path):
    # The local classroom's master copy of the lessons, built by the hub's own code.
    from types import SimpleNamespace

    from torchclass_hub import prepare

    classroom = SimpleNamespace(lessons_dir=tmp_path / "lessons",
                                curriculum_dir=Path(__file__).resolve().parents[2] / "course")
    prepare.lessons(classroom)
    given = sorted(p.relative_to(classroom.lessons_dir) for p in classroom.lessons_dir.rglob("*") if p.is_file())
    assert len(given) == len(LESSONS) and all(p.suffix == ".ipynb" for p in given), given
    leaked = []
    for lesson in LESSONS:
        # The hub lays them out as stage<N>/<lesson> and tools/<lesson>.
        group = lesson.parent.parent.name if lesson.parent.name == "lessons" else lesson.parent.name
        copy = classroom.lessons_dir / group / lesson.name
        answers = {a.strip() for a in load_solutions(lesson).values()}
        cells = exercise_cells(nbformat.read(copy, as_version=4))
        assert cells, f"{copy}: the student's copy has no exercise cells"
        leaked += [f"{copy.name} cell {c.id}" for c in cells if c.source.strip() in answers]
    assert not leaked, f"students would get worked answers: {leaked}"
