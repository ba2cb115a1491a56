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
from pathlib import Path

import numpy as np

from .. import npz


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
    # surrogateescape: file names that are not UTF-8 hash as their raw bytes instead of failing
    h = hashlib.sha256(f"{Path(root).resolve()}\0{split}\0".encode("utf-8", "surrogateescape"))
    h.update("\n".join(f"{rel}\0{size}\0{mtime}" for rel, size, mtime in sorted(entries))
             .encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write the arrays to an .npz at `path`, atomically (minivit.npz.write)."""
    npz.write(path, arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read an .npz written by save_arrays (never unpickles); None if absent or unreadable.

    The caller checks what it holds against what it expects: a crafted or stale file is a miss,
    and a damaged one too: the caller decodes again and overwrites it.
    """
    try:
        return npz.read(path)
    except ValueError:
        return None
