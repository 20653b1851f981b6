"""The pinned jupyterhub chart's values schema and defaults, kept in k8s/chart/upstream/.

The offline tests validate torchclass's values against the chart it depends on. The chart itself
is fetched by `helm dependency build` only when deploying (and cannot be fetched offline), so
the two files the tests need are kept in the repository, each with its SHA-256:

  k8s/chart/upstream/jupyterhub-<version>/values.schema.json    as the chart ships it
  k8s/chart/upstream/jupyterhub-<version>/values.defaults.yaml  the chart's values.yaml, as data
  k8s/chart/upstream/jupyterhub-<version>/SHA256SUMS

usage (PYTHONPATH holding k8s/, as make sets it):
  python -m torchclass_deploy.chart_data refresh [CHART.tgz]   after moving the pin in
                            Chart.yaml: take the files from CHART.tgz, or `helm pull` the pin
  python -m torchclass_deploy.chart_data verify   the files match the pin and their checksums
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[1]
CHART = K8S / "chart"
UPSTREAM = CHART / "upstream"
FILES = ("values.schema.json", "values.defaults.yaml")


class ChartDataError(Exception):
    pass


def pinned(chart: Path = CHART) -> dict:
    """The jupyterhub entry of Chart.yaml's dependencies."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for dep in meta.get("dependencies") or []:
        if dep.get("name") == "jupyterhub":
            return dep
    raise ChartDataError(f"{chart / 'Chart.yaml'}: no 'jupyterhub' dependency")


def data_dir(chart: Path = CHART) -> Path:
    return chart / "upstream" / f"jupyterhub-{pinned(chart)['version']}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(chart: Path = CHART) -> Path:
    """The data dir of the pinned version, checked: every file present and unchanged since it
    was taken from the chart. Raises ChartDataError naming the file and what to do."""
    d = data_dir(chart)
    fix = "run: python -m torchclass_deploy.chart_data refresh (k8s/README.md, 'Upgrading')"
    if not d.is_dir():
        others = sorted(p.name for p in (chart / "upstream").glob("jupyterhub-*"))
        raise ChartDataError(f"{d}: missing for the pinned jupyterhub {pinned(chart)['version']} "
                             f"(have: {', '.join(others) or 'none'}); {fix}")
    sums = d / "SHA256SUMS"
    if not sums.is_file():
        raise ChartDataError(f"{sums}: missing; {fix}")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest
    for name in FILES:
        path = d / name
        if name not in listed:
            raise ChartDataError(f"{sums}: no checksum for {name}; {fix}")
        if not path.is_file():
            raise ChartDataError(f"{path}: missing; {fix}")
        if _sha256(path) != listed[name]:
            raise ChartDataError(f"{path}: SHA-256 differs from {sums.name}: the file was edited "
                                 f"by hand (the upstream chart's data must not be); {fix}")
    return d


def _pull(dep: dict, into: Path) -> Path:
    if not shutil.which("helm"):
        raise ChartDataError("helm is not installed: pass the chart's .tgz instead "
                             "(helm pull on a machine that has it)")
    subprocess.run(["helm", "pull", dep["name"], "--repo", dep["repository"],
                    "--version", str(dep["version"]), "--destination", str(into)], check=True)
    return next(into.glob("*.tgz"))


def refresh(tgz: Path | None = None, chart: Path = CHART) -> Path:
    """Write the pinned version's data dir from the chart archive; drop other versions'."""
    dep = pinned(chart)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tgz = tgz or _pull(dep, tmp)
        with tarfile.open(tgz) as tar:
            members = {m.name: m for m in tar.getmembers()}

            def read(name: str) -> bytes:
                member = members.get(f"{dep['name']}/{name}")
                if member is None:
                    raise ChartDataError(f"{tgz}: no {dep['name']}/{name} in the archive")
                return tar.extractfile(member).read()

            meta = yaml.safe_load(read("Chart.yaml"))
            if str(meta.get("version")) != str(dep["version"]):
                raise ChartDataError(f"{tgz}: chart version {meta.get('version')}, but Chart.yaml "
                                     f"pins {dep['version']}")
            schema = read("values.schema.json")
            defaults = yaml.safe_load(read("values.yaml"))
        out = data_dir(chart)
        new = out.with_name(out.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        (new / "values.schema.json").write_bytes(schema)
        # As data, not the commented file: the tests read values, and a diff between two pins
        # then shows only what changed.
        (new / "values.defaults.yaml").write_text(
            f"# Default values of the JupyterHub Helm chart (z2jh) {dep['version']}, comments removed.\n"
            + yaml.safe_dump(defaults, sort_keys=False))
        (new / "SHA256SUMS").write_text("".join(f"{_sha256(new / n)}  {n}\n" for n in FILES))
        for old in (chart / "upstream").glob("jupyterhub-*"):
            if old != new:
                shutil.rmtree(old)
        new.rename(out)
    return verify(chart)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("refresh", help="take the files from the pinned chart")
    r.add_argument("tgz", nargs="?", type=Path, help="the chart archive (default: helm pull)")
    sub.add_parser("verify", help="check the files against the pin and their checksums")
    args = parser.parse_args(argv)
    try:
        d = refresh(args.tgz) if args.command == "refresh" else verify()
    except (ChartDataError, OSError, subprocess.CalledProcessError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{d.relative_to(K8S.parent)}: matches Chart.yaml's pin and SHA256SUMS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
