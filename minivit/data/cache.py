"""Where data lives on disk: the download folder, and the cache of decoded image arrays.

- `data_home()`: downloaded archives and extracted datasets. `$MINIVIT_DATA`, else
  `$XDG_CACHE_HOME/minivit`, else `~/.cache/minivit`.
- `cache_home(cache_dir)`: decoded arrays of image-folder splits, as `.npz` files (no pickle).
  The `cache_dir` argument, else `$MINIVIT_CACHE`, else `data_home() / "decoded"`.
- `folder_key(...)`: a hash of what the decoded arrays depend on (absolute root, split, and every
  file's relative path, size and mtime), so any change to the tree misses the cache.
- Writes are atomic (temp file in the same folder + `os.replace`): a crash mid-write never
  leaves a half-written cache that a later run would trust.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found (and none could be downloaded)."""


def data_home() -> Path:
    """Folder for downloaded datasets: $MINIVIT_DATA, else $XDG_CACHE_HOME/minivit or ~/.cache/minivit."""
    if os.environ.get("MINIVIT_DATA"):
        return Path(os.environ["MINIVIT_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minivit"


def cache_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder for decoded-array caches: `cache_dir`, else $MINIVIT_CACHE, else data_home()/decoded."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("MINIVIT_CACHE"):
        return Path(os.environ["MINIVIT_CACHE"]).expanduser()
    return data_home() / "decoded"


def folder_key(root, split: str, entries: list[tuple[str, int, int]]) -> str:
    """sha256 over (absolute root, split, each file's (relative path, size, mtime_ns)), sorted."""
    h = hashlib.sha256(f"{Path(root).resolve()}\0{split}\0".encode())
    h.update("\n".join(f"{rel}\0{size}\0{mtime}" for rel, size, mtime in sorted(entries)).encode())
    return h.hexdigest()[:20]


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to a temp file beside `path`, then atomically rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read an .npz written by save_arrays (never unpickles); None if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache is just a miss: the caller decodes again and overwrites it
