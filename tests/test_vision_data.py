"""Vision data: CIFAR-10 pickle and image-folder readers, IDX parser, digits, splits, cache, augmentation."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mirrorattn.data import vision, vision_sources
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.vision import (
    RandomCropFlip,
    channel_stats,
    default_augmentation,
    load_vision_dataset,
    resize_images,
)
from mirrorattn.data.vision_sources import CIFAR10_CLASSES, parse_idx, read_idx_file, read_image_folder

# --------------------------------------------------------------------------- helpers


def _make_cifar_pickle_archive(
    path: Path, per_batch: int = 20, seed: int = 0, protocol: int = 4
) -> dict[str, np.ndarray]:
    """A tiny archive in the official format: rows of 3072 uint8 (R plane, G plane, B plane), every class
    in every batch (``per_batch`` >= 10). Name it other than cifar-10-python.tar.gz, which is checksummed."""
    rng = np.random.default_rng(seed)
    rows, labels = {}, {}
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels[name] = [int(v) for v in rng.permutation(np.arange(per_batch) % 10)]
        batch = {b"batch_label": name.encode(), b"labels": labels[name], b"data": rows[name]}
        members[name] = pickle.dumps(batch, protocol=protocol)
    members["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, protocol=protocol)
    with tarfile.open(path, "w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    train_rows = np.concatenate([rows[f"data_batch_{i}"] for i in range(1, 6)])
    train_labels = np.concatenate([labels[f"data_batch_{i}"] for i in range(1, 6)])
    return {"train_rows": train_rows, "train_labels": train_labels, "test_rows": rows["test_batch"],
            "test_labels": np.array(labels["test_batch"])}


def _pixel_from_row(row: np.ndarray, c: int, h: int, w: int) -> int:
    """The official layout, written out: 1024 red values row by row, then green, then blue."""
    return int(row[c * 1024 + h * 32 + w])


def _idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, n_train: int = 12, n_test: int = 6, side: int = 5, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labs = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(imgs)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labs)))
        data[prefix] = (imgs, labs)
    return data


# --------------------------------------------------------------------------- CIFAR-10 pickle archive


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_archive_pixels_labels_and_split(tmp_path: Path, cache: Path, protocol: int) -> None:
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    truth = _make_cifar_pickle_archive(root / "cifar10" / "tiny-cifar.tar.gz", protocol=protocol)
    splits, classes = vision_sources.read_cifar10_pickle(root / "cifar10" / "tiny-cifar.tar.gz")
    assert classes == CIFAR10_CLASSES
    images, labels = splits["train"]
    assert images.shape == (100, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, truth["train_labels"])
    rng = np.random.default_rng(5)
    for _ in range(50):
        i, c, h, w = rng.integers(100), rng.integers(3), rng.integers(32), rng.integers(32)
        assert images[i, c, h, w] == _pixel_from_row(truth["train_rows"][i], c, h, w)
    assert splits["test"][0].shape == (20, 3, 32, 32)

    ds = load_vision_dataset("cifar10", data_root=root, val_fraction=0.2, split_seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (80, 20, 20)
    # train + val is exactly the original training set (as a multiset of rows)
    together = np.concatenate([ds.train.images, ds.val.images]).reshape(100, -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, truth["train_rows"]))
    # mean/std over the train split only, against a float64 computation
    x = ds.train.images.astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    assert ds.source.endswith("tiny-cifar.tar.gz")
    # the split is seeded: same seed, same split; another seed, another split
    again = load_vision_dataset("cifar10", data_root=root, val_fraction=0.2, split_seed=3)
    np.testing.assert_array_equal(again.val.images, ds.val.images)
    other = load_vision_dataset("cifar10", data_root=root, val_fraction=0.2, split_seed=4)
    assert not np.array_equal(other.val.images, ds.val.images)


def test_cifar_cache_is_used_on_second_load(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "tiny-cifar.tar.gz"
    _make_cifar_pickle_archive(archive)
    first = load_vision_dataset("cifar10", data_root=archive)
    assert list((cache / "cifar10").glob("*.npz"))

    def boom(*a, **k):  # the reader must not run again
        raise AssertionError("decoded twice")

    monkeypatch.setattr(vision_sources, "read_cifar10_pickle", boom)
    second = load_vision_dataset("cifar10", data_root=archive)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D102
        pass


def test_cifar_download_checks_md5(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    _make_cifar_pickle_archive(served / "cifar-10-python.tar.gz")
    md5 = hashlib.md5((served / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
        root = tmp_path / "root"
        monkeypatch.setattr(vision, "CIFAR10_MD5", "0" * 32)  # a wrong checksum is refused
        with pytest.raises(DataNotFoundError, match="checksum"):
            load_vision_dataset("cifar10", data_root=root, download=True, url=url)
        monkeypatch.setattr(vision, "CIFAR10_MD5", md5)
        ds = load_vision_dataset("cifar10", data_root=root, download=True, url=url, official=False)  # tiny copy
        assert (root / "cifar10" / "cifar-10-python.tar.gz").is_file()
        assert len(ds.train) + len(ds.val) == 100
    finally:
        server.shutdown()


def test_fashion_download_from_a_local_server(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    truth = _write_fashion(served)
    md5s = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in served.iterdir()}
    monkeypatch.setattr(vision_sources, "FASHION_MNIST_FILES", md5s)
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = tmp_path / "root"
        ds = load_vision_dataset("fashion-mnist", data_root=root, download=True, val_fraction=0.0,
                                 url=f"http://127.0.0.1:{server.server_address[1]}/")
        assert sorted(p.name for p in (root / "fashion-mnist").iterdir()) == sorted(md5s)
        np.testing.assert_array_equal(ds.test.images[:, 0], truth["t10k"][0])
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- image folders


def _png_tree(base: Path, per_class: int = 3, classes=("b_cls", "a_cls", "c_cls"), seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    truth: dict[tuple[str, str, str], np.ndarray] = {}
    for split in ("train", "test"):
        for cls in classes:
            (base / split / cls).mkdir(parents=True)
            for k in range(per_class):
                img = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
                Image.fromarray(img).save(base / split / cls / f"{k:04d}.png")
                truth[(split, cls, f"{k:04d}.png")] = img
    return truth


@pytest.mark.parametrize("as_tar", [False, True])
def test_image_folder_reader_exact_pixels(tmp_path: Path, as_tar: bool) -> None:
    tree = tmp_path / "imgs" / "mydata"
    truth = _png_tree(tree)
    source = tree
    if as_tar:
        source = tmp_path / "mydata.tar.gz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(tree, arcname="mydata")
    splits, classes = read_image_folder(source)
    assert classes == ("a_cls", "b_cls", "c_cls")  # sorted folder names
    images, labels = splits["train"]
    assert images.shape == (9, 3, 6, 7)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    # sorted by (class, file name): image 4 is b_cls/0001.png, stored HWC in the file
    np.testing.assert_array_equal(images[4], truth[("train", "b_cls", "0001.png")].transpose(2, 0, 1))
    limited, _ = read_image_folder(source, max_per_class=2)
    assert limited["test"][0].shape == (6, 3, 6, 7)


def test_real_cifar_jpeg_tarball_small_slice(shared_data: Path, cache: Path) -> None:
    tarball = shared_data / "cifar10" / "cifar10_jpeg_q75.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} not present")
    ds = load_vision_dataset("cifar10", data_root=shared_data, max_per_class=20, val_fraction=0.25)
    assert ds.class_names == CIFAR10_CLASSES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (150, 50, 200)
    assert ds.image_shape == (3, 32, 32)
    assert np.bincount(ds.test.labels, minlength=10).tolist() == [20] * 10
    # an independent decode of one file: test/cat/0000.jpg is the first image of class 3
    with tarfile.open(tarball) as tf:
        raw = tf.extractfile("cifar10_jpeg/test/cat/0000.jpg").read()
    direct = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(ds.test.images[60], direct)
    # natural images: channel means in a sane range (CIFAR-10's are about 0.45-0.49)
    assert all(0.3 < m < 0.65 for m in ds.mean) and all(0.15 < s < 0.35 for s in ds.std)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def test_idx_parser_and_fashion_folder(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _write_fashion(tmp_path / "root" / "fashion-mnist")
    arr = parse_idx(_idx_bytes(truth["train"][0]))
    np.testing.assert_array_equal(arr, truth["train"][0])
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    ds = load_vision_dataset("fashion-mnist", data_root=tmp_path / "root", val_fraction=0.0)
    assert ds.image_shape == (1, 5, 5)
    np.testing.assert_array_equal(ds.test.images[:, 0], truth["t10k"][0])
    np.testing.assert_array_equal(ds.test.labels, truth["t10k"][1])
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.train) == 12 and len(ds.val) == 0


def test_idx_parser_rejects_bad_files(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataNotFoundError, match="magic"):
        parse_idx(b"\x08\x03" + good[2:])
    with pytest.raises(DataNotFoundError, match="type code"):
        parse_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(DataNotFoundError, match="holds"):
        parse_idx(good[:-1])
    with pytest.raises(DataNotFoundError, match="magic"):
        parse_idx(b"")
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DataNotFoundError, match="cannot read"):
        read_idx_file(bad)
    cut = gzip.compress(good + bytes(5000))
    bad.write_bytes(cut[: len(cut) - 30])  # a gzip stream cut mid-member: an error, not a partial read
    with pytest.raises(DataNotFoundError, match="cannot read .*ended before the end-of-stream marker"):
        read_idx_file(bad)
    # a label file whose count differs from the image file
    folder = tmp_path / "fm"
    _write_fashion(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DataNotFoundError, match="labels for 6 images"):
        vision_sources.read_fashion_mnist(folder)


def test_real_fashion_mnist_test_files() -> None:
    folder = vision.FASHION_MNIST_SYSTEM_DIR
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images = read_idx_file(folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_file(folder / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10  # the official test set is balanced


# --------------------------------------------------------------------------- digits, missing data


def test_digits_shapes_counts_and_levels() -> None:
    from sklearn.datasets import load_digits

    ds = load_vision_dataset("digits", val_fraction=0.1, split_seed=0)
    assert ds.image_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert len(ds.test) == round(0.2 * 1797)
    assert len(ds.val) == round(0.1 * (1797 - len(ds.test)))
    # every class in every split (stratified)
    for split in (ds.train, ds.val, ds.test):
        assert set(split.labels.tolist()) == set(range(10))
    # pixels are sklearn's 0..16 levels mapped to round(v * 255 / 16)
    ref = load_digits()
    levels = {int(round(v * 255 / 16)) for v in range(17)}
    assert set(np.unique(ds.train.images).tolist()) <= levels
    first_test = ds.test.images[0, 0]
    matches = [i for i in range(1797) if np.array_equal(np.rint(ref.images[i] * 255 / 16), first_test)]
    assert matches and ref.target[matches[0]] == ds.test.labels[0]
    # the test split does not depend on split_seed; the validation split does
    other = load_vision_dataset("digits", split_seed=1)
    np.testing.assert_array_equal(other.test.images, ds.test.images)
    assert not np.array_equal(other.val.images, ds.val.images)


def test_missing_and_corrupt_data_messages(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_vision_dataset("cifar10", data_root=empty)
    msg = str(info.value)
    assert str(empty) in msg and "--download" in msg and "cifar-10-python.tar.gz" in msg
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_vision_dataset("fashion-mnist", data_root=empty)
    broken = tmp_path / "broken" / "cifar10"
    broken.mkdir(parents=True)
    (broken / "mine.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataNotFoundError, match="cannot read"):
        load_vision_dataset("cifar10", data_root=broken.parent)
    (broken / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")  # the official name: checksummed
    with pytest.raises(DataNotFoundError, match="md5 checksum mismatch.*--download"):
        load_vision_dataset("cifar10", data_root=broken.parent)
    with pytest.raises(ValueError, match="unknown vision data set"):
        load_vision_dataset("mnist")
    with pytest.raises(ValueError, match="val_fraction"):
        load_vision_dataset("digits", val_fraction=1.0)


# --------------------------------------------------------------------------- statistics, resize, augmentation


def test_channel_stats_and_resize() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 3, 5, 4), dtype=np.uint8)
    mean, std = channel_stats(x)
    f = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, f.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, f.std(axis=(0, 2, 3)), rtol=1e-12)
    const = np.full((2, 3, 32, 32), 77, np.uint8)
    big = resize_images(const, 48)
    assert big.shape == (2, 3, 48, 48) and big.dtype == np.uint8 and (big == 77).all()
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (1, 1, 32, 1))  # increasing along W
    assert (np.diff(resize_images(ramp, 48)[0, 0, 10].astype(int)) >= 0).all()


def _find_offset(out: np.ndarray, img: np.ndarray, p: int) -> list[tuple[int, int]]:
    padded = np.pad(img, ((0, 0), (p, p), (p, p)))
    H, W = img.shape[1:]
    return [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
            if np.array_equal(padded[:, dy : dy + H, dx : dx + W], out)]


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = RandomCropFlip(padding=2, flip=False)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    offsets = [_find_offset(out[i].numpy(), x[i].numpy(), 2) for i in range(32)]
    assert all(len(o) == 1 for o in offsets)  # exactly one window of the zero-padded image
    assert len({o[0] for o in offsets}) > 5  # offsets vary per image
    assert any(o[0] != (2, 2) for o in offsets)


def test_flip_is_a_flip_and_augmentation_is_seeded() -> None:
    x = torch.rand(64, 1, 5, 6, generator=torch.Generator().manual_seed(0))
    out = RandomCropFlip(padding=0, flip=True)(x, torch.Generator().manual_seed(3))
    flipped = [bool(torch.equal(out[i], x[i].flip(-1))) for i in range(64)]
    same = [bool(torch.equal(out[i], x[i])) for i in range(64)]
    assert all(f != s for f, s in zip(flipped, same))  # each image is either flipped or untouched
    assert 10 < sum(flipped) < 54
    aug = RandomCropFlip(padding=2, flip=True)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, torch.rand(64, 1, 5, 6, generator=torch.Generator().manual_seed(0)))  # input untouched
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)


def test_default_augmentation() -> None:
    assert default_augmentation("cifar10", 32) == {"padding": 4, "flip": True}
    assert default_augmentation("cifar10", 48) == {"padding": 4, "flip": True}
    assert default_augmentation("fashion-mnist", 28) == {"padding": 3, "flip": False}
    assert default_augmentation("digits", 8) == {"padding": 1, "flip": False}


# --------------------------------------------------------------------------- issue 12: incomplete copies, empty splits


def test_a_class_missing_from_a_split_is_an_error(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "root"
    _png_tree(root / "cifar10" / "mine", per_class=2)
    for f in (root / "cifar10" / "mine" / "test" / "c_cls").iterdir():
        f.unlink()
    with pytest.raises(DataNotFoundError, match=r"the test split is incomplete, images per class: c_cls 0 "
                                                r"\(expected at least 1 each\)"):
        load_vision_dataset("cifar10", data_root=root)


def _cifar_named_tree(base: Path, per_class: int = 2) -> None:
    img = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            (base / split / cls).mkdir(parents=True)
            for k in range(per_class):
                img.save(base / split / cls / f"{k}.png")


def test_cifar_named_folders_must_hold_the_whole_data_set(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "root"
    tree = root / "cifar10" / "copy"
    _cifar_named_tree(tree)
    # names say CIFAR-10: 5,000 / 1,000 images per class are expected, a part is refused
    with pytest.raises(DataNotFoundError, match=r"the train split is incomplete, images per class: airplane 2, "
                                                r"automobile 2, bird 2, cat 2 and 6 more \(expected 5000 each\)"):
        load_vision_dataset("cifar10", data_root=root)
    assert len(load_vision_dataset("cifar10", data_root=root, max_per_class=2).test) == 20  # a slice as asked
    assert len(load_vision_dataset("cifar10", data_root=root, official=False).test) == 20  # a part on purpose
    (tree / "train" / "truck" / "1.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"the train split is incomplete, images per class: truck 1 "
                                                r"\(expected 2 each\)"):
        load_vision_dataset("cifar10", data_root=root, max_per_class=2)
    for f in (tree / "train" / "truck").iterdir():
        f.unlink()
    with pytest.raises(DataNotFoundError, match=r"truck 0 \(expected at least 1 each\)"):
        load_vision_dataset("cifar10", data_root=root, official=False)


def test_an_extracted_batches_folder_must_be_complete(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "tiny.tar.gz"
    _make_cifar_pickle_archive(archive)
    with tarfile.open(archive) as tf:
        for m in tf:
            (tmp_path / "root" / m.name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "root" / m.name).write_bytes(tf.extractfile(m).read())
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py: the train split is incomplete.*"
                                                r"\(expected 5000 each\)"):
        load_vision_dataset("cifar10", data_root=tmp_path / "root")
    assert len(load_vision_dataset("cifar10", data_root=tmp_path / "root", official=False).test) == 20


def test_real_cifar_tarball_cut_inside_train_frog(shared_data: Path, cache: Path, tmp_path: Path) -> None:
    """The issue's case: the tarball cut at a member boundary read as 29,999 images with classes 6-9 empty."""
    tarball = shared_data / "cifar10" / "cifar10_jpeg_q75.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} not present")
    raw = gzip.decompress(tarball.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        cut = next(m.offset for m in tf if m.name.startswith("cifar10_jpeg/train/frog/"))
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg_q75.tar.gz").write_bytes(gzip.compress(raw[:cut], compresslevel=1))
    with pytest.raises(DataNotFoundError, match="cut short"):
        load_vision_dataset("cifar10", data_root=tmp_path, max_per_class=5)


def test_fashion_copy_claiming_the_full_size_must_be_balanced(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    folder = tmp_path / "root" / "fashion-mnist"
    _write_fashion(folder, n_train=60000, n_test=10000, side=1)  # labels i % 10: 6,000 / 1,000 per class
    assert len(load_vision_dataset("fashion-mnist", data_root=tmp_path / "root", val_fraction=0.0).test) == 10000
    labels = (np.arange(60000) % 10).astype(np.uint8)
    labels[9] = 0  # one Ankle boot becomes a T-shirt: 6,001 and 5,999
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(DataNotFoundError, match=r"train split is incomplete, images per class: T-shirt/top 6001, "
                                                r"Ankle boot 5999 \(expected 6000 each\)"):
        load_vision_dataset("fashion-mnist", data_root=tmp_path / "root")
    small = tmp_path / "small" / "fashion-mnist"
    _write_fashion(small)
    with pytest.raises(DataNotFoundError, match=r"expected 6000 each"):
        load_vision_dataset("fashion-mnist", data_root=small.parent, official=True)


def test_val_fraction_that_rounds_to_an_empty_split(cache: Path) -> None:
    from mirrorattn.data.paths import DataError

    with pytest.raises(DataError, match=r"val_fraction=0.05 of the 5 training images rounds to an empty "
                                        r"validation split; use a larger val_fraction \(at least 0.2\)"):
        load_vision_dataset("digits", max_train=5, val_fraction=0.05)
    with pytest.raises(DataError, match="leaves no training images"):
        load_vision_dataset("digits", max_train=1, val_fraction=0.6)
    assert len(load_vision_dataset("digits", max_train=5, val_fraction=0.0).val) == 0


def test_missing_data_advice_names_the_url_in_use(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("MIRRORATTN_CIFAR10_URL", "http://mirror.invalid/c.tgz")
    monkeypatch.setenv("MIRRORATTN_FASHION_MNIST_URL", "http://mirror.invalid/fm/")
    with pytest.raises(DataNotFoundError) as err:
        load_vision_dataset("cifar10", data_root=tmp_path)
    assert "http://mirror.invalid/c.tgz" in str(err.value) and vision_sources.CIFAR10_URL not in str(err.value)
    with pytest.raises(DataNotFoundError) as err:
        load_vision_dataset("fashion-mnist", data_root=tmp_path)
    assert "http://mirror.invalid/fm/" in str(err.value) and vision_sources.FASHION_MNIST_URL not in str(err.value)
    with pytest.raises(DataNotFoundError, match="fetch http://elsewhere.invalid/x.tgz into"):
        load_vision_dataset("cifar10", data_root=tmp_path, url="http://elsewhere.invalid/x.tgz")
