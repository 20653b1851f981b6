"""What lessons teach, checked in their source: habits a lesson must show correctly even where
the CPU run in CI cannot catch the mistake (CUDA-only settings, which split is tuned on)."""

import re
from pathlib import Path

import nbformat
import pytest

COURSE = Path(__file__).resolve().parents[2] / "course"
LESSONS = sorted([*COURSE.glob("stage*/lessons/*.ipynb"), *COURSE.glob("tools/*.ipynb")])


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _first(cells: list[str], pattern: str) -> int | None:
    return next((i for i, src in enumerate(cells) if re.search(pattern, src, re.M)), None)


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
        assert src.index("CUBLAS_WORKSPACE_CONFIG") < re.search(r"^\s*(import torch|from torch)", src, re.M).start()
