"""Tests for minivit.train.checkpoint: exact round trips, no pickle, atomic writes, and damaged files
that fail with a CheckpointError naming them."""
import json
import os
import re
import zipfile

import numpy as np
import pytest

from minivit import functional as F
from minivit import optim
from minivit import rng as mrandom
from minivit.train.checkpoint import (FORMAT, CheckpointError, load_checkpoint, load_weights, model_from_checkpoint,
                                optimizer_state, save_checkpoint)
from minivit.vit import ViT

SMALL = dict(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=3)


def small_vit(**overrides):
    return ViT(**{**SMALL, **overrides})


def images(n=4, seed=0, size=16):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)  # (B, C, H, W)


def trained_pair(steps=2, **overrides):
    """A model and an AdamW that has taken `steps` steps, so that its moments are non-zero."""
    mrandom.manual_seed(0)
    model = small_vit(**overrides)
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x, y = images(), np.array([0, 1, 2, 1])
    for _ in range(steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def valid_checkpoint_bytes(tmp_path):
    model, opt = trained_pair(steps=1)
    return save_checkpoint(tmp_path / "valid.npz", model, opt, classes=["a", "b", "c"]).read_bytes()


# ---------------------------------------------------------------------------- round trips
def test_weights_round_trip_exactly_with_names_shapes_and_dtypes(tmp_path):
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path / "ck.npz", model)
    ckpt = load_checkpoint(path)
    saved = model.state_dict()
    assert list(ckpt["model"]) == list(saved)
    for name, array in saved.items():
        assert ckpt["model"][name].dtype == array.dtype, name
        assert np.array_equal(ckpt["model"][name], array), name


def test_load_weights_into_a_fresh_model_gives_identical_parameters(tmp_path):
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path / "ck.npz", model)
    mrandom.manual_seed(123)
    fresh = small_vit()
    assert not np.array_equal(fresh.pos_embed.data, model.pos_embed.data)
    load_weights(fresh, load_checkpoint(path))
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert np.array_equal(a, b), name


def test_adamw_moments_and_step_round_trip_and_the_next_update_is_identical(tmp_path):
    model, opt = trained_pair(steps=3)
    path = save_checkpoint(tmp_path / "ck.npz", model, opt)
    ckpt = load_checkpoint(path)
    state = optimizer_state(ckpt)

    original = opt.state_dict()
    assert set(state["state"]) == set(original["state"])
    for i, s in original["state"].items():
        assert state["state"][i]["step"] == s["step"] == 3
        assert isinstance(state["state"][i]["step"], int)
        for key in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(state["state"][i][key], s[key]), (i, key)
            assert np.any(s[key] != 0)
    for saved_group, group in zip(state["param_groups"], original["param_groups"]):
        assert saved_group == group  # lr, betas (a tuple again), eps, weight_decay, num_params

    # a second model/optimizer restored from the file takes the very same next step
    model2, _ = model_from_checkpoint(path)
    opt2 = optim.AdamW(model2.parameters(), lr=123.0, weight_decay=0.0)  # overwritten by load_state_dict
    opt2.load_state_dict(state)
    x, y = images(seed=5), np.array([2, 2, 0, 1])
    for m, o in ((model, opt), (model2, opt2)):
        F.cross_entropy(m(x), y).backward()
        o.step()
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert np.array_equal(a, b), name


def test_sgd_momentum_buffers_round_trip(tmp_path):
    mrandom.manual_seed(0)
    model = small_vit()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    F.cross_entropy(model(images()), np.array([0, 1, 2, 1])).backward()
    opt.step()
    state = optimizer_state(load_checkpoint(save_checkpoint(tmp_path / "ck.npz", model, opt)))
    for i, s in opt.state_dict()["state"].items():
        assert np.array_equal(state["state"][i]["momentum_buffer"], s["momentum_buffer"])
    assert state["param_groups"][0]["nesterov"] is True


def test_meta_round_trips_rng_state_with_128_bit_ints_classes_and_nested_dicts(tmp_path):
    mrandom.manual_seed(2024)
    mrandom.generator().random(7)  # move the state somewhere non-trivial
    rng_state = mrandom.get_rng_state()
    assert rng_state["state"]["state"] > 2**64  # PCG64's 128-bit state: more than a double holds
    expected = mrandom.generator().random(5)  # what the saved state draws next
    meta = {"rng_state": rng_state, "classes": ["cat", "dog", "ünïcode"],
            "nested": {"a": {"b": [1, 2.5, None, True]}, "empty": {}},
            "position": {"step": 12, "epoch": 1, "batch": 3}}
    path = save_checkpoint(tmp_path / "ck.npz", small_vit(), **meta)
    loaded = load_checkpoint(path)["meta"]
    for key, value in meta.items():
        assert loaded[key] == value, key
    assert loaded["format"] == FORMAT and loaded["config"] == small_vit().config.to_dict()

    mrandom.set_rng_state(loaded["rng_state"])
    assert np.array_equal(mrandom.generator().random(5), expected)


def test_meta_converts_numpy_scalars_tuples_and_paths_to_json(tmp_path):
    path = save_checkpoint(tmp_path / "ck.npz", small_vit(), best=np.float32(0.5), count=np.int64(7),
                           shape=(2, 3), where=tmp_path)
    meta = load_checkpoint(path)["meta"]
    assert meta["best"] == 0.5 and meta["count"] == 7 and meta["shape"] == [2, 3]
    assert meta["where"] == str(tmp_path)


def test_unserialisable_meta_raises_type_error_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "ck.npz", small_vit(), bad=object())
    assert os.listdir(tmp_path) == []


def test_float64_model_round_trips_its_dtype(tmp_path):
    model = ViT(**SMALL, dtype=np.float64)
    rebuilt, _ = model_from_checkpoint(save_checkpoint(tmp_path / "ck.npz", model))
    assert rebuilt.dtype == np.float64
    assert all(a.dtype == np.float64 for a in rebuilt.state_dict().values())


@pytest.mark.parametrize("overrides", [{}, {"global_pool": "avg", "class_token": False},
                                       {"representation_size": 8, "drop_rate": 0.2},
                                       {"pos_embed": "relative_bias_2d", "depth": 2},
                                       {"pos_embed": "relative_1d", "depth": 2}])
def test_model_from_checkpoint_rebuilds_the_same_config_and_logits(tmp_path, overrides):
    model, _ = trained_pair(**overrides)
    model.eval()
    path = save_checkpoint(tmp_path / "ck.npz", model)
    rebuilt, ckpt = model_from_checkpoint(path)
    rebuilt.eval()
    assert rebuilt.config == model.config
    x = images(seed=3)
    logits = model(x).numpy()
    assert np.any(logits != 0)
    assert np.array_equal(rebuilt(x).numpy(), logits)


def _variants():
    import itertools

    from minivit import posemb

    for kind, where, cls, rep, K in itertools.product(posemb.KINDS, posemb.WHERE, [True, False], [None, 8], [3, 0]):
        if where != "input" and kind != "learn":
            continue
        yield pytest.param(dict(pos_embed=kind, pos_embed_at=where, class_token=cls, representation_size=rep,
                                num_classes=K, global_pool="token" if cls else "avg"),
                           id=f"{kind}-{where}-{'cls' if cls else 'gap'}-rep{rep}-K{K}")


@pytest.mark.parametrize("variant", list(_variants()))
def test_the_size_check_accepts_every_model_variant_and_names_its_exact_shapes(tmp_path, variant):
    """model_from_checkpoint compares the config with the weights before building: that check
    must know every variant's shapes, or it would refuse genuine checkpoints."""
    from minivit.train.checkpoint import size_shapes

    model = small_vit(depth=2, **variant)
    state = model.state_dict()
    for key, shape in size_shapes(model.config).items():
        assert tuple(state[key].shape) == shape, key
    rebuilt, _ = model_from_checkpoint(save_checkpoint(tmp_path / "ck.npz", model))
    assert rebuilt.config == model.config


def test_resume_state_returns_the_training_position_and_refuses_a_checkpoint_without_one(tmp_path):
    from minivit.train.checkpoint import resume_state

    meta = dict(position={"step": 7, "epoch": 1, "batch": 3}, epoch_running=[1.5, 2, 3, 0.25], best_val=0.5,
                rng_state=mrandom.get_rng_state())
    state = resume_state(load_checkpoint(save_checkpoint(tmp_path / "full.npz", small_vit(), **meta)))
    assert (state["step"], state["epoch"], state["batch"]) == (7, 1, 3)
    assert state["epoch_running"] == (1.5, 2, 3, 0.25) and state["best_val"] == 0.5
    assert state["rng_state"] == meta["rng_state"]
    weights_only = save_checkpoint(tmp_path / "weights.npz", small_vit())
    with pytest.raises(CheckpointError, match="holds no training position"):
        resume_state(load_checkpoint(weights_only))
    broken = save_checkpoint(tmp_path / "broken.npz", small_vit(), **{**meta, "epoch_running": "abc"})
    with pytest.raises(CheckpointError, match="'epoch_running' should be 4 numbers"):
        resume_state(load_checkpoint(broken))


def test_load_checkpoint_of_a_folder_reads_its_checkpoint_npz(tmp_path):
    save_checkpoint(tmp_path / "run" / "checkpoint.npz", small_vit())
    assert load_checkpoint(tmp_path / "run")["path"] == tmp_path / "run" / "checkpoint.npz"


def test_optimizer_state_of_a_weights_only_checkpoint_raises_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "ck.npz", small_vit())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        optimizer_state(load_checkpoint(path))


# ---------------------------------------------------------------------------- no pickle
def test_checkpoint_is_a_plain_npz_zip_that_loads_without_pickle(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path / "ck.npz", model, opt, classes=["a", "b", "c"])

    with zipfile.ZipFile(path) as z:
        names = [n[:-len(".npy")] for n in z.namelist()]
        assert z.testzip() is None
    assert "meta.json" in names
    assert {n for n in names if n.startswith("model/")} == {f"model/{k}" for k in model.state_dict()}
    assert any(n.startswith("optim/0/exp_avg") for n in names)

    with np.load(path, allow_pickle=False) as archive:  # raises on any pickled (object) entry
        arrays = {k: archive[k] for k in archive.files}
    assert all(a.dtype != object for a in arrays.values())
    meta = json.loads(arrays["meta.json"].tobytes().decode("utf-8"))
    assert meta["classes"] == ["a", "b", "c"]


# ---------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_save_that_fails_midway_keeps_the_previous_checkpoint_and_leaves_no_temp_file(
        tmp_path, monkeypatch, error):
    old_model, old_opt = trained_pair(steps=1)
    path = save_checkpoint(tmp_path / "checkpoint.npz", old_model, old_opt)
    before = path.read_bytes()

    def failing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half of an archive")  # some bytes reach the temp file first
        raise error

    monkeypatch.setattr(np, "savez", failing_savez)
    new_model, new_opt = trained_pair(steps=3)
    with pytest.raises(type(error)):
        save_checkpoint(path, new_model, new_opt)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    assert path.read_bytes() == before
    restored = load_checkpoint(path)["model"]
    assert np.array_equal(restored["pos_embed"], old_model.pos_embed.data)


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)], ids=["077", "022", "002"])
def test_save_never_touches_the_umask_and_the_file_mode_honours_it(tmp_path, monkeypatch, umask, mode):
    model = small_vit()
    previous = os.umask(umask)
    try:
        def no_umask(mask):  # reading the umask means setting it: racy with other threads
            raise AssertionError(f"save_checkpoint called os.umask({mask:#o})")

        monkeypatch.setattr(os, "umask", no_umask)
        path = save_checkpoint(tmp_path / "checkpoint.npz", model)
        monkeypatch.undo()
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_a_save_never_overwrites_a_file_that_only_looks_like_its_temp_file(tmp_path, monkeypatch):
    """The temp file is created with O_EXCL under a random name: a name already taken is skipped."""
    import secrets

    names = iter(["taken", "taken", "fresh"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".checkpoint.npz.taken.tmp").write_text("someone else's file")
    path = save_checkpoint(tmp_path / "checkpoint.npz", small_vit())
    assert (tmp_path / ".checkpoint.npz.taken.tmp").read_text() == "someone else's file"
    assert sorted(os.listdir(tmp_path)) == [".checkpoint.npz.taken.tmp", "checkpoint.npz"]
    assert load_checkpoint(path)["meta"]["format"] == FORMAT


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.npz", small_vit(), position={"step": 1})
    save_checkpoint(path, small_vit(), position={"step": 2})
    assert load_checkpoint(path)["meta"]["position"] == {"step": 2}
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


# ---------------------------------------------------------------------------- damaged files
def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _meta(document: bytes):
    return np.frombuffer(document, dtype=np.uint8)


def _truncated(tmp_path, path):
    data = valid_checkpoint_bytes(tmp_path)
    path.write_bytes(data[: len(data) // 2])


def _truncated_to_the_zip_directory(tmp_path, path):
    data = valid_checkpoint_bytes(tmp_path)
    path.write_bytes(data[:-10])


def _random_bytes(tmp_path, path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(tmp_path, path):
    path.write_bytes(b"")


def _text(tmp_path, path):
    path.write_text("this is not a checkpoint\n")


def _zip_without_meta(tmp_path, path):
    _write_npz(path, **{"model/pos_embed": np.zeros((1, 17, 16), np.float32)})


def _foreign_npz(tmp_path, path):
    _write_npz(path, weights=np.arange(10.0), labels=np.arange(3))


def _foreign_zip(tmp_path, path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "a zip from another program")


def _wrong_format_tag(tmp_path, path):
    _write_npz(path, **{"meta.json": _meta(json.dumps({"format": "other-program", "version": 1}).encode())})


def _newer_version(tmp_path, path):
    _write_npz(path, **{"meta.json": _meta(json.dumps({"format": FORMAT, "version": 99}).encode())})


def _meta_not_json(tmp_path, path):
    _write_npz(path, **{"meta.json": _meta(b"{not json")})


def _meta_not_utf8(tmp_path, path):
    _write_npz(path, **{"meta.json": _meta(b"\xff\xfe\x00garbage")})


def _meta_pickled(tmp_path, path):
    with open(path, "wb") as f:
        np.savez(f, **{"meta.json": np.array([{"format": FORMAT}], dtype=object)})


def _corrupt_entry(tmp_path, path):
    """A valid archive whose compressed-free entry bytes are overwritten in the middle."""
    data = bytearray(valid_checkpoint_bytes(tmp_path))
    with zipfile.ZipFile(tmp_path / "valid.npz") as z:
        info = z.getinfo("meta.json.npy")
    start = info.header_offset + 30 + len(info.filename) + 20
    data[start:start + 40] = b"\x00" * 40
    path.write_bytes(bytes(data))


DAMAGED = [_truncated, _truncated_to_the_zip_directory, _random_bytes, _empty, _text, _zip_without_meta,
           _foreign_npz, _foreign_zip, _wrong_format_tag, _newer_version, _meta_not_json, _meta_not_utf8,
           _meta_pickled, _corrupt_entry]


@pytest.mark.parametrize("damage", DAMAGED, ids=[f.__name__.strip("_") for f in DAMAGED])
def test_a_damaged_or_foreign_file_raises_checkpoint_error_naming_it(tmp_path, damage):
    path = tmp_path / "damaged" / "checkpoint.npz"
    path.parent.mkdir()
    damage(tmp_path, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def _plain_npy(tmp_path, path):
    with open(path, "wb") as f:
        np.save(f, np.arange(5))


def _meta_json_array(tmp_path, path):
    _write_npz(path, **{"meta.json": _meta(b"[1, 2, 3]")})


def test_a_plain_npy_file_raises_checkpoint_error_naming_it(tmp_path):
    path = tmp_path / "checkpoint.npz"
    _plain_npy(tmp_path, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_a_meta_json_that_is_not_an_object_raises_checkpoint_error_naming_it(tmp_path):
    path = tmp_path / "checkpoint.npz"
    _meta_json_array(tmp_path, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_a_missing_file_raises_checkpoint_error_naming_it(tmp_path):
    path = tmp_path / "nowhere" / "checkpoint.npz"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "checkpoint.npz"))):
        load_checkpoint(tmp_path)  # a folder without checkpoint.npz


# ---------------------------------------------------------------------------- config mismatches
@pytest.mark.parametrize("other, keys", [({"embed_dim": 32}, ["embed_dim"]),
                                         ({"depth": 2}, ["depth"]),
                                         ({"img_size": 32}, ["img_size"]),
                                         ({"num_classes": 5, "patch_size": 8}, ["num_classes", "patch_size"])])
def test_loading_into_a_model_of_another_config_names_the_differing_keys(tmp_path, other, keys):
    path = save_checkpoint(tmp_path / "ck.npz", small_vit())
    target = small_vit(**other)
    before = {k: v.copy() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(target, load_checkpoint(path))
    message = str(info.value)
    assert str(path) in message
    for key in keys:
        assert f"'{key}'" in message
    assert "'num_heads'" not in message  # only the keys that differ
    for k, v in target.state_dict().items():  # nothing half-loaded
        assert np.array_equal(v, before[k]), k
