"""Imports follow the layer order course <- classroom <- grading <- hub <- images/k8s: a module
may import its own layer or a lower one, never a higher one."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# torchclass_exchange (hub/torchclass_exchange.py, one file: the nbgrader classes and config
# writer every deployment ships) sits in the classroom layer; it imports none of ours at all
# (tests/test_nbgrader_configs.py).
RANK = {"torchclass_course": 0, "torchclass_classroom": 1, "torchclass_exchange": 1,
        "torchclass_grading": 2, "torchclass_hub": 3, "torchclass_deploy": 4}


def _layer(path: Path) -> int:
    for name, rank in RANK.items():
        if name in path.parts or path.parts[-1] == f"{name}.py":
            return rank
    return 4  # images/, k8s/ (torchclass_deploy, files/)


def _sources():
    for folder in ("hub", "grading", "course", "k8s", "images"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and (path.suffix == ".py" or (
                    not path.suffix and path.read_bytes()[:40].startswith(b"#!")
                    and b"python" in path.read_bytes()[:40])):
                yield path


def test_no_import_goes_up_a_layer():
    wrong = []
    for path in _sources():
        own = _layer(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if RANK.get(top, -1) > own:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_module_below_the_top_loads_code_by_path():
    """Loading a file by path (as the grading Job once loaded k8s/render.py) hides an import
    from the check above; below the top layer, code is imported by name."""
    loaders = {"spec_from_file_location", "SourceFileLoader", "run_path"}
    # The instructor's own jupyterhub_config.d/*.py: files, not modules of any layer.
    escape_hatch = Path("hub/torchclass_hub/jupyterhub_config.py")
    wrong = []
    for path in _sources():
        if _layer(path.relative_to(REPO)) == RANK["torchclass_deploy"] or \
                path.relative_to(REPO) == escape_hatch:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.id if isinstance(node, ast.Name) else None)
            if name in loaders:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} uses {name}")
    assert not wrong, "code loaded by path below the top layer:\n" + "\n".join(wrong)
