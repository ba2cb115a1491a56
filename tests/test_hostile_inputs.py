"""A hostile user's inputs: nonsense numbers, broken or crafted files, inconsistent datasets.

Each must end in a clear error saying what was expected and what was given; through the CLI,
one line "error: ..." (or argparse's usage error) and a non-zero exit, never a traceback.
Files are written small, in their real formats, into tmp_path.
"""
import json
import os
import re
import struct
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minivit.cli import main
from minivit.data import DataLoader, DataNotFoundError, load_dataset, make_procedural, split_train_val
from minivit.data import cifar, idx
from minivit.data.cache import load_arrays
from minivit.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from minivit.variants import create_model
from py2_pickle import dump as py2_dump

pytestmark = pytest.mark.usefixtures("private_data_dirs")


def png(path, size=(8, 8), mode="RGB", seed=0, array=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def tree(root, split, classes, size=(8, 8), n=2):
    """root/split/<class>/<i>.png, n random images per class."""
    for k, c in enumerate(classes):
        for i in range(n):
            png(root / split / c / f"{i}.png", size, seed=100 * k + i)
    return root


def run(argv, capsys):
    """(exit code, stderr) of main(argv); stderr must not hold a traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ---------------------------------------------------------------- argparse rejects nonsense numbers
NONSENSE = [
    (["predict", "ck.npz", "a.png", "--top", "-1"], "--top: expected a positive integer, got '-1'"),
    (["predict", "ck.npz", "a.png", "--top", "0"], "--top: expected a positive integer, got '0'"),
    (["predict", "ck.npz", "a.png", "--top", "9" * 400], "--top: expected a positive integer, got '999"),
    (["eval", "ck.npz", "--batch-size", "0"], "--batch-size: expected a positive integer, got '0'"),
    (["eval", "ck.npz", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["analyze", "ck.npz", "--out", "x", "--images", "0"], "--images: expected a positive integer, got '0'"),
    (["fewshot", "ck.npz", "--shots", "0,-1,abc"], "--shots: expected comma-separated positive integers"),
    (["fewshot", "ck.npz", "--shots", "1,,5"], "--shots: expected comma-separated positive integers"),
    (["fewshot", "ck.npz", "--seeds", "0"], "--seeds: expected a positive integer, got '0'"),
    (["fewshot", "ck.npz", "--test-images", "-5"], "--test-images: expected a positive integer, got '-5'"),
    (["bench", "model", "--sizes", "64,abc"], "--sizes: expected comma-separated positive integers"),
    (["bench", "model", "--sizes", "0"], "--sizes: expected comma-separated positive integers"),
    (["bench", "model", "--batch-size", "-8"], "--batch-size: expected a positive integer, got '-8'"),
    (["bench", "model", "--budget-gib", "nan"], "--budget-gib: expected a finite number > 0, got 'nan'"),
    (["bench", "model", "--budget-gib", "inf"], "--budget-gib: expected a finite number > 0, got 'inf'"),
    (["bench", "model", "--models", "a,,b"], "--models: expected comma-separated names"),
    (["demo", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
    (["demo", "--num-samples", "-1"], "--num-samples: expected a positive integer, got '-1'"),
    (["demo", "--seed", "-1"], "--seed: expected an integer >= 0, got '-1'"),
    (["train", "--epochs", "1.5"], "--epochs: expected a positive integer, got '1.5'"),
    (["train", "--batch-size", "0"], "--batch-size: expected a positive integer, got '0'"),
    (["train", "--lr", "nan"], "--lr: expected a finite number > 0, got 'nan'"),
    (["train", "--lr=-1e-3"], "--lr: expected a finite number > 0, got '-1e-3'"),
    (["train", "--val-size", "2.5"], "--val-size: expected a fraction in [0, 1) or a whole number of images"),
    (["train", "--val-size", "-0.1"], "--val-size: expected a fraction in [0, 1) or a whole number of images"),
    (["train", "--label-smoothing", "1"], "--label-smoothing: expected a number in [0, 1), got '1'"),
    (["train", "--drop-path-rate", "1.5"], "--drop-path-rate: expected a number in [0, 1), got '1.5'"),
    (["train", "--grad-clip", "inf"], "--grad-clip: expected a finite number >= 0, got 'inf'"),
    (["train", "--depth", "0"], "--depth: expected a positive integer, got '0'"),
    (["train", "--img-size", "-32"], "--img-size: expected a positive integer, got '-32'"),
    (["train", "--log-every", "0"], "--log-every: expected a positive integer, got '0'"),
    (["train", "--global-pool", "max"], "invalid choice: 'max'"),
    (["sweep", "--max-steps", "0"], "--max-steps: expected a positive integer, got '0'"),
]


@pytest.mark.parametrize("argv, message", NONSENSE, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NONSENSE])
def test_a_nonsense_number_is_refused_while_parsing_with_a_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: minivit" in err and message in err


def test_grad_clip_zero_means_no_clipping():
    from minivit.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "--grad-clip", "0", "--out", "x"])
    assert train_config_from_args(args).grad_clip is None


# ---------------------------------------------------------------- CIFAR-10 batches
def cifar_folder(tmp_path, labels=None, data=None, names=None):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in cifar.TRAIN_BATCHES + cifar.TEST_BATCHES:
        batch = {b"labels": [1, 2] if labels is None else labels,
                 b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8) if data is None else data}
        py2_dump(batch, folder / name)
    if names is not None:
        py2_dump({b"label_names": names}, folder / "batches.meta")
    return folder


@pytest.mark.parametrize("kw, message", [
    ({"labels": [1, 10]}, "labels should be ints in 0..9, found 10"),
    ({"labels": [1, -1]}, "labels should be ints in 0..9, found -1"),
    ({"labels": [1, b"cat"]}, "labels should be ints in 0..9, found b'cat'"),
    ({"labels": [1]}, "b'labels' should be a list of 2 ints (one per image), got 1 labels"),
    ({"data": np.zeros((2, 3072), np.float32)}, "b'data' should be a uint8 array (n, 3072), got float32 array"),
    ({"data": np.zeros((2, 1024), np.uint8)}, "b'data' should be a uint8 array (n, 3072), got uint8 array (2, 1024)"),
    ({"data": [[0] * 3072] * 2}, "b'data' should be a uint8 array (n, 3072), got list"),
    ({"names": [b"cat", b"dog"]}, "labels should be ints in 0..1, found 2"),
    ({"names": "cat"}, "b'label_names' should be a non-empty list of strings"),
], ids=["label 10", "label -1", "label bytes", "too few labels", "float pixels", "1024 columns", "a list of pixels",
        "two class names", "names not a list"])
def test_a_malformed_cifar_batch_names_the_file_and_what_it_expected(tmp_path, kw, message):
    cifar_folder(tmp_path, **kw)
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10", tmp_path, "train")
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value) and message in str(info.value)


def test_a_file_given_as_the_cifar_folder_says_it_is_a_file(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"x")
    with pytest.raises(DataNotFoundError, match=re.escape(f"{path}, which is a file, not a folder")):
        load_dataset("cifar10", path, "train")


# ---------------------------------------------------------------- image folders
def test_classes_only_in_test_are_an_error_listing_them(tmp_path):
    tree(tmp_path, "train", ["cat", "dog"])
    tree(tmp_path, "test", ["cat", "dog", "fox"])
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=re.escape("only in test/: ['fox']")):
            load_dataset("folder", tmp_path, split)


def test_train_and_test_of_different_image_sizes_are_an_error_naming_both(tmp_path):
    tree(tmp_path, "train", ["a", "b"], size=(8, 8))
    tree(tmp_path, "test", ["a", "b"], size=(16, 12))
    with pytest.raises(ValueError, match=re.escape(f"are 8x8, but {tmp_path / 'test' / 'a' / '0.png'} is 16x12")):
        load_dataset("folder", tmp_path, "train")


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    tree(tmp_path, "train", ["a", "b"])
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataNotFoundError, match=re.escape(f"class folder(s) ['empty'] in {tmp_path / 'train'}")):
        load_dataset("folder", tmp_path, "train")


def test_a_file_given_as_the_image_folder_says_it_is_a_file(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DataNotFoundError, match=re.escape(f"{path} is a file, not a folder")):
        load_dataset("folder", path, "train")


@pytest.mark.parametrize("split", ["../train", "", ".."])
def test_a_split_that_is_a_path_is_refused(tmp_path, split):
    tree(tmp_path, "train", ["a", "b"])
    with pytest.raises(ValueError, match="split must be the name of a sub-folder"):
        load_dataset("folder", tmp_path / "train", split)


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "16-bit", "float"])
def test_an_unreadable_or_wide_image_is_an_error_naming_it(tmp_path, damage):
    tree(tmp_path, "train", ["a", "b"])
    bad = tmp_path / "train" / "b" / "bad.png"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes((tmp_path / "train" / "a" / "0.png").read_bytes()[:60])
    elif damage == "text":
        bad.write_text("<html>not an image</html>")
    elif damage == "16-bit":
        png(bad, array=np.full((8, 8), 40000, np.uint16))
    else:
        bad = bad.with_suffix(".tif")
        Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(bad)
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image {bad}")):
        load_dataset("folder", tmp_path, "train")


def test_a_decompression_bomb_is_an_error_not_a_crash(tmp_path, monkeypatch):
    tree(tmp_path, "train", ["a", "b"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 images count as bombs (> 2x the limit)
    with pytest.raises(ValueError, match="could be decompression bomb"):
        load_dataset("folder", tmp_path, "train")


def test_images_of_mixed_modes_load_as_rgb(tmp_path):
    tree(tmp_path, "train", ["a"], n=1)
    png(tmp_path / "train" / "a" / "gray.png", mode="L")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "train" / "a" / "rgba.png")
    Image.new("P", (8, 8), 3).save(tmp_path / "train" / "a" / "palette.gif")
    ds = load_dataset("folder", tmp_path, "train")
    assert ds.images.shape == (4, 8, 8, 3)
    assert ds.images[ds.images.shape[0] - 1].tolist()[0][0] == [10, 20, 30]  # rgba.png sorts last


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are any bytes; macOS's must be UTF-8")
def test_file_and_class_names_that_are_not_utf8_load_and_cache(tmp_path):
    tree(tmp_path, "train", ["a"], n=1)
    odd_class = os.fsdecode(b"\xe9t\xe9")  # Latin-1 bytes: not UTF-8
    png(tmp_path / "train" / odd_class / os.fsdecode(b"\xff.png"))
    first = load_dataset("folder", tmp_path, "train")
    second = load_dataset("folder", tmp_path, "train")  # from the cache
    assert first.classes == ["a", odd_class] and len(first) == 2
    np.testing.assert_array_equal(first.images, second.images)


@pytest.mark.parametrize("craft", ["garbage", "empty", "wrong shape", "wrong labels", "object array", "float images"])
def test_a_corrupt_or_crafted_decode_cache_is_ignored_and_rewritten(tmp_path, craft):
    root = tree(tmp_path / "data", "train", ["a", "b"])
    truth = load_dataset("folder", root, "train", cache_dir=tmp_path / "cache")
    cache = next((tmp_path / "cache").iterdir())
    if craft == "garbage":
        cache.write_bytes(b"PK\x03\x04 garbage")
    elif craft == "empty":
        cache.write_bytes(b"")
    else:
        arrays = {"images": truth.images, "labels": truth.labels, "classes": np.array(truth.classes)}
        arrays.update({"wrong shape": {"images": np.zeros((4, 2, 2, 3), np.uint8)},
                       "wrong labels": {"labels": truth.labels[::-1].copy()},
                       "object array": {"images": np.array([None] * 4, dtype=object)},
                       "float images": {"images": truth.images.astype(np.float32)}}[craft])
        with open(cache, "wb") as f:
            np.savez(f, **arrays)
    again = load_dataset("folder", root, "train", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, truth.images)
    np.testing.assert_array_equal(load_arrays(cache)["images"], truth.images)  # overwritten


# ---------------------------------------------------------------- IDX files
def write_fashion(root, images, labels):
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        idx.write_idx(root / f"{split}-images-idx3-ubyte", images)
        idx.write_idx(root / f"{split}-labels-idx1-ubyte", labels)


def test_an_idx_header_whose_size_overflows_int64_is_refused_without_allocating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", *(2**16,) * 4))  # 2**64 bytes: 0 mod 2**64
    start = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape("has 0 data bytes, not the 18446744073709551616 bytes")):
        idx.read_idx(path)
    assert time.perf_counter() - start < 5.0


def test_an_idx_file_with_more_data_than_its_header_declares_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    idx.write_idx(path, np.zeros(10, np.uint8))
    import gzip

    with gzip.open(path, "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(ValueError, match=re.escape("has more data than the 10 bytes its header (10,) (uint8)")):
        idx.read_idx(path)


@pytest.mark.parametrize("labels, message", [(np.array([0, 10], np.uint8), "labels must be in 0..9, found 0..10"),
                                             (np.array([0.0, 1.0], np.float32), "expected integer labels (2,)")])
def test_fashion_mnist_labels_outside_the_classes_are_refused(tmp_path, labels, message):
    write_fashion(tmp_path, np.zeros((2, 28, 28), np.uint8), labels)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_dataset("fashion_mnist", tmp_path, "train")


# ---------------------------------------------------------------- numbers given to the data API
@pytest.mark.parametrize("kw, message", [({"num_samples": 0}, "num_samples must be a positive integer"),
                                         ({"num_samples": -5}, "num_samples must be a positive integer"),
                                         ({"num_samples": 2.5}, "num_samples must be a positive integer"),
                                         ({"seed": -1}, "seed must be a non-negative integer")])
def test_load_dataset_refuses_nonsense_counts_and_seeds(kw, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("procedural", split="test", **kw)


@pytest.mark.parametrize("val_size", [float("nan"), float("inf"), -1, -0.5, 2.5, "10", 100])
def test_split_train_val_refuses_sizes_that_make_no_sense(val_size):
    ds = make_procedural("test", 100)
    with pytest.raises(ValueError, match="val_size"):
        split_train_val(ds, val_size)


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": -2}, {"batch_size": 1.5}, {"pad": -1}])
def test_data_loader_refuses_batch_sizes_and_pads_that_make_no_sense(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        DataLoader(make_procedural("test", 8), **kw)


# ---------------------------------------------------------------- checkpoints
SMALL = dict(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=2)


def tiny_checkpoint(path, classes=("a", "b"), **meta):
    model = create_model("vit_testing", **SMALL)
    meta = {"classes": list(classes), "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, **meta}
    return save_checkpoint(path, model, **meta)


def rewrite(path, meta=None, arrays=None):
    """Rewrite a checkpoint with meta.json changed by meta(dict) and arrays by arrays(dict)."""
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    document = json.loads(entries["meta.json"].tobytes())
    if meta:
        meta(document)
    if arrays:
        arrays(entries)
    entries["meta.json"] = np.frombuffer(json.dumps(document).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    return path


def config(**values):
    return lambda meta: meta["config"].update(values)


WRONG_TYPES = [
    (config(img_size="abc"), "config 'img_size' should be an integer, got 'abc'"),
    (config(img_size=[8, 8]), "config 'img_size' should be an integer, got [8, 8]"),
    (config(depth=1.5), "config 'depth' should be an integer, got 1.5"),
    (config(embed_dim=True), "config 'embed_dim' should be an integer, got True"),
    (config(mlp_ratio="4"), "config 'mlp_ratio' should be a finite number, got '4'"),
    (config(class_token="yes"), "config 'class_token' should be true or false, got 'yes'"),
    (config(representation_size="x"), "config 'representation_size' should be an integer or null, got 'x'"),
    (lambda m: m.update(version="2"), "'version' should be an integer >= 0, got '2'"),
    (lambda m: m.update(dtype="object"), "'dtype' should be one of ('float32', 'float64'), got 'object'"),
    (lambda m: m.update(classes="ab"), "'classes' should be a list of names, got ab"),
    (lambda m: m.update(train_config=[1]), "'train_config' should be an object, got [1]"),
    (lambda m: m.update(position={"step": -1}), "'position' should hold integers >= 0"),
    (lambda m: m.update(rng_state={"bit_generator": "os.system"}), "'rng_state' is not a NumPy bit generator"),
    (lambda m: m.update(rng_state={"bit_generator": "PCG64", "state": "x"}), "'rng_state' is malformed"),
]


@pytest.mark.parametrize("mutate, message", WRONG_TYPES, ids=[m for _, m in WRONG_TYPES])
def test_a_meta_json_value_of_the_wrong_type_is_a_checkpoint_error_naming_it(tmp_path, mutate, message):
    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"), meta=mutate)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and message in str(info.value)


ABSURD = [
    ({"depth": 10**9}, "its config says depth=1000000000 (blocks 0..depth-1), but its weights hold 1 block(s)"),
    ({"embed_dim": 10**7}, "patch_embed.proj.weight should be (10000000, 3, 4, 4)"),
    ({"mlp_ratio": 1e6}, "blocks.0.mlp.fc1.weight should be (8000000, 8)"),
    ({"num_classes": 10**9}, "head.weight should be (1000000000, 8)"),
    ({"patch_size": 8}, "patch_embed.proj.weight should be (8, 3, 8, 8)"),
    ({"img_size": 4 * 10**6}, "pos_embed should be (1, 1000000000001, 8)"),
    ({"representation_size": 10**9}, "pre_logits.fc.weight should be (1000000000, 8)"),
    ({"img_size": 4 * 10**6, "pos_embed": "sincos"}, "makes 1000000000001 tokens, more than the 16384"),
    ({"img_size": 4 * 512, "pos_embed": "none"}, "makes 262145 tokens, more than the 16384"),
]


@pytest.mark.parametrize("values, message", ABSURD, ids=[str(v) for v, _ in ABSURD])
def test_an_absurd_config_is_refused_against_the_weights_before_a_model_is_built(tmp_path, monkeypatch, values,
                                                                                  message):
    import minivit.vit

    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"), meta=config(**values))

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the config was checked against the weights")

    monkeypatch.setattr(minivit.vit, "ViT", no_model)
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_malformed_optimizer_state_is_a_checkpoint_error(tmp_path):
    from minivit.train.checkpoint import optimizer_state

    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"),
                   meta=lambda m: m.update(optimizer={"type": "AdamW", "param_groups": "x", "scalars": [1]}))
    with pytest.raises(CheckpointError, match="the optimizer state in meta.json is malformed"):
        optimizer_state(load_checkpoint(path))


def test_weights_that_do_not_match_their_own_config_are_refused(tmp_path):
    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"),
                   arrays=lambda a: a.update({"model/blocks.0.attn.qkv.weight": np.zeros((3, 8), np.float32)}))
    with pytest.raises(CheckpointError, match=re.escape("blocks.0.attn.qkv.weight should be (24, 8)")):
        model_from_checkpoint(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_a_checkpoint_error_naming_the_parameter(tmp_path, value):
    def poison(arrays):
        arrays["model/blocks.0.mlp.fc2.weight"] = arrays["model/blocks.0.mlp.fc2.weight"].copy()
        arrays["model/blocks.0.mlp.fc2.weight"][0, :3] = value

    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"), arrays=poison)
    with pytest.raises(CheckpointError, match=re.escape("weights 'blocks.0.mlp.fc2.weight' holds 3 NaN or infinite")):
        load_checkpoint(path)


def test_string_weights_are_a_checkpoint_error(tmp_path):
    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"),
                   arrays=lambda a: a.update({"model/head.bias": np.array(["a", "b"])}))
    with pytest.raises(CheckpointError, match=re.escape("weights 'head.bias' has dtype <U1, expected floats")):
        load_checkpoint(path)


def test_an_entry_that_declares_an_absurd_shape_is_a_checkpoint_error(tmp_path):
    import io
    import zipfile

    path = tiny_checkpoint(tmp_path / "ck.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**9)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("model/huge.npy", header.getvalue() + b"\0" * 16)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_a_meta_json_nested_too_deeply_is_a_checkpoint_error(tmp_path):
    path = tiny_checkpoint(tmp_path / "ck.npz")
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    entries["meta.json"] = np.frombuffer(b'{"format": "minivit-checkpoint", "x": ' + b"[" * 100_000 + b"]" * 100_000
                                         + b"}", np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("norm, message", [
    ({"mean": [0.5] * 3, "std": [0, 1, 1]}, "'std' should be 3 finite number(s) > 0"),
    ({"mean": "abc", "std": [1] * 3}, "'mean' should be 3 finite number(s)"),
    ({"mean": [0.5], "std": [1]}, "'mean' should be 3 finite number(s)"),
    ({"mean": [0.5] * 3, "std": [float("nan")] * 3}, "'std' should be 3"),
], ids=["std 0", "mean a string", "one channel", "std nan"])
def test_a_malformed_normalisation_is_a_checkpoint_error(tmp_path, capsys, norm, message):
    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"), meta=lambda m: m.update(normalization=norm))
    code, err = run(["predict", str(path), str(png(tmp_path / "a.png"))], capsys)
    assert code == 2 and message in err


# ---------------------------------------------------------------- the CLI on hostile files and folders
def test_eval_on_a_dataset_whose_classes_differ_from_the_checkpoints_exits_2(tmp_path, capsys):
    root = tree(tmp_path / "data", "test", ["cat", "dog"])
    path = tiny_checkpoint(tmp_path / "ck.npz", classes=["dog", "cat"],
                           train_config={"dataset": "folder", "data_dir": str(root)})
    code, err = run(["eval", str(path)], capsys)
    assert code == 2 and "has classes ['cat', 'dog'], but the checkpoint was trained on ['dog', 'cat']" in err


def test_eval_on_images_of_another_size_exits_2_naming_both_sizes(tmp_path, capsys):
    root = tree(tmp_path / "data", "test", ["a", "b"], size=(16, 16))
    path = tiny_checkpoint(tmp_path / "ck.npz", train_config={"dataset": "folder", "data_dir": str(root)})
    code, err = run(["eval", str(path)], capsys)
    assert code == 2 and "has 16x16 images with 3 channel(s); the checkpoint's model takes 8x8 with 3" in err


def test_eval_of_a_checkpoint_naming_an_unknown_dataset_exits_2(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "ck.npz", train_config={"dataset": "../../etc/passwd"})
    code, err = run(["eval", str(path)], capsys)
    assert code == 2 and "was trained on dataset '../../etc/passwd', which is not one of" in err


@pytest.mark.parametrize("name", ["depth", "img_size"])
def test_eval_of_a_crafted_checkpoint_exits_2_at_once(tmp_path, capsys, name):
    path = rewrite(tiny_checkpoint(tmp_path / "ck.npz"), meta=config(**{name: 10**9 if name == "depth" else 4 * 10**6}))
    start = time.perf_counter()
    code, err = run(["eval", str(path), "--dataset", "procedural"], capsys)
    assert code == 2 and f"error: checkpoint {path}" in err
    assert time.perf_counter() - start < 5.0  # the unchecked config took minutes and gigabytes


def test_predict_with_a_checkpoint_naming_too_few_classes_exits_2(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "ck.npz", classes=["only one"])
    code, err = run(["predict", str(path), str(png(tmp_path / "a.png"))], capsys)
    assert code == 2 and "names 1 classes for 2 outputs" in err


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are any bytes; macOS's must be UTF-8")
def test_predict_prints_a_file_name_that_is_not_utf8(tmp_path, capsys):
    import kernels

    path = tiny_checkpoint(tmp_path / "ck.npz")
    image = png(tmp_path / os.fsdecode(b"caf\xe9.png"))
    with kernels.use("reference"):  # no Numba compilation for one tiny forward
        assert main(["predict", str(path), str(image), "--top", "1"]) == 0
    assert "caf\\udce9.png" in capsys.readouterr().out


def test_train_resume_with_a_damaged_config_json_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"train": {"epochs": "many"}}')
    code, err = run(["train", "--resume", "--out", str(tmp_path)], capsys)
    assert code == 2 and "training options: epochs" in err and "'many'" in err
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    code, err = run(["train", "--resume", "--out", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path / 'config.json'} is not valid JSON" in err


def test_train_with_a_model_too_large_for_this_machine_exits_2_before_loading_anything(capsys, monkeypatch):
    import minivit.train

    monkeypatch.setattr(minivit.train, "Trainer", None)  # would raise TypeError if it were reached
    code, err = run(["train", "--dataset", "procedural", "--depth", str(10**9), "--out", "x"], capsys)
    assert code == 2 and "depth=1000000000" in err and "GiB" in err


def test_train_on_a_folder_with_a_file_where_its_folder_should_be_exits_2(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    code, err = run(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--out",
                     str(tmp_path / "run")], capsys)
    assert code == 2 and f"{tmp_path / 'data'} is a file, not a folder" in err


def test_sweep_checks_every_point_before_training_the_first(tmp_path, capsys, monkeypatch):
    import minivit.train.sweep

    monkeypatch.setattr(minivit.train.sweep, "run_sweep", None)  # would raise TypeError if it were reached
    code, err = run(["sweep", "--dataset", "procedural", "--out", str(tmp_path), "--grid", "depth=2,abc"], capsys)
    assert code == 2 and "sweep point {'depth': 'abc'}: " in err and "depth" in err.split(": ", 2)[2]
    code, err = run(["sweep", "--dataset", "procedural", "--out", str(tmp_path), "--grid", "epochs=2,0"], capsys)
    assert code == 2 and "sweep point {'epochs': 0}: epochs" in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "model", "--models", "vit_nope"], "unknown model 'vit_nope'"),
    (["bench", "model", "--models", "vit_tiny_patch16_224", "--sizes", "7,9"], "nothing to measure"),
    (["bench", "model", "--models", "vit_tiny_patch16_224", "--sizes", str(16 * 10**5)], "GiB"),
])
def test_bench_with_nothing_to_measure_exits_2(capsys, argv, message):
    code, err = run(argv, capsys)
    assert code == 2 and message in err


def test_models_with_a_pattern_that_matches_nothing_exits_1_saying_so(capsys):
    assert main(["models", "no-such-model"]) == 1
    assert "no model name matches 'no-such-model'" in capsys.readouterr().err


def test_a_genuine_bug_keeps_its_traceback(monkeypatch):
    """main() reports user errors, not TypeErrors from minivit's own code."""
    import minivit.cli

    def buggy(args):
        return None + 1

    monkeypatch.setattr(minivit.cli, "cmd_recipes", buggy)
    with pytest.raises(TypeError):
        main(["recipes"])
