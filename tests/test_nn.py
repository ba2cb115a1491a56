"""Modules (minivit/nn.py): registration and naming, state dicts, modes, casting, the layers'
argument checks and the truncated-normal initialiser."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import minivit
from minivit import Tensor, nn
from strategies import reference_kernels


@pytest.fixture(autouse=True, scope="module")
def _pin_reference_kernels():
    """Module behaviour is under test here, not kernels (and no Numba compile per dtype)."""
    with reference_kernels():
        yield


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.drop = nn.Dropout(0.1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.first = Block()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 2, bias=False)
        self.not_a_param = np.zeros(5)  # plain arrays are not registered

    def forward(self, x):
        x = self.first.norm(self.first.fc(x))
        for b in self.blocks:
            x = x + b.norm(b.fc(x[..., :3]))
        return self.head(x) * self.scale


EXPECTED_NAMES = [
    "scale",
    "first.fc.weight", "first.fc.bias", "first.norm.weight", "first.norm.bias",
    "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.norm.weight", "blocks.0.norm.bias",
    "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.norm.weight", "blocks.1.norm.bias",
    "head.weight",
]


def test_named_parameters_follow_registration_order_with_dotted_torch_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == EXPECTED_NAMES
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.num_parameters() == 1 + 2 * (12 + 4 + 4 + 4) + 12 + 4 + 4 + 4 + 8


def test_named_modules_and_children_list_the_submodules():
    net = Net()
    names = [n for n, _ in net.named_modules()]
    assert names[:4] == ["", "first", "first.fc", "first.norm"]
    assert "blocks.1.drop" in names
    assert [type(c).__name__ for c in net.children()] == ["Block", "ModuleList", "Linear"]
    assert len(net.blocks) == 2 and net.blocks[1] is list(net.blocks)[1]


def test_reassigning_an_attribute_replaces_its_registration():
    net = Net()
    net.head = nn.Identity()
    assert not any(n.startswith("head") for n, _ in net.named_parameters())
    net.first.fc.bias = None
    assert "first.fc.bias" not in dict(net.named_parameters())


def test_assigning_before_module_init_raises_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="Module.__init__"):
        Broken()


def test_state_dict_round_trip_restores_every_array():
    minivit.manual_seed(0)
    src, dst = Net(), Net()
    for p in src.parameters():
        p.data[...] = np.random.default_rng(p.size).standard_normal(p.shape)
    saved = {k: v.copy() for k, v in src.state_dict().items()}
    assert list(saved) == EXPECTED_NAMES
    missing, unexpected = dst.load_state_dict(saved)
    assert missing == [] and unexpected == []
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, saved[k])
        assert v.dtype == np.float32
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(src(x).data, dst(x).data)


def test_load_state_dict_copies_so_later_changes_to_the_source_do_not_leak():
    net = Net()
    sd = {k: v.copy() for k, v in Net().state_dict().items()}
    net.load_state_dict(sd)
    sd["head.weight"][...] = 123.0
    assert not np.any(net.head.weight.data == 123.0)


def test_load_state_dict_casts_to_the_parameter_dtype():
    net = Net()
    sd = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(sd)
    assert all(p.dtype == np.float32 for p in net.parameters())


def test_load_state_dict_raises_key_error_listing_missing_and_unexpected_keys():
    net = Net()
    sd = dict(net.state_dict())
    del sd["head.weight"]
    sd["head.bias"] = np.zeros(2)
    with pytest.raises(KeyError) as info:
        net.load_state_dict(sd)
    message = str(info.value)
    assert "missing" in message and "'head.weight'" in message
    assert "unexpected" in message and "'head.bias'" in message


def test_load_state_dict_raises_value_error_naming_key_and_both_shapes_and_changes_nothing():
    net = Net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    sd = {k: np.full(v.shape, 7.0) for k, v in net.state_dict().items()}
    sd["blocks.1.fc.weight"] = np.zeros((5, 3))
    with pytest.raises(ValueError) as info:
        net.load_state_dict(sd)
    message = str(info.value)
    assert "blocks.1.fc.weight" in message and "(5, 3)" in message and "(4, 3)" in message
    for k, v in net.state_dict().items():  # not even the keys before the bad one were loaded
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_returns_missing_and_unexpected_and_loads_the_rest():
    net = Net()
    sd = {"head.weight": np.ones((2, 4)), "extra.thing": np.zeros(3)}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == [n for n in EXPECTED_NAMES if n != "head.weight"]
    assert unexpected == ["extra.thing"]
    np.testing.assert_array_equal(net.head.weight.data, np.ones((2, 4)))


def test_train_and_eval_propagate_to_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.blocks[1].drop.training


def test_dropout_module_follows_the_training_flag():
    drop = nn.Dropout(0.5)
    x = Tensor(np.ones((50, 50)))
    minivit.manual_seed(0)
    assert np.any(drop(x).data == 0)
    drop.eval()
    assert drop(x) is x


def test_zero_grad_clears_every_gradient():
    net = Net()
    out = net(np.ones((2, 3), dtype=np.float32))
    out.backward(np.ones(out.shape, dtype=np.float32))
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_astype_float64_casts_every_parameter_and_runs_in_float64():
    net = Net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    assert net.astype(np.float64) is net
    assert all(p.dtype == np.float64 for p in net.parameters())
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    out = net(np.ones((2, 3)))
    assert out.dtype == np.float64
    out.backward(np.ones(out.shape))
    assert all(p.grad.dtype == np.float64 for p in net.parameters())


@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_and_drop_path_modules_reject_p_outside_0_1(cls, p):
    with pytest.raises(ValueError, match=r"\[0, 1\).*" + str(p)):
        cls(p)


@pytest.mark.parametrize("cls", [nn.Dropout, nn.DropPath])
def test_dropout_and_drop_path_modules_accept_p_in_0_1(cls):
    assert cls(0.0).p == 0.0 and cls(0.99).p == 0.99


def test_linear_stores_weight_as_out_by_in_and_computes_x_wt_plus_b():
    layer = nn.Linear(3, 5)
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (5,)
    np.testing.assert_array_equal(layer.bias.data, 0)
    layer.bias.data[:] = np.arange(5)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data.T + np.arange(5), rtol=1e-6)


def test_layer_norm_module_starts_as_the_identity_affine_map():
    ln = nn.LayerNorm(4, eps=1e-5)
    np.testing.assert_array_equal(ln.weight.data, 1)
    np.testing.assert_array_equal(ln.bias.data, 0)
    x = np.array([[1.0, 2.0, 3.0, 6.0]], dtype=np.float32)
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    np.testing.assert_allclose(ln(Tensor(x)).data, expected, rtol=1e-5)


def test_trunc_normal_stays_within_two_std_and_has_the_truncated_normal_std():
    minivit.manual_seed(0)
    std = 0.02
    w = nn.trunc_normal((400, 500), std=std)
    assert w.dtype == np.float32
    assert np.abs(w).max() <= 2 * std * (1 + 1e-6)
    expected_std = std * stats.truncnorm(-2, 2).std()  # about 0.88 std
    assert abs(w.std() - expected_std) < 0.01 * expected_std
    assert abs(w.mean()) < 5 * expected_std / np.sqrt(w.size)
    assert np.abs(w).max() > 1.9 * std  # the tails are actually reached


def test_lecun_normal_has_variance_one_over_fan_in():
    minivit.manual_seed(1)
    w = nn.lecun_normal((300, 400), fan_in=48)
    assert abs(w.std() - np.sqrt(1 / 48)) < 0.01 * np.sqrt(1 / 48)


def test_initialisation_is_reproducible_after_manual_seed():
    minivit.manual_seed(42)
    a = Net().state_dict()
    minivit.manual_seed(42)
    b = Net().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
