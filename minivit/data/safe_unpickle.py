"""A restricted unpickler for the official CIFAR-10 python batches: loading a file never runs code from it.

A pickle names "globals" (any importable callable, e.g. os.system) and calls them while it loads,
so `pickle.load` on a crafted `data_batch_1` runs whatever the file asks for. The official batches
(Krizhevsky, 2009) were written by Python 2's cPickle, protocol 2, and hold only dicts, lists, byte
strings, ints and NumPy uint8 arrays. Their only globals are the three that NumPy's array pickling
names (checked by pickling arrays that way, see tests/test_hostile_inputs.py):

    numpy.core.multiarray._reconstruct   (numpy._core.multiarray._reconstruct from NumPy 2)
    numpy.ndarray
    numpy.dtype

`find_class` refuses every other global with an error naming the file and the global. Even these
three never reach NumPy, because each can be abused: `_reconstruct(ndarray, shape, ...)` allocates
any shape, `numpy.dtype("O")` with `ndarray.__setstate__` builds object arrays, and
`dtype.__setstate__` accepts crafted field tables. Each maps to a stand-in that only records what
was asked for (a whitelisted numeric dtype, a shape, the raw bytes); after loading, every stand-in
becomes `np.frombuffer(raw, dtype).reshape(shape)`, once its shape was checked against its bytes.

`_codecs.encode` is refused too: Python 3 writes bytes in protocol 2 as `_codecs.encode(text,
"latin1")`, but Python 2 wrote its str (the official files' keys, names and pixel bytes) with the
SHORT_BINSTRING / BINSTRING opcodes, which need no global.
"""
from __future__ import annotations

import math
import pickle

import numpy as np

# (module, name) pairs a CIFAR-10 batch may name; both spellings of NumPy's private module
RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
NDARRAY = ("numpy", "ndarray")
DTYPE = ("numpy", "dtype")
ALLOWED_GLOBALS = sorted(RECONSTRUCT | {NDARRAY, DTYPE})
# plain numeric dtypes (as numpy.dtype's first argument); object, void and structured types are refused
DTYPES = {"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"}
MAX_NDIM = 32
MAX_NESTING = 16  # stand-ins deeper than this are left unconverted (the format nests two levels)


class UnsafePickleError(ValueError):
    """A pickle asked for something the official CIFAR-10 format never contains."""


class _NdarrayName:
    """Stands for numpy.ndarray, which a batch names only as _reconstruct's first argument."""

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayName()


def _text(value) -> str:
    """A str from a str or the bytes a Python 2 str loads as (encoding="bytes")."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise pickle.UnpicklingError(f"expected a string, got {type(value).__name__}")


class _DtypeRecord:
    """Records numpy.dtype(spec, align, copy) and the byte order BUILD then passes in its state."""

    stands_for = "numpy.dtype"

    def __init__(self, spec, align=False, copy=False):
        self.spec = _text(spec)
        if self.spec not in DTYPES:
            raise pickle.UnpicklingError(f"dtype {self.spec!r} is not a plain numeric type "
                                         f"(allowed: {', '.join(sorted(DTYPES))})")
        self.byteorder = "="

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise pickle.UnpicklingError(f"dtype state {str(state)[:80]} is not that of a plain numeric type")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"dtype byte order {order!r} is not one of < > | =")
        self.byteorder = order

    def dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _ArrayRecord:
    """Records _reconstruct(ndarray, (0,), b"b") and the (shape, dtype, fortran, raw bytes) of BUILD."""

    stands_for = "numpy.core.multiarray._reconstruct"

    def __init__(self, cls, shape=None, typecode=None):
        if cls is not _NDARRAY:
            what = getattr(cls, "stands_for", type(cls).__name__)
            raise pickle.UnpicklingError(f"_reconstruct of {what}, expected numpy.ndarray")
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, raw); NumPy before 1.0 left out the version
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError(f"array state is a {type(state).__name__}, expected a 4- or 5-tuple")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM
                and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"array shape {str(shape)[:80]} is not a tuple of sizes")
        if not isinstance(dtype, _DtypeRecord):
            raise pickle.UnpicklingError(f"array dtype is a {type(dtype).__name__}, expected numpy.dtype")
        if not isinstance(raw, bytes):  # a list here would be an object array
            raise pickle.UnpicklingError(f"array data is a {type(raw).__name__}, expected bytes")
        dt = dtype.dtype()
        if math.prod(shape) * dt.itemsize != len(raw):
            raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dt} needs "
                                         f"{math.prod(shape) * dt.itemsize} bytes, the file holds {len(raw)}")
        order = "F" if fortran else "C"
        self.array = np.frombuffer(raw, dt).reshape(shape, order=order).copy(order=order)


class _BatchUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals are the three stand-ins above and nothing else."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as the official loader says
        self.path = path

    def find_class(self, module, name):
        if (module, name) in RECONSTRUCT:
            return _ArrayRecord
        if (module, name) == NDARRAY:
            return _NDARRAY
        if (module, name) == DTYPE:
            return _DtypeRecord
        raise UnsafePickleError(
            f"refusing to load {self.path}: it asks for the Python global {module}.{name}, which an "
            f"official CIFAR-10 batch never contains (it holds only dicts, lists, bytes, str, ints and "
            f"NumPy arrays, whose globals are {', '.join(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)}); "
            "the file may be crafted to run code, and none of it was run")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of the format")


def _arrays(obj, depth=0):
    """obj with every _ArrayRecord in its dicts, lists and tuples replaced by its array."""
    if isinstance(obj, _ArrayRecord):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without its data (no BUILD after _reconstruct)")
        return obj.array
    if depth >= MAX_NESTING:
        return obj
    if isinstance(obj, dict):
        return {k: _arrays(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_arrays(v, depth + 1) for v in obj)
    return obj


# What the C unpickler raises for damaged input (each seen by fuzzing truncated and flipped files).
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError)


def load_batch_pickle(path):
    """Load one CIFAR-style pickle without running code from it.

    UnsafePickleError (a ValueError) names the file and the global it asked for; any other damage
    is a ValueError naming the file.
    """
    with open(path, "rb") as f:
        try:
            return _arrays(_BatchUnpickler(f, path).load())
        except UnsafePickleError:
            raise
        except _DAMAGED as e:
            raise ValueError(f"corrupt pickle file {path}: {type(e).__name__}: {e}") from e
