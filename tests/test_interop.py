"""Tests for minivit.interop: official vit_jax / big_vision .npz checkpoints load with the right
logits, save and load round-trip exactly, and damaged or foreign files fail clearly.

Nothing is downloaded: each test writes a small checkpoint in the official layout itself, with a
mapping written here (independent of minivit.interop), and checks the loaded model against a
NumPy transcription of the flax forward pass (vit_jax models_vit.py, big_vision models/vit.py).
"""

import numpy as np
import pytest
from scipy.special import erf

from minivit import posemb
from minivit.interop import InteropError, convert, load_vit_jax, save_vit_jax, to_official_arrays
from minivit.vit import ViT, ViTConfig

TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)  # hd = 8, M = 64
NAMES = {"vit_jax": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
         "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")}


def tiny_config(pool="token", **kw):
    if pool == "gap":
        kw = dict(global_pool="avg", class_token=False, fc_norm=False, **kw)
    return ViTConfig(**{**TINY, **kw})


def random_model(pool="token", seed=0, dtype=np.float32, **kw):
    """A tiny ViT with every parameter random (the default head is all zeros)."""
    model = ViT(config=tiny_config(pool, **kw), dtype=dtype)
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: rng.normal(0, 0.5, v.shape) for k, v in model.state_dict().items()})
    return model


def images(n=2, size=16, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)  # (B, C, H, W)


def logits(model, x):
    return model(x.astype(model.dtype)).numpy()


def official_arrays(model, layout="vit_jax"):
    """The official parameter paths of `model`, written element by element from the flax shapes
    (not with minivit.interop): conv HWIO, DenseGeneral (D, Hh, hd) and (Hh, hd, D), Dense (in, out)."""
    sd, cfg = model.state_dict(), model.config
    D, Hh = cfg.embed_dim, cfg.num_heads
    hd = D // Hh
    ln1, mha, ln2, mlp = NAMES[layout]
    out = {"embedding/kernel": np.einsum("dcij->ijcd", sd["patch_embed.proj.weight"]),
           "embedding/bias": sd["patch_embed.proj.bias"], "Transformer/encoder_norm/scale": sd["norm.weight"],
           "Transformer/encoder_norm/bias": sd["norm.bias"]}
    pos = sd["pos_embed"].copy()
    if cfg.class_token:
        out["cls"] = sd["cls_token"].copy()
        if layout == "big_vision":  # posemb is added before the class token is concatenated
            out["cls"] += pos[:, :1]
            pos = pos[:, 1:]
    out["Transformer/posembed_input/pos_embedding" if layout == "vit_jax" else "pos_embedding"] = pos
    for i in range(cfg.depth):
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        qkv_w, qkv_b = sd[t + "attn.qkv.weight"], sd[t + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            kernel, bias = np.empty((D, Hh, hd)), np.empty((Hh, hd))
            for h in range(Hh):
                rows = slice(j * D + h * hd, j * D + (h + 1) * hd)  # head h's outputs of projection j
                kernel[:, h, :] = qkv_w[rows].T
                bias[h] = qkv_b[rows]
            out[f"{b}{mha}/{n}/kernel"], out[f"{b}{mha}/{n}/bias"] = kernel, bias
        proj = sd[t + "attn.proj.weight"]
        out[f"{b}{mha}/out/kernel"] = np.stack([proj[:, h * hd:(h + 1) * hd].T for h in range(Hh)])
        out[f"{b}{mha}/out/bias"] = sd[t + "attn.proj.bias"]
        for ln, norm in ((ln1, "norm1"), (ln2, "norm2")):
            out[f"{b}{ln}/scale"], out[f"{b}{ln}/bias"] = sd[f"{t}{norm}.weight"], sd[f"{t}{norm}.bias"]
        for r, fc in enumerate(("fc1", "fc2")):
            out[f"{b}{mlp}/Dense_{r}/kernel"] = sd[f"{t}mlp.{fc}.weight"].T
            out[f"{b}{mlp}/Dense_{r}/bias"] = sd[f"{t}mlp.{fc}.bias"]
    if cfg.representation_size:
        out["pre_logits/kernel"], out["pre_logits/bias"] = sd["pre_logits.fc.weight"].T, sd["pre_logits.fc.bias"]
    out["head/kernel"], out["head/bias"] = sd["head.weight"].T, sd["head.bias"]
    return {k: np.array(v, dtype=model.dtype) for k, v in out.items()}


def flax_forward(p, x):
    """The official ViT forward in float64 NumPy, transcribed from the flax modules (with the
    exact GELU, as minivit and timm use): NHWC conv, posemb (big_vision: before cls), pre-norm
    blocks, encoder_norm on every token, then the class token or the mean, pre_logits, head."""
    big_vision = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in p
    layout = "big_vision" if big_vision else "vit_jax"
    ln1, mha, ln2, mlp = NAMES[layout]
    x = x.astype(np.float64).transpose(0, 2, 3, 1)  # (B, H, W, C)
    P = p["embedding/kernel"].shape[0]
    B, H, W, C = x.shape
    patches = x.reshape(B, H // P, P, W // P, P, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, -1, P, P, C)
    z = np.einsum("bnijc,ijcd->bnd", patches, p["embedding/kernel"]) + p["embedding/bias"]
    if "pos_embedding" in p:
        z = z + p["pos_embedding"]
    if "cls" in p:
        z = np.concatenate([np.repeat(p["cls"], B, axis=0), z], axis=1)
    if "Transformer/posembed_input/pos_embedding" in p:
        z = z + p["Transformer/posembed_input/pos_embedding"]

    def ln(v, name):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * p[name + "/scale"] + p[name + "/bias"]

    i = 0
    while f"Transformer/encoderblock_{i}/{ln1}/scale" in p:
        b = f"Transformer/encoderblock_{i}/"
        y = ln(z, b + ln1)
        q, k, v = (np.einsum("bnd,dhk->bhnk", y, p[f"{b}{mha}/{n}/kernel"]) + p[f"{b}{mha}/{n}/bias"][:, None]
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        z = z + np.einsum("bhnk,hkd->bnd", a @ v, p[f"{b}{mha}/out/kernel"]) + p[f"{b}{mha}/out/bias"]
        y = ln(z, b + ln2) @ p[f"{b}{mlp}/Dense_0/kernel"] + p[f"{b}{mlp}/Dense_0/bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        z = z + y @ p[f"{b}{mlp}/Dense_1/kernel"] + p[f"{b}{mlp}/Dense_1/bias"]
        i += 1
    z = ln(z, "Transformer/encoder_norm")
    pooled = z[:, 0] if "cls" in p else z.mean(axis=1)
    if "pre_logits/kernel" in p:
        pooled = np.tanh(pooled @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    return pooled @ p["head/kernel"] + p["head/bias"]


def write(path, arrays):
    np.savez(path, **arrays)
    return path


# ---- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("representation_size", [None, 8])
def test_vit_jax_checkpoint_written_independently_loads_with_the_models_parameters_and_logits(
        tmp_path, representation_size):
    model = random_model(representation_size=representation_size)
    loaded = load_vit_jax(write(tmp_path / "vit.npz", official_arrays(model)))
    assert loaded.config == model.config  # every option inferred from the shapes
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)
    np.testing.assert_array_equal(logits(loaded, images()), logits(model, images()))


@pytest.mark.parametrize("layout,pool", [("vit_jax", "token"), ("big_vision", "token"),
                                         ("vit_jax", "gap"),
                                         ("big_vision", "gap")])
def test_loaded_model_matches_the_flax_forward_of_the_checkpoint(tmp_path, layout, pool):
    model = random_model(pool, dtype=np.float64, representation_size=8)
    arrays = official_arrays(model, layout)
    if layout == "big_vision" and pool == "token":
        assert arrays["pos_embedding"].shape == (1, 16, 16)  # no class-token slot
    expected = flax_forward(arrays, images())
    loaded = load_vit_jax(write(tmp_path / "ckpt.npz", arrays), dtype=np.float64)
    np.testing.assert_allclose(logits(loaded, images()), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logits(model, images()), expected, rtol=1e-9, atol=1e-9)


def test_big_vision_table_without_class_slot_loads_with_a_zero_class_row(tmp_path):
    arrays = official_arrays(random_model(), "big_vision")
    loaded = load_vit_jax(write(tmp_path / "bv.npz", arrays))
    pos = loaded.state_dict()["pos_embed"]
    assert pos.shape == (1, 17, 16)
    np.testing.assert_array_equal(pos[0, 0], 0)
    np.testing.assert_array_equal(pos[0, 1:], arrays["pos_embedding"][0])
    np.testing.assert_array_equal(loaded.state_dict()["cls_token"], arrays["cls"])


def test_prefixed_scanned_big_vision_checkpoint_loads_like_the_plain_one(tmp_path):
    model = random_model()
    arrays = official_arrays(model, "big_vision")
    scanned = {}
    for key, value in arrays.items():  # blocks stacked on a leading depth axis, as with scan=True
        if key.startswith("Transformer/encoderblock_"):
            i, rest = key[len("Transformer/encoderblock_"):].split("/", 1)
            scanned.setdefault("Transformer/encoderblock/" + rest, [None] * 2)[int(i)] = value
        else:
            scanned[key] = value
    prefixed = {"params/" + k: (np.stack(v) if isinstance(v, list) else v) for k, v in scanned.items()}
    prefixed["opt/state/mu/head/kernel"] = np.zeros(3)  # optimizer state outside params/ is ignored
    loaded = load_vit_jax(write(tmp_path / "scanned.npz", prefixed))
    np.testing.assert_array_equal(logits(loaded, images()), logits(load_vit_jax(write(tmp_path / "p.npz", arrays)),
                                                                   images()))


def test_sincos_big_vision_checkpoint_needs_img_size_then_loads_as_sincos(tmp_path):
    arrays = official_arrays(random_model(), "big_vision")
    del arrays["pos_embedding"]  # big_vision posemb="sincos2d" stores no table
    path = write(tmp_path / "sincos.npz", arrays)
    with pytest.raises(InteropError, match="img_size"):
        load_vit_jax(path)
    loaded = load_vit_jax(path, img_size=16, dtype=np.float64)
    assert loaded.config.pos_embed == "sincos"
    table = posemb.sincos_2d((4, 4), 16, dtype=np.float64)  # big_vision's formula: [sin x, cos x, sin y, cos y]
    ref = dict(arrays, pos_embedding=table[None])
    np.testing.assert_allclose(logits(loaded, images()), flax_forward(ref, images()), rtol=1e-9, atol=1e-9)


def test_img_size_override_interpolates_the_position_grid_in_2d(tmp_path):
    model = random_model()
    sd = model.state_dict()
    sd["pos_embed"][0, 1:] = np.repeat(np.arange(4.0), 4)[:, None]  # constant along each row of patches
    arrays = official_arrays(model)
    loaded = load_vit_jax(write(tmp_path / "vit.npz", arrays), img_size=32)
    pos = loaded.state_dict()["pos_embed"]
    assert loaded.config.img_size == 32 and pos.shape == (1, 1 + 64, 16)
    np.testing.assert_array_equal(pos[0, 0], sd["pos_embed"][0, 0])  # the class token's row is kept
    np.testing.assert_allclose(pos[0, 1:], posemb.interpolate_grid(sd["pos_embed"][0, 1:], (4, 4), (8, 8)))
    grid = pos[0, 1:].reshape(8, 8, 16)
    np.testing.assert_allclose(grid, np.repeat(grid[:, :1], 8, axis=1))  # rows stay rows: 2D, not 1D
    assert np.ptp(grid[:, 0, 0]) > 0
    assert logits(loaded, images(1, 32)).shape == (1, 5)


def test_num_classes_override_gives_a_fresh_zero_head_and_keeps_the_trunk(tmp_path):
    model = random_model()
    loaded = load_vit_jax(write(tmp_path / "vit.npz", official_arrays(model)), num_classes=7)
    sd = loaded.state_dict()
    assert sd["head.weight"].shape == (7, 16) and not sd["head.weight"].any()
    np.testing.assert_array_equal(sd["blocks.1.mlp.fc2.weight"], model.state_dict()["blocks.1.mlp.fc2.weight"])


# ---- saving -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["vit_jax", "big_vision"])
@pytest.mark.parametrize("pool", ["token", "gap"])
@pytest.mark.parametrize("representation_size", [None, 8])
def test_save_then_load_round_trips_parameters_bit_identically(tmp_path, layout, pool, representation_size):
    model = random_model(pool, representation_size=representation_size)
    if layout == "big_vision" and model.config.class_token:
        model.state_dict()["pos_embed"][0, 0] = 0  # as loaded from big_vision: no class-token row of its own
    loaded = load_vit_jax(save_vit_jax(model, tmp_path / "out.npz", layout=layout))
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].tobytes() == value.tobytes(), key


def test_big_vision_save_folds_the_class_position_row_into_cls_keeping_logits_bit_identical(tmp_path):
    model = random_model()
    assert model.state_dict()["pos_embed"][0, 0].any()
    loaded = load_vit_jax(save_vit_jax(model, tmp_path / "bv.npz", layout="big_vision"))
    np.testing.assert_array_equal(logits(loaded, images()), logits(model, images()))


def test_saved_keys_are_the_official_parameter_paths():
    """The names of vit_jax models_vit.py and big_vision models/vit.py (NAMES) for a depth-2 model."""
    model = random_model(representation_size=8)
    top = ["embedding/kernel", "embedding/bias", "cls", "Transformer/encoder_norm/scale",
           "Transformer/encoder_norm/bias", "pre_logits/kernel", "pre_logits/bias", "head/kernel", "head/bias"]
    for layout, pos, prefix in (("vit_jax", "Transformer/posembed_input/pos_embedding", ""),
                                ("big_vision", "pos_embedding", "params/")):
        ln1, mha, ln2, mlp = NAMES[layout]
        block = ([f"{ln}/{w}" for ln in (ln1, ln2) for w in ("scale", "bias")]
                 + [f"{mha}/{n}/{w}" for n in ("query", "key", "value", "out") for w in ("kernel", "bias")]
                 + [f"{mlp}/Dense_{r}/{w}" for r in (0, 1) for w in ("kernel", "bias")])
        blocks = [f"Transformer/encoderblock_{i}/{path}" for i in range(2) for path in block]
        assert set(to_official_arrays(model, layout)) == {prefix + k for k in [*top, pos, *blocks]}, layout
    shapes = to_official_arrays(model)
    assert shapes["embedding/kernel"].shape == (4, 4, 3, 16)
    assert shapes["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (16, 2, 8)
    assert shapes["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"].shape == (2, 8, 16)
    assert shapes["Transformer/posembed_input/pos_embedding"].shape == (1, 17, 16)
    assert shapes["head/kernel"].shape == (8, 5)


def test_save_refuses_a_model_the_official_layout_cannot_hold(tmp_path):
    for kind in ("relative_bias_2d", "relative_1d"):
        with pytest.raises(InteropError, match=f"pos_embed='{kind}'"):
            save_vit_jax(random_model(pos_embed=kind), tmp_path / "x.npz")
    with pytest.raises(InteropError, match="sincos"):
        save_vit_jax(random_model(pos_embed="sincos"), tmp_path / "x.npz", layout="vit_jax")
    assert not list(tmp_path.iterdir())


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_vit_jax(random_model(), tmp_path / "out.npz")
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_vit_jax(random_model(seed=3), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


# ---- errors -------------------------------------------------------------------------------------
def test_unknown_entries_are_named(tmp_path):
    arrays = dict(official_arrays(random_model()), **{"Transformer/encoderblock_0/Extra_9/kernel": np.zeros(2)})
    with pytest.raises(InteropError, match="Extra_9/kernel"):
        load_vit_jax(write(tmp_path / "x.npz", arrays))


@pytest.mark.parametrize("key,shape,message", [
    ("embedding/bias", (15,), r"'embedding/bias' has shape \(15,\), expected \(16,\)"),
    ("head/bias", (4,), r"'head/bias' has shape \(4,\), expected \(5,\)"),
    ("Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel", (2, 8, 15),
     r"out/kernel' has shape \(2, 8, 15\), expected \(2, 8, 16\)"),
    ("Transformer/posembed_input/pos_embedding", (1, 18, 16), "pos_embedding' has 18 rows, which is not a square"),
])
def test_a_wrong_shape_is_named_with_both_shapes(tmp_path, key, shape, message):
    arrays = dict(official_arrays(random_model()), **{key: np.zeros(shape, np.float32)})
    with pytest.raises(InteropError, match=message):
        load_vit_jax(write(tmp_path / "x.npz", arrays))


def test_missing_entries_are_named(tmp_path):
    arrays = official_arrays(random_model())
    del arrays["Transformer/encoder_norm/scale"]
    with pytest.raises(InteropError, match="missing entry 'Transformer/encoder_norm/scale'"):
        load_vit_jax(write(tmp_path / "x.npz", arrays))


def test_map_pooling_head_is_refused_clearly(tmp_path):
    arrays = official_arrays(random_model(), "big_vision")
    del arrays["cls"]
    arrays["MAPHead_0/probe"] = np.zeros((1, 1, 16), np.float32)
    with pytest.raises(InteropError, match="attention-pooling head.*'map'"):
        load_vit_jax(write(tmp_path / "map.npz", arrays))


def test_overrides_that_contradict_the_shapes_are_refused(tmp_path):
    path = write(tmp_path / "vit.npz", official_arrays(random_model()))
    with pytest.raises(InteropError, match="embed_dim=32 contradicts.*embed_dim=16"):
        load_vit_jax(path, embed_dim=32)
    assert load_vit_jax(path, depth=2, mlp_ratio=4.0).config.depth == 2  # agreeing overrides are fine


def test_corrupt_truncated_and_foreign_files_raise_interop_errors(tmp_path):
    good = write(tmp_path / "good.npz", official_arrays(random_model())).read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("truncated.npz", "noise.npz", "absent.npz"):
        with pytest.raises(InteropError, match=name):
            load_vit_jax(tmp_path / name)
    assert issubclass(InteropError, ValueError)


def test_a_npy_file_is_refused_as_not_an_archive(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(InteropError, match=r"\.npy"):
        load_vit_jax(tmp_path / "one.npy")


class _Tripwire:
    """Unpickling this creates the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


@pytest.mark.parametrize("container", ["npz", "npy"])
def test_pickled_object_arrays_are_refused_without_being_unpickled(tmp_path, container):
    marker = tmp_path / "unpickled"
    payload = np.array([_Tripwire(marker)], dtype=object)
    if container == "npz":
        path = write(tmp_path / "evil.npz", dict(official_arrays(random_model()), cls=payload))
    else:
        path = tmp_path / "evil.npy"
        np.save(path, payload, allow_pickle=True)
    with pytest.raises(InteropError, match="unpickl|pickle"):
        load_vit_jax(path)
    assert not marker.exists()


def test_non_float_entries_such_as_raw_bfloat16_are_refused(tmp_path):
    arrays = official_arrays(random_model())
    arrays["embedding/bias"] = np.zeros(16, dtype="V2")  # how bfloat16 lands in an .npz
    with pytest.raises(InteropError, match="embedding/bias.*V2"):
        load_vit_jax(write(tmp_path / "bf16.npz", arrays))


# ---- convert ------------------------------------------------------------------------------------
def test_convert_goes_both_ways_decided_by_the_contents(tmp_path):
    from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    model = random_model()
    save_checkpoint(tmp_path / "mine.npz", model)
    summary = convert(tmp_path / "mine.npz", tmp_path / "official.npz", layout="big_vision")
    assert summary.startswith("minivit checkpoint") and "big_vision checkpoint" in summary and "\n" not in summary
    assert "params/pos_embedding" in np.load(tmp_path / "official.npz").files
    summary = convert(tmp_path / "official.npz", tmp_path / "back.npz")
    assert summary.startswith("big_vision checkpoint") and "minivit checkpoint" in summary
    back, _ = model_from_checkpoint(tmp_path / "back.npz")
    assert load_checkpoint(tmp_path / "back.npz")["meta"]["source_format"] == "big_vision"
    np.testing.assert_array_equal(logits(back, images()), logits(model, images()))
    with pytest.raises(InteropError, match="layout"):
        convert(tmp_path / "official.npz", tmp_path / "again.npz", layout="vit_jax")


# ---- optional: timm reads what save_vit_jax writes ----------------------------------------------
def test_timm_loads_the_saved_vit_jax_checkpoint_with_the_same_logits(tmp_path):
    vt = pytest.importorskip("timm.models.vision_transformer")
    import torch
    model = random_model()
    path = save_vit_jax(model, tmp_path / "vit.npz")
    ref = vt.VisionTransformer(**{k: v for k, v in TINY.items()}, qkv_bias=True)
    vt._load_weights(ref, str(path))
    with torch.no_grad():
        expected = ref.eval()(torch.from_numpy(images())).numpy()
    np.testing.assert_allclose(logits(model, images()), expected, rtol=1e-4, atol=1e-5)
