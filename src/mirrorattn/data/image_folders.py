"""Image data sets of your own in torchvision's ``ImageFolder`` layout: a folder, or a .tar/.tar.gz/.zip of one.

Layouts (one leading folder shared by every image is skipped, as archives usually hold ``name/...``):

* **split**: ``train/<class>/...``, ``test/<class>/...`` and optionally ``val/<class>/...`` (also
  ``valid/`` or ``validation/``). Without ``test/``, ``val/`` is the test split (ImageNet's
  ``train/`` + ``val/`` layout); with ``train/`` alone the training images are split as below.
* **single set**: ``<class>/...`` directly: :func:`mirrorattn.data.vision.load_vision_dataset`
  holds out a seeded, stratified ``test_fraction`` of every class as the test split.

As ``ImageFolder``: class names are the class folders' names, sorted (label ``i`` is the ``i``-th);
images may lie deeper inside a class folder; files of other types and hidden files (``.name``) are
skipped, as are images outside class folders. Image files: PNG, JPEG, BMP, PPM/PGM, TIFF, WebP.

Modes: a data set whose images are all grayscale (Pillow modes ``1``, ``L``, ``LA``, ``I``, ``F``)
becomes one channel; otherwise every image is converted to RGB (grayscale ones replicated, alpha
dropped), as torchvision's default loader does - so a set mixing both is RGB, never an error.
Sizes: with ``image_size`` every image is resized to ``image_size`` x ``image_size`` right after
decoding (:func:`mirrorattn.data.vision.resize_images`, antialiased bilinear, as the built-in
sets); without it all images must share one size.

Archive members are read in memory with the caps of :mod:`mirrorattn.data.archives` (never
extracted; names are only matched). Problems of the data raise
:class:`~mirrorattn.data.paths.DataError` (a ``ValueError``) in one line naming the folder or file
and what to do; a missing path or a damaged archive raises
:class:`~mirrorattn.data.paths.DataNotFoundError`.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Union

import numpy as np

from mirrorattn.data.archives import archive_errors, iter_tar_files, read_zip_files
from mirrorattn.data.paths import DataError, DataNotFoundError

#: torchvision's ``IMG_EXTENSIONS``
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
#: split folder name -> split
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

Arrays = tuple[np.ndarray, np.ndarray]
#: (split, class, shown name, bytes or path to read)
Entry = tuple[str, str, str, Union[bytes, Path]]


def looks_like_path(name: str) -> bool:
    """Whether a ``--dataset`` value names a path rather than a built-in data set."""
    return os.sep in name or "/" in name or name.startswith((".", "~")) or name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_image_source(name: str | os.PathLike, root: Path) -> Path | None:
    """The folder or archive ``name`` names: as given, then relative to the data root ``root``; None if neither."""
    raw = Path(name).expanduser()
    for cand in ([raw] if raw.is_absolute() else [raw, root / raw]):
        if cand.is_dir() or (cand.is_file() and cand.name.lower().endswith(ARCHIVE_SUFFIXES)):
            return cand
    return None


def source_name(source: Path) -> str:
    """A data set's name from its folder or archive: ``shapes.tar.gz`` -> ``shapes``."""
    low = source.name.lower()
    cut = next((len(x) for x in ARCHIVE_SUFFIXES if source.is_file() and low.endswith(x)), 0)
    return source.name[: len(source.name) - cut] or source.name


def _wanted(parts: tuple[str, ...]) -> bool:
    return parts[-1].lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in parts)


def _member_parts(name: str) -> tuple[str, ...]:
    """An archive member's name as clean parts (``..``, ``.`` and a leading ``/`` dropped: names are only matched)."""
    return tuple(p for p in PurePosixPath(name).parts if p not in ("/", ".", ".."))


def _list_source(source: Path) -> tuple[list[tuple[tuple[str, ...], bytes | Path]], set[tuple[str, ...]]]:
    """(image files as (parts, bytes or path), folders as parts) of a folder or an archive."""
    if source.is_dir():
        files, folders = [], set()
        for path in sorted(source.rglob("*")):
            parts = path.relative_to(source).parts
            if path.is_dir() and not any(p.startswith(".") for p in parts):
                folders.add(parts)
            elif path.is_file() and _wanted(parts):
                files.append((parts, path))
        return files, folders

    def want(name: str) -> bool:
        parts = _member_parts(name)
        return bool(parts) and _wanted(parts)

    with archive_errors(source):
        if source.name.lower().endswith(".zip"):
            members = read_zip_files(source, want).items()
        else:
            members = iter_tar_files(source, want)
        files = sorted((_member_parts(n), raw) for n, raw in members)
    return files, set()


def _strip_common(files: list, folders: set[tuple[str, ...]]) -> tuple[list, set]:
    """Drop leading folders shared by every image (``name/train/...`` -> ``train/...``)."""
    depth = 0
    while files and all(len(p) >= depth + 3 for p, _ in files):
        heads = {p[depth] for p, _ in files}
        if len(heads) != 1 or next(iter(heads)).lower() in SPLIT_FOLDERS:
            break
        depth += 1
    return [(p[depth:], d) for p, d in files], {f[depth:] for f in folders if len(f) > depth}


def list_entries(source: Path) -> tuple[list[Entry], dict[str, set[str]], bool]:
    """Every image of ``source`` as (split, class, name, data), each split's class folders (empty ones too),
    and whether the layout has split folders.

    Split is ``"train"``, ``"val"`` or ``"test"``; a single set of class folders is all ``"train"``.
    """
    files, folders = _strip_common(*_list_source(source))
    tops = {p[0] for p, _ in files if len(p) >= 2}
    split_tops = {t for t in tops if t.lower() in SPLIT_FOLDERS}
    if not tops:
        raise DataError(
            f"{source}: no images in class folders (looked for {', '.join(IMAGE_SUFFIXES)} files in "
            "<class>/ or train/<class>/ and test/<class>/ folders); put each class's images in a folder named after it"
        )
    if split_tops and split_tops != tops:
        raise DataError(
            f"{source}: found split folders ({', '.join(sorted(split_tops))}) beside other folders "
            f"({', '.join(sorted(tops - split_tops))}); use either train/<class>/ and test/<class>/ "
            "or only class folders"
        )
    if len({SPLIT_FOLDERS[t.lower()] for t in split_tops}) != len(split_tops):
        raise DataError(f"{source}: two folders of one split ({', '.join(sorted(split_tops))}); keep one of them")
    level = 1 if split_tops else 0
    entries: list[Entry] = []
    classes: dict[str, set[str]] = {}
    for parts, data in files:
        if len(parts) < level + 2:
            continue  # an image outside a class folder (ImageFolder skips it too)
        split = SPLIT_FOLDERS[parts[0].lower()] if level else "train"
        classes.setdefault(split, set()).add(parts[level])
        entries.append((split, parts[level], "/".join(parts), data))
    for f in folders:
        if len(f) == level + 1 and (not level or f[0].lower() in SPLIT_FOLDERS):
            classes.setdefault(SPLIT_FOLDERS[f[0].lower()] if level else "train", set()).add(f[level])
    return entries, classes, bool(level)


def _folder_names(split_layout: bool) -> dict[str, str]:
    """How a split's folder is named in messages: ``"train/"`` or, for a single set of class folders, ``""``."""
    return {s: f"{s}/" if split_layout else "" for s in ("train", "val", "test")}


def check_classes(
    source: Path, entries: list[Entry], classes: dict[str, set[str]], split_layout: bool = True
) -> tuple[str, ...]:
    """The sorted class names; DataError for an empty class, a lone class, or classes differing between splits."""
    counts: dict[tuple[str, str], int] = {}
    for split, cls, _, _ in entries:
        counts[split, cls] = counts.get((split, cls), 0) + 1
    shown = _folder_names(split_layout)
    for split in ("train", "val", "test"):
        empty = sorted(c for c in classes.get(split, ()) if (split, c) not in counts)
        if empty:
            more = f" (nor {', '.join(empty[1:4])}/)" if len(empty) > 1 else ""
            raise DataError(f"{source}: class folder {shown[split]}{empty[0]}/ holds no images (.png, .jpg ...)"
                            f"{more}; add images or remove the folder")
    if "train" not in classes:
        raise DataError(f"{source}: no train/ folder beside {', '.join(s + '/' for s in sorted(classes))}; "
                        "the training images go in train/<class>/")
    train = sorted(classes["train"])
    if len(train) < 2:
        raise DataError(f"{source}: only one class ({train[0]!r}); a classifier needs at least two class folders")
    if "test" in classes:
        missing = sorted(set(train) - classes["test"])
        if missing:
            more = f" (nor {', '.join(missing[1:4])})" if len(missing) > 1 else ""
            raise DataError(f"{source}: class {missing[0]!r} has images in train/ but none in test/{more}; every "
                            f"class needs test images: add some under test/{missing[0]}/ or remove the class")
    for split in ("val", "test"):
        extra = sorted(classes.get(split, set()) - set(train))
        if extra:
            raise DataError(f"{source}: class {extra[0]!r} has images in {split}/ but none in train/; "
                            f"add training images under train/{extra[0]}/ or remove {split}/{extra[0]}/")
    return tuple(train)


def decode_image(data: bytes | Path, name: str, size: int | None = None) -> np.ndarray:
    """One image file as ``uint8 (C, H, W)``: C = 1 for grayscale modes, 3 (RGB) otherwise; resized to ``size``.

    Raises DataError naming ``name`` if Pillow cannot read it (or it is a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        raw = data.read_bytes() if isinstance(data, Path) else data
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                gray = im.mode in GRAY_MODES
                arr = np.array(im.convert("L" if gray else "RGB"), dtype=np.uint8)  # a writable copy
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on a damaged image
        why = "not an image format Pillow knows" if isinstance(exc, UnidentifiedImageError) else \
            f"{type(exc).__name__}: {exc}"
        raise DataError(f"{name}: cannot read this image ({why}); replace or remove the file") from None
    arr = arr[None] if gray else arr.transpose(2, 0, 1)
    if size is not None and arr.shape[1:] != (size, size):
        from mirrorattn.data.vision import resize_images

        arr = resize_images(arr[None], size)[0]
    return np.ascontiguousarray(arr)


def _decode_chunk(items: list[tuple[bytes | Path, str]], size: int | None) -> list[np.ndarray]:
    return [decode_image(d, n, size) for d, n in items]


def _decode_all(source: Path, entries: list[Entry], size: int | None, workers: int) -> list[np.ndarray]:
    items = [(data, f"{source}/{name}" if source.is_dir() else f"{source}, member {name}")
             for _, _, name, data in entries]
    if workers <= 1 or len(items) < 256:
        return _decode_chunk(items, size)
    chunks = [items[i: i + 500] for i in range(0, len(items), 500)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [a for part in pool.map(_decode_chunk, chunks, [size] * len(chunks)) for a in part]


def _one_size(source: Path, images: list[np.ndarray], names: list[str]) -> None:
    """DataError unless every image has one height and width."""
    sizes: dict[tuple[int, int], str] = {}
    for a, n in zip(images, names):
        sizes.setdefault(a.shape[1:], n)
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w} ({n})" for (h, w), n in list(sizes.items())[:3])
        raise DataError(f"{source}: images of different sizes, e.g. {shown} (height x width); pass --image-size N "
                        "(image_size) to resize every image to N x N")


def read_image_folders(
    source: str | os.PathLike, *, image_size: int | None = None, workers: int = 1
) -> tuple[dict[str, Arrays], tuple[str, ...]]:
    """Decode an image folder (or archive of one): ``({split: (uint8 (N, C, H, W), int64 (N,))}, class names)``.

    Splits: ``"train"`` always, ``"test"`` and ``"val"`` when the layout has them (see the module
    docstring). Images are ordered by (class, path), so the result does not depend on the
    archive's member order. ``workers > 1`` decodes in a process pool.
    """
    source = Path(source)
    if not source.exists():
        raise DataNotFoundError(f"{source} does not exist")
    entries, class_sets, split_layout = list_entries(source)
    if "test" not in class_sets and "val" in class_sets:  # ImageNet's train/ + val/: val is the test split
        entries = [("test" if s == "val" else s, c, n, d) for s, c, n, d in entries]
        class_sets["test"] = class_sets.pop("val")
    classes = check_classes(source, entries, class_sets, split_layout)
    index = {c: i for i, c in enumerate(classes)}
    entries.sort(key=lambda e: (e[0], index[e[1]], e[2]))
    images = _decode_all(source, entries, image_size, workers)
    names = [n for _, _, n, _ in entries]
    _one_size(source, images, names)
    rgb = len({a.shape[0] for a in images}) > 1  # colour and grayscale mixed: everything RGB, as torchvision
    out: dict[str, Arrays] = {}
    for split in ("train", "val", "test"):
        rows = [i for i, e in enumerate(entries) if e[0] == split]
        if rows:
            stack = np.stack([np.repeat(images[i], 3, axis=0) if rgb and images[i].shape[0] == 1 else images[i]
                              for i in rows])
            out[split] = (stack, np.array([index[entries[i][1]] for i in rows], dtype=np.int64))
            for i in rows:
                images[i] = None  # type: ignore[call-overload]  # free as we go
    return out, classes


__all__ = [
    "ARCHIVE_SUFFIXES",
    "GRAY_MODES",
    "IMAGE_SUFFIXES",
    "SPLIT_FOLDERS",
    "check_classes",
    "decode_image",
    "list_entries",
    "looks_like_path",
    "read_image_folders",
    "resolve_image_source",
    "source_name",
]
