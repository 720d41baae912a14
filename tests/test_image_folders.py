"""Image folders of your own (mirrorattn.data.image_folders via load_vision_dataset), on tiny generated PNG/JPEGs."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirrorattn.data import image_folders
from mirrorattn.data.archives import ArchiveLimitError
from mirrorattn.data.paths import DataError, DataNotFoundError
from mirrorattn.data.vision import dataset_kind, load_vision_dataset


def _pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _write(path: Path, array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(path, format=fmt)


def _folder(root: Path, layout: dict[str, dict[str, int]], shape=(8, 8), fmt: str = "PNG") -> dict[str, np.ndarray]:
    """``layout[split][class] = count`` images of random pixels (split "" = a single set); {relative path: pixels}."""
    written, seed = {}, 0
    for split, classes in layout.items():
        for cls, count in classes.items():
            for i in range(count):
                rel = f"{split}/{cls}/{i:02d}.{fmt.lower()}".lstrip("/")
                written[rel] = _pixels(seed, shape)
                _write(root / rel, written[rel], fmt)
                seed += 1
    return written


def _tar(path: Path, folder: Path, top: str = "mydata") -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        tf.add(folder, arcname=top)
    return path


def _zip(path: Path, folder: Path, top: str = "mydata") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
    return path


LAYOUT = {"train": {"dog": 3, "cat": 2}, "test": {"cat": 2, "dog": 1}}


# --------------------------------------------------------------------------- layouts


def test_split_layout_exact_pixels_sorted_classes_and_kind(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "pets"
    written = _folder(src, LAYOUT, shape=(8, 8))  # 2-D arrays: grayscale PNGs
    splits, classes = image_folders.read_image_folders(src)
    assert classes == ("cat", "dog") and set(splits) == {"train", "test"}
    want = [written[f"train/{c}/{i:02d}.png"] for c, n in (("cat", 2), ("dog", 3)) for i in range(n)]
    assert splits["train"][0].shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(splits["train"][0][:, 0], np.stack(want))
    assert splits["train"][1].tolist() == [0, 0, 1, 1, 1] and splits["test"][1].tolist() == [0, 0, 1]
    ds = load_vision_dataset(str(src), val_fraction=0.2)
    assert ds.name == "pets" and ds.class_names == ("cat", "dog") and ds.image_shape == (1, 8, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 1, 3)
    assert dataset_kind(str(src)) == "folder" and dataset_kind("CIFAR-10") == "cifar10"
    assert dataset_kind("pets", data_root=tmp_path) == "folder"  # found in the data root
    with pytest.raises(ValueError, match="unknown vision data set 'mnist'"):
        dataset_kind("mnist", data_root=tmp_path)


def test_val_folder_is_the_validation_split_and_alone_it_is_the_test_split(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "three"
    _folder(src, {**LAYOUT, "val": {"cat": 1, "dog": 1}})
    ds = load_vision_dataset(str(src), val_fraction=0.5)  # val/ given: val_fraction is not used
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 2, 3)
    imagenet = tmp_path / "imagenet-style"  # train/ + val/: val/ is the test split
    _folder(imagenet, {"train": LAYOUT["train"], "val": {"cat": 1, "dog": 2}})
    ds = load_vision_dataset(str(imagenet), val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 1, 3) and ds.test.labels.tolist() == [0, 1, 1]


def test_single_set_is_split_by_test_fraction_stratified_seeded(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "flat"
    written = _folder(src, {"": {"a": 10, "b": 20}})
    first = load_vision_dataset(str(src), test_fraction=0.2, val_fraction=0.1, split_seed=3)
    again = load_vision_dataset(str(src), test_fraction=0.2, val_fraction=0.1, split_seed=3)
    other = load_vision_dataset(str(src), test_fraction=0.2, val_fraction=0.1, split_seed=4)
    assert np.bincount(first.test.labels).tolist() == [2, 4]  # 20 % of each class
    assert (len(first.train), len(first.val), len(first.test)) == (22, 2, 6)  # val: round(0.1 * 24)
    np.testing.assert_array_equal(first.test.images, again.test.images)
    assert not np.array_equal(first.test.images, other.test.images)
    # every image lands in exactly one split
    seen = np.concatenate([first.train.images, first.val.images, first.test.images])[:, 0]
    assert sorted(map(bytes, seen)) == sorted(bytes(a) for a in written.values())
    assert load_vision_dataset(str(src), test_fraction=0.5).test.labels.tolist().count(0) == 5


def test_train_folder_alone_is_split_like_a_single_set(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "only-train"
    _folder(src, {"train": {"a": 5, "b": 5}})
    ds = load_vision_dataset(str(src), test_fraction=0.2, val_fraction=0.25)
    assert np.bincount(ds.test.labels).tolist() == [1, 1] and len(ds.train) + len(ds.val) == 8


@pytest.mark.parametrize("form", ["tar", "tar.gz", "zip"])
def test_archives_read_in_memory_give_the_folder(tmp_path: Path, cache: Path, form: str) -> None:
    src = tmp_path / "pets"
    _folder(src, LAYOUT)
    archive = tmp_path / f"pets.{form}"
    (_zip if form == "zip" else _tar)(archive, src)  # one leading folder mydata/, skipped
    before = sorted(p.name for p in tmp_path.iterdir())
    got, classes = image_folders.read_image_folders(archive)
    want, _ = image_folders.read_image_folders(src)
    assert classes == ("cat", "dog")
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split][0], want[split][0])
        np.testing.assert_array_equal(got[split][1], want[split][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    assert load_vision_dataset(str(archive), val_fraction=0.2).name == "pets"


def test_archive_member_cap_and_traversal_names(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = io.BytesIO()
    Image.fromarray(_pixels(0, (8, 8))).save(png, format="PNG")
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("../../train/a/0.png", "/train/b/0.png", "test/a/0.png", "test/b/0.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png.getvalue())
            tf.addfile(info, io.BytesIO(png.getvalue()))
        link = tarfile.TarInfo("train/a/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    splits, classes = image_folders.read_image_folders(archive)  # names only matched; the link skipped
    assert classes == ("a", "b") and len(splits["train"][1]) == 2
    assert not (tmp_path.parent / "train").exists()
    monkeypatch.setenv("MIRRORATTN_MAX_MEMBER_BYTES", "64")
    with pytest.raises(ArchiveLimitError, match="inflates past the cap of 64 bytes"):
        image_folders.read_image_folders(archive)


# --------------------------------------------------------------------------- modes, sizes, formats


def test_modes_gray_rgb_mixed_alpha_palette_and_jpeg(tmp_path: Path, cache: Path) -> None:
    gray, rgb = _pixels(1, (8, 8)), _pixels(2, (8, 8, 3))
    for split in ("train", "test"):
        _write(tmp_path / "g" / split / "a" / "0.png", gray)
        _write(tmp_path / "g" / split / "b" / "0.png", gray, mode="1")  # a 1-bit image is grayscale too
        _write(tmp_path / "m" / split / "a" / "0.png", gray)
        _write(tmp_path / "m" / split / "b" / "0.png", rgb, mode="RGBA")
        _write(tmp_path / "m" / split / "b" / "1.png", rgb, mode="P")
        _write(tmp_path / "m" / split / "b" / "2.jpg", np.full((8, 8, 3), (200, 40, 90), np.uint8), fmt="JPEG")
    g, _ = image_folders.read_image_folders(tmp_path / "g")
    assert g["train"][0].shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(g["train"][0][0, 0], gray)
    np.testing.assert_array_equal(g["train"][0][1, 0], np.asarray(Image.fromarray(gray).convert("1").convert("L")))
    m, _ = image_folders.read_image_folders(tmp_path / "m")  # mixed: all RGB, grayscale replicated
    assert m["train"][0].shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(m["train"][0][0], np.stack([gray] * 3))
    np.testing.assert_array_equal(m["train"][0][1], rgb.transpose(2, 0, 1))  # alpha dropped
    palette = np.asarray(Image.fromarray(rgb).convert("P").convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(m["train"][0][2], palette)
    assert np.abs(m["train"][0][3].astype(int) - np.array((200, 40, 90))[:, None, None]).max() <= 3  # JPEG: lossy


def test_any_size_is_resized_and_mixed_sizes_need_image_size(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "sizes"
    for split in ("train", "test"):
        for cls, (shape, value) in {"a": ((12, 10), 40), "b": ((8, 8), 200)}.items():
            _write(src / split / cls / "0.png", np.full(shape, value, dtype=np.uint8))
            _write(src / split / cls / "1.jpg", np.full(shape + (3,), value, dtype=np.uint8), fmt="JPEG")
    with pytest.raises(DataError, match=r"different sizes, e\.g\. 12x10 .*pass --image-size N"):
        load_vision_dataset(str(src))
    ds = load_vision_dataset(str(src), image_size=6, val_fraction=0.25)
    assert ds.image_shape == (3, 6, 6)
    for split in (ds.train, ds.val, ds.test):  # a constant image stays constant under any resize
        for img, label in zip(split.images, split.labels):
            assert np.abs(img.astype(int) - (40, 200)[label]).max() <= 1
    square = tmp_path / "square"
    _folder(square, LAYOUT, shape=(12, 12))
    assert load_vision_dataset(str(square), val_fraction=0.2).image_shape == (1, 12, 12)  # native size kept
    assert load_vision_dataset(str(square), val_fraction=0.2, image_size=16).image_shape == (1, 16, 16)


# --------------------------------------------------------------------------- caching


def test_decoded_once_then_cached_and_a_moved_file_decodes_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "pets"
    _folder(src, LAYOUT)
    calls = []
    real = image_folders.decode_image
    monkeypatch.setattr(image_folders, "decode_image", lambda *a: calls.append(a[1]) or real(*a))
    first = load_vision_dataset(str(src), val_fraction=0.2)
    assert len(calls) == 8 and list((cache / "image-folders").glob("*.npz"))
    second = load_vision_dataset(str(src), val_fraction=0.2)
    assert len(calls) == 8  # from the cache
    np.testing.assert_array_equal(first.train.images, second.train.images)
    load_vision_dataset(str(src), val_fraction=0.2, image_size=4)
    assert len(calls) == 16  # another size is another cache entry
    (src / "train" / "dog" / "02.png").rename(src / "train" / "cat" / "99.png")  # same bytes, another class
    moved = load_vision_dataset(str(src), val_fraction=0.2)
    assert len(calls) == 24 and np.bincount(np.concatenate([moved.train.labels, moved.val.labels])).tolist() == [3, 2]


# --------------------------------------------------------------------------- errors


def _make(root: Path, case: str) -> Path:
    src = root / case
    if case == "empty folder":
        src.mkdir()
    elif case == "empty class":
        _folder(src, LAYOUT)
        (src / "test" / "bird").mkdir()
    elif case == "unreadable image":
        _folder(src, LAYOUT)
        (src / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif case == "class missing from test":
        _folder(src, {"train": {"cat": 1, "dog": 1, "emu": 1}, "test": {"cat": 1, "dog": 1}})
    elif case == "class only in test":
        _folder(src, {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1, "emu": 1}})
    elif case == "one class":
        _folder(src, {"": {"cat": 4}, "notes": {}})
    elif case == "images outside class folders":
        _write(src / "0.png", _pixels(0, (8, 8)))
    elif case == "mixed layout":
        _folder(src, {"train": {"cat": 1}, "": {"dog": 1}})
    elif case == "two validation folders":
        _folder(src, {**LAYOUT, "val": {"cat": 1}, "valid": {"cat": 1}})
    elif case == "a lone image in a class":
        _folder(src, {"": {"cat": 4, "dog": 1}})
    return src


ERRORS = {
    "empty folder": r"empty folder: no images in class folders .*put each class's images in a folder named after it",
    "empty class": r"class folder test/bird/ holds no images .*add images or remove the folder",
    "unreadable image": r"train/dog/bad\.png: cannot read this image .*replace or remove the file",
    "class missing from test": r"class 'emu' has images in train/ but none in test/; .*add some under test/emu/",
    "class only in test": r"class 'emu' has images in test/ but none in train/; add training images under train/emu/",
    "one class": r"only one class \('cat'\); a classifier needs at least two",
    "images outside class folders": r"no images in class folders",
    "mixed layout": r"found split folders \(train\) beside other folders \(dog\)",
    "two validation folders": r"two folders of one split \(test, train, val, valid\); keep one",
    "a lone image in a class": r"class 'dog' holds 1 image; .*every class needs at least 2",
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_error_is_one_line_naming_the_problem(tmp_path: Path, cache: Path, case: str) -> None:
    src = _make(tmp_path, case)
    with pytest.raises(DataError, match=ERRORS[case]) as err:
        load_vision_dataset(str(src))
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value) and str(src) in str(err.value)


def test_missing_path_and_bad_test_fraction(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"image folder '.*nowhere' not found \(looked at"):
        load_vision_dataset(str(tmp_path / "nowhere"))
    src = tmp_path / "flat"
    _folder(src, {"": {"a": 3, "b": 3}})
    with pytest.raises(DataError, match=r"test_fraction=0.1 of 6 images gives 1 test images"):
        load_vision_dataset(str(src), test_fraction=0.1)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        load_vision_dataset(str(src), test_fraction=0.0)
    damaged = tmp_path / "bad.tar.gz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataNotFoundError, match="cannot read the image archive"):
        load_vision_dataset(str(damaged))


# --------------------------------------------------------------------------- the experiment


def test_auto_patch_and_the_folder_preset_adapt_to_the_data(tmp_path: Path) -> None:
    from mirrorattn.experiments.vision import VisionExperimentConfig, auto_patch
    from mirrorattn.experiments.vision_presets import preset_values

    assert {s: auto_patch(s) for s in (8, 12, 28, 32, 48, 64, 13)} == {8: 1, 12: 2, 28: 4, 32: 4, 48: 6, 64: 8,
                                                                        13: 1}
    src = tmp_path / "pets"
    _folder(src, LAYOUT)
    cfg = VisionExperimentConfig(**{**preset_values("quick", "folder"), "dataset": str(src)})
    cfg.validate()
    assert cfg.image_size == 32 and cfg.patch == 0
    assert (cfg.model_config((1, 32, 32), 2).patch, cfg.model_config((1, 32, 32), 2).channels) == (4, 1)
    assert (cfg.model_config((3, 12, 12), 5).patch, cfg.model_config((3, 12, 12), 5).channels) == (2, 3)
    assert "test_fraction" in cfg.data_identity()
    assert "test_fraction" not in VisionExperimentConfig(dataset="digits").data_identity()  # old hashes kept
    with pytest.raises(ValueError, match="dataset must be one of .* or the path of an image folder"):
        VisionExperimentConfig(dataset="mnist").validate()


def test_cli_end_to_end_on_a_generated_image_folder(tmp_path: Path, cache: Path) -> None:
    from mirrorattn.cli import main

    src = tmp_path / "shapes"
    _folder(src, {"train": {"dark": 8, "light": 8}, "test": {"dark": 4, "light": 4}}, shape=(12, 10), fmt="PNG")
    out = tmp_path / "out"
    argv = ["vision", "--dataset", str(src), "--epochs", "1", "--seeds", "1", "--optimizers", "adam",
            "--image-size", "8", "--width", "16", "--depth", "1", "--heads", "2", "--mlp-hidden", "16",
            "--val-fraction", "0.25", "--analysis-samples", "8", "--attention-images", "2", "--no-progress",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["image_shape"] == [1, 8, 8] and results["data"]["class_names"] == ["dark", "light"]
    assert results["data"]["sizes"] == {"train": 12, "val": 4, "test": 8}
    summary = json.loads((out / "runs" / "adam-seed0" / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0
