"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TORCHCLASS_TEST_ARTIFACTS", REPO / "test-artifacts"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def artifacts_dir(request) -> Path:
    """A folder kept after the run (screenshots, logs), one per test."""
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _skip_reason(report) -> str:
    """The reason a skipped report gives: pytest keeps (file, line, 'Skipped: reason'), which
    arrives from an xdist worker as a list."""
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def skip_counts(reports) -> list[tuple[int, str]]:
    """(count, reason) for every distinct skip reason, most frequent first."""
    counts: dict[str, int] = {}
    for report in reports:
        reason = _skip_reason(report)
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(((n, r) for r, n in counts.items()), key=lambda item: (-item[0], item[1]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    # pytest's -ra lists every skip one by one; a newcomer needs the few reasons behind them,
    # each with what to do, at the very end of the run: as the outermost wrapper (tryfirst),
    # this writes after pytest's own short summary, just above the final counts.
    result = yield
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.section(f"{len(skipped)} skipped, by reason")
        for n, reason in skip_counts(skipped):
            terminalreporter.write_line(f"{n:4d}  {reason}")
    return result
