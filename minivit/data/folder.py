"""Image-folder datasets: `root/<split>/<class>/*.jpg|png|...`, as torchvision's ImageFolder.

Classes are the sorted sub-folder names (for CIFAR-10 this is the official label order), files
are taken in sorted order, every 8-bit image is converted to RGB and all must share one size.
The splits must agree: train/ and test/ need the same class folders (label k must mean the same
class in both), none of them empty, and images of one size; a mismatch is an error naming both.

Decoding 60,000 JPEGs takes a while, so the decoded arrays are cached as an `.npz` keyed by a hash
of the file list with sizes and mtimes (see cache.py); the second load reads that file only.
Large trees are decoded in chunks by fresh worker processes (decode.py says why not threads and
not a fork of the user's program), with a tqdm bar.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cache import DataNotFoundError, cache_home, folder_key, load_arrays, save_arrays
from .decode import WorkerFailed, decode_chunk, decode_in_workers
from .loader import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
PARALLEL_MIN_FILES = 2000  # below this, starting workers costs more than it saves
CHUNK = 500


SPLITS = ("train", "test")  # the splits minivit reads; each is checked against the others present


def list_images(root, split: str):
    """Image files of root/split/<class>/, sorted by class then name.

    Returns (paths, entries, labels int64 (N,), classes) with entries[i] = (relative path, size,
    mtime_ns) for the cache key; os.scandir keeps listing 50,000 files well under a second.
    """
    base = Path(root) / split
    if Path(root).exists() and not Path(root).is_dir():
        raise DataNotFoundError(f"{root} is a file, not a folder (expected {root}/{split}/<class>/<images>)")
    if not base.is_dir():
        found = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise DataNotFoundError(f"no folder {base} (expected {root}/{split}/<class>/<images>; "
                                f"sub-folders of {root}: {found or 'none'})")
    classes = class_folders(base)
    paths, entries, labels, empty = [], [], [], []
    for k, c in enumerate(classes):
        items = sorted((e for e in os.scandir(base / c) if e.is_file() and not e.name.startswith(".")
                        and e.name.lower().endswith(IMAGE_EXTENSIONS)), key=lambda e: e.name)
        for e in items:
            st = e.stat()
            paths.append(e.path)
            entries.append((f"{c}/{e.name}", st.st_size, st.st_mtime_ns))
        labels += [k] * len(items)
        if not items:
            empty.append(c)
    if not paths:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {base}/<class>/")
    if empty:  # a class without examples cannot be learned, and would shift nothing but the head's size
        raise DataNotFoundError(f"class folder(s) {empty} in {base} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                "every class folder needs at least one (remove the empty ones)")
    return paths, entries, np.asarray(labels, np.int64), classes


def class_folders(base: Path) -> list[str]:
    """The sorted class sub-folder names of a split folder (hidden ones skipped)."""
    return sorted(d.name for d in os.scandir(base) if d.is_dir() and not d.name.startswith("."))


def _first_image(base: Path, classes: list[str]) -> str | None:
    """The first image file (in load order) under base/<class>/, without listing the whole split."""
    for c in classes:
        names = sorted(e.name for e in os.scandir(base / c) if e.is_file() and not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if names:
            return str(base / c / names[0])
    return None


def check_splits_agree(root, split: str, classes: list[str], image_shape: tuple) -> None:
    """ValueError if another split folder of root has other class folders or another image size."""
    for other in SPLITS:
        base = Path(root) / other
        if other == split or not base.is_dir():
            continue
        theirs = class_folders(base)
        if theirs != classes:
            only = [f"only in {s}/: {sorted(set(a) - set(b))}" for s, a, b in
                    ((split, classes, theirs), (other, theirs, classes)) if set(a) - set(b)]
            raise ValueError(f"{Path(root) / split} and {base} have different class folders (label k must name "
                             f"the same class in both): {'; '.join(only)}")
        first = _first_image(base, theirs)
        try:
            with Image.open(first) as im:
                size = im.size  # (W, H) from the header alone
        except (TypeError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # no image there, or a bad one: that split's own load says so, naming the file
        if (size[1], size[0]) != tuple(image_shape[:2]):
            raise ValueError(f"images in {Path(root) / split} are {image_shape[1]}x{image_shape[0]}, but {first} "
                             f"is {size[0]}x{size[1]}; train and test images must have one size")


def decode_all(paths: list[str], workers: int | None = None, desc: str = "decode") -> np.ndarray:
    """Decode files -> uint8 (N, H, W, 3), in worker processes when there are many, with a bar."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    workers = min(workers or min(os.cpu_count() or 1, 8), len(chunks))
    bar = tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=len(paths) < CHUNK)
    parts = None
    if workers > 1 and len(paths) >= PARALLEL_MIN_FILES:
        try:
            parts = decode_in_workers(chunks, workers, on_chunk=bar.update)
        except WorkerFailed as e:  # the same result, one process, slower
            warnings.warn(f"decoding in this process instead: {e}", RuntimeWarning, stacklevel=2)
            bar.reset()
    if parts is None:
        parts = []
        for chunk in chunks:
            parts.append(decode_chunk(chunk))
            bar.update(len(chunk))
    bar.close()
    for part, chunk in zip(parts[1:], chunks[1:]):  # chunks were checked inside, now across them
        if part.shape[1:] != parts[0].shape[1:]:
            raise ValueError(f"image {chunk[0]} has size {part.shape[2]}x{part.shape[1]}, but "
                             f"{chunks[0][0]} has {parts[0].shape[2]}x{parts[0].shape[1]}; "
                             "all images must be the same size")
    return np.concatenate(parts)


def _cached_images(cached, first: str, labels: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """The cached images if the cache file holds exactly this split (else None: decode again);
    `first` is the split's first image file, whose header gives the size the images must have."""
    if cached is None or not {"images", "labels", "classes"} <= set(cached):
        return None
    images = cached["images"]
    if not (images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == len(labels)
            and images.shape[3] == 3 and np.array_equal(cached["labels"], labels)
            and cached["classes"].tolist() == list(classes)):
        return None
    try:
        with Image.open(first) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # decoding names the bad file
    return images if images.shape[1:3] == (height, width) else None


def check_split_name(split: str) -> None:
    """ValueError unless split names one sub-folder (no path separators, not '.' or '..')."""
    if not isinstance(split, str) or split in ("", ".", "..") or "/" in split or os.sep in split:
        raise ValueError(f"split must be the name of a sub-folder such as 'train' or 'test', got {split!r}")


def load_folder(root, split: str = "train", name: str = "folder", cache_dir=None,
                use_cache: bool = True) -> Dataset:
    """Dataset of root/split/<class>/*; decoded arrays cached in cache_home(cache_dir)."""
    check_split_name(split)
    paths, entries, labels, classes = list_images(root, split)
    key = folder_key(root, split, entries)
    root = Path(root).resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{root.name}-{split}")
    path = cache_home(cache_dir) / f"{stem}-{key}.npz"
    images = _cached_images(load_arrays(path), paths[0], labels, classes) if use_cache else None
    if images is None:
        images = decode_all(paths, desc=f"decode {root.name}/{split}")
        if use_cache:
            save_arrays(path, images=images, labels=labels, classes=np.asarray(classes, dtype=str))
    check_splits_agree(root, split, classes, images.shape[1:])
    return Dataset(images, labels, classes, name, {"root": str(root), "split": split, "cache": str(path)})
