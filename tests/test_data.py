"""Tests for minivit.data: every loader on small files written here in the real formats.

Nothing is downloaded: the download path is exercised with a file:// archive built here.
"""
import ast
import gzip
import hashlib
import io
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from minivit.data import (DATASET_STATS, DataLoader, DataNotFoundError, Dataset, load_dataset,
                          split_train_val)
from minivit.data import cifar, decode, folder, idx
from minivit.data.transforms import normalize, random_crop_flip
from py2_pickle import dump as py2_dump

CLASSES = cifar.CLASSES


@pytest.fixture(autouse=True)
def _private_data_dirs(tmp_path, monkeypatch):
    """Point the download folder and the decode cache at tmp_path, never at the user's home."""
    monkeypatch.setenv("MINIVIT_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("MINIVIT_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- writers of the real formats
def write_cifar_batches(folder_: Path, n: int = 20, seed: int = 0) -> dict:
    """Official-format batches (Python 2 cPickle, protocol 2, bytes keys) with n random images each."""
    rng = np.random.default_rng(seed)
    folder_.mkdir(parents=True)
    written = {}
    for name in cifar.TRAIN_BATCHES + cifar.TEST_BATCHES:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        py2_dump(batch, folder_ / name)
        written[name] = (data, labels)
    meta = {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    py2_dump(meta, folder_ / "batches.meta")
    return written


def expected_hwc(data: np.ndarray) -> np.ndarray:
    """Rows of CHW bytes -> (n, 32, 32, 3), built channel by channel from the format's definition."""
    out = np.empty((len(data), 32, 32, 3), np.uint8)
    for c in range(3):
        out[..., c] = data[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32)
    return out


def write_png_tree(root: Path, split: str, per_class: dict, size=(6, 5), seed=0) -> dict:
    """root/split/<class>/<i>.png with random RGB pixels; returns {class: [arrays in file order]}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for c, n in per_class.items():
        (root / split / c).mkdir(parents=True, exist_ok=True)
        arrays[c] = []
        for i in range(n):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # (H, W, 3)
            Image.fromarray(a).save(root / split / c / f"{i:03d}.png")
            arrays[c].append(a)
    return arrays


def make_archive(path: Path, batches_dir: Path) -> str:
    """tar.gz holding cifar-10-batches-py/ like the official archive; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(batches_dir, arcname=cifar.BATCH_FOLDER)
    return hashlib.md5(path.read_bytes()).hexdigest()


def indexed_dataset(n: int, num_classes: int = 4) -> Dataset:
    """Images that carry their own index in pixel (0, 0), to follow them through splits/loaders."""
    images = np.zeros((n, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return Dataset(images, np.arange(n) % num_classes, [str(k) for k in range(num_classes)], "toy")


def ids(ds_or_x) -> np.ndarray:
    im = ds_or_x.images if isinstance(ds_or_x, Dataset) else ds_or_x
    return im[:, 0, 0, 0].astype(int) + 256 * im[:, 0, 0, 1].astype(int)


class FakeRng:
    """Returns the given crop offsets and flips, in random_crop_flip's documented draw order."""
    def __init__(self, oy, ox, flips):
        self._ints = [np.asarray(oy), np.asarray(ox)]
        self._flips = np.asarray(flips)

    def integers(self, low, high, size):
        return self._ints.pop(0)

    def random(self, size):
        return np.where(self._flips, 0.0, 0.9)


# ---------------------------------------------------------------- CIFAR-10 official batches
@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_official_batches_load_with_exact_pixels_in_hwc_order(tmp_path, point_at):
    written = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    root = tmp_path / "cifar-10-batches-py" if point_at == "folder" else tmp_path
    train = load_dataset("cifar10", root, "train")
    test = load_dataset("cifar10", root, "test")
    data = np.concatenate([written[n][0] for n in cifar.TRAIN_BATCHES])
    labels = sum((written[n][1] for n in cifar.TRAIN_BATCHES), [])
    assert train.images.shape == (100, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, expected_hwc(data))
    np.testing.assert_array_equal(train.labels, labels)
    assert train.labels.dtype == np.int64
    # one pixel by hand: image 7, row 3, column 30, green = byte 1024 + 3*32 + 30 of its row
    assert train.images[7, 3, 30, 1] == data[7, 1024 + 3 * 32 + 30]
    np.testing.assert_array_equal(test.images, expected_hwc(written["test_batch"][0]))
    assert train.classes == CLASSES and train.name == "cifar10" and len(test) == 20


def test_truncated_cifar_batch_raises_value_error_naming_the_file(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, "train")


# ---------------------------------------------------------------- image folders and the cache
def test_image_folder_loads_png_pixels_with_sorted_class_labels(tmp_path):
    arrays = write_png_tree(tmp_path / "tree", "train", {"cat": 2, "ant": 3, "bee": 1})
    ds = load_dataset("folder", tmp_path / "tree", "train")
    assert ds.classes == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 2, 2])
    expected = np.stack(arrays["ant"] + arrays["bee"] + arrays["cat"])
    np.testing.assert_array_equal(ds.images, expected)
    assert ds.images.shape == (6, 5, 6, 3)


def test_image_folder_converts_grayscale_to_rgb(tmp_path):
    (tmp_path / "t" / "train" / "a").mkdir(parents=True)
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "t" / "train" / "a" / "g.png")
    ds = load_dataset("folder", tmp_path / "t", "train")
    assert ds.images.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(ds.images[0], np.repeat(gray[..., None], 3, axis=-1))


def test_image_folder_of_mixed_sizes_names_the_file_and_both_sizes(tmp_path):
    write_png_tree(tmp_path / "t", "train", {"a": 2}, size=(6, 5))
    write_png_tree(tmp_path / "t", "train", {"b": 1}, size=(7, 5))
    with pytest.raises(ValueError, match=r"b/000\.png.*7x5.*6x5"):
        load_dataset("folder", tmp_path / "t", "train")


def test_truncated_jpeg_raises_value_error_naming_the_file(tmp_path):
    (tmp_path / "t" / "train" / "a").mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "t" / "train" / "a" / "broken.jpg").write_bytes(buf.getvalue()[:300])
    with pytest.raises(ValueError, match="broken.jpg"):
        load_dataset("folder", tmp_path / "t", "train")


def test_second_folder_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    write_png_tree(tmp_path / "t", "train", {"a": 3, "b": 2})
    first = load_dataset("folder", tmp_path / "t", "train")
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))

    def no_decode(path):
        raise AssertionError(f"decoded {path} although the cache should have been used")
    monkeypatch.setattr(decode, "decode_image", no_decode)
    second = load_dataset("folder", tmp_path / "t", "train")
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.classes == first.classes


def test_cache_misses_when_a_file_changes_and_honours_cache_dir(tmp_path):
    write_png_tree(tmp_path / "t", "train", {"a": 2})
    load_dataset("folder", tmp_path / "t", "train", cache_dir=tmp_path / "c2")
    new = np.full((5, 6, 3), 7, np.uint8)
    Image.fromarray(new).save(tmp_path / "t" / "train" / "a" / "001.png")
    again = load_dataset("folder", tmp_path / "t", "train", cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(again.images[1], new)
    assert len(list((tmp_path / "c2").glob("*.npz"))) == 2
    assert not (tmp_path / "cache").exists()  # cache_dir= wins over $MINIVIT_CACHE


def test_worker_decode_equals_serial_decode_without_fork_or_multiprocessing(tmp_path, monkeypatch):
    import multiprocessing.process
    import os

    write_png_tree(tmp_path / "t", "train", {"a": 3, "b": 2})
    serial = load_dataset("folder", tmp_path / "t", "train", cache_dir=tmp_path / "c1")
    monkeypatch.setattr(folder, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(folder, "CHUNK", 2)

    def no_copy_of_this_program(*args):  # a fork inside a user's threaded program can deadlock
        raise AssertionError("decode_all forked the program or started a multiprocessing process")
    monkeypatch.setattr(os, "fork", no_copy_of_this_program)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_copy_of_this_program)
    files = sorted(str(p) for p in (tmp_path / "t" / "train").glob("*/*.png"))
    np.testing.assert_array_equal(folder.decode_all(files, workers=2), serial.images)
    (tmp_path / "t" / "train" / "b" / "000.png").write_bytes(b"not a png")
    (tmp_path / "t" / "train" / "b" / "001.png").write_bytes(b"nor this")  # in the other worker, later
    with pytest.raises(ValueError, match=r"b/000\.png"):  # raised in a worker, named here: the first
        folder.decode_all(files, workers=2)


def test_workers_do_not_rerun_an_unguarded_script(tmp_path):
    import subprocess

    write_png_tree(tmp_path / "t", "train", {"a": 3, "b": 2})
    script = tmp_path / "user_script.py"  # no `if __name__ == "__main__":`, as users write them
    script.write_text(
        "import numpy as np\n"
        "from minivit.data import folder\n"
        "print('top of the script', flush=True)\n"
        "folder.PARALLEL_MIN_FILES, folder.CHUNK = 1, 2\n"
        f"root = __import__('pathlib').Path({str(tmp_path / 't' / 'train')!r})\n"
        "files = sorted(str(p) for p in root.glob('*/*.png'))\n"
        "images = folder.decode_all(files, workers=2)\n"
        "print('decoded', images.shape, int(images.sum()), flush=True)\n")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", str(script)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    expected = np.stack([np.asarray(Image.open(p)) for p in
                         sorted((tmp_path / "t" / "train").glob("*/*.png"))])
    assert out.stdout.splitlines() == ["top of the script",
                                       f"decoded {expected.shape} {int(expected.sum())}"]


def test_a_worker_that_fails_leaves_the_decode_to_this_process(tmp_path, monkeypatch):
    write_png_tree(tmp_path / "t", "train", {"a": 3, "b": 2})
    files = sorted(str(p) for p in (tmp_path / "t" / "train").glob("*/*.png"))
    serial = folder.decode_all(files, workers=1)
    monkeypatch.setattr(folder, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(folder, "CHUNK", 2)
    broken = tmp_path / "broken_worker.py"  # half a header, then a crash
    broken.write_text("import sys\nsys.stdout.write('2 4')\nsys.exit(3)\n")
    monkeypatch.setattr(decode, "__file__", str(broken))
    with pytest.warns(RuntimeWarning, match="decoding in this process instead: decode worker stopped"):
        np.testing.assert_array_equal(folder.decode_all(files, workers=2), serial)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.warns(RuntimeWarning, match="cannot start a decode worker"):
        np.testing.assert_array_equal(folder.decode_all(files, workers=2), serial)


def test_cifar10_loads_from_an_image_folder_tree_with_cifar_stats(tmp_path):
    write_png_tree(tmp_path / "jpeg", "test", {c: 1 for c in CLASSES}, size=(32, 32))
    ds = load_dataset("cifar10", tmp_path / "jpeg", "test")
    assert ds.name == "cifar10" and ds.classes == CLASSES
    np.testing.assert_array_equal(ds.labels, np.arange(10))
    assert DataLoader(ds).mean == DATASET_STATS["cifar10"][0]


# ---------------------------------------------------------------- download and not-found
def test_download_from_file_url_checks_md5_extracts_and_is_reused(tmp_path, monkeypatch):
    written = write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_archive(archive, tmp_path / "src" / "cifar-10-batches-py")
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", md5)
    ds = load_dataset("cifar10", split="test")
    np.testing.assert_array_equal(ds.images, expected_hwc(written["test_batch"][0]))
    home = tmp_path / "home"
    assert sorted(p.name for p in home.iterdir()) == ["cifar-10-batches-py"]  # no temp files left
    monkeypatch.setattr(cifar, "URL", (tmp_path / "gone.tar.gz").as_uri())
    assert len(load_dataset("cifar10", split="train")) == 100  # found in the cache, no download


def test_download_with_bad_md5_raises_and_deletes_the_file(tmp_path, monkeypatch):
    write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "a.tar.gz"
    make_archive(archive, tmp_path / "src" / "cifar-10-batches-py")
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", "0" * 32)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_dataset("cifar10")
    assert list((tmp_path / "home").iterdir()) == []


def test_archive_with_path_traversal_is_rejected(tmp_path, monkeypatch):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(ValueError, match="unsafe"):
        load_dataset("cifar10")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "home" / "escaped.txt").exists()


@pytest.mark.parametrize("how", ["no_download", "offline", "empty_root"])
def test_missing_cifar10_raises_data_not_found_listing_three_ways(tmp_path, monkeypatch, how):
    monkeypatch.setattr(cifar, "URL", (tmp_path / "no-network.tar.gz").as_uri())
    kwargs = {"no_download": dict(download=False), "offline": {},
              "empty_root": dict(root=tmp_path)}[how]
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", **kwargs)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "--data-dir" in msg and "cifar-10-batches-py" in msg     # 1. official batches
    assert "shared/data/cifar10-jpeg" in msg                         # 2. an image-folder tree
    assert "network" in msg and "no-network.tar.gz" in msg           # 3. the download URL


# ---------------------------------------------------------------- IDX / Fashion-MNIST
@settings(max_examples=25, deadline=None)
@given(arr=hnp.arrays(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
                      hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)),
       gz=st.booleans())
def test_idx_round_trips_every_dtype_plain_and_gzipped(arr, gz):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("x.idx" + (".gz" if gz else ""))
        idx.write_idx(path, arr)
        back = idx.read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_the_big_endian_format(tmp_path):
    idx.write_idx(tmp_path / "l", np.array([1, 2, 3], np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_loads_idx_files_as_nhwc(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    ext = ".gz" if gz else ""
    idx.write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", imgs)
    idx.write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels)
    ds = load_dataset("fashion_mnist", tmp_path, "test")
    assert ds.images.shape == (7, 28, 28, 1) and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images[..., 0], imgs)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10


@pytest.mark.parametrize("damage", ["magic", "truncated", "bad_gzip"])
def test_corrupt_idx_raises_value_error_naming_the_file(tmp_path, damage):
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    name = "train-images-idx3-ubyte" + (".gz" if damage == "bad_gzip" else "")
    good = bytes([0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(4 * 28 * 28)
    raw = {"magic": b"\x08\x03\x00\x00" + good[4:], "truncated": good[:-10],
           "bad_gzip": gzip.compress(good)[:40]}[damage]
    (tmp_path / name).write_bytes(raw)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", tmp_path)


def test_missing_fashion_mnist_raises_data_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path)


# ---------------------------------------------------------------- procedural
def test_procedural_is_deterministic_and_train_test_differ():
    a = load_dataset("procedural", split="train", num_samples=300, seed=3)
    b = load_dataset("procedural", split="train", num_samples=300, seed=3)
    t = load_dataset("procedural", split="test", num_samples=300, seed=3)
    c = load_dataset("procedural", split="train", num_samples=300, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8
    assert not np.array_equal(a.images, t.images) and not np.array_equal(a.images, c.images)
    assert len(a.classes) == 10 and a.classes[:3] == ["circle", "square", "triangle"]


def test_procedural_default_sizes_and_balanced_classes():
    train = load_dataset("procedural")
    assert len(train) == 10_000 and len(load_dataset("procedural", split="test", num_samples=None)) == 2_000
    np.testing.assert_array_equal(np.bincount(train.labels), [1000] * 10)
    few = load_dataset("procedural", num_samples=23, num_classes=4)
    assert set(np.bincount(few.labels)) <= {5, 6} and few.classes == ["circle", "square", "triangle", "cross"]


def test_procedural_class_is_not_predictable_from_mean_colour():
    train = load_dataset("procedural", num_samples=4000, seed=1)
    test = load_dataset("procedural", split="test", num_samples=2000, seed=1)
    feats = lambda ds: ds.images.reshape(len(ds), -1, 3).mean(1)  # (N, 3) mean colour
    centroids = np.stack([feats(train)[train.labels == k].mean(0) for k in range(10)])  # (10, 3)
    standard_error = feats(train).std(0) / np.sqrt(400)  # of a class mean, if class is irrelevant
    assert np.all(np.abs(centroids - feats(train).mean(0)) < 4 * standard_error)
    guess = np.argmin(((feats(test)[:, None] - centroids) ** 2).sum(-1), axis=1)
    assert (guess == test.labels).mean() < 0.16  # chance is 0.10


def test_procedural_object_differs_from_background():
    # the object's colour is on the other side of mid-grey: images span a wide range of values
    ds = load_dataset("procedural", num_samples=200)
    spread = ds.images.reshape(200, -1).max(1).astype(int) - ds.images.reshape(200, -1).min(1)
    assert np.all(spread > 80)


def _object_masks(ds):
    """Pixels far from the image's median colour: the object (the background is smooth)."""
    x = ds.images.astype(int)
    median = np.median(x.reshape(len(x), -1, 3), axis=1)[:, None, None]  # (n, 1, 1, 3)
    return np.abs(x - median).sum(-1) > 120  # (n, H, W)


def test_procedural_easy_objects_are_bigger_and_centred_and_the_hard_ones_are_unchanged():
    easy = load_dataset("procedural_easy", num_samples=400, seed=2)
    hard = load_dataset("procedural", num_samples=400, seed=2)
    assert easy.name == "procedural_easy" and hard.name == "procedural"
    np.testing.assert_array_equal(easy.labels, hard.labels)  # the same classes, drawn differently
    np.testing.assert_array_equal(hard.images, load_dataset("procedural", num_samples=400, seed=2).images)
    m_easy, m_hard = _object_masks(easy), _object_masks(hard)
    assert m_easy.sum((1, 2)).mean() > 1.8 * m_hard.sum((1, 2)).mean()
    ys, xs = np.mgrid[:32, :32]
    centre = lambda m: np.array([(ys * m).sum((1, 2)), (xs * m).sum((1, 2))]) / np.maximum(m.sum((1, 2)), 1)
    spread_easy, spread_hard = centre(m_easy).std(axis=1), centre(m_hard).std(axis=1)
    assert np.all(spread_easy < 3.0) and np.all(spread_hard > 4.0)  # centres near the middle vs anywhere


def test_procedural_rejects_an_unknown_difficulty():
    from minivit.data.procedural import make_procedural

    with pytest.raises(ValueError, match="difficulty must be one of hard, easy, got 'medium'"):
        make_procedural(num_samples=4, difficulty="medium")


# ---------------------------------------------------------------- transforms
def test_normalize_matches_the_formula_and_returns_contiguous_nchw():
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = normalize(x, mean, std)
    ref = ((x / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    assert out.dtype == np.float32 and out.shape == (4, 3, 5, 6) and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)


def test_flip_of_a_known_image_reverses_its_columns():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    out = random_crop_flip(x, FakeRng([0, 0], [0, 0], [True, False]), pad=0)
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])


def test_crop_is_a_shifted_window_with_zero_padding():
    x = np.arange(1, 1 + 2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1)
    out = random_crop_flip(x, FakeRng([0, 4], [3, 1], [False, True]), pad=2)
    # image 0, offset (0, 3): shifted 2 down and 1 left; the top two rows come from padding
    np.testing.assert_array_equal(out[0, :2], 0)
    np.testing.assert_array_equal(out[0, 2:, :5], x[0, :4, 1:])
    np.testing.assert_array_equal(out[0, 2:, 5], 0)
    # image 1, offset (4, 1), then flipped: rows 2.. of x, columns -1..4, reversed
    window = np.zeros((6, 6, 1), np.uint8)
    window[:4, 1:] = x[1, 2:, :5]
    np.testing.assert_array_equal(out[1], window[:, ::-1])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pad=st.integers(0, 4), b=st.integers(1, 6),
       h=st.integers(1, 9), w=st.integers(1, 9))
def test_batched_crop_flip_equals_a_per_image_reference(seed, pad, b, h, w):
    x = np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    out = random_crop_flip(x, np.random.default_rng(seed), pad)
    rng = np.random.default_rng(seed)  # the same draws, in the documented order
    oy, ox = rng.integers(0, 2 * pad + 1, b), rng.integers(0, 2 * pad + 1, b)
    flips = rng.random(b) < 0.5
    for i in range(b):
        p = np.pad(x[i], ((pad, pad), (pad, pad), (0, 0)))
        ref = p[oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        np.testing.assert_array_equal(out[i], ref[:, ::-1] if flips[i] else ref)


# ---------------------------------------------------------------- DataLoader
def test_loader_yields_normalised_float32_nchw_and_int64_labels():
    ds = load_dataset("procedural", num_samples=70)
    mean, std = DATASET_STATS["procedural"]
    loader = DataLoader(ds, batch_size=32, shuffle=False, augment=False, mean=mean, std=std,
                        drop_last=False, prefetch=0)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 3
    x, y = batches[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.shape == (32,)
    np.testing.assert_allclose(x, normalize(ds.images[:32], mean, std), rtol=0, atol=0)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), ds.labels)


def test_drop_last_drops_the_partial_batch_and_eval_keeps_it():
    ds = indexed_dataset(70)
    train = DataLoader(ds, batch_size=32, seed=1, prefetch=0)
    assert len(train) == 2 and [len(y) for _, y in train.epoch(0)] == [32, 32]
    evl = DataLoader(ds, batch_size=32, shuffle=False, augment=False, drop_last=False)
    got = list(evl.epoch(0))
    assert len(evl) == 3 and [len(y) for _, y in got] == [32, 32, 6]


def test_loader_is_deterministic_in_seed_and_epoch():
    ds = load_dataset("procedural", num_samples=96)
    run = lambda seed, epoch: list(DataLoader(ds, batch_size=32, seed=seed, prefetch=0).epoch(epoch))
    a, b, c, d = run(5, 2), run(5, 2), run(5, 3), run(6, 2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0]) and not np.array_equal(a[0][0], d[0][0])


def test_resuming_at_start_yields_exactly_the_remaining_batches():
    ds = load_dataset("procedural", num_samples=256)
    full = list(DataLoader(ds, batch_size=32, seed=7).epoch(4))
    resumed = list(DataLoader(ds, batch_size=32, seed=7).epoch(4, start=5))  # a fresh loader
    assert len(resumed) == len(full) - 5 == 3
    for (xf, yf), (xr, yr) in zip(full[5:], resumed):
        np.testing.assert_array_equal(xf, xr)
        np.testing.assert_array_equal(yf, yr)


def test_shuffled_epoch_visits_each_image_once():
    ds = indexed_dataset(64)
    loader = DataLoader(ds, batch_size=16, augment=False, mean=(0, 0, 0), std=(1 / 255,) * 3, seed=2)
    seen = np.concatenate([np.rint(x[:, 0, 0, 0]).astype(int) + 256 * np.rint(x[:, 1, 0, 0]).astype(int)
                           for x, _ in loader.epoch(0)])
    assert sorted(seen) == list(range(64)) and not np.array_equal(seen, np.arange(64))


def test_prefetched_batches_equal_inline_batches():
    ds = load_dataset("procedural", num_samples=128)
    inline = list(DataLoader(ds, batch_size=32, seed=3, prefetch=0).epoch(1))
    threaded = list(DataLoader(ds, batch_size=32, seed=3, prefetch=2).epoch(1))
    assert len(inline) == len(threaded) == 4
    for (xi, yi), (xt, yt) in zip(inline, threaded):
        np.testing.assert_array_equal(xi, xt)
        np.testing.assert_array_equal(yi, yt)


def test_prefetch_worker_exception_reraises_in_the_consumer():
    loader = DataLoader(indexed_dataset(128), batch_size=16, prefetch=2)
    real = loader.batch

    def failing(epoch, b, order=None):
        if b == 2:
            raise KeyError("boom in worker")
        return real(epoch, b, order)
    loader.batch = failing
    got = []
    with pytest.raises(KeyError, match="boom in worker"):
        for x, y in loader.epoch(0):
            got.append(y)
    assert len(got) == 2


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "minivit-prefetch" and t.is_alive()]


def test_breaking_early_stops_the_prefetch_thread():
    loader = DataLoader(indexed_dataset(512), batch_size=8, prefetch=1)
    for _ in loader.epoch(0):
        time.sleep(0.05)  # let the worker fill the queue and block on put
        break
    it = loader.epoch(1)
    next(it)
    it.close()  # an abandoned iterator closed explicitly
    deadline = time.time() + 3
    while prefetch_threads() and time.time() < deadline:
        time.sleep(0.01)
    assert prefetch_threads() == []


def test_iterating_the_loader_advances_the_epoch():
    loader = DataLoader(indexed_dataset(64), batch_size=64, augment=False, seed=0, prefetch=0)
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    np.testing.assert_array_equal(first, next(loader.epoch(0))[0])
    np.testing.assert_array_equal(second, next(loader.epoch(1))[0])


# ---------------------------------------------------------------- splits and load_dataset
@pytest.mark.parametrize("stratify", [True, False])
def test_split_train_val_is_disjoint_covering_and_deterministic(stratify):
    ds = indexed_dataset(103, num_classes=4)
    train, val = split_train_val(ds, val_size=21, seed=1, stratify=stratify)
    again_train, again_val = split_train_val(ds, val_size=21, seed=1, stratify=stratify)
    other_train, _ = split_train_val(ds, val_size=21, seed=2, stratify=stratify)
    assert len(val) == 21 and len(train) == 82
    assert set(ids(train)).isdisjoint(ids(val)) and set(ids(train)) | set(ids(val)) == set(range(103))
    np.testing.assert_array_equal(ids(val), ids(again_val))
    np.testing.assert_array_equal(ids(train), ids(again_train))
    assert not np.array_equal(ids(train), ids(other_train))
    np.testing.assert_array_equal(train.labels, ds.labels[ids(train)])
    if stratify:  # 21/103 of each class (sizes 26, 26, 26, 25): 5 or 6 each
        assert set(np.bincount(val.labels, minlength=4)) <= {5, 6}


def test_split_train_val_accepts_a_fraction():
    train, val = split_train_val(indexed_dataset(200), val_size=0.1)
    assert (len(train), len(val)) == (180, 20)
    with pytest.raises(ValueError):
        split_train_val(indexed_dataset(10), val_size=10)


def test_num_samples_takes_a_seeded_subset_and_unknown_names_fail(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    a = load_dataset("cifar10", tmp_path, num_samples=30, seed=1)
    b = load_dataset("cifar10", tmp_path, num_samples=30, seed=1)
    assert len(a) == 30
    np.testing.assert_array_equal(a.images, b.images)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_minivit_data_imports_only_numpy_pillow_tqdm_and_the_stdlib():
    allowed = set(sys.stdlib_module_names) | {"numpy", "PIL", "tqdm"}
    pkg = Path(folder.__file__).parent
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
