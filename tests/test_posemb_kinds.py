"""Position-embedding kinds (minivit/posemb.py): the paper's 1-D relative attention ("relative_1d")
against logits written by hand and against central differences; the renamed 2D offset bias
("relative_bias_2d") and its old name "relative", which configs and checkpoints still use; the
JAX bridge against the NumPy model for every kind in posemb.KINDS; and the exercises of
tutorials/06_position_embeddings.py (each check fails on a solution with a step missing).
"""
import numpy as np
import pytest

import minivit
from minivit import functional as F
from minivit import posemb
from minivit.autograd import Tensor
from minivit.train.checkpoint import model_from_checkpoint, save_checkpoint
from minivit.vit import ViT, ViTConfig

from notebook_harness import check_fails_without, check_passes_as_written

TINY = dict(img_size=12, patch_size=4, embed_dim=12, depth=2, num_heads=2, num_classes=3)  # 3x3 grid, hd = 6


def random_model(dtype=np.float64, std=0.3, seed=0, **kw):
    """A tiny ViT with every parameter random (the default head is zero)."""
    model = ViT(dtype=dtype, **{**TINY, **kw})
    gen = np.random.default_rng(seed)
    model.load_state_dict({k: gen.normal(0, std, v.shape) for k, v in model.state_dict().items()})
    return model


def images(n=2, seed=1, size=12, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(dtype)


# ---- kinds and names ---------------------------------------------------------------------------

def test_kinds_name_both_relative_variants_and_the_old_name_resolves_to_the_2d_bias():
    assert {"relative_1d", "relative_bias_2d"} <= set(posemb.KINDS) and "relative" not in posemb.KINDS
    assert set(posemb.RELATIVE_KINDS) <= set(posemb.KINDS)
    assert posemb.resolve("relative") == "relative_bias_2d"
    assert all(posemb.resolve(kind) == kind for kind in posemb.KINDS)
    old = ViTConfig(**TINY, pos_embed="relative")
    assert old.pos_embed == "relative_bias_2d" and old == ViTConfig(**TINY, pos_embed="relative_bias_2d")
    assert ViTConfig.from_dict({**TINY, "pos_embed": "relative"}).to_dict()["pos_embed"] == "relative_bias_2d"
    assert "rel_pos_bias" in dict(ViT(**TINY, pos_embed="relative").named_parameters())


@pytest.mark.parametrize("kind", ["relative_2d", "Relative", "", None, 3, ["learn"]])
def test_an_unknown_kind_is_a_value_error_that_lists_the_kinds(kind):
    with pytest.raises(ValueError, match="pos_embed must be one of .*relative_1d.*relative_bias_2d"):
        ViTConfig(**TINY, pos_embed=kind)


def test_an_old_checkpoint_that_says_relative_loads_as_relative_bias_2d_with_the_same_logits(tmp_path):
    model = random_model(dtype=np.float32, pos_embed="relative_bias_2d").eval()
    model.config.pos_embed = "relative"  # what a checkpoint written before the rename holds
    path = save_checkpoint(tmp_path / "old.npz", model)
    model.config.pos_embed = "relative_bias_2d"
    rebuilt, ckpt = model_from_checkpoint(path)
    assert ckpt["meta"]["config"]["pos_embed"] == "relative"
    assert rebuilt.config.pos_embed == "relative_bias_2d" and rebuilt.config == model.config
    x = images(dtype=np.float32)
    with minivit.no_grad():
        np.testing.assert_array_equal(rebuilt(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("class_token", [True, False])
def test_relative_1d_table_is_per_block_and_head_hd_wide_and_counted_by_num_parameters(class_token):
    model = ViT(**TINY, pos_embed="relative_1d", class_token=class_token,
                global_pool="token" if class_token else "avg")
    Np, extra = 9, 3 if class_token else 0
    assert model.rel_pos_embed.shape == (2, 2, 2 * Np - 1 + extra, 6)  # (L, Hh, offsets + cls, hd)
    assert model.num_parameters() == model.config.num_parameters()
    none = ViT(**TINY, pos_embed="none", class_token=class_token, global_pool="token" if class_token else "avg")
    assert model.num_parameters() - none.num_parameters() == 2 * (2 * Np - 1 + extra) * 12  # L * R * D
    assert model.position_embedding() is None


def test_relative_1d_index_is_the_shifted_raster_offset_with_three_class_token_entries():
    index = posemb.relative_1d_index((3, 3), num_prefix_tokens=1)  # (10, 10)
    Np = 9
    for i in range(1, 10):
        for j in range(1, 10):
            assert index[i, j] == (i - 1) - (j - 1) + Np - 1
    assert (index[0, 1:] == 2 * Np - 1).all() and (index[1:, 0] == 2 * Np).all() and index[0, 0] == 2 * Np + 1
    assert index.max() + 1 == posemb.relative_1d_table_size((3, 3), 1)
    no_cls = posemb.relative_1d_index((3, 3), num_prefix_tokens=0)
    np.testing.assert_array_equal(no_cls, index[1:, 1:])
    assert no_cls.min() == 0 and no_cls.max() + 1 == posemb.relative_1d_table_size((3, 3), 0)


# ---- relative_1d: the model's attention against logits by hand -----------------------------------

def relative_1d_logits_by_hand(q, k, r, num_patches, class_token):
    """One head: logits[i, j] = q_i . k_j / sqrt(hd) + q_i . r[row] / sqrt(hd), row the shifted 1-D
    offset p_i - p_j + Np - 1 for two patches, or one of the three class-token rows; plain loops."""
    N, hd = q.shape
    prefix = 1 if class_token else 0
    logits = np.empty((N, N))
    for i in range(N):
        for j in range(N):
            if class_token and i == 0 and j == 0:
                row = 2 * num_patches + 1
            elif class_token and i == 0:
                row = 2 * num_patches - 1
            elif class_token and j == 0:
                row = 2 * num_patches
            else:
                row = (i - prefix) - (j - prefix) + num_patches - 1
            logits[i, j] = (q[i] @ k[j] + q[i] @ r[row]) / np.sqrt(hd)
    return logits


def softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("class_token", [True, False])
def test_relative_1d_attention_weights_are_the_softmax_of_the_logits_written_by_hand(class_token):
    model = random_model(pos_embed="relative_1d", class_token=class_token,
                         global_pool="token" if class_token else "avg").eval()
    out = {}
    with minivit.no_grad():
        model(images(), out=out)
    inputs = [out["with_posemb"]] + out["blocks"][:-1]  # what enters each block
    Hh, hd, Np = 2, 6, 9
    for layer, block in enumerate(model.blocks):
        z = inputs[layer]
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        zn = (z - mu) / np.sqrt(var + model.config.norm_eps) * block.norm1.weight.data + block.norm1.bias.data
        qkv = zn @ block.attn.qkv.weight.data.T + block.attn.qkv.bias.data  # (B, N, 3D)
        B, N, _ = qkv.shape
        q, k = qkv.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)[:2]  # (B, Hh, N, hd) each
        for b, h in np.ndindex(B, Hh):
            r = model.rel_pos_embed.data[layer, h]  # (R, hd)
            expected = softmax(relative_1d_logits_by_hand(q[b, h], k[b, h], r, Np, class_token))
            np.testing.assert_allclose(out["attention"][layer][b, h], expected, rtol=1e-10, atol=1e-12)
            content_only = softmax(q[b, h] @ k[b, h].T / np.sqrt(hd))
            assert np.abs(out["attention"][layer][b, h] - content_only).max() > 1e-3  # the relative part matters


def test_relative_1d_bias_gradients_match_central_differences_for_the_table_and_q():
    """The bias q . r[index] / sqrt(hd), (B, Hh, N, N), as the model composes it: its backward
    (a gather, scatter-added back, with repeated entries for the class-token pairs) against float64
    central differences, for every entry of the table and of q."""
    cfg = ViTConfig(img_size=8, patch_size=4, embed_dim=6, depth=2, num_heads=2, pos_embed="relative_1d")
    pe = posemb.create(cfg, cfg.grid_size, 1, np.float64)  # Np = 4, N = 5, R = 10, hd = 3
    rng = np.random.default_rng(0)
    table = rng.standard_normal(pe.params["rel_pos_embed"].shape)  # (L, Hh, R, hd)
    q0 = rng.standard_normal((2, 2, 5, 3))  # (B, Hh, N, hd)
    upstream = rng.standard_normal((2, 2, 5, 5))
    layer = 1

    def loss(table_values, q_values):
        pe.params["rel_pos_embed"].data = table_values
        q = Tensor(q_values, requires_grad=True)
        return (pe.attention_bias(layer)(q) * upstream).sum(), q

    value, q = loss(table.copy(), q0.copy())
    pe.params["rel_pos_embed"].grad = None
    value.backward()
    grads = {"table": pe.params["rel_pos_embed"].grad, "q": q.grad}
    assert np.all(grads["table"][1 - layer] == 0)  # another block's table gets nothing
    eps = 1e-6
    for name, base in (("table", table), ("q", q0)):
        numeric = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = (plus, q0) if name == "table" else (table, plus)
            args_m = (minus, q0) if name == "table" else (table, minus)
            numeric[idx] = (loss(*args)[0].item() - loss(*args_m)[0].item()) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_both_relative_kinds_run_attention_composed_with_the_same_logits_with_or_without_weights():
    for kind in posemb.RELATIVE_KINDS:
        model = random_model(dtype=np.float32, pos_embed=kind).eval()
        x = images(dtype=np.float32)
        with minivit.no_grad():
            np.testing.assert_array_equal(model(x, out={}).numpy(), model(x).numpy())


# ---- the JAX bridge, every kind ------------------------------------------------------------------

@pytest.mark.parametrize("kind", posemb.KINDS)
def test_jax_bridge_logits_and_gradients_match_the_numpy_model_for_every_kind(kind):
    jax = pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")
    from minivit import jax_bridge as jb

    model = random_model(dtype=np.float32, std=0.5, pos_embed=kind)
    x, y = images(4, dtype=np.float32), np.array([0, 2, 1, 2])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    params, apply_fn = jb.to_jax(model)
    with minivit.no_grad():
        expected = model.eval()(x).numpy()
    logits = np.asarray(apply_fn(params, x))
    assert np.abs(logits - expected).max() < 1e-5 * np.abs(expected).max()
    value, grads = jax.value_and_grad(lambda p: jb.cross_entropy(apply_fn(p, x), y))(params)
    assert abs(float(value) - loss.item()) < 1e-5 * abs(loss.item())
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        err = np.abs(np.asarray(grads[name]) - p.grad).max() / np.abs(p.grad).max()
        assert err < 1e-4, (name, err)


# ---- tutorials/06_position_embeddings.py: each exercise's check catches a missing step --------------

def test_06_exercise_1_learn_2d_table(tmp_path):
    check_passes_as_written("06_position_embeddings", 1, tmp_path)
    err = check_fails_without("06_position_embeddings", 1, "X[np.arange(Np) % gw]", "X[np.arange(Np) // gw]",
                              tmp_path)
    assert isinstance(err, AssertionError)  # X picked by the row instead of the column


@pytest.mark.parametrize("old, new, missing", [
    (" + Np - 1", "", "the shift of the offset to a row >= 0"),
    ("row[0, 1:], row[1:, 0], row[0, 0] = 2 * Np - 1, 2 * Np, 2 * Np + 1", "pass", "the class token's rows"),
    (" / np.sqrt(hd)", "", "the 1/sqrt(hd) scale"),
])
def test_06_exercise_2_relative_1d_logits(tmp_path, old, new, missing):
    if missing == "the shift of the offset to a row >= 0":
        check_passes_as_written("06_position_embeddings", 2, tmp_path)
    err = check_fails_without("06_position_embeddings", 2, old, new, tmp_path)
    assert isinstance(err, AssertionError), missing


def test_06_exercise_3_where_the_embedding_enters(tmp_path):
    check_passes_as_written("06_position_embeddings", 3, tmp_path)
    err = check_fails_without("06_position_embeddings", 3, 'elif layer == 0 or where == "every_block_shared":',
                              "elif layer == 0:", tmp_path)
    assert isinstance(err, AssertionError)  # the shared embedding added only at the input
    err = check_fails_without("06_position_embeddings", 3, "model.norm(z)", "z", tmp_path)
    assert isinstance(err, AssertionError)  # the final LayerNorm of Eq. 4 left out
