"""Tests for minivit.train.finetune (ViT paper Section 3.2): position embeddings interpolated to a new
patch grid, a fresh zero head for new classes, no pre-logits layer, and `train --init-from`."""
import re

import numpy as np
import pytest
from PIL import Image

from minivit import rng as mrandom
from minivit.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivit.cli import main
from minivit.posemb import resize_pos_embed
from minivit.train.finetune import adapt_state_dict, init_from_checkpoint
from minivit.train import TrainConfig, Trainer
from minivit.posemb import interpolate_grid
from minivit.vit import ViT

SMALL = dict(patch_size=4, embed_dim=16, depth=1, num_heads=2)


def randomised(model, seed=0):
    """Give every parameter (the zero head too) distinct random values."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype)
    return model


def checkpoint_at_16(tmp_path, **overrides):
    """A ViT at 16x16 (a 4x4 patch grid) with random weights, saved; returns (model, path)."""
    mrandom.manual_seed(0)
    model = randomised(ViT(**{"img_size": 16, "num_classes": 3, **SMALL, **overrides}))
    return model, save_checkpoint(tmp_path / "at16.npz", model)


def linear_grid(grid, D, seed=0):
    """(1, 1 + gh*gw, D) embedding whose grid part is a*y + b*x + c per channel; row 0 random."""
    gh, gw = grid
    rng = np.random.default_rng(seed)
    a, b, c = rng.standard_normal((3, D))
    y, x = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    values = a * y.reshape(-1, 1) + b * x.reshape(-1, 1) + c  # (gh*gw, D) in raster order
    return np.concatenate([rng.standard_normal((1, D)), values])[None], (a, b, c)


def sample_positions(n_out, n_in):
    """Where output cell j samples the input grid (half-pixel centres, as align_corners=False)."""
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


# ---------------------------------------------------------------------------- resize_pos_embed
def test_resize_keeps_the_class_token_row_and_maps_a_constant_grid_to_the_same_constant():
    D = 8
    pos = np.full((1, 1 + 16, D), 0.7, np.float32)
    pos[0, 0] = np.arange(D)
    out = resize_pos_embed(pos, (4, 4), (7, 7), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 49, D) and out.dtype == np.float32
    assert np.array_equal(out[0, 0], pos[0, 0])
    np.testing.assert_allclose(out[0, 1:], 0.7, rtol=1e-6)


def test_resize_to_the_same_grid_changes_nothing():
    pos = np.random.default_rng(0).standard_normal((1, 17, 8)).astype(np.float32)
    assert np.array_equal(resize_pos_embed(pos, (4, 4), (4, 4), 1), pos)


@pytest.mark.parametrize("old, new", [((4, 4), (8, 8)), ((4, 4), (6, 6)), ((8, 8), (4, 4)), ((2, 4), (4, 8)),
                                      ((3, 3), (12, 5))])
def test_resizing_a_linear_ramp_gives_the_ramp_at_the_new_positions(old, new):
    """Bilinear interpolation is exact on linear functions; outside the outer cell centres it
    holds the border value (positions are clamped)."""
    D = 5
    pos, (a, b, c) = linear_grid(old, D)
    out = resize_pos_embed(pos, old, new, num_prefix_tokens=1)
    assert out.shape == (1, 1 + new[0] * new[1], D)
    assert np.array_equal(out[0, 0], pos[0, 0])

    py, px = sample_positions(new[0], old[0]), sample_positions(new[1], old[1])
    grid = out[0, 1:].reshape(new[0], new[1], D)
    inside_y = (py >= 0) & (py <= old[0] - 1)
    inside_x = (px >= 0) & (px <= old[1] - 1)
    assert inside_y.sum() >= new[0] // 2 and inside_x.sum() >= new[1] // 2  # the ramp part is tested
    ramp = a * py[:, None, None] + b * px[None, :, None] + c  # the unclamped linear function
    np.testing.assert_allclose(grid[np.ix_(inside_y, inside_x)], ramp[np.ix_(inside_y, inside_x)], atol=1e-12)
    clamped = (a * np.clip(py, 0, old[0] - 1)[:, None, None] + b * np.clip(px, 0, old[1] - 1)[None, :, None] + c)
    np.testing.assert_allclose(grid, clamped, atol=1e-12)


def test_resize_without_prefix_tokens_interpolates_every_row():
    pos, _ = linear_grid((4, 4), 6)
    grid_only = pos[:, 1:]
    out = resize_pos_embed(grid_only, (4, 4), (8, 8), num_prefix_tokens=0)
    assert out.shape == (1, 64, 6)
    np.testing.assert_allclose(out, resize_pos_embed(pos, (4, 4), (8, 8), 1)[:, 1:])


# ---------------------------------------------------------------------------- init from a checkpoint
def test_init_from_a_16px_checkpoint_into_a_32px_model_resizes_pos_embed_and_replaces_the_head(tmp_path, capsys):
    saved, path = checkpoint_at_16(tmp_path, representation_size=8)
    model = ViT(img_size=32, num_classes=5, **SMALL)
    notes = init_from_checkpoint(model, path)

    state, old = model.state_dict(), saved.state_dict()
    expected_pos = resize_pos_embed(old["pos_embed"], (4, 4), (8, 8), 1)
    assert state["pos_embed"].shape == (1, 65, 16)
    np.testing.assert_array_equal(state["pos_embed"], expected_pos)
    for name in state:
        if name in ("pos_embed", "head.weight", "head.bias"):
            continue
        assert np.array_equal(state[name], old[name]), name
    assert not np.any(state["head.weight"]) and not np.any(state["head.bias"])  # zero D x K head
    assert state["head.weight"].shape == (5, 16)
    assert not any(k.startswith("pre_logits") for k in state)
    assert any("dropped pre_logits.fc.weight" in n for n in notes)
    assert any("interpolated pos_embed from a 4x4 to a 8x8 patch grid" in n for n in notes)
    assert "init-from: interpolated pos_embed" in capsys.readouterr().out

    logits = model(np.zeros((2, 3, 32, 32), np.float32)).numpy()
    assert logits.shape == (2, 5) and not np.any(logits)


def test_init_from_keeps_the_head_when_classes_and_width_match(tmp_path):
    saved, path = checkpoint_at_16(tmp_path)
    model = ViT(img_size=32, num_classes=3, **SMALL)
    init_from_checkpoint(model, path)
    assert np.array_equal(model.head.weight.data, saved.head.weight.data)
    assert np.any(model.head.weight.data)


def test_init_from_resizes_per_block_position_embeddings(tmp_path):
    saved, path = checkpoint_at_16(tmp_path, pos_embed_at="every_block", depth=2)
    model = ViT(img_size=32, num_classes=3, pos_embed_at="every_block", **{**SMALL, "depth": 2})
    init_from_checkpoint(model, path)
    assert model.pos_embed.shape == (2, 65, 16)  # one embedding per block
    for layer in range(2):
        expected = resize_pos_embed(saved.pos_embed.data[layer:layer + 1], (4, 4), (8, 8), 1)
        np.testing.assert_array_equal(model.pos_embed.data[layer:layer + 1], expected)


def test_init_from_without_a_class_token_resizes_the_whole_grid(tmp_path):
    saved, path = checkpoint_at_16(tmp_path, class_token=False, global_pool="avg")
    model = ViT(img_size=32, num_classes=3, class_token=False, global_pool="avg", **SMALL)
    init_from_checkpoint(model, path)
    expected = resize_pos_embed(saved.pos_embed.data, (4, 4), (8, 8), 0)
    np.testing.assert_array_equal(model.pos_embed.data, expected)


@pytest.mark.parametrize("img_size, patch_size, message", [
    (32, 16, "cannot fine-tune across patch sizes (4 -> 16)"),
    (32, 8, "patch_embed.proj.weight"),  # the same 4x4 grid: the projection itself does not fit
])
def test_init_from_across_patch_sizes_raises_checkpoint_error(tmp_path, img_size, patch_size, message):
    _, path = checkpoint_at_16(tmp_path)
    model = ViT(img_size=img_size, num_classes=3, **{**SMALL, "patch_size": patch_size})
    with pytest.raises(CheckpointError, match=re.escape(message)):
        init_from_checkpoint(model, path)


def test_init_from_a_missing_checkpoint_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        init_from_checkpoint(ViT(img_size=32, num_classes=3, **SMALL), tmp_path / "missing.npz")


def test_adapt_state_dict_leaves_the_checkpoint_arrays_untouched(tmp_path):
    saved, path = checkpoint_at_16(tmp_path, representation_size=8)
    ckpt = load_checkpoint(path)
    before = {k: v.copy() for k, v in ckpt["model"].items()}
    adapt_state_dict(ckpt["model"], ckpt["meta"]["config"], ViT(img_size=32, num_classes=5, **SMALL))
    assert set(ckpt["model"]) == set(before)
    assert all(np.array_equal(ckpt["model"][k], before[k]) for k in before)


def test_init_from_resizes_2d_factorised_position_embeddings(tmp_path):
    _, path = checkpoint_at_16(tmp_path, pos_embed="learn_2d")
    model = ViT(img_size=32, num_classes=3, pos_embed="learn_2d", **SMALL)
    init_from_checkpoint(model, path)
    assert model.pos_embed_y.data.shape == (1, 8, 8)


# ---------------------------------------------------------------------------- train --init-from
def write_image_folder(root, size, classes, train_per_class=12, test_per_class=4):
    """root/{train,test}/<class>/*.png: each class a different brightness, so it can be learned."""
    rng = np.random.default_rng(size)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                level = 40 + 60 * k
                pixels = np.clip(level + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def folders(tmp_path, private_data_dirs):
    return (write_image_folder(tmp_path / "data16", 16, ["a", "b"]),
            write_image_folder(tmp_path / "data32", 32, ["a", "b", "c"]))


def folder_config(data_dir, img_size, out_dir, **overrides):
    return TrainConfig(**{
        "model": "vit_testing", "dataset": "folder", "data_dir": str(data_dir), "val_size": 0, "epochs": 1,
        "batch_size": 8, "model_kwargs": {**SMALL, "img_size": img_size}, "out_dir": str(out_dir),
        "progress": False, "eval_test": "epoch", **overrides})


def test_trainer_init_from_starts_a_32px_model_from_16px_weights(folders, tmp_path):
    data16, data32 = folders
    first = Trainer(folder_config(data16, 16, tmp_path / "run16"))
    first.fit()
    trained = first.model.state_dict()

    trainer = Trainer(folder_config(data32, 32, tmp_path / "run32", init_from=str(tmp_path / "run16")))
    state = trainer.model.state_dict()
    assert trainer.model.config.img_size == 32 and trainer.model.config.num_classes == 3
    np.testing.assert_array_equal(state["pos_embed"], resize_pos_embed(trained["pos_embed"], (4, 4), (8, 8), 1))
    assert np.array_equal(state["blocks.0.attn.qkv.weight"], trained["blocks.0.attn.qkv.weight"])
    assert np.array_equal(state["patch_embed.proj.weight"], trained["patch_embed.proj.weight"])
    assert not np.any(state["head.weight"])


def test_cli_train_init_from_fine_tunes_at_a_higher_resolution(folders, tmp_path, capsys):
    data16, data32 = folders
    common = ["--model", "vit_testing", "--dataset", "folder", "--patch-size", "4", "--embed-dim", "16",
              "--depth", "1", "--num-heads", "2", "--val-size", "0", "--epochs", "1", "--batch-size", "8",
              "--no-progress"]
    assert main(["train", *common, "--data-dir", str(data16), "--img-size", "16", "--out", str(tmp_path / "r16")]) == 0
    capsys.readouterr()

    code = main(["train", *common, "--data-dir", str(data32), "--img-size", "32", "--out", str(tmp_path / "r32"),
                 "--init-from", str(tmp_path / "r16" / "checkpoint.npz")])
    out = capsys.readouterr().out
    assert code == 0
    assert "init-from: interpolated pos_embed from a 4x4 to a 8x8 patch grid" in out
    assert "init-from: dropped head.weight" in out
    assert re.search(r"test_acc (\d\.\d+)", out)
    meta = load_checkpoint(tmp_path / "r32")["meta"]
    assert meta["config"]["img_size"] == 32 and meta["config"]["num_classes"] == 3
    assert meta["classes"] == ["a", "b", "c"]


def test_cli_train_init_from_across_patch_sizes_exits_2(folders, tmp_path, capsys):
    _, data32 = folders
    _, path = checkpoint_at_16(tmp_path)
    code = main(["train", "--model", "vit_testing", "--dataset", "folder", "--data-dir", str(data32),
                 "--img-size", "32", "--patch-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2",
                 "--val-size", "0", "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "run"),
                 "--init-from", str(path)])
    assert code == 2
    assert "cannot fine-tune across patch sizes" in capsys.readouterr().err


def test_init_from_resizes_each_blocks_relative_bias_table_and_keeps_the_class_token_entries(tmp_path):
    saved, path = checkpoint_at_16(tmp_path, pos_embed="relative_bias_2d", depth=2)
    model = ViT(img_size=32, num_classes=3, pos_embed="relative_bias_2d", **{**SMALL, "depth": 2})
    init_from_checkpoint(model, path)
    old, new = saved.rel_pos_bias.data, model.rel_pos_bias.data  # (L, Hh, (2g-1)^2 + 3)
    assert old.shape == (2, 2, 7 * 7 + 3) and new.shape == (2, 2, 15 * 15 + 3)
    np.testing.assert_array_equal(new[:, :, -3:], old[:, :, -3:])
    for layer, head in np.ndindex(2, 2):  # each (layer, head) table resized on its own, as an image
        grid = old[layer, head, :49].reshape(49, 1)
        expected = interpolate_grid(grid, (7, 7), (15, 15))[:, 0]
        np.testing.assert_allclose(new[layer, head, :-3], expected, rtol=1e-6)


def test_init_from_refuses_a_relative_1d_table_at_another_grid_and_loads_it_at_the_same_one(tmp_path):
    saved, path = checkpoint_at_16(tmp_path, pos_embed="relative_1d")
    wider = ViT(img_size=32, num_classes=3, pos_embed="relative_1d", **SMALL)
    with pytest.raises(CheckpointError, match=r"relative_1d.*4x4 to a 8x8 patch grid.*cannot be interpolated"):
        init_from_checkpoint(wider, path)
    same = ViT(img_size=16, num_classes=5, pos_embed="relative_1d", **SMALL)  # new head, same grid
    init_from_checkpoint(same, path)
    np.testing.assert_array_equal(same.rel_pos_embed.data, saved.rel_pos_embed.data)
