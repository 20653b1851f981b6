"""hub/torchclass_exchange.py is the one home of torchclass's nbgrader classes and of the writer
of nbgrader_config.py files. It ships alone into student servers, images and pods, so it may
import only the standard library and nbgrader's own stack; the image's hand-written config files
must set what the writer sets; every deployed copy is that file."""

import ast
import re
import sys
from pathlib import Path

import pytest
import torchclass_exchange as tx
from nbgrader.exchange import ExchangeFactory
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "hub" / "torchclass_exchange.py"
IMAGE_JUPYTER = REPO / "images" / "notebook" / "jupyter"
NBGRADER_STACK = {"nbgrader", "nbconvert", "traitlets"}


def load(text: str) -> Config:
    """Run a config file's text the way traitlets does, into a fresh Config."""
    cfg = Config()
    exec(compile(text, "nbgrader_config.py", "exec"), {"get_config": lambda: cfg})  # noqa: S102
    return cfg


def test_the_module_imports_only_the_standard_library_and_nbgrader():
    wrong = []
    for node in ast.walk(ast.parse(MODULE.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            top = (name or "").split(".")[0]
            if top not in sys.stdlib_module_names and top not in NBGRADER_STACK:
                wrong.append(f"line {node.lineno}: {name}")
    assert not wrong, "torchclass_exchange imports beyond stdlib and nbgrader:\n" + "\n".join(wrong)


def test_every_deployment_and_role_names_exchange_classes_of_the_module():
    assert set(tx.EXCHANGE) == {(d, r) for d in tx.DEPLOYMENTS for r in tx.ROLES}
    traits = ExchangeFactory.class_traits()
    for row, classes in tx.EXCHANGE.items():
        for trait, name in classes.items():
            stock = traits[trait].default_value
            assert issubclass(getattr(tx, name), stock), f"{row}: {name} is no {stock.__name__}"


@pytest.mark.parametrize("row", sorted(tx.EXCHANGE), ids="-".join)
@pytest.mark.parametrize("ship", ["import", "inline"])
def test_the_written_config_selects_the_rows_classes(row, ship):
    deployment, role = row
    cfg = load(tx.config_text(header="test", deployment=deployment, role=role, ship=ship))
    got = {trait: value if isinstance(value, str) else value.__name__
           for trait, value in cfg.get("ExchangeFactory", {}).items()}
    want = {trait: name if ship == "inline" else f"{tx.MODULE}.{name}"
            for trait, name in tx.EXCHANGE[row].items()}
    assert got == want


def test_the_image_config_sets_what_the_writer_sets(monkeypatch):
    image = (IMAGE_JUPYTER / "nbgrader_config.py").read_text()
    exchange = "/srv/nbgrader/exchange"
    monkeypatch.setenv("TORCHCLASS_COURSE_ID", "c1")
    monkeypatch.delenv("NBGRADER_EXCHANGE", raising=False)
    monkeypatch.delenv("NBGRADER_COURSE_ROOT", raising=False)
    # A student's container: stock exchange classes, as the table's docker student row says.
    assert load(image) == load(tx.config_text(header="", deployment="docker", role="student",
                                              course_id="c1", exchange_root=exchange))
    # The instructor's: the host's paths. The collect class comes from the course's own
    # config (torchclass_grading.course, the table's docker instructor row), not the image.
    monkeypatch.setenv("NBGRADER_EXCHANGE", "/data/exchange")
    monkeypatch.setenv("NBGRADER_COURSE_ROOT", "/data/courses/c1")
    assert load(image) == load(tx.config_text(header="", course_id="c1",
                                              course_root="/data/courses/c1",
                                              exchange_root="/data/exchange"))


def test_the_image_instructor_config_switches_autograde_off_as_the_writer_does():
    """Docker instructors and the Kubernetes formgrader: no Autograde, students' HTML sanitized,
    feedback without hidden tests (before, the image set only the first)."""
    image = (IMAGE_JUPYTER / "instructor" / "nbgrader_config.py").read_text()
    assert load(image) == load(tx.config_text(header="", autograde_off=True, sanitize_html=True,
                                              hide_hidden_tests=True))


def test_the_image_instructor_config_strips_a_students_script(tmp_path):
    """The attack: markdown with a script, rendered with the image's instructor settings."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell('hi <script>alert("owned")</script>'
                                      '<img src=x onerror="alert(1)">')])
    cfg = load((IMAGE_JUPYTER / "instructor" / "nbgrader_config.py").read_text())
    page, _ = HTMLExporter(config=cfg).from_notebook_node(nb)
    live = re.compile(r'<script>alert\("owned"\)|<img[^>]*onerror')  # as markup, not as text
    assert not live.search(page)
    plain, _ = HTMLExporter().from_notebook_node(nb)
    assert live.search(plain)  # without the settings, both reach the page as markup


def test_the_autograde_refusal_names_the_sandboxed_command(monkeypatch):
    from types import SimpleNamespace

    parent = SimpleNamespace(coursedir=SimpleNamespace(assignment_id="a1"))
    monkeypatch.delenv("TORCHCLASS_GRADE_COMMAND", raising=False)
    with pytest.raises(RuntimeError, match="torchclass-grade grade a1"):
        tx.AutogradeSwitchedOff(parent=parent)
    monkeypatch.setenv("TORCHCLASS_GRADE_COMMAND", "make grade-docker ASSIGNMENT={aid}")
    with pytest.raises(RuntimeError, match="make grade-docker ASSIGNMENT=a1"):
        tx.AutogradeSwitchedOff(parent=parent)


def test_the_markers_are_nbgraders_own():
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    assert tx.SOLUTION_DELIMITERS == (ClearSolutions().begin_solution_delimeter,
                                      ClearSolutions().end_solution_delimeter)
    assert tx.HIDDEN_TESTS_DELIMITERS == (ClearHiddenTests().begin_test_delimeter,
                                          ClearHiddenTests().end_test_delimeter)


def test_the_one_machine_classroom_ships_this_very_file(tmp_path):
    from types import SimpleNamespace

    from torchclass_hub import prepare

    classroom = SimpleNamespace(lib_dir=tmp_path / "lib")
    prepare.course_library(classroom)
    assert (tmp_path / "lib" / "torchclass_exchange.py").read_bytes() == MODULE.read_bytes()


def test_nothing_else_defines_the_exchange_classes():
    """One home: no second definition of these classes anywhere in the tree."""
    names = ("PrivateSubmit", "LinkSafeCollect", "PerStudentCollect", "PerStudentReleaseFeedback",
             "AutogradeSwitchedOff", "HideHiddenTestErrors", "copy_refusing_links")
    found = []
    for folder in ("hub", "grading", "course", "k8s", "images"):
        for path in (REPO / folder).rglob("*"):
            if path == MODULE or not path.is_file() or path.suffix not in ("", ".py", ".yaml"):
                continue
            text = path.read_text(errors="replace")
            found += [f"{path.relative_to(REPO)}: {n}" for n in names
                      if f"class {n}(" in text or f"def {n}(" in text]
    assert not found, "\n".join(found)
