"""What the grader sets up once per run, before any kernel starts (trusted code, as the
grader): the course's nbgrader settings read without running them, the root-owned copy of the
course library kernels import, the shared dataset cache kernels read but cannot write, and the
paths of torchclass itself that kernels must not see."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import torchclass_course
from torchclass_classroom import package_dirs

from torchclass_grading import sandbox
from torchclass_grading.engine.common import EngineError


def course_config(course_dir: Path):
    """The literal settings (`c.Section.name = <literal>`) of the course's nbgrader_config.py.

    The grader account owns that file and the engine may run as root: executing it (traitlets'
    PyFileConfigLoader) would run grader-written code as root. It is parsed instead, and only
    assignments of Python literals are kept; anything else in it (imports, classes, computed
    values) is never run here, only by nbgrader as the grader. Opened with O_NOFOLLOW so a link
    cannot make root read another file."""
    import ast
    import stat

    from traitlets.config.loader import Config

    path = course_dir / "nbgrader_config.py"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise EngineError(f"{path}: cannot be read ({e.strerror}; a symbolic link is refused). "
                          "Fix: let torchclass write it (make up), as a plain file.") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EngineError(f"{path}: not a regular file. Fix: let torchclass write it (make up).")
        text = fh.read()
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:  # no quote of the line: root may not show what it read
        raise EngineError(f"{path}, line {e.lineno}: not valid Python ({e.msg}).") from None
    config = Config()
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                and isinstance(target.value.value, ast.Name) and target.value.value.id == "c"):
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # computed: nbgrader (as the grader) sees it, the engine does not
        config[target.value.attr][target.attr] = value
    return config


def kernel_library() -> Path:
    """A root-owned, world-readable copy of the course library for kernels to import: the
    checkout it comes from is hidden from them."""
    src = Path(torchclass_course.__file__).resolve().parent
    files = sorted(p for p in src.rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.relative_to(src).as_posix().encode() + p.read_bytes()
                                     for p in files)).hexdigest()[:16]
    sandbox.private_dir(sandbox.STATE_DIR, 0o711)
    sandbox.private_dir(sandbox.STATE_DIR / "lib", 0o755)
    lib = sandbox.STATE_DIR / "lib" / digest
    if not (lib / "torchclass_course").is_dir():
        tmp = lib.with_name(f"{digest}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp / "torchclass_course", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [*tmp.rglob("*"), tmp]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        try:
            tmp.rename(lib)
        except OSError:  # another grader put it there first
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


# Course-library loaders whose offline fallback builds a dataset into the kernel's cache.
CACHED_LOADERS = ("mnist", "fashion_mnist", "colour_images")


def shared_cache(source_text: str, library: Path) -> Path | None:
    """The offline datasets an assignment loads, built once by the grader (trusted code, as the
    grader) into a cache kernels may read but not write; None when it uses none of them."""
    import subprocess

    used = [name for name in CACHED_LOADERS if f"data.{name}(" in source_text]
    if not used:
        return None
    cache = sandbox.private_dir(sandbox.STATE_DIR / "cache", 0o755)
    built = cache / f".built-{library.name}-{'-'.join(used)}"
    if built.is_file():
        return cache
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TORCHCLASS_DATA")}
    env.update(TORCHCLASS_CACHE=str(cache), PYTHONPATH=str(library), OMP_NUM_THREADS="1",
               HOME=str(cache))
    code = "from torchclass_course import data\n" + "".join(f"data.{n}()\n" for n in used)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:  # kernels then build their own, as students' servers do
        return None
    for p in [cache, *cache.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    built.touch()
    return cache


def _checkout() -> Path | None:
    root = Path(__file__).resolve().parents[3]
    return root if (root / "grading" / "torchclass_grading").is_dir() else None


def torchclass_paths() -> list[str]:
    """What of torchclass kernels must not see: every assignment's source and solutions.

    Run from a checkout: the checkout (or, when the Python running us lives inside it,
    everything else in it). Installed: torchclass's package folders (not the site-packages
    holding them, which the kernel imports torch from), and the course content when one is
    configured ($TORCHCLASS_COURSE_DIR). Kernels import the course library from their own copy
    (kernel_library)."""
    root = _checkout()
    if root is not None:
        prefix = Path(sys.prefix).resolve()
        if root not in prefix.parents:
            return [str(root)]
        return [str(p) for p in root.iterdir()
                if p.is_dir() and p not in prefix.parents and p != prefix]
    paths = [str(d) for d in package_dirs().values()]
    try:
        paths.append(str(torchclass_course.course_dir()))
    except FileNotFoundError:
        pass  # no course content on this machine: nothing more to hide
    return paths


