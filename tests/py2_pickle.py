"""Pickles written the way Python 2's cPickle wrote the official CIFAR-10 batches (protocol 2).

Python 3's pickle, at protocol 2, stores bytes as calls of `_codecs.encode(text, "latin1")` and
names NumPy 2's private module `numpy._core`. Python 2 had neither: its str (the batches' keys,
class names and pixel bytes) went out as the SHORT_BINSTRING / BINSTRING opcodes, and NumPy 1.x
named `numpy.core.multiarray._reconstruct`. This pickler writes exactly that, so tests can check
the restricted unpickler against the format it must accept, with no real CIFAR-10 files.
"""
import io
import pickle
import struct


class Py2Pickler(pickle._Pickler):
    """The pure-Python pickler with Python 2's str opcodes and NumPy 1.x module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str  # numpy's reduce gives str ('u1', '|'): in Python 2 they were str too

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def dumps(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def dump(obj, path) -> None:
    with open(path, "wb") as f:
        f.write(dumps(obj))
