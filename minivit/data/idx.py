"""IDX files (LeCun et al., the MNIST format) and Fashion-MNIST (Xiao et al., 2017).

IDX layout, big-endian: 2 zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions d, then d uint32 sizes,
then the data in C order. Files may be gzipped (`.gz`).

Fashion-MNIST: `train-images-idx3-ubyte` (60000, 28, 28), `train-labels-idx1-ubyte` (60000,),
`t10k-*` for the 10,000 test images; images come out as (N, 28, 28, 1).
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
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
    """One IDX file (optionally .gz) -> ndarray of its shape, native byte order.

    The header is read first and the data then only up to the size it declares (plus one byte to
    see whether more follows): a header that lies about the size costs no more memory than the
    file holds, and a gzip bomb is not inflated past what the header promised.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
                raise ValueError(f"not an IDX file (bad magic {head.hex() or 'empty'}, expected 0000 then a "
                                 f"type code in {sorted(IDX_DTYPES)} and the number of dimensions): {path}")
            ndim = head[3]
            if ndim > 32:
                raise ValueError(f"IDX file {path} declares {ndim} dimensions; at most 32 are supported")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"truncated IDX header in {path}: {ndim} dimensions need {4 * ndim} bytes, "
                                 f"the file has {len(dims)}")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(IDX_DTYPES[head[2]])
            expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for lying headers
            body = _read_at_most(f, expected + 1)
    except (OSError, EOFError, zlib.error) as e:  # gzip reports a bad or truncated stream as these
        raise ValueError(f"cannot read IDX file {path}: {e}") from e
    if len(body) != expected:
        has = "more data than" if len(body) > expected else f"{len(body)} data bytes, not"
        raise ValueError(f"IDX file {path} has {has} the {expected} bytes its header {shape} ({dtype}) declares")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_at_most(f, n: int, chunk: int = 1 << 24) -> bytes:
    """Up to n bytes of f, read in chunks so that a huge n allocates only what the file holds."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(chunk, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


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
    if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape:
        raise ValueError(f"{paths[0]}: expected uint8 images (N, H, W), none of them 0, got {images.dtype} "
                         f"{images.shape}")
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(f"{paths[1]} has {labels.dtype} labels {labels.shape}, expected integer labels "
                         f"({len(images)},) for the {len(images)} images in {paths[0]}")
    K = len(FASHION_MNIST_CLASSES)
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"{paths[1]}: labels must be in 0..{K - 1}, found {labels.min()}..{labels.max()}")
    return Dataset(images[..., None], labels.astype(np.int64), list(FASHION_MNIST_CLASSES),
                   "fashion_mnist", {"root": str(root), "split": split})
