"""What lessons and projects teach, checked in their source: habits a lesson must show correctly
even where the CPU run in CI cannot catch the mistake (CUDA-only settings, which split is tuned
on), and what a project's setup must be for grading to be fair."""

import re
from pathlib import Path

import nbformat
import pytest

COURSE = Path(__file__).resolve().parents[2] / "course"
LESSONS = sorted([*COURSE.glob("stage*/lessons/*.ipynb"), *COURSE.glob("tools/*.ipynb")])


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _first(cells: list[str], pattern: str) -> int | None:
    return next((i for i, src in enumerate(cells) if re.search(pattern, src, re.MULTILINE)), None)


def _rel(path: Path) -> str:
    return str(path.relative_to(COURSE))


@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_deterministic_mode_sets_cublas_workspace_before_torch_starts(notebook):
    # On CUDA, use_deterministic_algorithms(True) raises at the first matrix multiply unless
    # CUBLAS_WORKSPACE_CONFIG was set before cuBLAS started; CI runs on CPU and cannot see it.
    cells = _code(notebook)
    deterministic = _first(cells, r"use_deterministic_algorithms\(\s*True")
    if deterministic is None:
        return
    setting = _first(cells, r"""os\.environ(\.setdefault\(|\[)\s*["']CUBLAS_WORKSPACE_CONFIG["']\s*(,|\]\s*=)\s*["']:(4096|16):8["']""")
    assert setting is not None, f"{_rel(notebook)}: deterministic mode without CUBLAS_WORKSPACE_CONFIG"
    torch_import = _first(cells, r"^\s*(import torch|from torch)")
    assert setting <= torch_import, "set CUBLAS_WORKSPACE_CONFIG in or before the cell importing torch"
    src = cells[setting]
    if setting == torch_import:
        assert src.index("CUBLAS_WORKSPACE_CONFIG") < re.search(r"^\s*(import torch|from torch)", src, re.MULTILINE).start()


# Lessons that train a model and report how well it generalises.
SPLIT_LESSONS = ["stage1/lessons/06-training-loop-from-scratch.ipynb", "stage2/lessons/05-cnns.ipynb",
                 "stage2/lessons/10-regularisation-and-initialisation.ipynb"]
# A call that evaluates on the test split: the test data passed to a model or an evaluation
# function (printing its shape or taking its length is not a use).
TEST_USE = re.compile(r"\b(?!tuple\b|len\b|print\b)\w+\(\s*(?:[^()]*,\s*)?(X_test|test_loader)\b")


@pytest.mark.parametrize("rel", SPLIT_LESSONS)
def test_lesson_decides_on_validation_and_touches_test_once(rel):
    cells = _code(COURSE / rel)
    training = [i for i, src in enumerate(cells) if ".backward()" in src]
    assert training, f"{rel}: no training cell found"
    for i in training:
        assert not TEST_USE.search(cells[i]) and not re.search(r"test[ _](loss|acc)", cells[i]), (
            f"{rel}: training cell {i} looks at the test split; evaluate on validation while training")
    assert any(re.search(r"\bval", cells[i]) for i in training), f"{rel}: training never validates"
    uses = [i for i, src in enumerate(cells) if TEST_USE.search(src)]
    assert len(uses) == 1, f"{rel}: the test split is evaluated in code cells {uses}; once is the rule"
    assert uses[0] > max(training), f"{rel}: the test split is used before the last training cell"


@pytest.mark.parametrize("notebook", LESSONS, ids=_rel)
def test_normalisation_statistics_are_computed_not_typed_in(notebook):
    # Typed-in numbers belong to some other dataset (or to the full set, not the training split):
    # lessons compute mean/std from their training data. Pretrained models' own statistics are
    # passed straight to Normalize and are not matched here.
    typed = re.compile(r"^\s*(mean|std)\s*(,\s*(mean|std)\s*)?=\s*[\[(]?\s*[\[(]?\s*\d", re.MULTILINE | re.IGNORECASE)
    offenders = [src.splitlines()[0] for src in _code(notebook) if typed.search(src)]
    assert not offenders, f"{_rel(notebook)}: hard-coded normalisation statistics in cells starting {offenders}"


# Projects whose hints say how to reach an accuracy target graded on test data: the hint must send
# students to a validation split for every choice, and mention the test data only to keep it out.
HINT_PROJECTS = ["stage2/projects/s2-cifar10-cnn/s2-cifar10-cnn.ipynb"]
_SENTENCE = re.compile(r"[^.!?]*(?:[.!?](?=\s|$)|$)", re.DOTALL)


@pytest.mark.parametrize("rel", HINT_PROJECTS)
def test_project_hints_tune_on_validation_not_on_the_test_data(rel):
    cells = [c.source for c in nbformat.read(COURSE / rel, as_version=4).cells if c.cell_type == "markdown"]
    hints = [src for src in cells if re.search(r"below the target|more epochs|learning rate", src, re.IGNORECASE)]
    assert hints, f"{rel}: no hint on reaching the target found"
    for src in hints:
        assert re.search(r"\bvalidation\b", src, re.IGNORECASE), f"{rel}: a tuning hint without a validation split"
        for sentence in _SENTENCE.findall(" ".join(src.split())):
            choosing = re.search(r"\b(try|tun\w*|pick\w*|choos\w*|compar\w*|adjust\w*|until)\b", sentence, re.IGNORECASE)
            if choosing and re.search(r"test_loader|test (set|split|images|accuracy)", sentence, re.IGNORECASE):
                assert re.search(r"\b(not|never|once|no)\b", sentence, re.IGNORECASE), (
                    f"{rel}: the hint uses the test data for choosing: {sentence.strip()!r}")


PROJECTS = sorted(COURSE.glob("stage*/projects/*/*.ipynb"))


@pytest.mark.parametrize("notebook", PROJECTS, ids=_rel)
def test_a_projects_setup_is_locked_and_keeps_warnings_off_stderr(notebook):
    """The code before a project's first answer cell is the graders' (data, splits, seeds): it
    must be locked, so nbgrader restores it when grading and a student cannot, say, move test
    data into the training split. Its first cell must keep warnings off stderr, which scores a
    test cell 0: a harmless library warning must never cost a correct answer its points."""
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    first_answer = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution"))
    assert first_answer > 0, f"{_rel(notebook)}: no setup cell before the first answer"
    for i, cell in enumerate(cells[:first_answer]):
        meta = cell.metadata.get("nbgrader", {})
        assert meta.get("locked") and meta.get("grade_id"), (
            f"{_rel(notebook)}: setup code cell {i} is not locked:\n{cell.source[:200]}")
    assert re.search(r"^warnings\.(showwarning = |filterwarnings\(\"ignore\"\))", cells[0].source,
                     re.MULTILINE), f"{_rel(notebook)}: the setup cell lets warnings reach stderr"
