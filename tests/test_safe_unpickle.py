"""The CIFAR-10 batch loader never runs code from a file: crafted pickles are refused, naming the
file and the global they ask for, and the official format (Python 2 cPickle, protocol 2) loads.

Every payload here creates a marker file when unpickled by plain `pickle.loads` (checked below, so
that the refusal tests can fail); under minivit the marker must never appear.
"""
import os
import pickle
import pickletools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.testing._private.utils as np_testing_utils
import pytest

from minivit.data import cifar, load_dataset
from minivit.data.safe_unpickle import UnsafePickleError, load_batch_pickle
from py2_pickle import dump as py2_dump
from py2_pickle import dumps as py2_dumps

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever module it lives in


class Gadget:
    """An object that pickles as the call func(*args) (the classic __reduce__ gadget)."""

    def __init__(self, func, args, state=None):
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.reduced


def _name(func):
    return f"{func.__module__}.{func.__name__}"


def _touch_code(marker):
    return f"open({str(marker)!r}, 'w').close()"


def official_batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


# name -> (payload bytes for a marker path, the global the error must name)
PAYLOADS = {
    "os.system, protocol 0 text": (lambda m: f"cos\nsystem\n(S'touch {m}'\ntR.".encode(), "os.system"),
    "INST opcode calling os.system": (lambda m: f"(S'touch {m}'\nios\nsystem\n.".encode(), "os.system"),
    # protocol 2 writes Python 2's module name, which the unpickler maps back to builtins
    "builtins.exec via __reduce__": (lambda m: pickle.dumps(Gadget(exec, (_touch_code(m),)), protocol=2),
                                     "__builtin__.exec"),
    "builtins.eval, protocol 4": (lambda m: pickle.dumps(Gadget(eval, (_touch_code(m),)), protocol=4),
                                  "builtins.eval"),
    "subprocess.run, protocol 4": (
        lambda m: pickle.dumps(Gadget(subprocess.run, ([sys.executable, "-c", _touch_code(m)],)), protocol=4),
        "subprocess.run"),
    "os.system __reduce__ gadget": (lambda m: pickle.dumps(Gadget(os.system, (f"touch {m}",)), protocol=2),
                                    _name(os.system)),
    "a gadget inside NumPy itself": (
        lambda m: pickle.dumps(Gadget(np_testing_utils.runstring, (_touch_code(m), {})), protocol=2),
        _name(np_testing_utils.runstring)),
    "a gadget after real arrays in an official batch": (
        lambda m: py2_dumps({**official_batch(), b"filenames": Gadget(os.system, (f"touch {m}",))}),
        _name(os.system)),
}
POSIX_ONLY = {"os.system, protocol 0 text", "INST opcode calling os.system", "os.system __reduce__ gadget",
              "a gadget after real arrays in an official batch"}


def _payload_params():
    posix = pytest.mark.skipif(os.name != "posix", reason="uses `touch`")
    return [pytest.param(name, id=name, marks=[posix] if name in POSIX_ONLY else []) for name in PAYLOADS]


@pytest.mark.parametrize("name", _payload_params())
def test_each_crafted_payload_does_run_under_plain_pickle(tmp_path, name):
    """The payloads are live: without the restricted unpickler they create the marker file."""
    make, _ = PAYLOADS[name]
    marker = tmp_path / "pwned"
    try:
        pickle.loads(make(marker), encoding="bytes")
    except Exception:  # some payloads fail after their call returns (e.g. the stream's dict key)
        pass
    assert marker.exists()


@pytest.mark.parametrize("name", _payload_params())
def test_a_crafted_batch_never_runs_its_payload_and_the_error_names_file_and_global(tmp_path, name):
    make, forbidden = PAYLOADS[name]
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(make(marker))
    with pytest.raises(UnsafePickleError) as info:
        load_batch_pickle(path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message and f"global {forbidden}," in message
    assert isinstance(info.value, ValueError)  # the CLI reports it as a user error


@pytest.mark.skipif(os.name != "posix", reason="uses `touch`")
def test_load_dataset_on_a_folder_with_a_crafted_batch_raises_before_running_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in cifar.TRAIN_BATCHES + cifar.TEST_BATCHES:
        py2_dump(official_batch(), folder / name)
    marker = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(PAYLOADS["os.system __reduce__ gadget"][0](marker))
    with pytest.raises(ValueError, match=re.escape(str(folder / "batches.meta"))):
        load_dataset("cifar10", tmp_path, "train")
    assert not marker.exists()


# ---------------------------------------------------------------- the allowed globals, abused
ABUSES = {
    "an object dtype": (Gadget(np.dtype, ("O", False, True)), "dtype 'O' is not a plain numeric type"),
    "_reconstruct of something else than ndarray": (Gadget(_RECONSTRUCT, (np.dtype, (0,), b"b")),
                                                    "_reconstruct of numpy.dtype, expected numpy.ndarray"),
    "ndarray called directly with a huge shape": (Gadget(np.ndarray, ((10**12,), "u1")), "not callable"),
    "a shape its bytes do not fill": (
        Gadget(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (10**6, 10**6), np.dtype("u1"), False, b"abcdef")),
        "needs 1000000000000 bytes, the file holds 6"),
    "an object array": (Gadget(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype("O"), False, [1, 2])),
                        "dtype 'O8' is not a plain numeric type"),
    "a structured dtype": (
        Gadget(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype([("a", "u1"), ("b", "<f4")]), False,
                                                        b"\0" * 5)),
        "dtype 'V5' is not a plain numeric type"),
}


@pytest.mark.parametrize("name", list(ABUSES))
def test_the_three_numpy_globals_cannot_be_abused(tmp_path, name):
    gadget, message = ABUSES[name]
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_dumps({b"data": gadget}))
    with pytest.raises(ValueError) as info:
        load_batch_pickle(path)
    assert str(path) in str(info.value) and message in str(info.value)


# ---------------------------------------------------------------- what must still load
def test_the_official_format_names_only_numpys_three_array_globals():
    """What Python 2 cPickle wrote: no _codecs.encode, NumPy 1.x's numpy.core module path."""
    ops = list(pickletools.genops(py2_dumps(official_batch())))
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert {op.name for op, _, _ in ops} & {"SHORT_BINSTRING", "BINSTRING"}
    assert not {op.name for op, _, _ in ops} & {"STACK_GLOBAL", "INST", "OBJ", "BINBYTES", "SHORT_BINBYTES"}


def test_an_official_format_batch_loads_with_its_exact_values(tmp_path):
    batch = official_batch()
    path = tmp_path / "data_batch_1"
    py2_dump(batch, path)
    loaded = load_batch_pickle(path)
    assert set(loaded) == set(batch) and all(isinstance(k, bytes) for k in loaded)
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"data"].dtype == np.uint8 and loaded[b"data"].flags.writeable
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"filenames"] == batch[b"filenames"]
    assert loaded[b"batch_label"] == b"training batch 1 of 5"


@pytest.mark.parametrize("array", [np.arange(24, dtype=">i4").reshape(2, 3, 4), np.linspace(0, 1, 6).reshape(3, 2),
                                   np.asfortranarray(np.arange(12, dtype=np.uint16).reshape(3, 4)),
                                   np.array([True, False]), np.zeros((0, 3072), np.uint8)],
                         ids=["big-endian int32 3-D", "float64", "fortran-order uint16", "bool", "empty"])
def test_numeric_arrays_of_any_plain_dtype_round_trip_in_both_pickle_styles(tmp_path, array):
    for protocol, data in (("python 2", py2_dumps({b"a": array})), ("protocol 4", pickle.dumps({b"a": array}, 4))):
        path = tmp_path / "batch"
        path.write_bytes(data)
        loaded = load_batch_pickle(path)[b"a"]
        assert loaded.dtype == array.dtype and loaded.shape == array.shape, protocol
        np.testing.assert_array_equal(loaded, array)


def test_a_python3_protocol2_batch_is_refused_for_its_codecs_encode_global(tmp_path):
    """Python 3 writes protocol-2 bytes as _codecs.encode(...) calls; the official files never do."""
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(official_batch(), protocol=2))
    with pytest.raises(UnsafePickleError, match="global _codecs.encode,"):
        load_batch_pickle(path)


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00(U\x04data", b"\xff\xd8\xff\xe0 a JPEG", b"\x80\x02K\x05."],
                         ids=["empty", "truncated", "not a pickle", "an int, not a dict"])
def test_a_batch_that_is_not_a_pickled_dict_raises_value_error_naming_it(tmp_path, content):
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        cifar.read_batch(path)


# ---------------------------------------------------------------- nothing else unpickles
def test_no_other_code_in_minivit_or_kernels_can_unpickle():
    root = Path(__file__).resolve().parent.parent
    sources = [p for d in ("minivit", "kernels") for p in (root / d).rglob("*.py")]
    assert len(sources) > 20
    offenders = []
    for path in sources:
        rel = path.relative_to(root).as_posix()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            risky = (re.search(r"\bpickle\.(load|loads|Unpickler)\b|\bimport (pickle|marshal|shelve|dill|joblib)\b"
                               r"|allow_pickle\s*=\s*True|torch\.load\(", code)
                     or ("np.load(" in code and "allow_pickle=False" not in code))
            if risky and rel != "minivit/data/safe_unpickle.py":
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert offenders == []
