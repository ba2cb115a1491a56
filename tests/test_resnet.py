"""minivit's ResNetV2 (minivit/resnet.py) is timm's: the same state-dict names and shapes, the same
logits and gradients for the same weights (fixtures made by scripts/make_timm_resnet_fixture.py
with timm's own ResNetV2, BiT's zero-padded stem pool and PyTorch's, odd image sizes), and the
same parameter count for every registered variant; plus the BiT structure the paper relies on
(pre-activation bottlenecks, GroupNorm, weight-standardized convs), and training from Python.

Shape letters: B batch, C channels, H/W size, K classes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minivit
from minivit import functional as F
from minivit.resnet import Bottleneck, PreActBottleneck, ResNetV2, ResNetV2Config, StdConv2d
from minivit.variants import create_model, list_models, model_config
from strategies import reference_kernels

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = sorted(p for p in FIXTURES.glob("timm_resnetv2_*.npz") if "param_counts" not in p.name)

# Copied from tests/fixtures/timm_resnetv2_param_counts.npz (every registered ResNetV2 variant counted
# on timm's modules by scripts/make_timm_resnet_fixture.py); the fixture stays the source, and
# test_the_count_table_is_a_copy_of_the_timm_fixture keeps the two equal.
PARAM_COUNTS = {
    "resnetv2_50x1_bit": 25_549_352,
    "resnetv2_50x3_bit": 217_319_080,
    "resnetv2_101x1_bit": 44_541_480,
    "resnetv2_152x2_bit": 236_335_208,
    "resnetv2_20_cifar": 128_322,
    "resnetv2_29_cifar": 313_962,
    "resnetv2_testing": 8_762,
}
BUILD_BELOW = 50_000_000  # instantiate these; count the larger ones from the config


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


def test_parity_fixtures_are_present_and_small():
    assert len(PARITY) >= 2
    assert all(p.stat().st_size < 1_000_000 for p in FIXTURES.glob("timm_*.npz"))


def test_state_dict_names_and_shapes_are_timms(fx):
    got = {k: tuple(v.shape) for k, v in ResNetV2(**fx["config"]).state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in fx["params"].items()}


@pytest.mark.parametrize("dtype, rtol_logits, rtol_grads", [(np.float32, 1e-4, 1e-3), (np.float64, 1e-9, 1e-9)])
def test_logits_and_gradients_equal_timms_for_timms_weights(fx, dtype, rtol_logits, rtol_grads):
    model = ResNetV2(**fx["config"])
    model.load_state_dict(fx["params"])
    model.astype(dtype).eval()
    logits = model(fx["input"].astype(dtype))
    loss = F.cross_entropy(logits, fx["labels"])
    loss.backward()
    assert logits.dtype == dtype
    scale = np.abs(fx["logits"]).max()
    assert np.abs(logits.data - fx["logits"]).max() < rtol_logits * scale
    assert abs(loss.item() - float(fx["loss"])) < rtol_logits * abs(float(fx["loss"]))
    for name, p in model.named_parameters():
        want = fx["grads"][name]
        err = np.abs(p.grad - want).max() / np.abs(want).max()
        assert err < rtol_grads, f"{name}: relative error {err:.2e}"


def test_reading_mode_gives_the_same_logits_as_the_numba_kernels(fx):
    model = ResNetV2(**fx["config"])
    model.load_state_dict(fx["params"])
    model.astype(np.float64).eval()
    x = fx["input"].astype(np.float64)
    fast = model(x).data
    with reference_kernels():
        slow = model(x).data
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


# ---- parameter counts ------------------------------------------------------------------------------

def test_the_count_table_is_a_copy_of_the_timm_fixture():
    with np.load(FIXTURES / "timm_resnetv2_param_counts.npz") as f:
        assert json.loads(str(f["counts_json"])) == PARAM_COUNTS


@pytest.mark.parametrize("name", list_models(family="resnetv2"))
def test_every_registered_resnet_has_timms_parameter_count(name):
    assert name in PARAM_COUNTS, f"add {name} to the fixture (scripts/make_timm_resnet_fixture.py) and PARAM_COUNTS"
    assert model_config(name).num_parameters() == PARAM_COUNTS[name]
    if PARAM_COUNTS[name] < BUILD_BELOW:
        assert create_model(name).num_parameters() == PARAM_COUNTS[name]


def test_resnet50_is_bits_25_5_million_parameters():
    assert model_config("resnetv2_50x1_bit").num_parameters() == 25_549_352  # timm's resnetv2_50x1_bit


# ---- structure -------------------------------------------------------------------------------------

def test_bit_blocks_are_pre_activation_bottlenecks_with_a_projection_first():
    model = create_model("resnetv2_50x1_bit")
    assert [len(s.blocks) for s in model.stages] == [3, 4, 6, 3]
    for stage in model.stages:
        blocks = list(stage.blocks)
        assert all(isinstance(b, PreActBottleneck) for b in blocks)
        assert blocks[0].downsample is not None and all(b.downsample is None for b in blocks[1:])
    widths = [s.blocks[0].conv3.weight.shape[0] for s in model.stages]
    assert widths == [256, 512, 1024, 2048]
    assert [s.blocks[0].conv2.stride for s in model.stages] == [1, 2, 2, 2]  # the 3x3 conv carries the stride


def test_every_conv_is_weight_standardized_and_every_norm_is_a_groupnorm_of_32_groups():
    model = create_model("resnetv2_50x1_bit")
    convs = [m for m in model.modules() if isinstance(m, StdConv2d)]
    assert len(convs) == 1 + 16 * 3 + 4  # stem, three per block, four projections
    assert all(c.eps == 1e-8 for c in convs)
    norms = [m for m in model.modules() if type(m).__name__ == "GroupNormAct"]
    assert norms and all(n.groups == 32 for n in norms)


def test_an_r50_feature_map_is_a_32nd_of_the_image(tmp_path):
    model = create_model("resnetv2_testing", img_size=64, stem_type="fixed", layers=(1, 1, 1, 1),
                         channels=(16, 32, 32, 64))
    out = {}
    model(np.zeros((1, 3, 64, 64), np.float32), out=out)
    assert out["stem"].shape[2:] == (16, 16) and out["features"].shape[2:] == (2, 2)
    assert model.config.reduction == 32 and model.config.feature_size() == 2


def test_weight_standardization_makes_the_output_independent_of_each_filters_scale_and_shift():
    model = create_model("resnetv2_testing").eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for p in model.parameters():  # a head that is not zero, so the logits differ between images
        p.data += 0.1 * np.random.default_rng(1).standard_normal(p.shape).astype(np.float32)
    before = model(x).data
    conv = model.stages[0].blocks[0].conv2
    conv.weight.data = 3.0 * conv.weight.data + 0.5  # per filter: scaled and shifted
    np.testing.assert_allclose(model(x).data, before, rtol=2e-4, atol=1e-5)


def test_the_hybrid_backbone_form_has_post_activation_blocks_and_no_final_norm():
    model = ResNetV2(config=ResNetV2Config(layers=(1, 1), channels=(32, 64), stem_chs=16, num_groups=8,
                                           stem_type="same", preact=False, num_classes=0))
    assert isinstance(model.stages[0].blocks[0], Bottleneck)
    assert "norm.weight" not in model.state_dict() and "stem.norm.weight" in model.state_dict()
    assert model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 64)  # pooled features, no head


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(stem_type="deep"), "stem_type"), (dict(num_groups=5), "divisible"),
    (dict(layers=(1, 1, 1), channels=(8, 16)), "one width each"), (dict(arch="vit"), "arch"),
    (dict(bogus=1), "unknown ResNetV2 option"),
])
def test_bad_options_raise_errors_naming_them(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        model_config("resnetv2_testing", **kwargs)


def test_input_of_the_wrong_shape_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        create_model("resnetv2_testing")(np.zeros((3, 32, 32), np.float32))


# ---- gradients and training ---------------------------------------------------------------------

def test_every_parameter_gets_a_finite_nonzero_gradient():
    model = create_model("resnetv2_testing")
    model.head.fc.weight.data[:] = 0.1  # the zero-initialised head would stop every gradient below it
    F.cross_entropy(model(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)),
                    np.array([1, 7])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad).all() and np.any(p.grad != 0), name


def test_whole_model_float64_gradients_match_central_differences():
    model = create_model("resnetv2_testing", dtype="float64").eval()
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data += 0.1 * rng.standard_normal(p.shape)
    x, labels = rng.standard_normal((2, 3, 12, 12)), np.array([3, 5])
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


def test_a_resnet_trains_from_python_with_the_trainer(tmp_path):
    from minivit.train import TrainConfig, Trainer

    cfg = TrainConfig(model="resnetv2_testing", dataset="procedural", num_samples=96, val_size=32, epochs=1,
                      batch_size=16, out_dir=str(tmp_path), progress=False, eval_test="never", lr=3e-3)
    trainer = Trainer(cfg)
    before = [p.data.copy() for p in trainer.model.parameters()]
    record = trainer.fit()
    assert isinstance(trainer.model, ResNetV2) and trainer.model.config.num_classes == 10
    assert np.isfinite(record["train_loss"]) and 0 <= record["val_acc"] <= 1
    assert any(not np.array_equal(a, p.data) for a, p in zip(before, trainer.model.parameters()))
    saved = json.loads((tmp_path / "config.json").read_text())["model"]
    assert saved["arch"] == "resnetv2" and (tmp_path / "checkpoint.npz").exists()


def test_a_saved_config_rebuilds_the_same_model():
    from minivit.variants import model_from_config

    model = create_model("resnetv2_testing", num_classes=3)
    again = model_from_config(json.loads(json.dumps(model.config.to_dict())))
    assert isinstance(again, ResNetV2) and again.config == model.config


def test_reset_classifier_gives_a_zero_head_for_the_new_classes():
    model = create_model("resnetv2_testing").reset_classifier(4)
    assert model.head.fc.weight.shape == (4, 64, 1, 1) and not model.head.fc.weight.data.any()
    assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 4)
