"""Patch dropout (functional.patch_dropout, ViTConfig.patch_drop_rate; timm's patch_drop_rate):
which tokens it keeps and how many, its gradient, the model's forward on the kept tokens, its
random draws, the configs it refuses, its CLI flag and the JAX bridge's twin."""
import numpy as np
import pytest

import minivit
from minivit import functional as F
from minivit import rng
from minivit.autograd import Tensor
from minivit.vit import ViT, ViTConfig

TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)  # 16 patches


def _rows_kept(x, y):
    """For each image b, the token indices j with y[b, i] == x[b, j] (x's rows are distinct)."""
    out = []
    for b in range(x.shape[0]):
        match = np.all(y[b][:, None, :] == x[b][None, :, :], axis=-1)  # (K, N)
        assert (match.sum(axis=1) == 1).all(), "every kept token is exactly one input token"
        out.append(match.argmax(axis=1))
    return np.array(out)


@pytest.mark.parametrize("L, p", [(16, 0.5), (64, 0.5), (64, 0.25), (17, 0.3), (4, 0.9), (1, 0.5), (10, 0.0001)])
@pytest.mark.parametrize("prefix", [0, 1])
def test_keeps_the_prefix_then_timms_count_of_distinct_patch_tokens_in_order(L, p, prefix):
    rng.manual_seed(1)
    x = np.random.default_rng(0).standard_normal((3, prefix + L, 8)).astype(np.float32)
    y = F.patch_dropout(Tensor(x), p, prefix).data
    count = max(1, int(L * (1 - p)))  # timm's num_keep in layers/patch_dropout.py
    assert y.shape == (3, prefix + count, 8)
    kept = _rows_kept(x, y)
    assert (kept[:, :prefix] == np.arange(prefix)).all()  # the class token stays, first
    patches = kept[:, prefix:]
    assert (patches >= prefix).all() and (np.diff(patches, axis=1) > 0).all()  # distinct, in order


def test_each_image_draws_its_own_subset_and_every_token_can_be_kept():
    rng.manual_seed(0)
    x = np.arange(200 * 16, dtype=np.float64).reshape(200, 16, 1) + 0.5
    kept = _rows_kept(x, F.patch_dropout(Tensor(x), 0.5).data)
    assert len({tuple(k) for k in kept}) > 150  # C(16, 8) = 12,870 subsets: repeats are rare
    counts = np.bincount(kept.ravel(), minlength=16)
    assert counts.min() > 50 and counts.max() < 150  # each token kept about half the time (100 of 200)


def test_evaluation_and_rate_zero_leave_the_tokens_alone_and_bad_rates_are_refused():
    x = Tensor(np.ones((2, 5, 3)))
    assert F.patch_dropout(x, 0.5, 1, training=False) is x
    assert F.patch_dropout(x, 0.0, 1) is x
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises((ValueError, TypeError), match="patch dropout"):
            F.patch_dropout(x, bad)
    with pytest.raises(ValueError, match="needs patch tokens"):
        F.patch_dropout(Tensor(np.ones((2, 1, 3))), 0.5, num_prefix_tokens=1)


def test_the_gradient_reaches_exactly_the_kept_tokens():
    rng.manual_seed(3)
    x = Tensor(np.random.default_rng(1).standard_normal((4, 9, 6)), requires_grad=True)
    y = F.patch_dropout(x, 0.4, num_prefix_tokens=1)
    w = np.random.default_rng(2).standard_normal(y.shape)
    (y * Tensor(w)).sum().backward()
    kept = _rows_kept(x.data, y.data)
    expected = np.zeros(x.shape)
    for b in range(4):
        expected[b, kept[b]] = w[b]
    np.testing.assert_array_equal(x.grad, expected)


def _with_a_random_head(model):
    """The head starts at zero (every logit 0); random weights make the logits tell inputs apart."""
    model.head.weight.data[:] = np.random.default_rng(9).standard_normal(model.head.weight.shape)
    return model


def test_the_models_training_forward_is_its_blocks_on_the_kept_tokens():
    cfg = dict(TINY, patch_drop_rate=0.5, global_pool="avg", class_token=False, pos_embed="sincos")
    minivit.manual_seed(0)
    model = ViT(**cfg, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16))
    caught, forward = {}, model.blocks[0].forward

    def spy(z, *args, **kwargs):  # the tokens the first block receives
        caught["z"] = z.data
        return forward(z, *args, **kwargs)

    model.blocks[0].forward = spy
    seen = {}
    logits = model(x, out=seen).data  # training mode: a Module starts in training
    del model.blocks[0].forward
    z0 = np.asarray(seen["with_posemb"])  # (3, 16, 16): every patch token, position embedding added
    kept = _rows_kept(z0, caught["z"])  # the first block got 8 of them, in order
    assert kept.shape == (3, 8) and (np.diff(kept, axis=1) > 0).all()
    assert len({tuple(k) for k in kept}) > 1  # each image its own subset
    z = Tensor(z0[np.arange(3)[:, None], kept])
    for block in model.blocks:
        z = block(z)
    np.testing.assert_allclose(model.forward_head(model.norm(z)).data, logits, rtol=1e-12, atol=1e-12)
    model.eval()
    assert model.forward_features(x).shape == (3, 16, 16)  # evaluation sees every token


def test_draws_come_from_minivit_rng_so_a_seed_repeats_them():
    cfg = dict(TINY, patch_drop_rate=0.5)
    minivit.manual_seed(0)
    model = _with_a_random_head(ViT(**cfg))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    rng.manual_seed(5)
    a = model(x).data
    rng.manual_seed(5)
    b = model(x).data
    rng.manual_seed(6)
    c = model(x).data
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("bad, match", [
    (dict(pos_embed="relative_bias_2d"), "relative"),
    (dict(pos_embed="relative_1d"), "relative"),
    (dict(pos_embed_at="every_block"), "every"),
    (dict(patch_drop_rate=1.0), "patch_drop_rate"),
])
def test_configs_it_cannot_serve_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**{**TINY, "patch_drop_rate": 0.5, **bad})


def test_axial_vit_and_masked_patch_prediction_refuse_it():
    from minivit.axial import AxialConfig
    from minivit.mpp import MPPConfig

    with pytest.raises(ValueError, match="Axial-ViT"):
        AxialConfig(**{**TINY, "patch_drop_rate": 0.25})
    with pytest.raises(ValueError, match="every patch"):
        MPPConfig(**{k: v for k, v in TINY.items() if k != "num_classes"}, patch_drop_rate=0.25)


def test_the_cli_flag_reaches_the_model_and_is_checked(capsys):
    from minivit.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "--recipe", "cifar10-hour", "--patch-drop-rate", "0.25", "--out", "x"])
    cfg = train_config_from_args(args)
    assert cfg.model_kwargs["patch_drop_rate"] == 0.25 and cfg.model_kwargs["pos_embed"] == "sincos"
    args = build_parser().parse_args(["train", "--recipe", "cifar10-hour", "--patch-drop-rate", "0", "--out", "x"])
    assert train_config_from_args(args).model_kwargs["patch_drop_rate"] == 0  # the recipe's 0.5 switched off
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--patch-drop-rate", "1.5"])
    assert "patch-drop-rate" in capsys.readouterr().err


def test_the_jax_bridge_keeps_the_same_count_in_order_and_needs_a_key():
    jax = pytest.importorskip("jax")
    from minivit import jax_bridge as jb

    x = np.random.default_rng(0).standard_normal((3, 17, 8)).astype(np.float32)
    y = np.asarray(jb.patch_dropout(x, 0.5, 1, jax.random.PRNGKey(0)))
    assert y.shape == (3, 1 + 8, 8)
    kept = _rows_kept(x, y)
    assert (kept[:, 0] == 0).all() and (np.diff(kept[:, 1:], axis=1) > 0).all()
    assert jb.patch_dropout(x, 0.5, 1, None) is x  # evaluation: no key, every token

    minivit.manual_seed(0)
    model = _with_a_random_head(ViT(**TINY, patch_drop_rate=0.5))
    params, apply_fn = jb.to_jax(model)
    images = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="needs a key"):
        apply_fn(params, images, train=True)
    model.eval()
    np.testing.assert_allclose(np.asarray(apply_fn(params, images)), model(images).data, rtol=1e-4, atol=1e-5)
    trained = np.asarray(apply_fn(params, images, train=True, rng=jax.random.PRNGKey(1)))
    assert trained.shape == (2, 5) and not np.allclose(trained, model(images).data, atol=1e-4)
