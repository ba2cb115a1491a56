"""The ViT model and its registry (minivit/vit.py, minivit/variants.py, minivit/posemb.py):
exact parameter counts per variant, option validation, input checks, every position-embedding
variant (forward, gradients, a float64 gradient check), intermediates and classifier resets.

Shape letters: B batch, C channels, P patch, Np patches, T tokens, D width, Hh heads, K classes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minivit
from minivit import Tensor, functional as F
from minivit.vit import ViT, ViTConfig
from strategies import reference_kernels


@pytest.fixture(autouse=True, scope="module")
def _pin_reference_kernels():
    with reference_kernels():
        yield


# ---- (a) exact parameter counts -------------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "param_counts.json"

# Copied from tests/fixtures/param_counts.json (counted with timm's VisionTransformer); the JSON
# stays the source, and test_param_count_table_is_a_copy_of_the_timm_fixture keeps the two equal.
PARAM_COUNTS = {
    "vit_tiny_patch14_224": 5_694_376,
    "vit_tiny_patch16_224": 5_717_416,
    "vit_tiny_patch32_224": 6_131_560,
    "vit_small_patch14_224": 22_004_584,
    "vit_small_patch16_224": 22_050_664,
    "vit_small_patch32_224": 22_878_952,
    "vit_base_patch14_224": 86_475_496,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch14_224": 304_203_752,
    "vit_large_patch16_224": 304_326_632,
    "vit_large_patch32_224": 306_535_400,
    "vit_huge_patch14_224": 632_045_800,
    "vit_huge_patch16_224": 632_199_400,
    "vit_huge_patch32_224": 634_960_360,
    "vit_tiny_patch4_32": 5_362_762,
    "vit_small_patch4_32": 21_342_346,
    "vit_base_patch4_32": 85_152_010,
    "vit_cifar_patch4_32": 2_693_578,
    "vit_mini_patch4_32": 811_146,
    "vit_demo_patch4_32": 311_338,
    "vit_nano_patch8_32": 114_698,
    "vit_testing": 32_554,
}
# ViT-B/16 at 224 with 1000 classes, the number quoted for timm's and the paper's "86M" model.
PAPER_ANCHOR = ("vit_base_patch16_224", 86_567_656)

# Registered variants the timm fixture does not cover yet (each entry is a known gap to close by
# regenerating tests/fixtures/param_counts.json with timm).
KNOWN_MISSING: set[str] = set()

INSTANTIATE_BELOW = 30_000_000  # build these for real; count bigger ones with the formula


def count_params(cfg: ViTConfig) -> int:
    """Parameters of a standard ViT (learned 1D position embedding at the input), by Table 1's
    recipe: patch projection + class token + position embedding + L blocks + final norm + head."""
    D, P, C = cfg.embed_dim, cfg.patch_size, cfg.in_chans
    hidden = int(D * cfg.mlp_ratio)
    tokens = (cfg.img_size // P) ** 2 + (1 if cfg.class_token else 0)
    stem = D * C * P * P + D + (D if cfg.class_token else 0) + tokens * D
    attn = 3 * D * D + (3 * D if cfg.qkv_bias else 0) + D * D + D
    mlp = D * hidden + hidden + hidden * D + D
    block = 2 * 2 * D + attn + mlp
    rep = cfg.representation_size
    pre_logits = D * rep + rep if rep else 0
    head = ((rep or D) + 1) * cfg.num_classes if cfg.num_classes > 0 else 0
    return stem + cfg.depth * block + 2 * D + pre_logits + head


def test_param_count_table_is_a_copy_of_the_timm_fixture():
    assert json.loads(FIXTURE.read_text()) == PARAM_COUNTS


def test_vit_base_patch16_224_has_the_paper_known_86_567_656_parameters():
    name, count = PAPER_ANCHOR
    assert PARAM_COUNTS[name] == count
    assert count_params(minivit.model_config(name)) == count


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=f"MISSING FIXTURE: {n} is registered but not "
                                                                "in tests/fixtures/param_counts.json"))
    if n in KNOWN_MISSING else n
    for n in minivit.list_models()
])
def test_every_registered_variant_has_a_param_count(name):
    assert name in PARAM_COUNTS, f"add {name} to tests/fixtures/param_counts.json and PARAM_COUNTS"


@pytest.mark.parametrize("name", sorted(set(minivit.list_models()) & set(PARAM_COUNTS)))
def test_variant_has_the_exact_timm_parameter_count(name):
    cfg = minivit.model_config(name)
    assert count_params(cfg) == PARAM_COUNTS[name]
    if PARAM_COUNTS[name] < INSTANTIATE_BELOW:
        assert minivit.create_model(name).num_parameters() == PARAM_COUNTS[name]


@pytest.mark.parametrize("overrides", [
    {}, dict(qkv_bias=False), dict(class_token=False, global_pool="avg"), dict(global_pool="avg"),
    dict(representation_size=12), dict(num_classes=0), dict(mlp_ratio=2.5, in_chans=1), dict(patch_size=8),
])
def test_count_formula_agrees_with_instantiated_models(overrides):
    cfg = minivit.model_config("vit_testing", **overrides)
    assert ViT(config=cfg).num_parameters() == count_params(cfg)


def _torch_count(cfg):
    """The same architecture counted from PyTorch modules on the meta device (no memory)."""
    torch = pytest.importorskip("torch", reason="PyTorch modules give an independent parameter count")
    D = cfg.embed_dim
    with torch.device("meta"):
        modules = [
            torch.nn.Conv2d(cfg.in_chans, D, cfg.patch_size, stride=cfg.patch_size),
            torch.nn.LayerNorm(D),
            torch.nn.Linear(D, cfg.num_classes),
        ]
        block = torch.nn.TransformerEncoderLayer(D, cfg.num_heads, int(D * cfg.mlp_ratio), norm_first=True)
    count = sum(p.numel() for m in modules for p in m.parameters())
    count += cfg.depth * sum(p.numel() for p in block.parameters())
    return count + D + ((cfg.img_size // cfg.patch_size) ** 2 + 1) * D  # class token, position embedding


@pytest.mark.parametrize("name", minivit.list_models())
def test_every_variant_matches_a_pytorch_module_count(name):
    cfg = minivit.model_config(name)
    expected = _torch_count(cfg)
    assert count_params(cfg) == expected
    if name in PARAM_COUNTS:
        assert PARAM_COUNTS[name] == expected
    if expected < INSTANTIATE_BELOW:
        assert minivit.create_model(name).num_parameters() == expected


def test_variants_follow_the_papers_table_1():
    table = {"base": (12, 768, 3072, 12), "large": (24, 1024, 4096, 16), "huge": (32, 1280, 5120, 16)}
    for size, (layers, width, mlp, heads) in table.items():
        for patch in (14, 16, 32):
            cfg = minivit.model_config(f"vit_{size}_patch{patch}_224")
            assert (cfg.depth, cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.num_heads) == (
                layers, width, mlp, heads)
            assert (cfg.patch_size, cfg.img_size, cfg.num_classes) == (patch, 224, 1000)


# ---- (b) option validation ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(img_size=30, patch_size=16), r"img_size 30 .*patch_size 16"),
    (dict(embed_dim=100, num_heads=3), r"embed_dim 100 .*num_heads 3"),
    (dict(global_pool="max"), r"global_pool.*'max'"),
    (dict(global_pool="token", class_token=False), r"global_pool='token'.*class_token"),
    (dict(pos_embed="rope"), r"pos_embed.*'rope'"),
    (dict(pos_embed_at="output"), r"pos_embed_at.*'output'"),
    (dict(pos_embed="sincos", pos_embed_at="every_block"), r"pos_embed_at.*'learn'"),
    (dict(img_size=(32, 16)), r"square.*\(32, 16\)"),
    (dict(depth=0), r"depth must be >= 1, got 0"),
    (dict(drop_rate=1.5), r"drop_rate probability .*\[0, 1\).*1.5"),
    (dict(mlp_ratio=0), r"mlp_ratio must be > 0"),
])
def test_invalid_options_raise_value_errors_naming_the_values(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViT(**{**dict(img_size=32, patch_size=8, embed_dim=32, num_heads=2, depth=1), **kwargs})


def test_unknown_option_raises_type_error_naming_it_and_listing_valid_ones():
    with pytest.raises(TypeError, match=r"unknown ViT option.*'hidden_size'.*valid options.*embed_dim"):
        ViT(hidden_size=32)
    with pytest.raises(TypeError, match="bogus"):
        minivit.create_model("vit_testing", bogus=1)


def test_config_and_keyword_options_together_are_rejected():
    with pytest.raises(TypeError, match="either"):
        ViT(config=minivit.model_config("vit_testing"), depth=3)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(pos_embed="learn_2d", embed_dim=9, num_heads=3), "even embed_dim.*9"),
    (dict(pos_embed="sincos", embed_dim=6, num_heads=2), "divisible by 4.*6"),
])
def test_position_embeddings_check_the_width_they_need(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViT(img_size=8, patch_size=4, depth=1, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(patch_size=0), dict(num_heads=0)])
def test_zero_patch_size_or_heads_raise_a_value_error_not_zero_division(kwargs):
    with pytest.raises(ValueError, match=">= 1, got 0"):
        ViTConfig(**kwargs)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(img_size="abc"), r"img_size must be an integer, got 'abc'"),
    (dict(depth=2.5), r"depth must be an integer, got 2.5"),
    (dict(embed_dim=True), r"embed_dim must be an integer, got True"),
    (dict(norm_eps=float("nan")), r"norm_eps must be a finite number"),
    (dict(class_token="yes"), r"class_token must be True or False"),
])
def test_options_of_the_wrong_type_raise_type_errors_naming_the_value(kwargs, pattern):
    with pytest.raises(TypeError, match=pattern):
        ViTConfig(**kwargs)


def test_register_model_validates_at_registration_and_registers_nothing_on_error():
    before = minivit.list_models()
    with pytest.raises(ValueError, match="img_size 30"):
        minivit.register_model("vit_broken_test", img_size=30, patch_size=8)
    assert minivit.list_models() == before


# ---- (c) forward input checks ---------------------------------------------------------------

TINY = dict(img_size=8, patch_size=4, in_chans=3, num_classes=3, embed_dim=8, depth=1, num_heads=2)


def _randomise_head(model, seed=0):
    """The head starts at zero (paper, Section 3.1), which would hide every other gradient."""
    rng = np.random.default_rng(seed)
    model.head.weight.data[...] = rng.standard_normal(model.head.weight.shape)
    model.head.bias.data[...] = rng.standard_normal(model.head.bias.shape)
    return model


def _images(b=2, c=3, size=8, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((b, c, size, size)).astype(dtype)


@pytest.mark.parametrize("x, pattern", [
    (np.zeros((2, 1, 8, 8), np.float32), r"expected 3 channels.*got 1.*\(2, 1, 8, 8\)"),
    (np.zeros((2, 8, 8, 3), np.float32), r"expected 3 channels.*got 8.*channels-first"),
    (np.zeros((2, 3, 16, 16), np.float32), r"expected 8x8 images.*got 16x16"),
    (np.zeros((2, 3, 8, 12), np.float32), r"expected 8x8 images.*got 8x12"),
    (np.zeros((3, 8, 8), np.float32), r"\(B, 3, 8, 8\).*\(3, 8, 8\).*x\[None\]"),
    (np.zeros((1, 2, 3, 8, 8), np.float32), r"\(B, 3, 8, 8\).*\(1, 2, 3, 8, 8\)"),
])
def test_forward_rejects_wrong_inputs_naming_expected_and_given_shapes(x, pattern):
    model = ViT(**TINY)
    with pytest.raises(ValueError, match=pattern):
        model(x)
    with pytest.raises(ValueError, match=pattern):
        model(Tensor(x))


# ---- (d) position-embedding variants, pooling, pre-logits -----------------------------------

VARIANTS = {
    "learn/token": dict(),
    "learn/avg+cls": dict(global_pool="avg"),
    "none/avg": dict(pos_embed="none", global_pool="avg", class_token=False),
    "none/token": dict(pos_embed="none"),
    "learn_2d": dict(pos_embed="learn_2d"),
    "learn_2d/avg": dict(pos_embed="learn_2d", global_pool="avg", class_token=False),
    "sincos": dict(pos_embed="sincos"),
    "relative_bias_2d": dict(pos_embed="relative_bias_2d"),
    "relative_bias_2d/avg": dict(pos_embed="relative_bias_2d", global_pool="avg", class_token=False),
    "relative_1d": dict(pos_embed="relative_1d"),
    "relative_1d/avg": dict(pos_embed="relative_1d", global_pool="avg", class_token=False),
    "every_block": dict(pos_embed_at="every_block", depth=2),
    "every_block_shared": dict(pos_embed_at="every_block_shared", depth=2),
    "representation": dict(representation_size=6),
}


def _tiny(variant, dtype=np.float32, **extra):
    return _randomise_head(ViT(dtype=dtype, **{**TINY, **VARIANTS[variant], **extra}))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_runs_forward_and_backward_and_every_parameter_gets_a_useful_gradient(variant):
    model = _tiny(variant)
    logits = model(_images())
    assert logits.shape == (2, 3) and logits.dtype == np.float32
    loss = F.cross_entropy(logits, np.array([0, 2]))
    assert loss.dtype == np.float32
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32, name
        assert np.all(np.isfinite(p.grad)), name
        assert np.any(p.grad != 0), f"{name} has an all-zero gradient"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_whole_model_float64_gradients_match_central_differences(variant):
    model = _tiny(variant, dtype=np.float64).eval()
    x, labels = _images(dtype=np.float64), np.array([1, 0])
    F.cross_entropy(model(x), labels).backward()
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, p in model.named_parameters():
        for flat in rng.choice(p.size, size=min(3, p.size), replace=False):
            i = np.unravel_index(flat, p.shape)
            old = p.data[i]
            with minivit.no_grad():
                p.data[i] = old + eps
                plus = F.cross_entropy(model(x), labels).item()
                p.data[i] = old - eps
                minus = F.cross_entropy(model(x), labels).item()
            p.data[i] = old
            numeric = (plus - minus) / (2 * eps)
            assert p.grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), f"{name}{list(i)}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_model_runs_end_to_end_in_its_dtype(dtype):
    model = _tiny("learn/token", dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    logits = model(_images(dtype=np.float32))  # the input is cast to the model's dtype
    assert logits.dtype == dtype
    F.cross_entropy(logits, np.array([0, 1])).backward()
    assert all(p.grad.dtype == dtype for p in model.parameters())


def test_gradients_reach_the_input_images_when_they_are_a_tensor():
    model = _tiny("learn/token")
    x = Tensor(_images(), requires_grad=True)
    F.cross_entropy(model(x), np.array([0, 1])).backward()
    assert x.grad is not None and x.grad.shape == x.shape and np.any(x.grad != 0)


def test_a_model_cast_to_float64_does_not_round_its_inputs_to_float32():
    model = _tiny("learn/token").astype(np.float64)
    x = _images(dtype=np.float64) + 1e-12  # not representable in float32
    rounded = x.astype(np.float32).astype(np.float64)
    with minivit.no_grad():
        assert not np.array_equal(model(x).data, model(rounded).data)


def _permute_patches(x, p, perm):
    """Reorder the P x P patches of (B, C, H, W) images (raster order) by perm."""
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    patches = x.reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C, p, p)
    patches = patches[:, perm]
    return patches.reshape(B, gh, gw, C, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def _logits_before_and_after_permuting(variant):
    model = _tiny(variant, dtype=np.float64, img_size=12).eval()
    x = _images(size=12, dtype=np.float64)
    perm = np.random.default_rng(1).permutation(9)
    assert not np.array_equal(perm, np.arange(9))
    with minivit.no_grad():
        return model(x).data, model(_permute_patches(x, 4, perm)).data


@pytest.mark.parametrize("variant", ["none/avg", "none/token"])
def test_without_position_embedding_permuting_patches_leaves_the_logits_unchanged(variant):
    before, after = _logits_before_and_after_permuting(variant)
    np.testing.assert_allclose(after, before, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["learn/token", "learn/avg+cls", "learn_2d", "sincos", "relative_bias_2d/avg",
                                     "relative_1d/avg", "every_block"])
def test_with_a_position_embedding_permuting_patches_changes_the_logits(variant):
    before, after = _logits_before_and_after_permuting(variant)
    assert np.abs(after - before).max() > 1e-6


def test_permuting_patches_helper_is_a_real_permutation():
    x = _images(size=12)
    perm = np.array([3, 0, 1, 2, 8, 7, 6, 5, 4])
    moved = _permute_patches(x, 4, perm)
    # new patch 0 (top left) is old patch 3 = row 1, column 0 of the 3 x 3 grid
    np.testing.assert_array_equal(moved[:, :, 0:4, 0:4], x[:, :, 4:8, 0:4])
    np.testing.assert_array_equal(moved[:, :, 4:8, 4:8], x[:, :, 8:12, 8:12])  # new 4 = old 8
    np.testing.assert_array_equal(_permute_patches(moved, 4, np.argsort(perm)), x)


def test_sincos_embedding_is_a_fixed_table_not_a_parameter():
    model = _tiny("sincos")
    names = [n for n, _ in model.named_parameters()]
    assert not any("pos" in n for n in names)
    assert "pos_embed" not in model.state_dict()
    table = model.position_embedding()[None]
    assert isinstance(table, np.ndarray) and table.shape == (1, 5, 8)
    np.testing.assert_array_equal(table[0, 0], 0)  # the class token gets none
    # big_vision's posemb_sincos_2d: [sin(x w), cos(x w), sin(y w), cos(y w)], w_i = 1/10000^(i/(D/4-1))
    omega = 1.0 / 10000 ** (np.arange(2) / 1)
    ys, xs = np.divmod(np.arange(4), 2)
    expected = np.concatenate([np.sin(xs[:, None] * omega), np.cos(xs[:, None] * omega),
                               np.sin(ys[:, None] * omega), np.cos(ys[:, None] * omega)], axis=1)
    np.testing.assert_allclose(table[0, 1:], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("class_token, extra", [(True, 3), (False, 0)])
def test_relative_bias_table_has_one_entry_per_2d_offset_per_head_plus_class_token_entries(class_token, extra):
    model = ViT(**{**TINY, "img_size": 12, "depth": 2, "pos_embed": "relative_bias_2d", "class_token": class_token,
                   "global_pool": "token" if class_token else "avg"})
    params = dict(model.named_parameters())
    assert params["rel_pos_bias"].shape == (2, 2, (2 * 3 - 1) * (2 * 3 - 1) + extra)  # (L, Hh, offsets + cls)
    assert "pos_embed" not in params


def test_position_parameters_of_each_variant_have_timm_like_names_and_shapes():
    def pos_params(variant):
        return {n: p.shape for n, p in _tiny(variant).named_parameters() if "pos_embed" in n}

    assert pos_params("learn/token") == {"pos_embed": (1, 5, 8)}
    assert pos_params("learn_2d/avg") == {"pos_embed_y": (1, 2, 4), "pos_embed_x": (1, 2, 4)}
    assert pos_params("learn_2d") == {"pos_embed_y": (1, 2, 4), "pos_embed_x": (1, 2, 4), "pos_embed_cls": (1, 1, 8)}
    assert pos_params("every_block") == {"pos_embed": (2, 5, 8)}  # one (N, D) per block
    assert pos_params("every_block_shared") == {"pos_embed": (1, 5, 8)}
    assert pos_params("none/avg") == {} and pos_params("relative_bias_2d") == {} and pos_params("sincos") == {}
    assert pos_params("relative_1d") == {"rel_pos_embed": (1, 2, 2 * 4 - 1 + 3, 4)}  # (L, Hh, offsets + cls, hd)


def test_shared_per_block_embedding_is_added_once_before_each_block():
    model = _tiny("every_block_shared", dtype=np.float64).eval()
    x = _images(dtype=np.float64)
    with minivit.no_grad():
        tokens = F.patch_embed(Tensor(x), model.patch_embed.proj.weight, model.patch_embed.proj.bias).data
        cls = np.broadcast_to(model.cls_token.data, (2, 1, 8))
        h = Tensor(np.concatenate([cls, tokens], axis=1))  # (B, T, D), no embedding yet
        for block in model.blocks:
            h = block(h + model.pos_embed)
        expected = model.forward_head(model.norm(h)).data
        np.testing.assert_allclose(model(x).data, expected, rtol=1e-10)


def test_per_block_embeddings_are_added_once_before_each_block():
    model = _tiny("every_block", dtype=np.float64).eval()
    x = _images(dtype=np.float64)
    with minivit.no_grad():
        tokens = F.patch_embed(Tensor(x), model.patch_embed.proj.weight, model.patch_embed.proj.bias).data
        h = Tensor(np.concatenate([np.broadcast_to(model.cls_token.data, (2, 1, 8)), tokens], axis=1))
        for block, pos_embed in zip(model.blocks, model.pos_embed.data):
            h = block(h + pos_embed)
        expected = model.forward_head(model.norm(h)).data
        np.testing.assert_allclose(model(x).data, expected, rtol=1e-10)


def test_dropout_rates_make_training_stochastic_and_reproducible_while_eval_is_deterministic():
    model = _tiny("learn/token", drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3, depth=2)
    x = _images()
    minivit.manual_seed(1)
    a = model(x).data
    minivit.manual_seed(1)
    b = model(x).data
    c = model(x).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    model.eval()
    np.testing.assert_array_equal(model(x).data, model(x).data)
    assert not np.allclose(model(x).data, a)


# ---- (e) intermediates ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["learn/token", "none/avg", "representation", "relative_bias_2d", "relative_1d",
                                     "every_block"])
def test_one_forward_fills_the_documented_intermediates_and_returns_the_same_logits(variant):
    model = _tiny(variant).eval()
    cfg = model.config
    x = _images()
    out = {}
    with minivit.no_grad():
        logits = model(x, out=out).data
        plain = model(x).data  # the fused attention kernel, no intermediates
    N = 4 + (1 if cfg.class_token else 0)
    assert set(out) == {"patch_tokens", "with_posemb", "blocks", "attention", "encoded", "pre_logits", "logits"}
    assert out["patch_tokens"].shape == (2, 4, 8)
    assert out["with_posemb"].shape == (2, N, 8)
    assert [b.shape for b in out["blocks"]] == [(2, N, 8)] * cfg.depth
    assert [a.shape for a in out["attention"]] == [(2, 2, N, N)] * cfg.depth
    assert out["pre_logits"].shape == (2, cfg.representation_size or 8)
    for a in out["attention"]:
        assert np.all(a >= 0)
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["logits"], logits)
    np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["pre_logits"], model.forward_head(model.forward_features(x), pre_logits=True).data,
                               rtol=1e-5, atol=1e-6)


def test_the_forward_runs_the_patch_embedding_once_even_with_intermediates(monkeypatch):
    model = _tiny("learn/token").eval()
    calls = []
    original = F.patch_embed
    monkeypatch.setattr(F, "patch_embed", lambda *a: calls.append(1) or original(*a))
    model(_images(), out={})
    assert len(calls) == 1


def test_intermediates_are_kept_with_gradients_on_and_backward_still_reaches_every_parameter():
    model = _tiny("learn/token", depth=2)
    out = {}
    F.cross_entropy(model(_images(), out=out), np.array([0, 1])).backward()
    assert len(out["attention"]) == 2 and isinstance(out["attention"][0], np.ndarray)
    assert all(p.grad is not None for p in model.parameters())


def test_intermediate_patch_tokens_are_the_projected_raster_order_patches_and_posemb_is_added():
    model = _tiny("learn/token", dtype=np.float64).eval()
    x = _images(dtype=np.float64)
    out = {}
    model(x, out=out)
    w, b = model.patch_embed.proj.weight.data, model.patch_embed.proj.bias.data  # (D, C, P, P), (D,)
    for i, j in np.ndindex(2, 2):  # patch (i, j) is token i * gw + j
        patch = x[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4]  # (B, C, P, P)
        expected = np.einsum("bcpq,dcpq->bd", patch, w) + b
        np.testing.assert_allclose(out["patch_tokens"][:, 2 * i + j], expected, rtol=1e-12)
    tokens = np.concatenate([np.broadcast_to(model.cls_token.data, (2, 1, 8)), out["patch_tokens"]], axis=1)
    np.testing.assert_allclose(out["with_posemb"], tokens + model.pos_embed.data, rtol=1e-12)


def test_two_models_built_from_one_config_keep_their_own_heads():
    cfg = minivit.model_config("vit_testing", representation_size=16)
    a, b = ViT(config=cfg), ViT(config=cfg)
    a.reset_classifier(3)
    assert cfg.num_classes == 10 and cfg.representation_size == 16  # the caller's config is untouched
    assert b.config.num_classes == 10 and b(_images(size=32)).shape == (2, 10)
    assert a.config.num_classes == 3 and a(_images(size=32)).shape == (2, 3)


# ---- (f) classifier reset and the registry --------------------------------------------------

def test_reset_classifier_gives_a_zero_head_of_the_new_size_and_drops_pre_logits():
    model = _tiny("representation")
    assert "pre_logits.fc.weight" in model.state_dict()
    model.reset_classifier(5)
    sd = model.state_dict()
    assert not any(k.startswith("pre_logits") for k in sd)
    assert sd["head.weight"].shape == (5, 8) and sd["head.bias"].shape == (5,)
    assert not np.any(sd["head.weight"]) and not np.any(sd["head.bias"])
    assert model.config.num_classes == 5 and model.config.representation_size is None
    logits = model(_images())
    assert logits.shape == (2, 5)
    np.testing.assert_array_equal(logits.data, 0)


def test_reset_classifier_to_zero_classes_returns_features():
    model = _tiny("learn/token")
    model.reset_classifier(0)
    assert not any(k.startswith("head") for k in model.state_dict())
    assert model(_images()).shape == (2, 8)


def test_create_model_with_an_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"'vit_base_patch16_225'.*did you mean.*vit_base_patch16_224"):
        minivit.create_model("vit_base_patch16_225")
    with pytest.raises(ValueError, match="list_models"):
        minivit.create_model("resnet50")


def test_create_model_applies_overrides_and_dtype():
    model = minivit.create_model("vit_testing", num_classes=7, dtype="float64")
    assert model.config.num_classes == 7 and model.head.weight.shape == (7, 32)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert minivit.model_config("vit_testing").num_classes == 10  # the registry entry is untouched


def test_list_models_is_sorted_and_filters_by_pattern_or_substring():
    names = minivit.list_models()
    assert names == sorted(names) and "vit_base_patch16_224" in names and "vit_testing" in names
    assert minivit.list_models("*patch4_32") == [n for n in names if n.endswith("patch4_32")]
    assert len(minivit.list_models("*patch4_32")) >= 4
    assert minivit.list_models("huge") == ["vit_huge_patch14_224", "vit_huge_patch16_224", "vit_huge_patch32_224"]
    assert minivit.list_models("vit_large_*_224") == [f"vit_large_patch{p}_224" for p in (14, 16, 32)]
    assert minivit.list_models("no-such-model") == []


@pytest.mark.parametrize("name", minivit.list_models())
def test_a_config_counts_its_parameters_like_the_independent_formula(name):
    cfg = minivit.model_config(name)
    assert cfg.num_parameters() == count_params(cfg)


@pytest.mark.parametrize("variant", sorted(VARIANTS) + ["fc_norm"])
def test_a_config_counts_the_parameters_its_model_builds_for_every_position_embedding(variant):
    model = _tiny(variant) if variant != "fc_norm" else ViT(**{**TINY, "global_pool": "avg", "fc_norm": False})
    assert model.config.num_parameters() == model.num_parameters()


def test_a_model_larger_than_the_machines_memory_is_refused_before_anything_is_built():
    with pytest.raises(MemoryError, match=r"depth=1000000000.*parameters.*GiB"):
        minivit.create_model("vit_testing", depth=10**9)
