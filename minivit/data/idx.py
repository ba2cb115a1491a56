"""IDX files (LeCun et al., the MNIST format) and Fashion-MNIST (Xiao et al., 2017).

IDX layout, big-endian: 2 zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions d, then d uint32 sizes,
then the data in C order. Files may be gzipped (`.gz`).

Fashion-MNIST: `train-images-idx3-ubyte` (60000, 28, 28), `train-labels-idx1-ubyte` (60000,),
`t10k-*` for the 10,000 test images; images come out as (N, 28, 28, 1).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .cache import DataNotFoundError
from .loader import Dataset

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path) -> np.ndarray:
    """One IDX file (optionally .gz) -> ndarray of its shape, native byte order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip reports a bad or truncated stream as these
        raise ValueError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"not an IDX file (bad magic {raw[:4].hex()}): {path}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"truncated IDX header in {path}")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"IDX file {path} has {len(body)} data bytes, its header {shape} says {expected}")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write an ndarray as IDX (gzipped if path ends in .gz); the inverse of read_idx."""
    code = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array).astype(IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def _find(root: Path, name: str) -> Path | None:
    for p in (root / name, root / (name + ".gz")):
        if p.is_file():
            return p
    return None


def load_fashion_mnist(root=None, split: str = "train") -> Dataset:
    """Fashion-MNIST `split` from IDX files in root (default /usr/share/datasets/fashion-mnist)."""
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root if root is not None else FASHION_MNIST_ROOT)
    paths = [_find(root, n) for n in FILES[split]]
    if None in paths:
        raise DataNotFoundError(
            f"Fashion-MNIST not found: looked for {' and '.join(FILES[split])} (or .gz) in {root}. "
            "Install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or point "
            "--data-dir at a folder holding the IDX files.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{paths[1]} has labels {labels.shape} for {len(images)} images in {paths[0]}")
    return Dataset(images[..., None], labels.astype(np.int64), list(FASHION_MNIST_CLASSES),
                   "fashion_mnist", {"root": str(root), "split": split})
