"""The position-embedding registry (minivit/posemb.py): each kind of posemb.KINDS is defined once and
every other module asks it. Every test here walks posemb.KINDS itself (no list of kinds is kept by
hand), so a kind added to the registry is checked by all of them: its parameters and count, the
NumPy model against the JAX bridge, resizing to another patch grid (set_img_size, the optimizer's
moments, fine-tuning from a checkpoint), the checkpoint's size check, interop and Axial-ViT. A toy
kind registered only here goes through all of it, which is what "adding a kind touches posemb.py
and nothing else" means.
"""
import numpy as np
import pytest

import minivit
from minivit import functional as F
from minivit import interop, jax_bridge, posemb, vit
from minivit.axial import AxialConfig
from minivit.optim import AdamW
from minivit.train import checkpoint, param_groups, resolution
from minivit.train.checkpoint import CheckpointError, check_weights_fit_config, size_shapes
from minivit.train.finetune import init_from_checkpoint
from minivit.vit import ViT, ViTConfig

TINY = dict(img_size=12, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3)  # 3x3 grid


def configs(kinds=None):
    """(kind, where, class_token) for every kind at every place it can enter, with and without a
    class token, as pytest params."""
    return [pytest.param(kind, where, cls, id=f"{kind}-{where}-{'cls' if cls else 'avg'}")
            for kind, k in posemb.KINDS.items() if kinds is None or kind in kinds
            for where in k.places for cls in (True, False)]


def options(kind, where="input", class_token=True):
    return dict(pos_embed=kind, pos_embed_at=where, class_token=class_token,
                global_pool="token" if class_token else "avg")


def random_model(seed=0, dtype=np.float32, **kw):
    """A tiny ViT with every parameter random (the default head is zero)."""
    model = ViT(dtype=dtype, **{**TINY, **kw})
    gen = np.random.default_rng(seed)
    model.load_state_dict({k: gen.normal(0, 0.5, v.shape) for k, v in model.state_dict().items()})
    return model


def images(n=2, size=12, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


RESIZABLE = [name for name, k in posemb.KINDS.items() if k.resizes]
FIXED_GRID = [name for name, k in posemb.KINDS.items() if not k.resizes]


# ---- the registry itself -----------------------------------------------------------------------

def test_every_kind_is_registered_under_its_own_name_and_every_old_name_resolves_to_one():
    assert len(posemb.KINDS) >= 6
    for name, kind in posemb.KINDS.items():
        assert kind.name == name and issubclass(kind, posemb.PositionEmbedding)
        assert set(kind.places) <= set(posemb.WHERE) and "input" in kind.places
        assert kind.learned or not kind.weights_pin_tokens  # weights that pin N are weights
        assert set(kind.official_layouts) <= set(interop.LAYOUTS)
    assert all(new in posemb.KINDS for new in posemb.ALIASES.values())
    assert not set(posemb.ALIASES) & set(posemb.KINDS)


def test_the_old_per_module_lists_of_kinds_are_gone_or_derived_from_the_registry():
    assert not hasattr(vit, "RESIZABLE_POS_EMBEDS") and not hasattr(resolution, "RESIZABLE_POS_EMBEDS")
    assert not hasattr(checkpoint, "UNPINNED_POS_EMBEDS")
    assert not hasattr(jax_bridge, "posemb_add") and not hasattr(jax_bridge, "attention_bias")
    assert posemb.RELATIVE_KINDS == tuple(name for name, k in posemb.KINDS.items() if k.relative)
    assert posemb.resizable() == tuple(RESIZABLE)


@pytest.mark.parametrize("name", ["learn2d", "Learn", "", None, 3, ["learn"]])
def test_an_unknown_kind_is_a_value_error_naming_the_kinds_and_what_was_given(name):
    with pytest.raises(ValueError, match=r"pos_embed must be one of \('learn', .*got"):
        posemb.kind_of(name)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        ViTConfig(**TINY, pos_embed=name)


def test_a_config_changed_to_an_unknown_kind_fails_in_every_consumer_instead_of_falling_through():
    cfg = ViTConfig(**TINY)
    cfg.pos_embed = "learn_3d"  # past ViTConfig's check: a dataclass field set afterwards
    for consume in (lambda: posemb.create(cfg, cfg.grid_size, 1), lambda: posemb.num_parameters(cfg, cfg.grid_size, 1),
                    lambda: size_shapes(cfg)):
        with pytest.raises(ValueError, match="pos_embed must be one of.*got 'learn_3d'"):
            consume()
    pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")
    params, _ = jax_bridge.to_jax(random_model())
    with pytest.raises(ValueError, match="got 'learn_3d'"):  # the bridge once added learn_2d's halves here
        jax_bridge.make_apply(cfg)(params, images())


# ---- every kind, NumPy ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind, where, class_token", configs())
def test_the_model_holds_exactly_the_parameters_its_kind_declares_and_counts_them(kind, where, class_token):
    cfg = ViTConfig(**TINY, **options(kind, where, class_token))
    model = ViT(config=cfg)
    prefix = 1 if class_token else 0
    declared = posemb.KINDS[kind].shapes(cfg, cfg.grid_size, prefix)
    assert {n: p.shape for n, p in model.posemb.params.items()} == declared
    for name, shape in declared.items():
        assert getattr(model, name) is model.posemb.params[name] and model.state_dict()[name].shape == shape
        assert size_shapes(cfg)[name] == shape  # the checkpoint's size check reads the same declaration
    assert bool(declared) == posemb.KINDS[kind].learned
    assert model.num_parameters() == cfg.num_parameters()
    assert posemb.num_parameters(cfg, cfg.grid_size, prefix) == sum(int(np.prod(s)) for s in declared.values())
    with minivit.no_grad():
        assert np.isfinite(random_model(**options(kind, where, class_token))(images()).numpy()).all()


@pytest.mark.parametrize("kind", list(posemb.KINDS))
def test_a_crafted_checkpoint_config_is_bounded_in_tokens_exactly_when_the_kinds_weights_do_not_pin_them(kind):
    cfg = ViTConfig(**{**TINY, "depth": 1, "img_size": 4 * 130}, pos_embed=kind)  # 16,901 tokens, over 2**14
    weights = {name: np.broadcast_to(np.float32(0), shape) for name, shape in size_shapes(cfg).items()}
    ckpt = {"model": weights, "path": "crafted.npz"}
    if posemb.KINDS[kind].weights_pin_tokens:
        check_weights_fit_config(ckpt, cfg)  # the weights have the shapes of 16,901 tokens: they confirm it
    else:
        with pytest.raises(CheckpointError, match="16901 tokens, more than the 16384"):
            check_weights_fit_config(ckpt, cfg)


@pytest.mark.parametrize("kind", list(posemb.KINDS))
def test_axial_vit_refuses_exactly_the_kinds_that_bias_attention_logits(kind):
    if posemb.KINDS[kind].relative:
        with pytest.raises(ValueError, match="biases the attention logits"):
            AxialConfig(**TINY, pos_embed=kind)
    else:
        assert AxialConfig(**TINY, pos_embed=kind).pos_embed == kind


@pytest.mark.parametrize("kind", list(posemb.KINDS))
@pytest.mark.parametrize("layout", interop.LAYOUTS)
def test_interop_writes_a_kind_in_exactly_the_official_layouts_its_entry_names(kind, layout):
    model = random_model(pos_embed=kind)
    if layout in posemb.KINDS[kind].official_layouts:
        arrays = interop.to_official_arrays(model, layout)
        back, _ = interop.from_official_arrays(arrays, pos_embed=kind, img_size=12)
        assert back.config.pos_embed == kind
    else:
        with pytest.raises(interop.InteropError, match=f"pos_embed='{kind}'"):
            interop.to_official_arrays(model, layout)


# ---- every kind, NumPy against JAX ------------------------------------------------------------------

@pytest.mark.parametrize("kind, where, class_token", configs())
def test_the_jax_bridge_runs_every_kind_with_the_numpy_models_logits_and_gradients(kind, where, class_token):
    jax = pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")
    model = random_model(**options(kind, where, class_token))
    x, y = images(3), np.array([0, 2, 1])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    params, apply_fn = jax_bridge.to_jax(model)
    with minivit.no_grad():
        expected = model.eval()(x).numpy()
    assert np.abs(np.asarray(apply_fn(params, x)) - expected).max() < 1e-5 * np.abs(expected).max()
    value, grads = jax.value_and_grad(lambda p: jax_bridge.cross_entropy(apply_fn(p, x), y))(params)
    assert abs(float(value) - loss.item()) < 1e-5 * abs(loss.item())
    for name, p in model.named_parameters():
        err = np.abs(np.asarray(grads[name]) - p.grad).max() / np.abs(p.grad).max()
        assert err < 1e-4, (name, err)


# ---- resizing to another patch grid ---------------------------------------------------------------

@pytest.mark.parametrize("kind, where, class_token", configs())
def test_resizing_to_the_same_grid_changes_nothing(kind, where, class_token):
    model = random_model(**options(kind, where, class_token))
    arrays = {n: p.data for n, p in model.posemb.params.items()}
    same = posemb.KINDS[kind].resize(arrays, (3, 3), (3, 3), model.num_prefix_tokens)
    assert set(same) == set(arrays) and all(np.array_equal(same[n], arrays[n]) for n in arrays)


@pytest.mark.parametrize("kind, where, class_token", configs(RESIZABLE))
def test_a_resizable_kind_moves_to_a_larger_grid_with_the_declared_shapes_and_a_constant_stays_constant(
        kind, where, class_token):
    model = ViT(**TINY, **options(kind, where, class_token))
    k, prefix = posemb.KINDS[kind], model.num_prefix_tokens
    constant = {n: np.full(p.shape, 0.25, np.float32) for n, p in model.posemb.params.items()}
    resized = k.resize(constant, (3, 3), (5, 5), prefix)
    bigger = ViTConfig(**{**TINY, "img_size": 20}, **options(kind, where, class_token))
    assert {n: a.shape for n, a in resized.items()} == k.shapes(bigger, (5, 5), prefix)
    for name, a in resized.items():
        np.testing.assert_allclose(a, 0.25, rtol=1e-6, err_msg=name)  # interpolation keeps a constant


@pytest.mark.parametrize("kind, where, class_token", configs(RESIZABLE))
def test_set_img_size_and_switch_resolution_move_a_resizable_kind_and_its_adam_moments(kind, where, class_token):
    model = random_model(**{**options(kind, where, class_token), "img_size": 8})  # a 2x2 grid
    kept = {n: p for n, p in model.posemb.params.items()}
    opt = AdamW(param_groups(model, 0.05), lr=1e-3)
    F.cross_entropy(model(images(size=8)), np.array([0, 1])).backward()
    opt.step()
    resolution.switch_resolution(model, opt, 16)  # a 4x4 grid
    cfg = model.config
    assert cfg.img_size == 16 and model.posemb.grid == (4, 4)
    assert all(model.posemb.params[n] is p for n, p in kept.items())  # the optimizer's objects, new arrays
    assert {n: p.shape for n, p in kept.items()} == posemb.KINDS[kind].shapes(cfg, (4, 4), model.num_prefix_tokens)
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in kept.values():
        state = opt.state[next(i for i, q in enumerate(params) if q is p)]
        assert state["exp_avg"].shape == state["exp_avg_sq"].shape == p.shape
        assert (state["exp_avg_sq"] >= 0).all()
    assert model(images(size=16)).shape == (2, 3)
    resolution.check_low_res(model, 8)  # accepted


@pytest.mark.parametrize("kind", FIXED_GRID)
def test_a_kind_that_cannot_move_to_another_grid_is_refused_with_its_reason(kind, tmp_path):
    model = random_model(pos_embed=kind, img_size=8)
    with pytest.raises(ValueError, match="pos_embed in"):
        model.set_img_size(16)
    with pytest.raises(ValueError, match="pos_embed in"):
        resolution.check_low_res(model, 4)
    with pytest.raises(ValueError, match="cannot"):
        posemb.KINDS[kind].resize(dict(model.posemb.params), (2, 2), (4, 4), 1)
    path = checkpoint.save_checkpoint(tmp_path / "at8.npz", model)
    with pytest.raises(CheckpointError, match="cannot fine-tune"):
        init_from_checkpoint(ViT(**{**TINY, "img_size": 16}, pos_embed=kind), path)


@pytest.mark.parametrize("kind, where, class_token", configs(RESIZABLE))
def test_fine_tuning_from_a_checkpoint_at_another_grid_resizes_with_the_kinds_own_function(
        kind, where, class_token, tmp_path):
    saved = random_model(**{**options(kind, where, class_token), "img_size": 8})
    path = checkpoint.save_checkpoint(tmp_path / "at8.npz", saved)
    model = ViT(**{**TINY, "img_size": 16, "num_classes": 5}, **options(kind, where, class_token))
    init_from_checkpoint(model, path)
    expected = posemb.KINDS[kind].resize({n: p.data for n, p in saved.posemb.params.items()}, (2, 2), (4, 4),
                                         model.num_prefix_tokens)
    for name, p in model.posemb.params.items():
        np.testing.assert_array_equal(p.data, expected[name], err_msg=name)


# ---- a kind added only to the registry --------------------------------------------------------------

class Rows(posemb.PositionEmbedding):
    """A toy kind: one learned vector per row of the grid, shared by the row's patches."""

    name = "toy_rows"
    learned = weights_pin_tokens = True

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        return {"row_embed": (1, grid[0], cfg.embed_dim)}  # (1, gh, D)

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        return {k: posemb.interpolate_grid(v[0], (old_grid[0], 1), (new_grid[0], 1))[None] for k, v in arrays.items()}

    def add(self, x, layer):
        if layer:
            return x
        (gh, gw), D, prefix = self.grid, x.shape[-1], self.num_prefix_tokens
        rows = self.ops.broadcast_to(self.params["row_embed"].reshape(1, gh, 1, D), (1, gh, gw, D))
        return self.ops.concatenate([x[:, :prefix], x[:, prefix:] + rows.reshape(1, gh * gw, D)], axis=1)


def test_a_kind_registered_only_in_posemb_works_everywhere(monkeypatch, tmp_path):
    monkeypatch.setitem(posemb.KINDS, "toy_rows", Rows)
    model = random_model(pos_embed="toy_rows")
    assert model.row_embed.shape == (1, 3, 8) and model.num_parameters() == model.config.num_parameters()
    decay, exempt = param_groups(model, 0.05)
    assert any(p is model.row_embed for p in exempt["params"])
    x = images()
    with minivit.no_grad():
        expected = model.eval()(x).numpy()
    rebuilt, _ = checkpoint.model_from_checkpoint(checkpoint.save_checkpoint(tmp_path / "toy.npz", model))
    with minivit.no_grad():
        np.testing.assert_array_equal(rebuilt.eval()(x).numpy(), expected)
    bigger = ViT(**{**TINY, "img_size": 24}, pos_embed="toy_rows")
    init_from_checkpoint(bigger, tmp_path / "toy.npz")
    assert bigger.row_embed.shape == (1, 6, 8)
    model.set_img_size(16)
    assert model.row_embed.shape == (1, 4, 8) and model(images(size=16)).shape == (2, 3)
    jax = pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")
    assert jax
    params, apply_fn = jax_bridge.to_jax(rebuilt)
    assert np.abs(np.asarray(apply_fn(params, x)) - expected).max() < 1e-5 * np.abs(expected).max()
