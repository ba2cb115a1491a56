"""minivit's ViT must match timm's VisionTransformer: same logits, same gradients.

The reference numbers come from timm (see ``scripts/make_timm_fixture.py``, which
regenerates ``tests/fixtures/timm_vit_*.npz``); timm itself is not needed here.
Each fixture stores float32 weights and input, and float64 logits, loss and
parameter gradients (timm run in float64 on the float32 weights cast up).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minivit

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(FIXTURE_DIR.glob("timm_vit_*.npz"))

LOGITS_RTOL_F32 = 1e-4
GRADS_RTOL_F32 = 1e-3
RTOL_F64 = 1e-9


def rel_err(actual, expected) -> float:
    """max|a - b| / max|b|, computed in float64."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    assert scale > 0
    return float(np.abs(actual - expected).max() / scale)


def load_fixture(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        fx = {k: f[k] for k in f.files}
    fx["config"] = json.loads(str(fx["config_json"]))
    return fx


def fixture_params(fx: dict) -> dict:
    return {k[len("param."):]: v for k, v in fx.items() if k.startswith("param.")}


def fixture_grads(fx: dict) -> dict:
    return {k[len("grad."):]: v for k, v in fx.items() if k.startswith("grad.")}


def build_model(fx: dict, float64: bool = False):
    model = minivit.ViT(**fx["config"])
    model.load_state_dict(fixture_params(fx))
    if float64:
        converted = model.astype(np.float64)
        if converted is not None:
            model = converted
    model.eval()
    return model


def forward_backward(model, fx: dict, dtype):
    x = fx["input"].astype(dtype)
    logits = model(x)
    loss = minivit.functional.cross_entropy(logits, fx["labels"])
    loss.backward()
    return logits, loss


@pytest.fixture(params=FIXTURES, ids=[p.stem for p in FIXTURES])
def fx(request):
    return load_fixture(request.param)


def test_fixtures_present():
    assert len(FIXTURES) >= 3, f"timm fixtures missing from {FIXTURE_DIR}"


def test_state_dict_keys_and_shapes_match_timm(fx):
    model = minivit.ViT(**fx["config"])
    expected = {k: v.shape for k, v in fixture_params(fx).items()}
    got = {k: tuple(np.shape(v)) for k, v in model.state_dict().items()}
    assert set(got) == set(expected)
    for k, shape in expected.items():
        assert got[k] == tuple(shape), k


def test_parameter_names_match_timm(fx):
    model = minivit.ViT(**fx["config"])
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert set(names) == set(fixture_grads(fx))


def test_float32_logits_and_grads_match_timm(fx):
    model = build_model(fx)
    logits, loss = forward_backward(model, fx, np.float32)

    out = logits.numpy()
    assert out.dtype == np.float32
    assert out.shape == fx["logits"].shape
    assert rel_err(out, fx["logits"]) < LOGITS_RTOL_F32
    assert abs(float(loss.numpy()) - float(fx["loss"])) < LOGITS_RTOL_F32 * abs(float(fx["loss"]))

    grads = fixture_grads(fx)
    seen = set()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        err = rel_err(p.grad, grads[name])
        assert err < GRADS_RTOL_F32, f"{name}: relative error {err:.3e}"
        seen.add(name)
    assert seen == set(grads)


def test_float64_logits_and_grads_match_timm(fx):
    model = build_model(fx, float64=True)
    logits, loss = forward_backward(model, fx, np.float64)

    out = logits.numpy()
    assert out.dtype == np.float64
    assert rel_err(out, fx["logits"]) < RTOL_F64
    assert abs(float(loss.numpy()) - float(fx["loss"])) < RTOL_F64 * abs(float(fx["loss"]))

    grads = fixture_grads(fx)
    seen = set()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert np.asarray(p.grad).dtype == np.float64, name
        err = rel_err(p.grad, grads[name])
        assert err < RTOL_F64, f"{name}: relative error {err:.3e}"
        seen.add(name)
    assert seen == set(grads)
