"""CIFAR-10 (Krizhevsky, 2009): the official python batches, an image-folder copy, or a download.

Lookup order for `load_cifar10(root, split)`:
  (a) official python batches: `root` is `cifar-10-batches-py` or its parent. Each batch is a
      pickled dict (the official format; the only pickle minivit reads, through the restricted
      unpickler of safe_unpickle.py, so a crafted batch cannot run code) with b"data" uint8
      (10000, 3072), each row the 1024 red, then green, then blue pixels of a 32x32 image (CHW),
      and b"labels" (ints 0..9); batches.meta holds b"label_names".
  (b) an image-folder tree `root/train/<class>/*`, `root/test/<class>/*` (folder.py).
  (c) `root=None`: `data_home()/cifar-10-batches-py`, downloaded there first if absent and
      `download=True`: URL -> temp file (tqdm bar) -> md5 check -> safe extract -> atomic rename.
Nothing found -> DataNotFoundError listing the three ways to provide the data.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cache import DataNotFoundError, data_home
from .folder import load_folder
from .loader import Dataset
from .safe_unpickle import load_batch_pickle

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _unpickle(path: Path) -> dict:
    """One official batch file as a dict (bytes keys); ValueError naming a bad or unsafe file."""
    d = load_batch_pickle(path)
    if not isinstance(d, dict):
        raise ValueError(f"corrupt CIFAR-10 batch file {path}: expected a dict, got {type(d).__name__}")
    return d


def read_batch(path: Path, num_classes: int = len(CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (n, 32, 32, 3) HWC, labels int64 (n,) in 0..num_classes-1."""
    d = _unpickle(path)
    missing = [k for k in (b"data", b"labels") if k not in d]
    if missing:
        raise ValueError(f"corrupt CIFAR-10 batch file {path}: missing key(s) {missing}; it has "
                         f"{[repr(k)[:40] for k in list(d)[:8]]}")
    data, labels = d[b"data"], d[b"labels"]                   # (n, 3072) = (n, C*H*W), [n ints]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        got = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"corrupt CIFAR-10 batch file {path}: b'data' should be a uint8 array (n, 3072), got {got}")
    if not isinstance(labels, list) or len(labels) != len(data):
        got = f"{len(labels)} labels" if isinstance(labels, list) else f"a {type(labels).__name__}"
        raise ValueError(f"corrupt CIFAR-10 batch file {path}: b'labels' should be a list of {len(data)} ints "
                         f"(one per image), got {got}")
    bad = next((v for v in labels if type(v) is not int or not 0 <= v < num_classes), None)
    if bad is not None:
        raise ValueError(f"corrupt CIFAR-10 batch file {path}: labels should be ints in 0..{num_classes - 1}, "
                         f"found {bad!r}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # (n, 32, 32, 3)
    return images, np.asarray(labels, dtype=np.int64)


def read_label_names(path: Path) -> list[str]:
    """Class names from batches.meta (b"label_names", a list of byte strings)."""
    names = _unpickle(path).get(b"label_names")
    if not (isinstance(names, list) and names and all(isinstance(c, (bytes, str)) for c in names)):
        raise ValueError(f"corrupt CIFAR-10 meta file {path}: b'label_names' should be a non-empty list of "
                         f"strings, got {str(names)[:80]}")
    return [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in names]


def find_batches(root) -> Path | None:
    """The cifar-10-batches-py folder at root or root/cifar-10-batches-py, if there is one."""
    if root is None:
        return None
    for d in (Path(root), Path(root) / BATCH_FOLDER):
        if (d / TEST_BATCHES[0]).is_file() or (d / TRAIN_BATCHES[0]).is_file():
            return d
    return None


def load_batches(folder: Path, split: str = "train") -> Dataset:
    """Dataset from the official batch files of a cifar-10-batches-py folder."""
    names = {"train": TRAIN_BATCHES, "test": TEST_BATCHES}[split]
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} lacks {', '.join(missing)}")
    meta = Path(folder) / "batches.meta"
    classes = read_label_names(meta) if meta.is_file() else list(CLASSES)
    parts = [read_batch(Path(folder) / n, len(classes)) for n in names]
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   classes, "cifar10", {"root": str(folder), "split": split})


def _safe_members(tar: tarfile.TarFile, dest: Path):
    """Tar members that stay inside dest: plain files and folders only, no absolute or '..' paths."""
    dest = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()) or os.path.isabs(m.name) or not target.is_relative_to(dest):
            raise ValueError(f"unsafe path in archive: {m.name!r}")
        yield m


def download(dest: Path | None = None, url: str | None = None, md5: str | None = None) -> Path:
    """Download, verify and extract the python archive into dest; return dest/cifar-10-batches-py."""
    dest = Path(dest or data_home())
    url, md5 = url or URL, md5 or MD5
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix="cifar-10-python.", suffix=".tar.gz.part")
    work = None
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download CIFAR-10", leave=False) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise ValueError(f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                             "the download was deleted, try again")
        work = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
        with tarfile.open(tmp, "r:gz") as tar:
            members = list(_safe_members(tar, work))
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib check as well
                tar.extractall(work, members=members, filter="data")
            else:
                tar.extractall(work, members=members)
        if not (work / BATCH_FOLDER).is_dir():
            raise ValueError(f"archive from {url} has no {BATCH_FOLDER}/ folder")
        final = dest / BATCH_FOLDER
        if not final.exists():
            os.replace(work / BATCH_FOLDER, final)  # atomic: readers see all of it or none
        return final
    finally:
        if os.path.exists(tmp):  # the archive is not kept: the extracted batches are
            os.unlink(tmp)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def not_found_message(root) -> str:
    """What was looked for, and the three ways to provide CIFAR-10."""
    where = (f"{root} (as cifar-10-batches-py, its parent, or an image-folder tree with train/ and test/)"
             if root is not None else f"{data_home() / BATCH_FOLDER}")
    if root is not None and Path(root).exists() and not Path(root).is_dir():
        where = f"{root}, which is a file, not a folder"
    return (f"CIFAR-10 not found: looked in {where}. Provide it in one of three ways:\n"
            f"  1. --data-dir pointing at a cifar-10-batches-py folder (the official python batches);\n"
            f"  2. --data-dir pointing at an image-folder tree <dir>/train/<class>/*.jpg and "
            f"<dir>/test/<class>/*.jpg, like ../shared/data/cifar10-jpeg;\n"
            f"  3. a network connection, for the automatic download of {URL} "
            f"into {data_home()} (set MINIVIT_DATA to change it).")


def load_cifar10(root=None, split: str = "train", download_ok: bool = True, cache_dir=None) -> Dataset:
    """CIFAR-10 `split` ("train" 50,000 or "test" 10,000) from the first source found (see top)."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if root is not None:
        if (folder := find_batches(root)) is not None:
            return load_batches(folder, split)
        if (Path(root) / split).is_dir():
            return load_folder(root, split, name="cifar10", cache_dir=cache_dir)
        raise DataNotFoundError(not_found_message(root))
    if (folder := find_batches(data_home())) is not None:
        return load_batches(folder, split)
    if not download_ok:
        raise DataNotFoundError(not_found_message(None))
    try:
        folder = download(data_home())
    except OSError as e:  # offline: URLError is an OSError
        raise DataNotFoundError(f"{not_found_message(None)}\n(download failed: {e})") from e
    return load_batches(folder, split)
