"""Weight-decay exemptions are a property of the parameter (nn.Parameter.no_weight_decay, set by
the module that makes it), not a substring of its name: train.param_groups reads only that.

The rule param_groups applied before, on names, is written out below (NAME_RULE) and must give
exactly the same groups for every registered model variant of every family (built with small widths:
the names and numbers of axes, all the rule reads, are those of the full-size model), the masked
patch predictor, and every position-embedding kind in posemb.KINDS at every place it can enter.
"""
import numpy as np
import pytest

from minivit import nn, posemb, variants
from minivit.jax_bridge import optimizer_spec
from minivit.optim import AdamW
from minivit.train import param_groups
from minivit.vit import ViT

TINY = dict(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3)


def name_rule(name, p):
    """The exemption as param_groups decided it before, from the name: vectors, position embeddings
    (every name holding "pos_embed", and "rel_pos_bias") and the class token."""
    return p.ndim <= 1 or "pos_embed" in name or "cls_token" in name or "rel_pos_bias" in name


def groups_by_name_rule(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if not name_rule(n, p)]
    exempt = [p for n, p in model.named_parameters() if name_rule(n, p)]
    return [{"params": decay, "weight_decay": weight_decay}] + ([{"params": exempt, "weight_decay": 0.0}]
                                                                if exempt else [])


def assert_same_groups(model, weight_decay=0.05):
    names = {id(p): n for n, p in model.named_parameters()}
    got, want = param_groups(model, weight_decay), groups_by_name_rule(model, weight_decay)
    assert [g["weight_decay"] for g in got] == [g["weight_decay"] for g in want]
    for g, w in zip(got, want):
        assert [names[id(p)] for p in g["params"]] == [names[id(p)] for p in w["params"]]  # same members, same order


def shrunk(name):
    """Overrides that build a registered variant small: its family's structure (blocks, stages,
    tokens, heads) with narrow widths, two blocks and a small image."""
    family, config = variants._entry(name)
    if family == "resnetv2":
        stages = len(config.get("layers", ()))
        return dict(channels=(8, 16, 16, 32)[:stages], stem_chs=8, num_groups=2, width_factor=1, img_size=32)
    small = dict(embed_dim=8, num_heads=2, depth=2)
    if family == "hybrid":
        stages = len(config["backbone_layers"])
        return dict(small, backbone_channels=(8, 16, 16, 32)[:stages], backbone_stem_chs=8, backbone_groups=2,
                    img_size=64)
    return dict(small, img_size=2 * config["patch_size"])


def test_the_registry_has_every_family_so_the_variants_below_cover_them():
    families = {variants.family_of(name) for name in variants.list_models(family=None)}
    assert families == set(variants.FAMILIES) - {"mpp"}  # mpp is a ViT built with arch="mpp": tested below


@pytest.mark.parametrize("name", variants.list_models(family=None))
def test_param_groups_of_every_registered_variant_are_those_of_the_old_name_rule(name):
    assert_same_groups(variants.create_model(name, **shrunk(name)))


@pytest.mark.parametrize("name", ["vit_testing", "vit_base_patch16_224"])
def test_param_groups_of_the_masked_patch_predictor_are_those_of_the_old_name_rule(name):
    model = variants.create_model(name, arch="mpp", num_classes=None, **shrunk(name))
    assert "mask_token" in dict(model.named_parameters())
    assert_same_groups(model)


def kind_configs():
    """Every kind of posemb.KINDS at every place it can enter, with and without a class token."""
    return [pytest.param(dict(pos_embed=kind, pos_embed_at=where, class_token=class_token,
                              global_pool="token" if class_token else "avg"),
                         id=f"{kind}-{where}-{'cls' if class_token else 'avg'}")
            for kind, cls in posemb.KINDS.items() for where in cls.places for class_token in (True, False)]


@pytest.mark.parametrize("options", kind_configs())
def test_param_groups_of_every_position_embedding_kind_are_those_of_the_old_name_rule(options):
    model = ViT(**TINY, **options, representation_size=4)
    assert_same_groups(model)
    for name, p in model.posemb.params.items():  # the kind says, and every kind here exempts its own
        assert p.no_weight_decay == (name not in posemb.kind_of(options["pos_embed"]).decayed), name


def test_a_parameter_is_exempt_when_its_maker_says_so_whatever_its_name_and_shape():
    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.zeros((4, 4), np.float32))  # a matrix: decays by default
            self.bias = nn.Parameter(np.zeros(4, np.float32))  # a vector: exempt by default
            self.register_token = nn.Parameter(np.zeros((1, 2, 4), np.float32), no_weight_decay=True)
            self.pos_embed_like = nn.Parameter(np.zeros((1, 3, 4), np.float32), no_weight_decay=False)

    model = Extra()
    decay, exempt = param_groups(model, 0.1)
    assert [id(p) for p in decay["params"]] == [id(model.weight), id(model.pos_embed_like)]  # its name is no reason
    assert [id(p) for p in exempt["params"]] == [id(model.bias), id(model.register_token)]
    assert (decay["weight_decay"], exempt["weight_decay"]) == (0.1, 0.0)


def test_the_default_exempts_vectors_and_decays_everything_with_more_axes():
    assert nn.Parameter(np.zeros(3)).no_weight_decay and nn.Parameter(np.zeros(())).no_weight_decay
    assert not nn.Parameter(np.zeros((3, 3))).no_weight_decay
    assert not nn.Parameter(np.zeros((1, 1, 3))).no_weight_decay
    assert nn.Parameter(np.zeros((3, 3)), no_weight_decay=True).no_weight_decay
    assert not nn.Parameter(np.zeros(3), no_weight_decay=False).no_weight_decay
    assert "no_weight_decay=True" in repr(nn.Parameter(np.zeros(3)))


def test_the_flag_survives_a_cast_a_load_and_a_change_of_resolution():
    model = ViT(**{**TINY, "img_size": 16})
    before = {n: p.no_weight_decay for n, p in model.named_parameters()}
    model.astype(np.float64)
    model.load_state_dict({k: np.ones(v.shape) for k, v in model.state_dict().items()})
    model.set_img_size(8)
    assert {n: p.no_weight_decay for n, p in model.named_parameters()} == before


def test_a_new_position_embedding_parameter_is_exempt_without_pos_embed_in_its_name(monkeypatch):
    class RowOffsets(posemb.Learned):
        """A toy kind: a learned table under a name that holds no "pos_embed"."""

        name = "toy_rows"

        @classmethod
        def shapes(cls, cfg, grid, num_prefix_tokens):
            return {"row_table": super().shapes(cfg, grid, num_prefix_tokens)["pos_embed"]}

        def add(self, x, layer):
            return x + self.params["row_table"] if layer == 0 else x

    monkeypatch.setitem(posemb.KINDS, "toy_rows", RowOffsets)
    model = ViT(**TINY, pos_embed="toy_rows")
    decay, exempt = param_groups(model, 0.05)
    assert any(p is model.row_table for p in exempt["params"])
    assert not any(p is model.row_table for p in decay["params"])
    assert not name_rule("row_table", model.row_table)  # the name rule would have decayed it


def test_the_jax_optimizer_decays_exactly_the_parameters_param_groups_decays():
    jax = pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")
    assert jax
    for options in [{}, dict(pos_embed="learn_2d"), dict(pos_embed="relative_1d"), dict(pos_embed="relative_bias_2d")]:
        model = ViT(**TINY, **options)
        spec = optimizer_spec(AdamW(param_groups(model, 0.05), lr=1e-3), model)
        assert spec.weight_decay == {n: 0.0 if p.no_weight_decay else 0.05 for n, p in model.named_parameters()}
