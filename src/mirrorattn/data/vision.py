"""Image classification data: CIFAR-10, Fashion-MNIST, scikit-learn's 8x8 digits, and image folders of your own.

:func:`load_vision_dataset` finds a data set under the data root
(:func:`mirrorattn.data.paths.data_root`), decodes it once into arrays cached in the cache folder
(the data root may be read-only), splits a seeded, stratified validation set off the training
set and returns a :class:`VisionDataset` of ``uint8 (N, C, H, W)`` images and ``int64`` labels
with the per-channel mean and std of its training split.

Where each data set is looked for (``R`` = the data root):

* ``cifar10``: ``R/cifar-10-python.tar.gz``, ``R/cifar10/cifar-10-python.tar.gz`` (the official
  pickle archive; ``--download`` fetches it there; a file of that name is read only if its MD5 is
  the official one, wherever it is found), an extracted ``cifar-10-batches-py`` folder, any pickle
  archive of that layout, or any tarball / folder under ``R/cifar10`` holding
  ``{train,test}/{class}/*.jpg|png`` (e.g. ``cifar10_jpeg_q75.tar.gz``). ``R`` may also be the
  archive itself. Pickles are read with a restricted unpickler (:mod:`mirrorattn.data.safe_pickle`:
  plain data and NumPy arrays only, no code runs), archives in memory with caps on the inflated
  sizes (:mod:`mirrorattn.data.archives`).
* ``fashion-mnist``: the four IDX files (gzipped or not) in ``R/fashion-mnist``,
  ``R/fashion_mnist``, ``R`` or ``/usr/share/datasets/fashion-mnist`` (Debian's
  ``dataset-fashion-mnist``); ``--download`` fetches the official files into ``R/fashion-mnist``.
* ``digits``: ``sklearn.datasets.load_digits()``, always available. It has no official test
  split: a stratified 20 % test split is drawn with a fixed seed (0), the same for every run.
* any other name is the path of an image folder in torchvision's ``ImageFolder`` layout, or of a
  .tar/.tar.gz/.zip of one (:mod:`mirrorattn.data.image_folders`: ``train/``, ``test/`` and
  optionally ``val/`` class folders, or one set of class folders split by ``test_fraction``),
  decoded once and cached as the others (keyed by the folder's file names, sizes and times).

Completeness: every class must have train and test images; a copy that claims to be the official
data set (see ``official`` of :func:`load_vision_dataset`) must hold exactly its images per class,
so that a truncated archive fails with a message naming the split, class and counts.

Augmentation (:class:`RandomCropFlip`) works on batched ``uint8`` or float tensors with a
``torch.Generator`` so that a run is reproducible per (seed, epoch). Defaults per data set
(:func:`default_augmentation`): CIFAR-10 as the paper, crop with 4 pixels of zero padding and
horizontal flips; Fashion-MNIST and digits a crop with padding scaled to the image (3 and 1
pixels) and no flip, because a mirrored digit is another symbol (and we keep Fashion-MNIST as it
is usually trained; pass ``flip=True`` to change it).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mirrorattn.checks import check_fraction, check_int
from mirrorattn.data import image_folders
from mirrorattn.data import vision_sources as src
from mirrorattn.data.download import fetch, file_digest
from mirrorattn.data.paths import DataError, DataNotFoundError
from mirrorattn.data.paths import cache_dir as _cache_dir
from mirrorattn.data.paths import data_root as _data_root
from mirrorattn.io import atomic_path

DATASETS: tuple[str, ...] = ("cifar10", "fashion-mnist", "digits")
#: bump when a reader changes what it returns, so that old caches are not reused
_CACHE_VERSION = 3
#: Debian's dataset-fashion-mnist puts the files here
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: the fixed seed of the digits test split (every run sees the same test images)
DIGITS_TEST_SEED = 0
DIGITS_TEST_FRACTION = 0.2

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` uint8 (N, C, H, W), values 0..255; ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, int64 labels) as torch tensors sharing memory with the arrays."""
        return torch.from_numpy(np.ascontiguousarray(self.images)), torch.from_numpy(self.labels)


@dataclass(frozen=True)
class VisionDataset:
    """A split image data set.

    ``mean`` and ``std`` are per channel, in units of the [0, 1] pixel scale (value / 255), over
    the ``train`` split only. ``source`` says where the images were read from.
    """

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (sizes, shape, statistics, source)."""
        return {
            "name": self.name,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "mean": list(self.mean),
            "std": list(self.std),
        }


# --------------------------------------------------------------------------- statistics, splits, resize


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """Per-channel 256-bin histograms of uint8 ``images`` (N, C, H, W): int64 (C, 256)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    return np.stack([np.bincount(images[:, c].ravel(), minlength=256) for c in range(images.shape[1])]).astype(np.int64)


def stats_from_histogram(hist: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, population std) per channel, in [0, 1] units, from :func:`channel_histogram` counts (float64)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for h in np.asarray(hist, dtype=np.float64):
        n = h.sum()
        if n <= 0:
            raise ValueError("cannot compute channel statistics of an empty image set")
        m = float(h @ levels / n)
        means.append(m)
        stds.append(max(float(h @ (levels - m) ** 2 / n), 0.0) ** 0.5)
    return tuple(means), tuple(stds)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 ``images`` (N, C, H, W), in [0, 1] units.

    Computed from a 256-bin histogram per channel (float64), so memory stays O(N H W).
    """
    return stats_from_histogram(channel_histogram(images))


def _stratified_pick(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (picked, rest), ``picked`` a seeded stratified sample of ``count`` items (both sorted)."""
    from sklearn.model_selection import train_test_split

    n = labels.shape[0]
    idx = np.arange(n)
    if count <= 0:
        return idx[:0], idx
    if count >= n:
        return idx, idx[:0]
    classes, counts = np.unique(labels, return_counts=True)
    strat = labels if (counts.min() >= 2 and count >= len(classes) and n - count >= len(classes)) else None
    picked, rest = train_test_split(idx, train_size=count, random_state=seed, stratify=strat)
    return np.sort(picked), np.sort(rest)


def resize_images(images: np.ndarray, size: int, *, chunk: int = 2048) -> np.ndarray:
    """Resize uint8 images (N, C, H, W) to (N, C, size, size), bilinear with antialiasing, rounded to uint8.

    As torchvision's ``Resize`` on PIL images, the result is again 8-bit (what the paper's
    pipeline feeds to its random crop).
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = np.empty(images.shape[:2] + (size, size), dtype=np.uint8)
    for i in range(0, images.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


# --------------------------------------------------------------------------- caching


def _source_stamp(path: Path) -> str:
    """A key that changes when the source changes: size and mtime of a file, or of every file in a folder."""
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    total, newest, count = 0, 0, 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            total, newest, count = total + st.st_size, max(newest, st.st_mtime_ns), count + 1
    return f"{path.resolve()}:{count}:{total}:{newest}"


def _cached_raw(
    name: str,
    source: Path,
    reader: Callable[[], tuple[dict[str, Arrays], tuple[str, ...]]],
    cache: str | None,
    tag: str,
) -> tuple[dict[str, Arrays], tuple[str, ...], np.ndarray]:
    """Decode with ``reader`` once; later calls load an uncompressed ``.npz`` from the cache folder.

    Returns (splits, class names, per-channel histogram of the whole training pool).
    """
    import hashlib

    key = hashlib.sha256(f"{_CACHE_VERSION}|{name}|{tag}|{_source_stamp(source)}".encode()).hexdigest()[:16]
    folder = _cache_dir(cache, name)
    path = folder / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                splits = {s: (z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "val", "test")
                          if f"{s}_images" in z.files}
                classes = tuple(str(c) for c in z["classes"])
                hist = z["train_hist"]
            return splits, classes, hist
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt
    splits, classes = reader()
    hist = channel_histogram(splits["train"][0])
    arrays = {f"{s}_{k}": a for s, (im, lb) in splits.items() for k, a in (("images", im), ("labels", lb))}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, classes=np.array(classes), train_hist=hist, **arrays)
    return splits, classes, hist


# --------------------------------------------------------------------------- finding the sources


def _cifar_candidates(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out: list[Path] = []
    for base in (root, root / "cifar10", root / "cifar-10"):
        for name in (src.CIFAR10_ARCHIVE, "cifar-10-batches-py"):
            if (base / name).exists():
                out.append(base / name)
    for base in (root / "cifar10", root / "cifar-10"):
        if base.is_dir():
            for p in sorted(base.iterdir()):
                if p in out or p.name.endswith((".part", ".corrupt")):
                    continue
                if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar")):
                    out.append(p)
                elif p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir():
                    out.append(p)
            if (base / "train").is_dir() and (base / "test").is_dir():
                out.append(base)
    return out


def _cifar_help(root: Path, url: str) -> str:
    return (
        f"CIFAR-10 not found under the data root {root} (looked for {src.CIFAR10_ARCHIVE}, cifar-10-batches-py/ "
        "and tarballs or folders of train/<class>/*.jpg in it and in its cifar10/ folder). Pass --download to "
        f"fetch {url} into {root / 'cifar10'}, or point --data-root (or MIRRORATTN_DATA) at a folder "
        "holding the archive"
    )


def _verify_cifar_archive(path: Path, url: str) -> None:
    """The official archive's MD5 (wherever it was found), so that a crafted or damaged copy is not read."""
    got = file_digest(path, "md5")
    if got != CIFAR10_MD5:
        raise DataNotFoundError(
            f"{path}: md5 checksum mismatch (expected {CIFAR10_MD5}, got {got}): not the official CIFAR-10 archive, "
            f"or damaged. Delete it and run again with --download (fetches {url}); an archive of your own must not "
            f"be named {src.CIFAR10_ARCHIVE}"
        )


def _check_cifar(
    splits: dict[str, Arrays], classes: tuple[str, ...], source: Path, pickle_form: bool, max_per_class: int | None,
    official: bool | None,
) -> None:
    """Every class must have train and test images. A copy that claims to be the official CIFAR-10 (by name:
    ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py``; or class folders named only with CIFAR-10 classes)
    must hold all ten classes with 5,000 train and 1,000 test images each (at most ``max_per_class``);
    ``official`` True / False forces that check on / off."""
    if pickle_form:
        claims = source.name in (src.CIFAR10_ARCHIVE, "cifar-10-batches-py")
    else:
        claims = set(classes) <= set(src.CIFAR10_CLASSES)
    if official is False or (official is None and not claims):
        src.check_splits(splits, classes, str(source))
        return
    per_class = {s: n if max_per_class is None else min(n, max_per_class)
                 for s, n in src.OFFICIAL_PER_CLASS["cifar10"].items()}
    src.check_splits(splits, classes, str(source), per_class, src.CIFAR10_CLASSES)


def _read_cifar10(
    root: Path, cache: str | None, download: bool, url: str | None, max_per_class: int | None, workers: int,
    progress: bool = True, official: bool | None = None,
) -> tuple[dict[str, Arrays], tuple[str, ...], str, np.ndarray]:
    candidates = _cifar_candidates(root)
    url = url or os.environ.get("MIRRORATTN_CIFAR10_URL") or src.CIFAR10_URL
    if not candidates and download:
        dest = (root if not root.is_file() else root.parent) / "cifar10" / src.CIFAR10_ARCHIVE
        candidates = [fetch(url, dest, md5=CIFAR10_MD5, progress=progress)]
    if not candidates:
        raise DataNotFoundError(_cifar_help(root, url))
    source = candidates[0]
    pickle_form = source.name == "cifar-10-batches-py" or (source.is_file() and src.is_cifar_pickle_archive(source))
    if pickle_form and max_per_class is not None:
        raise ValueError("max_per_class applies to image-folder sources only; use max_train/max_test instead")

    def reader() -> tuple[dict[str, Arrays], tuple[str, ...]]:
        if source.is_file() and source.name == src.CIFAR10_ARCHIVE:
            _verify_cifar_archive(source, url)  # the official name: only the official archive is read
        if pickle_form:
            return src.read_cifar10_pickle(source)
        return src.read_image_folder(source, max_per_class=max_per_class, workers=workers)

    tag = "pickle" if pickle_form else f"folder:{max_per_class}"
    splits, classes, hist = _cached_raw("cifar10", source, reader, cache, tag)
    _check_cifar(splits, classes, source, pickle_form, max_per_class, official)
    return splits, classes, str(source), hist


def _fashion_dirs(root: Path) -> list[Path]:
    return [
        root / "fashion-mnist",
        root / "fashion_mnist",
        root / "FashionMNIST" / "raw",
        root,
        FASHION_MNIST_SYSTEM_DIR,
    ]


def _read_fashion(
    root: Path, cache: str | None, download: bool, url: str | None, progress: bool = True,
    official: bool | None = None,
) -> tuple[dict[str, Arrays], tuple[str, ...], str, np.ndarray]:
    def complete(d: Path) -> bool:
        return all(any((d / n).is_file() for n in (f, f[:-3])) for f in src.FASHION_MNIST_FILES)

    found = [d for d in _fashion_dirs(root) if d.is_dir() and complete(d)]
    base = url or os.environ.get("MIRRORATTN_FASHION_MNIST_URL") or src.FASHION_MNIST_URL
    if not found and download:
        dest = root / "fashion-mnist"
        for fname, md5 in src.FASHION_MNIST_FILES.items():
            fetch(base.rstrip("/") + "/" + fname, dest / fname, md5=md5, progress=progress)
        found = [dest]
    if not found:
        looked = ", ".join(str(d) for d in _fashion_dirs(root))
        raise DataNotFoundError(
            f"Fashion-MNIST not found (looked for the four IDX files {', '.join(src.FASHION_MNIST_FILES)} "
            f"in {looked}). "
            "Install Debian's package (apt-get install dataset-fashion-mnist), pass --download to fetch them from "
            f"{base}, or put them in <data root>/fashion-mnist/"
        )
    folder = found[0]
    splits, classes, hist = _cached_raw(
        "fashion-mnist", folder, lambda: (src.read_fashion_mnist(folder), src.FASHION_MNIST_CLASSES), cache, "idx"
    )
    # Debian's copy, or one whose header claims the full 60,000 training images, must hold all of it
    per_class = src.OFFICIAL_PER_CLASS["fashion-mnist"]
    claims = folder == FASHION_MNIST_SYSTEM_DIR or len(splits["train"][1]) == 10 * per_class["train"]
    if official or (official is None and claims):
        src.check_splits(splits, classes, str(folder), per_class, src.FASHION_MNIST_CLASSES)
    return splits, classes, str(folder), hist


# --------------------------------------------------------------------------- image folders of your own


def _listing_digest(path: Path) -> str:
    """A key of a folder's files (names, sizes, times), so that a file moved to another class re-decodes."""
    import hashlib

    if not path.is_dir():
        return _source_stamp(path)
    rows = sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def _read_folder(
    source: Path, cache: str | None, image_size: int | None, workers: int
) -> tuple[dict[str, Arrays], tuple[str, ...], str, np.ndarray | None]:
    """An image folder or archive (:mod:`mirrorattn.data.image_folders`), decoded once and cached."""
    tag = f"folders|size={image_size}|{_listing_digest(source)}"
    splits, classes, hist = _cached_raw(
        "image-folders", source,
        lambda: image_folders.read_image_folders(source, image_size=image_size, workers=workers), cache, tag,
    )
    return splits, classes, str(source), hist


def _hold_out_test(splits: dict[str, Arrays], classes: tuple[str, ...], test_fraction: float, seed: int,
                   source: str) -> dict[str, Arrays]:
    """A single set of class folders: a seeded, stratified ``test_fraction`` of every class becomes the test split."""
    images, labels = splits["train"]
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        raise DataError(f"{source}: class {classes[int(counts.argmin())]!r} holds {counts.min()} image; the class "
                        "folders are split into train and test (test_fraction), so every class needs at least 2")
    n_test = int(round(test_fraction * len(labels)))
    if not len(classes) <= n_test <= len(labels) - len(classes):
        raise DataError(f"{source}: test_fraction={test_fraction:g} of {len(labels)} images gives {n_test} test "
                        f"images, but each of the {len(classes)} classes needs at least one test and one training "
                        "image; change --test-fraction or add images (or give train/ and test/ folders)")
    test_idx, train_idx = _stratified_pick(labels, n_test, seed)
    missing = [classes[c] for c in range(len(classes)) if not (labels[test_idx] == c).any()]
    if missing:
        raise DataError(f"{source}: test_fraction={test_fraction:g} leaves class {missing[0]!r} without test images; "
                        "use a larger --test-fraction or add images to that class")
    return {**splits, "train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def dataset_kind(name: str, data_root: str | os.PathLike | None = None) -> str:
    """``"cifar10"``, ``"fashion-mnist"``, ``"digits"`` (aliases accepted) or ``"folder"`` (an image folder / archive).

    A name is a folder when it exists as a folder or archive (as given, or in the data root) or
    reads as a path (holds ``/``, starts with ``.`` or ``~``, or ends in .tar/.tar.gz/.tgz/.zip ...).
    Raises ValueError for anything else.
    """
    key = name.lower().replace("_", "-")
    key = {"cifar-10": "cifar10", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)
    if key in DATASETS:
        return key
    if image_folders.looks_like_path(name) or image_folders.resolve_image_source(name, _data_root(data_root)):
        return "folder"
    raise ValueError(f"unknown vision data set {name!r}; choose one of {', '.join(DATASETS)}, or give the path of "
                     "an image folder (train/<class>/*.png and test/<class>/*.png, or <class>/*.png) or of a "
                     ".tar/.tar.gz/.zip of one")


# --------------------------------------------------------------------------- the public loader

#: the official CIFAR-10 MD5 (module level so that a test can point a download at a tiny archive)
CIFAR10_MD5 = src.CIFAR10_MD5


def _read_source(
    key: str, root: Path, cache: str | None, download: bool, url: str | None, max_per_class: int | None,
    workers: int, progress: bool, official: bool | None,
) -> tuple[dict[str, Arrays], tuple[str, ...], str, np.ndarray | None]:
    """(train/test splits, class names, source, training-pool histogram or None) of data set ``key``."""
    if key == "cifar10":
        return _read_cifar10(root, cache, download, url, max_per_class, workers, progress, official)
    if key == "fashion-mnist":
        return _read_fashion(root, cache, download, url, progress, official)
    images, labels = src.read_digits()
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    test_idx, train_idx = _stratified_pick(labels, n_test, DIGITS_TEST_SEED)
    splits = {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}
    return splits, tuple(str(i) for i in range(10)), "sklearn.datasets.load_digits", None


def _val_count(val_fraction: float, n: int, source: str) -> int:
    """``round(val_fraction * n)``, the validation split's size; an error if it empties a split it should not."""
    if n == 0:
        raise DataNotFoundError(f"{source}: no training images")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n_val == 0:
        raise DataError(
            f"val_fraction={val_fraction:g} of the {n} training images rounds to an empty validation split; "
            f"use a larger val_fraction (at least {1 / n:.3g}) or more training images (a larger max_train)"
        )
    if n_val >= n:
        raise DataError(
            f"val_fraction={val_fraction:g} of the {n} training images leaves no training images; "
            "use a smaller val_fraction or more training images"
        )
    return n_val


def load_vision_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    max_per_class: int | None = None,
    url: str | None = None,
    workers: int = 1,
    progress: bool = True,
    official: bool | None = None,
    image_size: int | None = None,
    test_fraction: float = 0.2,
) -> VisionDataset:
    """Load, cache and split an image data set.

    Args:
        name: ``"cifar10"``, ``"fashion-mnist"``, ``"digits"``, or the path of an image folder
            or a .tar/.tar.gz/.zip of one (:mod:`mirrorattn.data.image_folders`; tried as given,
            then relative to the data root).
        data_root: where to look (default :func:`mirrorattn.data.paths.data_root`); for CIFAR-10
            it may also be the archive file or image folder itself.
        cache_dir: cache folder for decoded arrays (default :func:`mirrorattn.data.paths.cache_dir`).
        val_fraction: share of the training images (after ``max_train``) held out, stratified,
            as the validation split (0 <= val_fraction < 1; if > 0 it must give at least one image).
        split_seed: seed of the validation split and of the ``max_train``/``max_test`` subsets.
        download: fetch the official files into the data root if nothing is found.
        max_train, max_test: keep a seeded stratified subset of at most this many training
            (before the validation split) / test images.
        max_per_class: image-folder sources only: decode at most this many images per class and
            split (a quick look at a few hundred images without decoding 60,000).
        url: override the download URL (CIFAR-10: the archive; Fashion-MNIST: the base URL);
            also ``MIRRORATTN_CIFAR10_URL`` / ``MIRRORATTN_FASHION_MNIST_URL``.
        workers: processes for decoding JPEG folders (first load only).
        progress: show a progress bar while downloading.
        official: whether the copy must be the complete official data set (5,000 train and 1,000
            test images per class for CIFAR-10, 6,000 / 1,000 for Fashion-MNIST). ``None``
            decides from the source: the official CIFAR-10 archive or ``cifar-10-batches-py``
            folder, class folders named only with CIFAR-10 classes, Debian's Fashion-MNIST or a
            Fashion-MNIST copy of 60,000 training images. Every class must have train and test
            images in any case.
        image_size: resize every image to ``image_size`` x ``image_size`` (:func:`resize_images`).
            Image folders are resized as they are decoded (so their images may differ in size);
            None keeps the native size.
        test_fraction: image folders without ``test/`` (a single set of class folders): the
            seeded, stratified share of every class held out as the test split.

    Raises:
        DataNotFoundError: the data set is missing, corrupt or incomplete (the message says where
            we looked, what is missing and how to get it).
        ValueError: a bad argument.
    """
    key = dataset_kind(name, data_root)
    _check_load_args(val_fraction, test_fraction, max_train=max_train, max_test=max_test,
                     max_per_class=max_per_class, image_size=image_size)
    root = _data_root(data_root)
    if key == "folder":
        key, splits, classes, where, pool_hist = _load_folder(name, root, cache_dir, image_size, workers,
                                                              test_fraction, split_seed)
    else:
        splits, classes, where, pool_hist = _read_source(
            key, root, cache_dir, download, url, max_per_class, workers, progress, official
        )
    ds = _split(key, splits, tuple(classes), where, pool_hist, val_fraction, split_seed, max_train, max_test)
    return ds if image_size is None else resize_dataset(ds, image_size)


def _check_load_args(val_fraction: float, test_fraction: float, **positive: int | None) -> None:
    """``ValueError`` naming the first bad argument of :func:`load_vision_dataset`."""
    check_fraction(val_fraction, "val_fraction", allow_zero=True)
    check_fraction(test_fraction, "test_fraction")
    for arg, val in positive.items():
        check_int(val, arg, optional=True)


def _load_folder(name: str, root: Path, cache_dir: str | None, image_size: int | None, workers: int,
                 test_fraction: float, split_seed: int) -> tuple[str, dict[str, Arrays], Any, str, Any]:
    """(key, splits, classes, where, pool histogram) of an image folder or archive; without ``test/`` a seeded,
    stratified ``test_fraction`` of every class is held out as the test split."""
    source = image_folders.resolve_image_source(name, root)
    if source is None:
        raise DataNotFoundError(f"image folder {name!r} not found (looked at {Path(name).expanduser()} and "
                                f"{root / name}); give an existing folder or a .tar/.tar.gz/.zip archive of one")
    splits, classes, where, pool_hist = _read_folder(source, cache_dir, image_size, workers)
    if "test" not in splits:
        seed = int(np.random.SeedSequence([split_seed, 4]).generate_state(1)[0])
        splits, pool_hist = _hold_out_test(splits, classes, test_fraction, seed, where), None
    return image_folders.source_name(source), splits, classes, where, pool_hist


def _split(
    key: str, splits: dict[str, Arrays], classes: tuple[str, ...], source: str, pool_hist: np.ndarray | None,
    val_fraction: float, split_seed: int, max_train: int | None, max_test: int | None,
) -> VisionDataset:
    """Subsample (max_train, max_test), hold out the validation split (unless ``splits`` has one), statistics."""
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    if max_train is not None and max_train < len(train_y):
        keep, _ = _stratified_pick(train_y, max_train, split_seed)
        train_x, train_y = train_x[keep], train_y[keep]
        pool_hist = None
    if max_test is not None and max_test < len(test_y):
        keep, _ = _stratified_pick(test_y, max_test, split_seed + 1)
        test_x, test_y = test_x[keep], test_y[keep]
    test = ImageSplit(np.ascontiguousarray(test_x), np.asarray(test_y))
    if "val" in splits:  # a val/ folder: the validation split as given, the training split whole
        train, val = ImageSplit(np.ascontiguousarray(train_x), train_y), ImageSplit(*splits["val"])
        mean, std = stats_from_histogram(pool_hist) if pool_hist is not None else channel_stats(train.images)
        return VisionDataset(key, train, val, test, classes, mean, std, source)
    val_idx, tr_idx = _stratified_pick(train_y, _val_count(val_fraction, len(train_y), source), split_seed)
    train = ImageSplit(np.ascontiguousarray(train_x[tr_idx]), train_y[tr_idx])
    val = ImageSplit(np.ascontiguousarray(train_x[val_idx]), train_y[val_idx])
    if pool_hist is not None and len(val) < len(train):  # histogram(train) = histogram(pool) - histogram(val)
        hist = pool_hist - channel_histogram(val.images) if len(val) else pool_hist
        mean, std = stats_from_histogram(hist)
    else:
        mean, std = channel_stats(train.images)
    return VisionDataset(key, train, val, test, classes, mean, std, source)


def resize_dataset(ds: VisionDataset, size: int) -> VisionDataset:
    """The same data set with every image resized to ``size`` x ``size`` (see :func:`resize_images`)."""
    if ds.image_shape[1:] == (size, size):
        return ds
    splits = {
        s: ImageSplit(resize_images(getattr(ds, s).images, size), getattr(ds, s).labels)
        for s in ("train", "val", "test")
    }
    mean, std = channel_stats(splits["train"].images)
    return dataclasses.replace(ds, mean=mean, std=std, **splits)


# --------------------------------------------------------------------------- augmentation


def default_augmentation(name: str, image_size: int) -> dict[str, Any]:
    """The paper's augmentation for ``name`` at ``image_size``: ``{"padding": int, "flip": bool}``.

    CIFAR-10: padding 4 (at 32 or 48 pixels, as the paper) and flips. Others: padding scaled as
    4/32 of the image (3 for 28 pixels, 1 for 8) and no flip.
    """
    if name == "cifar10":
        return {"padding": 4, "flip": True}
    return {"padding": max(1, image_size * 4 // 32), "flip": False}


class RandomCropFlip:
    """Random crop with zero padding and random horizontal flip of a batch, as torchvision's
    ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` applied per image.

    Call with ``images`` (B, C, H, W) (uint8 or float) and a ``torch.Generator``; returns a new
    tensor of the same shape and dtype. Each image gets its own offsets (uniform in
    0..2*padding per axis) and its own flip (probability 1/2), drawn from the generator in a
    fixed order (offsets, then flips), so the same generator state gives the same batch.
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        check_int(padding, "padding", 0)
        self.padding, self.flip = int(padding), bool(flip)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, images: Any, generator: torch.Generator | None = None) -> Any:
        """Augment ``images`` (B, C, H, W); a tuple ``(images, *rest)`` (the training loop's
        ``augment(inputs, generator)`` convention) returns ``(augmented, *rest)``."""
        if isinstance(images, (tuple, list)):
            return (self._apply(images[0], generator), *images[1:])
        return self._apply(images, generator)

    def _apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        B, C, H, W = images.shape
        out = images
        if self.padding:
            p = self.padding
            offsets = torch.randint(0, 2 * p + 1, (B, 2), generator=generator).to(images.device)
            padded = F.pad(images, (p, p, p, p))
            rows = offsets[:, 0:1] + torch.arange(H, device=images.device)  # (B, H)
            cols = offsets[:, 1:2] + torch.arange(W, device=images.device)  # (B, W)
            b = torch.arange(B, device=images.device)[:, None, None]
            out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
            out = out.permute(0, 3, 1, 2).contiguous()
        if self.flip:
            flips = torch.rand(B, generator=generator).to(images.device) < 0.5
            if out is images:
                out = images.clone()
            out[flips] = out[flips].flip(-1)
        return out


__all__ = [
    "DATASETS",
    "ImageSplit",
    "RandomCropFlip",
    "VisionDataset",
    "channel_histogram",
    "channel_stats",
    "default_augmentation",
    "load_vision_dataset",
    "resize_dataset",
    "resize_images",
    "stats_from_histogram",
]
