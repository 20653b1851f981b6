"""Stage the real datasets and weights once per classroom: ``make data`` runs

    python -m torchclass_course.stage --root /srv/torchclass/data

It downloads through the real loaders (torchvision's MNIST, FashionMNIST and CIFAR10 with
``download=True``, ResNet-18's ImageNet weights, the IMDB archive, MiniLM from the Hugging Face
Hub), records a SHA-256 of every file in ``MANIFEST.json`` and makes the folder world-readable.
Students' loaders (``torchclass_course.data``) only read that folder and verify the checksums.
``--verify`` re-checks an existing folder. Each dataset is staged and recorded on its own, so an
interrupted run keeps what finished and a re-run fetches only what is missing.
"""

import argparse
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

from torchclass_course import data

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "vocab.txt", "special_tokens_map.json"]


class DownloadForbidden(RuntimeError):
    """TORCHCLASS_NO_DOWNLOAD is set (as in the test suite) and staging would download."""


def _allow_download(name: str) -> None:
    if not data.downloads_allowed():
        raise DownloadForbidden(f"staging {name} would download, but TORCHCLASS_NO_DOWNLOAD is set")


def _files(root: Path, *folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (root / f).rglob("*") if p.is_file())


def stage_mnist(root: Path, cls_name: str = "MNIST") -> list[Path]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    for train in (True, False):
        cls(root, train=train, download=True)
    raw = root / cls_name / "raw"
    for gz in raw.glob("*.gz"):  # torchvision reads the extracted files; the archives are spare
        gz.unlink()
    return _files(root, f"{cls_name}/raw")


def stage_cifar10(root: Path) -> list[Path]:
    from torchvision.datasets import CIFAR10

    CIFAR10(root, train=True, download=True)
    archive = root / "cifar-10-python.tar.gz"
    if archive.exists():
        archive.unlink()
    return _files(root, "cifar-10-batches-py")


def stage_imdb(root: Path) -> list[Path]:
    from torchvision.datasets.utils import download_url

    work = root / "imdb-download"
    download_url(IMDB_URL, str(work), md5=IMDB_MD5)
    out = root / "imdb"
    out.mkdir(exist_ok=True)
    rows = {"train": [], "test": []}
    with tarfile.open(work / Path(IMDB_URL).name) as tar:
        for member in tar:
            parts = Path(member.name).parts  # aclImdb/<split>/<pos|neg>/<id>_<rating>.txt
            if member.isfile() and len(parts) == 4 and parts[1] in rows and parts[2] in ("pos", "neg"):
                text = tar.extractfile(member).read().decode("utf-8").replace("<br />", " ")
                rows[parts[1]].append({"text": text, "label": int(parts[2] == "pos")})
    for split, items in rows.items():
        items.sort(key=lambda r: r["text"])  # a stable order, independent of the archive's
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(item) + "\n" for item in items)
    shutil.rmtree(work)
    return _files(root, "imdb")


def stage_resnet18(root: Path) -> list[Path]:
    import torch
    from torchvision.models import ResNet18_Weights

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(root / "torch-hub"))
    try:
        ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    finally:
        torch.hub.set_dir(previous)
    return [root / data.RESNET18_FILE]


def stage_minilm(root: Path) -> list[Path]:
    from huggingface_hub import hf_hub_download

    for name in MINILM_FILES:
        hf_hub_download(MINILM_REPO, name, local_dir=root / data.MINILM_DIR)
    return [root / data.MINILM_DIR / name for name in MINILM_FILES]


STAGERS = {
    "mnist": (lambda root: stage_mnist(root, "MNIST"), "MNIST (torchvision)"),
    "fashion_mnist": (lambda root: stage_mnist(root, "FashionMNIST"), "Fashion-MNIST (torchvision)"),
    "cifar10": (stage_cifar10, "CIFAR-10 (torchvision)"),
    "imdb": (stage_imdb, IMDB_URL),
    "resnet18": (stage_resnet18, "torchvision ResNet18_Weights.IMAGENET1K_V1"),
    "minilm": (stage_minilm, f"huggingface.co/{MINILM_REPO}"),
}


def record(root: Path, name: str, files: list[Path], origin: str) -> None:
    """Add ``name`` with the SHA-256 of each file to ``root/MANIFEST.json``."""
    manifest = data.read_manifest(root) or {"version": 1, "datasets": {}}
    manifest["datasets"][name] = {
        "origin": origin,
        "files": {str(p.relative_to(root)): data.sha256(p) for p in files},
    }
    data._write_atomic(root / data.MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def verify_all(root: Path) -> int:
    manifest = data.read_manifest(root)
    if not manifest:
        print(f"{root}: nothing staged (no {data.MANIFEST})", file=sys.stderr)
        return 1
    failed = 0
    for name, entry in sorted(manifest["datasets"].items()):
        try:
            data.verify(root, entry, use_cache=False)
            print(f"ok      {name} ({len(entry['files'])} files)")
        except data.ChecksumError as e:
            print(f"FAILED  {name}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def make_readable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torchclass_course.stage",
        description="Download the real datasets and weights once, into the classroom's shared "
        "data folder, with a SHA-256 of every file in MANIFEST.json.",
    )
    parser.add_argument("--root", type=Path, default=data.SHARED_DATA_DIR,
                        help="the classroom's shared data folder (default: %(default)s)")
    parser.add_argument("--only", default=",".join(STAGERS),
                        help=f"comma-separated subset of: {', '.join(STAGERS)}")
    parser.add_argument("--force", action="store_true", help="stage again what is already staged")
    parser.add_argument("--verify", action="store_true", help="only check the staged checksums")
    args = parser.parse_args(argv)
    if args.verify:
        return verify_all(args.root)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STAGERS))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(STAGERS)}")
    args.root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in data.read_manifest(args.root).get("datasets", {}) and not args.force:
            print(f"{name}: already staged (use --force to stage again)")
            continue
        stager, origin = STAGERS[name]
        _allow_download(name)
        print(f"{name}: downloading from {origin} ...", flush=True)
        files = stager(args.root)
        record(args.root, name, files, origin)
        print(f"{name}: staged {len(files)} files")
    make_readable(args.root)
    print(f"Staged into {args.root}. Students' notebooks read it; make it read-only for them "
          "(e.g. mount it read-only in their containers).")
    return verify_all(args.root)


if __name__ == "__main__":
    sys.exit(main())
