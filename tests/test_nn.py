"""Module bookkeeping, layers and their initialisation."""
import math

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, nn


class Tiny(nn.Module):
    def __init__(self):
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False), nn.Dropout(0.5))
        self.up = nn.ConvTranspose2d(2, 2, 4, stride=2, bias=False)

    def forward(self, x):
        return self.up(self.block(self.conv1(x)))


def test_names_follow_attributes_in_order():
    m = Tiny()
    assert [n for n, _ in m.named_parameters()] == [
        "conv1.weight", "conv1.bias", "block.1.weight", "up.weight"]
    assert list(m.state_dict()) == [n for n, _ in m.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())


def test_train_eval_reaches_children():
    m = Tiny().eval()
    assert not m.block[2].training
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32))
    np.testing.assert_array_equal(m(x).data, m(x).data)  # eval: dropout off, deterministic
    assert m.train().block[2].training


def test_state_dict_round_trip_and_copies():
    a, b = Tiny(), Tiny()
    sd = a.state_dict()
    sd["conv1.bias"][0] = 123.0  # a copy: the model is untouched
    assert a.conv1.bias.data[0] != 123.0
    b.load_state_dict(a.state_dict())
    x = Tensor(np.ones((1, 3, 4, 4), np.float32))
    np.testing.assert_array_equal(a.eval()(x).data, b.eval()(x).data)


def test_load_state_dict_refuses_bad_keys_and_shapes():
    m = Tiny()
    sd = m.state_dict()
    missing = dict(sd)
    del missing["up.weight"]
    with pytest.raises(ValueError, match="missing keys: up.weight"):
        m.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected keys: extra"):
        m.load_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"shape mismatch: conv1.weight: file \(4, 3, 1, 1\) vs model \(4, 3, 3, 3\)"):
        m.load_state_dict({**sd, "conv1.weight": np.zeros((4, 3, 1, 1))})


def test_default_init_bounds_as_pytorch():
    minifcn.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3)
    bound = 1 / math.sqrt(16 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    assert conv.weight.dtype == np.float32
    up = nn.ConvTranspose2d(16, 4, 4)
    assert up.weight.shape == (16, 4, 4, 4)
    assert np.abs(up.weight.data).max() <= 1 / math.sqrt(4 * 16)


def test_manual_seed_reproduces_init():
    minifcn.manual_seed(5)
    a = Tiny().state_dict()
    minifcn.manual_seed(5)
    b = Tiny().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_double_and_gradcheck_through_module():
    minifcn.manual_seed(0)
    m = Tiny().double().eval()
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 5, 5)))
    assert minifcn.gradcheck(m, [x])


def test_layer_errors():
    with pytest.raises(ValueError, match="Dropout: p"):
        nn.Dropout(1.5)
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="conv2d: weight"):
        conv(Tensor(np.zeros((1, 5, 8, 8), np.float32)))
