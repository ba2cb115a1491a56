"""The hybrid ViT (minivit/hybrid.py, paper Sec. 3.1) and Axial-ViT (minivit/axial.py, App. D.6).

Hybrid: timm's state-dict names (patch_embed.backbone.*, patch_embed.proj.*), the same logits and
gradients as timm's hybrid VisionTransformer for the same weights (fixtures from
scripts/make_timm_resnet_fixture.py), the sequence lengths of Sec. 4.1's two forms, and the
parameter count of every registered hybrid counted on timm's modules.
Axial-ViT: a block is attention along the rows of the patch grid and then along its columns
(checked against the same Blocks run row by row and column by column, and by which tokens can
influence which), no class token, parameter counts, gradients, training from Python.

Shape letters: B batch, gh/gw patch grid, Np patches, N tokens, D width, Hh heads.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minivit
from minivit import Tensor
from minivit import functional as F
from minivit.axial import AxialConfig, AxialViT
from minivit.hybrid import HybridConfig, HybridViT
from minivit.variants import create_model, list_models, model_config, model_from_config

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = sorted(p for p in FIXTURES.glob("timm_hybrid_*.npz") if "param_counts" not in p.name)

# Copied from tests/fixtures/timm_hybrid_param_counts.npz: every registered hybrid and Axial-ViT counted
# on timm's modules (timm's own model where it has the name; scripts/make_timm_resnet_fixture.py says how
# the others are built); test_the_count_table_is_a_copy_of_the_timm_fixture keeps the two equal.
PARAM_COUNTS = {
    "vit_base_r26_s32_224": 101_383_976,
    "vit_base_r50_s16_224": 98_659_112,
    "vit_base_r50_s16_384": 98_950_952,
    "vit_base_r50_s32_224": 110_945_832,
    "vit_demo_r14_s4_32": 251_698,
    "vit_demo_r14_s8_32": 272_882,
    "vit_large_r50_s32_224": 328_994_856,
    "vit_large_r50_s32_384": 329_092_136,
    "vit_mini_r14_s4_32": 739_194,
    "vit_mini_r14_s8_32": 827_130,
    "vit_small_r26_s32_224": 36_431_912,
    "vit_small_r26_s32_384": 36_468_392,
    "vit_testing_r11_s4_32": 39_058,
    "axial_vit_base_patch16_224": 171_620_584,
    "axial_vit_base_patch32_224": 173_277_160,
    "axial_vit_demo_patch4_32": 311_146,
    "axial_vit_mini_patch4_32": 810_890,
    "axial_vit_testing": 57_898,
}
BUILD_BELOW = 2_000_000


def load(path):
    with np.load(path, allow_pickle=False) as f:
        fx = {k: f[k] for k in f.files}
    fx["config"] = json.loads(str(fx["config_json"]))
    fx["params"] = {k[6:]: v for k, v in fx.items() if k.startswith("param.")}
    fx["grads"] = {k[5:]: v for k, v in fx.items() if k.startswith("grad.")}
    return fx


@pytest.fixture(params=PARITY, ids=[p.stem for p in PARITY])
def fx(request):
    return load(request.param)


def images(B=2, size=32, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((B, 3, size, size)).astype(dtype)


# ---- hybrid: timm parity -----------------------------------------------------------------------

def test_hybrid_state_dict_is_timms_backbone_then_projection_then_vit(fx):
    got = {k: tuple(v.shape) for k, v in HybridViT(**fx["config"]).state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in fx["params"].items()}
    assert any(k.startswith("patch_embed.backbone.stages.") for k in got) and "patch_embed.proj.weight" in got


@pytest.mark.parametrize("dtype, rtol_logits, rtol_grads", [(np.float32, 1e-4, 1e-3), (np.float64, 1e-9, 1e-9)])
def test_hybrid_logits_and_gradients_equal_timms_for_timms_weights(fx, dtype, rtol_logits, rtol_grads):
    model = HybridViT(**fx["config"])
    model.load_state_dict(fx["params"])
    model.astype(dtype).eval()
    logits = model(fx["input"].astype(dtype))
    F.cross_entropy(logits, fx["labels"]).backward()
    assert np.abs(logits.data - fx["logits"]).max() < rtol_logits * np.abs(fx["logits"]).max()
    for name, p in model.named_parameters():
        want = fx["grads"][name]
        assert np.abs(p.grad - want).max() < rtol_grads * np.abs(want).max(), name


# ---- hybrid: the sequence ----------------------------------------------------------------------

@pytest.mark.parametrize("name, tokens", [("vit_base_r50_s16_224", 1 + 14 * 14), ("vit_base_r50_s16_384", 1 + 24 * 24),
                                          ("vit_large_r50_s32_224", 1 + 7 * 7), ("vit_small_r26_s32_384", 1 + 12 * 12),
                                          ("vit_demo_r14_s4_32", 1 + 8 * 8), ("vit_demo_r14_s8_32", 1 + 4 * 4)])
def test_the_sequence_is_one_token_per_feature_map_position_plus_the_class_token(name, tokens):
    cfg = model_config(name)
    gh, gw = cfg.grid_size
    assert 1 + gh * gw == tokens
    stride = int(name.split("_")[-2][1:])  # vit_{size}_r{depth}_s{stride}_{img}
    assert cfg.img_size // stride == gh  # the CNN's output stride is the name's s16 / s32 / s4 / s8


@pytest.mark.parametrize("name", ["vit_demo_r14_s4_32", "vit_testing_r11_s4_32"])
def test_the_hybrid_forward_feeds_the_vit_the_cnn_feature_map_as_tokens(name):
    model = create_model(name).eval()
    out = {}
    model(images(), out=out)
    gh, gw = model.grid_size
    assert out["patch_tokens"].shape == (2, gh * gw, model.config.embed_dim)
    feats = model.patch_embed.backbone.forward_features(images()).data  # (B, Cf, gh, gw)
    w = model.patch_embed.proj.weight.data[:, :, 0, 0]  # (D, Cf): a 1x1 patch is one position's features
    want = feats.reshape(2, feats.shape[1], -1).transpose(0, 2, 1) @ w.T + model.patch_embed.proj.bias.data
    np.testing.assert_allclose(out["patch_tokens"], want, rtol=1e-4, atol=1e-5)


def test_form_ii_moves_stage_4_into_stage_3_for_a_4x_longer_sequence():
    form_i, form_ii = model_config("vit_base_r50_s32_224"), model_config("vit_base_r50_s16_224")
    assert sum(form_i.backbone_layers) == sum(form_ii.backbone_layers) == 16  # the same 16 bottleneck blocks
    assert form_ii.backbone_layers == (3, 4, 6 + 3) and len(form_i.backbone_layers) == 4
    assert form_ii.grid_size[0] ** 2 == 4 * form_i.grid_size[0] ** 2


def test_a_feature_map_not_divisible_by_the_patch_size_is_refused():
    with pytest.raises(ValueError, match="feature map is not divisible"):
        model_config("vit_testing_r11_s4_32", patch_size=3)


# ---- parameter counts ----------------------------------------------------------------------------

def test_the_count_table_is_a_copy_of_the_timm_fixture():
    with np.load(FIXTURES / "timm_hybrid_param_counts.npz") as f:
        assert json.loads(str(f["counts_json"])) == PARAM_COUNTS


@pytest.mark.parametrize("name", list_models(family="hybrid") + list_models(family="axial"))
def test_every_registered_hybrid_and_axial_vit_has_the_count_of_timms_modules(name):
    assert name in PARAM_COUNTS, f"add {name} to the fixture (scripts/make_timm_resnet_fixture.py) and PARAM_COUNTS"
    assert model_config(name).num_parameters() == PARAM_COUNTS[name]
    if PARAM_COUNTS[name] < BUILD_BELOW:
        assert create_model(name).num_parameters() == PARAM_COUNTS[name]


def test_the_papers_r50_vit_b16_hybrid_has_12_million_more_parameters_than_vit_b16():
    hybrid, vit = model_config("vit_base_r50_s16_224"), model_config("vit_base_patch16_224")
    extra = hybrid.num_parameters() - vit.num_parameters()
    assert 11_000_000 < extra < 13_000_000  # the R50's stages 1-3 (with 9 blocks in stage 3)


# ---- axial attention -------------------------------------------------------------------------------

def _axial(depth=1, **kw):
    model = AxialViT(config=AxialConfig(img_size=16, patch_size=4, embed_dim=8, depth=depth, num_heads=2,
                                        num_classes=3, **kw), dtype="float64")
    rng = np.random.default_rng(1)
    for p in model.parameters():  # weights away from init (norms not 1, biases not 0)
        p.data += 0.3 * rng.standard_normal(p.shape)
    return model.eval()


def test_an_axial_block_is_attention_along_each_row_then_along_each_column():
    model = _axial()
    block = model.blocks[0]
    gh, gw = model.grid_size
    x = np.random.default_rng(2).standard_normal((2, gh * gw, 8))  # (B, Np, D), raster order
    got = block(Tensor(x)).data
    grid = x.reshape(2, gh, gw, 8).copy()  # (B, gh, gw, D)
    for i in range(gh):  # row i is one sequence of gw tokens through the row block
        grid[:, i] = block.row(Tensor(grid[:, i])).data
    for j in range(gw):  # then column j, a sequence of gh tokens, through the column block
        grid[:, :, j] = block.col(Tensor(grid[:, :, j])).data
    np.testing.assert_allclose(got, grid.reshape(2, gh * gw, 8), rtol=1e-12, atol=1e-12)


def test_a_row_block_mixes_only_tokens_of_the_same_row_and_a_column_block_of_the_same_column():
    model = _axial()
    block = model.blocks[0]
    gh, gw = model.grid_size
    x = np.random.default_rng(3).standard_normal((1, gh * gw, 8))
    row_only = lambda t: block.row(Tensor(t.reshape(gh, gw, 8))).data.reshape(gh, gw, 8)  # (gh, gw, D)
    moved = x.copy()
    moved[0, 1 * gw + 2] += np.linspace(-1, 1, 8)  # the token at row 1, column 2 (not a shift, which LN removes)
    changed = np.abs(row_only(moved) - row_only(x)).max(axis=-1) > 1e-12  # (gh, gw)
    assert changed[1].all() and not np.delete(changed, 1, axis=0).any()
    both = np.abs(block(Tensor(moved)).data - block(Tensor(x)).data).max(axis=-1).reshape(gh, gw) > 1e-12
    assert both.all()  # after row and column attention every token has heard from it


def test_axial_attention_weights_are_per_row_and_per_column_and_rows_of_them_sum_to_one():
    model = _axial(depth=2)
    out = {}
    model(images(B=2, size=16, dtype=np.float64), out=out)
    gh, gw = model.grid_size
    assert [a.shape for a in out["row_attention"]] == [(2 * gh, 2, gw, gw)] * 2
    assert [a.shape for a in out["col_attention"]] == [(2 * gw, 2, gh, gh)] * 2
    assert [b.shape for b in out["blocks"]] == [(2, gh * gw, 8)] * 2
    np.testing.assert_allclose(out["row_attention"][0].sum(-1), 1.0, rtol=1e-12)


def test_axial_vit_has_no_class_token_and_pools_the_patch_tokens():
    model = create_model("axial_vit_testing")
    assert "cls_token" not in model.state_dict() and model.config.global_pool == "avg"
    assert model.state_dict()["pos_embed"].shape == (1, 16, 32)
    with pytest.raises(ValueError, match="no class token"):
        model_config("axial_vit_testing", class_token=True, global_pool="token")
    for kind in ("relative_1d", "relative_bias_2d", "relative"):  # "relative": the old name of relative_bias_2d
        with pytest.raises(ValueError, match="relative_1d" if kind == "relative_1d" else "relative_bias_2d"):
            model_config("axial_vit_testing", pos_embed=kind)


def test_axial_layers_hold_a_row_block_and_a_column_block_with_vits_names():
    names = set(create_model("axial_vit_testing").state_dict())
    for axis in ("row", "col"):
        wanted = {f"blocks.1.{axis}.{name}" for name in ("attn.qkv.weight", "mlp.fc2.bias", "norm2.weight")}
        assert wanted <= names


def test_whole_axial_vit_float64_gradients_match_central_differences():
    model = _axial(depth=1)
    rng = np.random.default_rng(4)
    x, labels = images(B=2, size=16, dtype=np.float64), np.array([0, 2])
    F.cross_entropy(model(x), labels).backward()
    eps = 1e-6
    for name, p in model.named_parameters():
        i = np.unravel_index(rng.integers(p.size), p.shape)
        old = p.data[i]
        with minivit.no_grad():
            p.data[i] = old + eps
            plus = F.cross_entropy(model(x), labels).item()
            p.data[i] = old - eps
            minus = F.cross_entropy(model(x), labels).item()
        p.data[i] = old
        assert p.grad[i] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8), name


# ---- both: configs and training ---------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("vit_testing_r11_s4_32", HybridViT), ("axial_vit_testing", AxialViT)])
def test_a_saved_config_rebuilds_the_same_kind_of_model(name, cls):
    model = create_model(name)
    again = model_from_config(json.loads(json.dumps(model.config.to_dict())))
    assert type(again) is cls and again.config == model.config


def test_configs_name_their_family():
    assert HybridConfig().arch == "hybrid" and AxialConfig().arch == "axial"
    with pytest.raises(ValueError, match="arch"):
        HybridConfig(arch="axial")


@pytest.mark.parametrize("name", ["vit_testing_r11_s4_32", "axial_vit_testing"])
def test_the_model_trains_from_python_with_the_trainer(tmp_path, name):
    from minivit.train import TrainConfig, Trainer

    cfg = TrainConfig(model=name, dataset="procedural", num_samples=96, val_size=32, epochs=1, batch_size=16,
                      out_dir=str(tmp_path), progress=False, eval_test="never", model_kwargs={"depth": 1})
    trainer = Trainer(cfg)
    before = [p.data.copy() for p in trainer.model.parameters()]
    record = trainer.fit()
    assert trainer.model.config.depth == 1 and np.isfinite(record["train_loss"])
    assert all(not np.array_equal(a, p.data) for a, p in zip(before, trainer.model.parameters()) if p.ndim > 1)
