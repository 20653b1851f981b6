"""The skip summary at the end of every run (tests/conftest.py): counts by reason, in a real
pytest run with two xdist workers, the way `make test` runs."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SAMPLE = '''
import pytest

@pytest.mark.parametrize("n", range(3))
def test_needs_a_gpu(n):
    pytest.skip("no NVIDIA GPU on this machine")

def test_needs_chromium():
    pytest.skip("/usr/bin/chromium is missing: run sudo make provision")

def test_runs():
    assert True
'''


def test_summary_counts_skips_by_reason(tmp_path):
    shutil.copyfile(REPO / "tests/conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-ra",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    summary = out[out.index("4 skipped, by reason"):]
    lines = [line.split(None, 1) for line in summary.splitlines()[1:3]]
    assert lines == [["3", "no NVIDIA GPU on this machine"],
                     ["1", "/usr/bin/chromium is missing: run sudo make provision"]], summary
    # Below pytest's own one-line-per-skip list (-ra), just above the final counts.
    assert out.index("short test summary info") < out.index("4 skipped, by reason"), out
    assert "1 passed, 4 skipped" in summary.splitlines()[3], summary
