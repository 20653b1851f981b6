"""tests/provision: what `make install` and `make test` say when the machine lacks something.
Run with --check and a dpkg-query that reports chosen packages absent, so nothing is installed."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def provision(tmp_path, *args, absent=()):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # dpkg-query -W -f=FORMAT PACKAGE: the real one's status line, or nothing for 'absent'.
    (bin_dir / "dpkg-query").write_text(
        "#!/bin/sh\nfor p; do :; done\n"
        f"case \" {' '.join(absent)} \" in *\" $p \"*) exit 1 ;; esac\n"
        "echo 'install ok installed'\n")
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")  # an engine that answers
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(REPO / "tests/provision"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_compiler_is_named_with_the_command_to_run(tmp_path):
    proc = provision(tmp_path, "classroom", "--check", absent=("g++", "python3-dev"))
    assert proc.returncode == 0, proc.stderr
    assert "missing the Debian packages g++ python3-dev" in proc.stdout
    assert "sudo make install" in proc.stdout and "torch.compile" in proc.stdout


def test_tests_group_names_test_packages_and_sudo_make_provision(tmp_path):
    proc = provision(tmp_path, "tests", "--check", absent=("chromium", "dataset-fashion-mnist"))
    assert proc.returncode == 0, proc.stderr
    assert "missing the Debian packages chromium dataset-fashion-mnist" in proc.stdout
    assert "sudo make provision" in proc.stdout and "skip summary" in proc.stdout


def test_nothing_missing_says_so(tmp_path):
    proc = provision(tmp_path, "tests", "--check")
    assert proc.stdout.strip() == "provision (tests): everything is present", proc.stdout


@pytest.mark.parametrize("args", [(), ("everything",)])
def test_unknown_group_is_a_usage_error(tmp_path, args):
    proc = provision(tmp_path, *args)
    assert proc.returncode == 2 and "usage: tests/provision classroom|tests" in proc.stderr
