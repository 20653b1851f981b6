"""images/notebook/gather-submissions (the Docker classroom's step before `nbgrader collect`)
refuses links and hard links in a submission (issue 12, item 3). Every container is uid 1000
and the instructor's container holds the course, so a link a student hands in resolves there:
to the source notebook with its hidden tests, or the gradebook. Run here on the script itself,
on a real exchange layout; test_docker_exchange.py runs it inside the images."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "images/notebook/gather-submissions"
STAMP = "2026-12-02 10:00:00.000000 UTC"


def _hand_in(private: Path, student: str, text: str) -> Path:
    sub = private / student / f"{student}+a1+{STAMP}+r"
    sub.mkdir(parents=True)
    (sub / "a1.ipynb").write_text(text)
    return sub


def test_links_and_hard_links_are_refused_and_the_rest_gathered(tmp_path):
    course = tmp_path / "course"
    secret = course / "source" / "a1" / "a1.ipynb"
    secret.parent.mkdir(parents=True)
    secret.write_text("the instructor's solution and hidden tests")
    private = tmp_path / "exchange" / "c1" / "inbound-private"
    _hand_in(private, "alice", "alice's work")
    bob = _hand_in(private, "bob", "")
    (bob / "a1.ipynb").unlink()
    (bob / "a1.ipynb").symlink_to(secret)
    carol = _hand_in(private, "carol", "")
    (carol / "a1.ipynb").unlink()
    os.link(secret, carol / "a1.ipynb")
    (private / "dave").mkdir()
    (private / "dave" / f"dave+a1+{STAMP}+r").symlink_to(secret.parent)

    proc = subprocess.run([sys.executable, str(SCRIPT), "c1", str(tmp_path / "exchange")],
                          capture_output=True, text=True, timeout=60, check=False)
    out = proc.stdout + proc.stderr
    inbound = tmp_path / "exchange" / "c1" / "inbound"

    assert proc.returncode == 0, out
    assert sorted(p.name.split("+")[0] for p in inbound.iterdir()) == ["alice"], out
    assert "refused bob/" in out and "a1.ipynb is a symbolic link" in out, out
    assert "refused carol/" in out and "hard link" in out, out
    assert "refused dave/" in out and "symbolic link" in out, out
    assert "gathered 1 new submission(s)" in out and "refused 3" in out, out
    assert not any("hidden tests" in p.read_text() for p in inbound.rglob("*") if p.is_file())

