"""Readers for the raw image data sets: CIFAR-10 (pickle archive or class-named image folders),
Fashion-MNIST (gzipped IDX files) and scikit-learn's 8x8 digits.

Every reader returns plain NumPy arrays: images ``uint8 (N, C, H, W)`` with values 0..255 and
labels ``int64 (N,)``. Nothing here caches or splits; :mod:`mirrorattn.data.vision` does that.
Corrupt or unexpected files raise :class:`~mirrorattn.data.paths.DataNotFoundError` with a
message saying which file and what was wrong.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mirrorattn.data.archives import READ_ERRORS, archive_errors, iter_tar_files, open_tar_stream, read_maybe_gzip
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.safe_pickle import load_plain

#: CIFAR-10 class names in the official label order (also the alphabetical order of the folders)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: the official CIFAR-10 Python archive and its MD5 (as torchvision publishes it)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: official Fashion-MNIST files and their MD5s (torchvision's resource list)
FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
Arrays = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- CIFAR-10 pickle


def _unpickle(raw: bytes, where: str) -> dict:
    """A CIFAR-10 batch's dict (keys decoded to str), read with the restricted unpickler (no code runs)."""
    obj = load_plain(raw, where)
    if not isinstance(obj, dict):
        raise DataNotFoundError(f"{where}: expected a dict in the CIFAR-10 pickle batch, got {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batch(raw: bytes, where: str) -> Arrays:
    d = _unpickle(raw, where)
    if "data" not in d or "labels" not in d:
        raise DataNotFoundError(f"{where}: CIFAR-10 batch lacks 'data' or 'labels' (keys: {sorted(d)})")
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise DataNotFoundError(f"{where}: CIFAR-10 batch data or labels are not numbers; download it again") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataNotFoundError(
            f"{where}: CIFAR-10 batch has data of shape {data.shape} and {labels.shape[0]} labels; "
            "expected (N, 3072) rows of 32x32 RGB and N labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DataNotFoundError(f"{where}: CIFAR-10 labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10_pickle(source: str | os.PathLike) -> tuple[dict[str, Arrays], tuple[str, ...]]:
    """Read the official ``cifar-10-python.tar.gz`` (or its extracted ``cifar-10-batches-py`` folder).

    Returns ``({"train": (images, labels), "test": (images, labels)}, class_names)`` with images
    ``uint8 (N, 3, 32, 32)``: 50,000 train (``data_batch_1..5`` in order) and 10,000 test.
    """
    source = Path(source)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    raws: dict[str, bytes] = {}
    if source.is_dir():
        folder = source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
        for n in names:
            f = folder / n
            if not f.is_file():
                raise DataNotFoundError(f"{folder}: CIFAR-10 batch file {n} is missing")
            raws[n] = f.read_bytes()
    else:
        try:
            for name, raw in iter_tar_files(source, lambda n: n.rsplit("/", 1)[-1] in names):
                raws[name.rsplit("/", 1)[-1]] = raw
        except DataNotFoundError:
            raise
        except READ_ERRORS as exc:
            raise DataNotFoundError(
                f"{source}: cannot read the CIFAR-10 archive ({exc}); delete it and download it again"
            ) from None
        missing = [n for n in names if n not in raws]
        if missing:
            raise DataNotFoundError(f"{source}: not the CIFAR-10 Python archive (missing {', '.join(missing)})")
    meta = _unpickle(raws["batches.meta"], f"{source}:batches.meta")
    names = meta.get("label_names", CIFAR10_CLASSES)
    if not isinstance(names, (list, tuple)) or len(names) != 10 or not all(isinstance(c, (bytes, str)) for c in names):
        raise DataNotFoundError(f"{source}:batches.meta: label_names is not a list of 10 class names")
    classes = tuple(c.decode("latin-1") if isinstance(c, bytes) else c for c in names)
    train = [_cifar_batch(raws[f"data_batch_{i}"], f"{source}:data_batch_{i}") for i in range(1, 6)]
    test = _cifar_batch(raws["test_batch"], f"{source}:test_batch")
    out = {
        "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        "test": test,
    }
    return out, classes


# --------------------------------------------------------------------------- completeness

#: images per class in each official split
OFFICIAL_PER_CLASS: dict[str, dict[str, int]] = {
    "cifar10": {"train": 5000, "test": 1000},
    "fashion-mnist": {"train": 6000, "test": 1000},
}


def check_splits(
    splits: dict[str, Arrays],
    classes: tuple[str, ...],
    where: str,
    per_class: dict[str, int] | None = None,
    expected_classes: tuple[str, ...] | None = None,
) -> None:
    """Raise :class:`DataNotFoundError` unless every class has images in both splits.

    With ``per_class`` ({split: count}) every class must have exactly that many images in that
    split, and with ``expected_classes`` every one of those classes must be there: the checks of
    a copy that claims to be the complete official data set (a truncated archive fails them).
    """
    if expected_classes is not None:
        missing = [c for c in expected_classes if c not in classes]
        if missing:
            raise DataNotFoundError(f"{where}: classes {', '.join(missing)} are missing (found {len(classes)} of "
                                    f"{len(expected_classes)}); the copy is incomplete: replace it with a complete one")
    for split in ("train", "test"):
        counts = np.bincount(splits[split][1], minlength=len(classes))[: len(classes)]
        want = (per_class or {}).get(split)
        bad = [(classes[i], int(n)) for i, n in enumerate(counts) if (n == 0 if want is None else n != want)]
        if bad:
            shown = ", ".join(f"{c} {n}" for c, n in bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            raise DataNotFoundError(
                f"{where}: the {split} split is incomplete, images per class: {shown} (expected "
                f"{'at least 1' if want is None else want} each); the copy is truncated or damaged: replace it "
                "with a complete copy"
            )


# --------------------------------------------------------------------------- class-named image folders


def _decode(raw: bytes) -> np.ndarray:
    """Decode one image file's bytes to ``uint8 (3, H, W)`` RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _decode_many(raws: list[bytes]) -> list[np.ndarray]:
    return [_decode(r) for r in raws]


def _split_member(name: str) -> tuple[str, str] | None:
    """``.../{train,test}/{class}/file.jpg`` -> (split, class); None for anything else."""
    parts = name.strip("/").split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(_IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    split, cls = parts[-3], parts[-2]
    if split not in ("train", "test"):
        return None
    return split, cls


def _iter_folder_files(source: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """Yield (split, class, file name, bytes) from a tarball or folder of ``{train,test}/{class}/*.jpg``."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                key = _split_member(path.relative_to(source).as_posix())
                if key:
                    yield key[0], key[1], path.name, path.read_bytes()
        return
    with archive_errors(source):
        for name, raw in iter_tar_files(source, lambda n: _split_member(n) is not None):
            split, cls = _split_member(name)  # type: ignore[misc]
            yield split, cls, name.rsplit("/", 1)[-1], raw


def read_image_folder(
    source: str | os.PathLike,
    *,
    max_per_class: int | None = None,
    workers: int = 1,
    chunk: int = 2000,
) -> tuple[dict[str, Arrays], tuple[str, ...]]:
    """Read ``{train,test}/{class}/*.jpg|png`` from a folder or a (gzipped) tarball.

    Class names are the folder names, sorted (for CIFAR-10 this is the official label order).
    Images are decoded with Pillow to RGB ``uint8 (N, 3, H, W)``; all must share one size.
    ``max_per_class`` keeps only the first files of each (split, class) met in the archive (for
    tests and quick looks). ``workers > 1`` decodes in a process pool. Images come out sorted
    by (class, file name), so the result does not depend on the archive's member order.
    """
    source = Path(source)
    if not source.exists():
        raise DataNotFoundError(f"{source} does not exist")
    entries: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    counts: dict[tuple[str, str], int] = {}
    for split, cls, fname, raw in _iter_folder_files(source):
        n = counts.get((split, cls), 0)
        if max_per_class is not None and n >= max_per_class:
            continue
        counts[(split, cls)] = n + 1
        entries[split].append((cls, fname, raw))
    for items in entries.values():
        items.sort(key=lambda e: (e[0], e[1]))
    classes = tuple(sorted({c for (_, c) in counts}))
    if not entries["train"] or not entries["test"]:
        raise DataNotFoundError(
            f"{source}: no images found in train/<class>/ and test/<class>/ folders "
            f"(found {len(entries['train'])} train, {len(entries['test'])} test)"
        )
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, Arrays] = {}
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for split, items in entries.items():
            raws = [r for (_, _, r) in items]
            if pool is not None:
                chunks = [raws[i : i + chunk] for i in range(0, len(raws), chunk)]
                decoded: Iterable[np.ndarray] = (a for part in pool.map(_decode_many, chunks) for a in part)
            else:
                decoded = (_decode(r) for r in raws)
            try:
                imgs = list(decoded)
            except Exception as exc:  # noqa: BLE001 - PIL raises many types on a corrupt image
                raise DataNotFoundError(f"{source}: an image in {split}/ cannot be decoded ({exc})") from None
            shapes = {a.shape for a in imgs}
            if len(shapes) != 1:
                raise DataNotFoundError(f"{source}: images in {split}/ have different sizes {sorted(shapes)[:4]}")
            out[split] = (np.stack(imgs), np.array([index[c] for (c, _, _) in items], dtype=np.int64))
    finally:
        if pool is not None:
            pool.shutdown()
    return out, classes


def is_cifar_pickle_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is a tarball holding ``cifar-10-batches-py/data_batch_1`` (checks the first members)."""
    try:
        with open_tar_stream(path) as tf:
            for i, m in enumerate(tf):
                if m.name.rsplit("/", 1)[-1] in ("data_batch_1", "batches.meta", "test_batch"):
                    return True
                if i > 20:
                    return False
    except READ_ERRORS:
        return False
    return False


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


def parse_idx(raw: bytes, where: str = "IDX data") -> np.ndarray:
    """Parse an IDX file's bytes (already un-gzipped): magic ``00 00 TYPE NDIM``, NDIM big-endian int32 sizes, data.

    Raises :class:`DataNotFoundError` on a bad magic number, unknown type code or wrong length.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataNotFoundError(f"{where}: bad IDX magic number {raw[:4].hex() or '(empty)'}; expected 0000TTNN")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataNotFoundError(f"{where}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataNotFoundError(f"{where}: IDX header is truncated or has 0 dimensions")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(raw) - 4 - 4 * ndim
    if payload != expected:
        raise DataNotFoundError(
            f"{where}: IDX header says shape {shape} ({expected} bytes) but the file holds {payload}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_file(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz``) or not."""
    path = Path(path)
    try:
        raw = read_maybe_gzip(path)
    except DataNotFoundError:
        raise
    except READ_ERRORS as exc:
        raise DataNotFoundError(f"{path}: cannot read ({exc}); replace it with a good copy") from None
    return parse_idx(raw, str(path))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def read_fashion_mnist(folder: str | os.PathLike) -> dict[str, Arrays]:
    """Read the four Fashion-MNIST IDX files (gzipped or not) from ``folder``.

    Returns ``{"train": (uint8 (60000, 1, 28, 28), int64), "test": (... 10000 ...)}``.
    """
    folder = Path(folder)
    out: dict[str, Arrays] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        paths = [_find_idx(folder, f"{prefix}-{kind}-idx{nd}-ubyte") for kind, nd in (("images", 3), ("labels", 1))]
        if paths[0] is None or paths[1] is None:
            raise DataNotFoundError(
                f"{folder}: {prefix}-images-idx3-ubyte(.gz) or {prefix}-labels-idx1-ubyte(.gz) missing"
            )
        images, labels = read_idx_file(paths[0]), read_idx_file(paths[1])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataNotFoundError(
                f"{paths[0]}: expected uint8 images of 3 dimensions, got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataNotFoundError(f"{paths[1]}: {labels.shape} labels for {images.shape[0]} images")
        if labels.size and labels.max() >= 10:
            raise DataNotFoundError(f"{paths[1]}: labels outside 0..9")
        out[split] = (np.ascontiguousarray(images[:, None]), labels.astype(np.int64))
    return out


# --------------------------------------------------------------------------- scikit-learn digits


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, 16 gray levels 0..16) as ``uint8 (N, 1, 8, 8)`` in 0..255.

    The 17 levels v are mapped to round(v * 255 / 16), so no information is lost.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    return images[:, None], np.asarray(d.target, dtype=np.int64)


__all__ = [
    "OFFICIAL_PER_CLASS",
    "CIFAR10_ARCHIVE",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_URL",
    "check_splits",
    "is_cifar_pickle_archive",
    "parse_idx",
    "read_cifar10_pickle",
    "read_digits",
    "read_fashion_mnist",
    "read_idx_file",
    "read_image_folder",
]
