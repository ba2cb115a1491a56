"""Image-folder datasets: `root/<split>/<class>/*.jpg|png|...`, as torchvision's ImageFolder.

Classes are the sorted sub-folder names (for CIFAR-10 this is the official label order), files
are taken in sorted order, every image is converted to RGB and all must share one size.

Decoding 60,000 JPEGs takes a while, so the decoded arrays are cached as an `.npz` keyed by a hash
of the file list with sizes and mtimes (see cache.py); the second load reads that file only.
Large trees are decoded by a process pool in chunks (one result array per chunk keeps the
inter-process traffic low), with a tqdm bar.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cache import DataNotFoundError, cache_home, folder_key, load_arrays, save_arrays
from .loader import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
PARALLEL_MIN_FILES = 2000  # below this a pool costs more to start than it saves
CHUNK = 500


def decode_image(path) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB; ValueError naming the file if it cannot be read."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports bad data as any of these
        raise ValueError(f"cannot decode image {path}: {e}") from e


def _decode_chunk(paths: list[str]) -> np.ndarray:
    """Decode and stack equal-sized images -> uint8 (n, H, W, 3), else ValueError naming a file."""
    first = decode_image(paths[0])
    out = np.empty((len(paths),) + first.shape, np.uint8)  # (n, H, W, 3)
    out[0] = first
    for i, p in enumerate(paths[1:], 1):
        img = decode_image(p)
        if img.shape != first.shape:
            raise ValueError(f"image {p} has size {img.shape[1]}x{img.shape[0]}, but {paths[0]} has "
                             f"{first.shape[1]}x{first.shape[0]}; all images must be the same size")
        out[i] = img
    return out


def list_images(root, split: str):
    """Image files of root/split/<class>/, sorted by class then name.

    Returns (paths, entries, labels int64 (N,), classes) with entries[i] = (relative path, size,
    mtime_ns) for the cache key; os.scandir keeps listing 50,000 files well under a second.
    """
    base = Path(root) / split
    if not base.is_dir():
        found = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise DataNotFoundError(f"no folder {base} (expected {root}/{split}/<class>/<images>; "
                                f"sub-folders of {root}: {found or 'none'})")
    classes = sorted(d.name for d in os.scandir(base) if d.is_dir() and not d.name.startswith("."))
    paths, entries, labels = [], [], []
    for k, c in enumerate(classes):
        items = sorted((e for e in os.scandir(base / c) if e.is_file() and not e.name.startswith(".")
                        and e.name.lower().endswith(IMAGE_EXTENSIONS)), key=lambda e: e.name)
        for e in items:
            st = e.stat()
            paths.append(e.path)
            entries.append((f"{c}/{e.name}", st.st_size, st.st_mtime_ns))
        labels += [k] * len(items)
    if not paths:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {base}/<class>/")
    return paths, entries, np.asarray(labels, np.int64), classes


def decode_all(paths: list[str], workers: int | None = None, desc: str = "decode") -> np.ndarray:
    """Decode files -> uint8 (N, H, W, 3), in a process pool when there are many, with a bar."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=len(paths) < CHUNK)
    parts = None
    if workers > 1 and len(paths) >= PARALLEL_MIN_FILES:
        try:
            parts = []
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(_decode_chunk, chunks):
                    parts.append(part)
                    bar.update(len(part))
        except (OSError, BrokenProcessPool):  # no working process pool here: decode in-process
            parts = None
            bar.reset()
    if parts is None:
        parts = []
        for chunk in chunks:
            parts.append(_decode_chunk(chunk))
            bar.update(len(chunk))
    bar.close()
    for part, chunk in zip(parts[1:], chunks[1:]):  # chunks were checked inside, now across them
        if part.shape[1:] != parts[0].shape[1:]:
            raise ValueError(f"image {chunk[0]} has size {part.shape[2]}x{part.shape[1]}, but "
                             f"{chunks[0][0]} has {parts[0].shape[2]}x{parts[0].shape[1]}; "
                             "all images must be the same size")
    return np.concatenate(parts)


def load_folder(root, split: str = "train", name: str = "folder", cache_dir=None,
                use_cache: bool = True) -> Dataset:
    """Dataset of root/split/<class>/*; decoded arrays cached in cache_home(cache_dir)."""
    paths, entries, labels, classes = list_images(root, split)
    key = folder_key(root, split, entries)
    root = Path(root).resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)
    path = cache_home(cache_dir) / f"{stem}-{split}-{key}.npz"
    cached = load_arrays(path) if use_cache else None
    if cached is not None and len(cached.get("labels", ())) == len(paths):
        images = cached["images"]
    else:
        images = decode_all(paths, desc=f"decode {root.name}/{split}")
        if use_cache:
            save_arrays(path, images=images, labels=labels, classes=np.asarray(classes, dtype=str))
    return Dataset(images, labels, classes, name, {"root": str(root), "split": split, "cache": str(path)})
