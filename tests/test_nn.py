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


def test_load_state_dict_copies_so_models_loaded_from_one_dict_do_not_share_weights():
    from minifcn.optim import SGD
    sd = Tiny().state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    a, b = Tiny().load_state_dict(sd), Tiny().load_state_dict(sd)
    x = Tensor(np.ones((1, 3, 4, 4), np.float32))
    a.train()(x).sum().backward()
    SGD(a.parameters(), lr=0.1).step()
    a.conv1.bias.data += 1.0  # an in-place change too
    assert not np.array_equal(a.conv1.weight.data, before["conv1.weight"])
    for k, p in b.named_parameters():
        np.testing.assert_array_equal(p.data, before[k])
        np.testing.assert_array_equal(sd[k], before[k])
        assert p.data.flags.c_contiguous and p.data.flags.writeable
    sd["up.weight"][...] = 7.0  # and the dict's arrays are not the model's either
    assert not np.any(b.up.weight.data == 7.0)


def test_load_state_dict_accepts_tensors_and_parameters():
    src = Tiny()
    as_tensors = {k: (p if i % 2 else Tensor(p.data)) for i, (k, p) in
                  enumerate(src.named_parameters())}
    m = Tiny().load_state_dict(as_tensors)
    for k, p in m.named_parameters():
        np.testing.assert_array_equal(p.data, src.state_dict()[k])
        assert p.data is not as_tensors[k].data


def test_load_state_dict_refuses_bad_values_in_one_line_naming_the_key():
    m = Tiny()
    sd = m.state_dict()
    cases = [
        ({**sd, "conv1.bias": sd["conv1.bias"].astype(np.complex64)},
         r"dtype mismatch: conv1.bias: file complex64 vs model float32"),
        ({**sd, "up.weight": np.full(sd["up.weight"].shape, "x")},
         r"dtype mismatch: up.weight: file <U1 vs model float32"),
        ({**sd, "conv1.bias": Tensor(np.zeros(7, np.float32))},
         r"shape mismatch: conv1.bias: file \(7,\) vs model \(4,\)"),
        ({**sd, "conv1.bias": "zeros"}, r"conv1.bias: expected an array or Tensor, got str"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=f"load_state_dict into Tiny: .*{message}") as e:
            m.load_state_dict(state)
        assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match=r"load_state_dict into Tiny: expected a dict .* got str"):
        m.load_state_dict("weights.npz")
    np.testing.assert_array_equal(m.conv1.bias.data, sd["conv1.bias"])  # nothing half-loaded


def test_dilated_layers_run_the_dilated_ops(rng):
    """Conv2d and MaxPool2d pass their dilation to the op: same numbers as calling F directly,
    different from the undilated layer; no parameter changes shape."""
    import minifcn.functional as F

    x = Tensor(rng.standard_normal((1, 2, 9, 10)))
    conv = nn.Conv2d(2, 3, 3, padding=2, dilation=2).double()
    assert conv.dilation == (2, 2) and conv.weight.shape == (3, 2, 3, 3)
    want = F.conv2d(x, conv.weight, conv.bias, 1, 2, 2).data
    np.testing.assert_array_equal(conv(x).data, want)
    plain = nn.Conv2d(2, 3, 3, padding=2).double()
    plain.load_state_dict(conv.state_dict())
    assert plain(x).shape == (1, 3, 11, 12) and conv(x).shape == (1, 3, 9, 10)
    pool = nn.MaxPool2d(2, stride=1, dilation=(2, 3), ceil_mode=True)
    np.testing.assert_array_equal(pool(x).data, F.max_pool2d(x, 2, 1, 0, (2, 3), True).data)
    assert pool(x).shape == (1, 2, 7, 7)


def test_repr_shows_dilation_only_when_set():
    assert "dilation" not in repr(nn.Conv2d(2, 3, 3)) + repr(nn.MaxPool2d(2, 2))
    assert repr(nn.Conv2d(2, 3, 3, padding=2, dilation=2)) == (
        "Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=(2, 2), dilation=(2, 2), "
        "bias=True)")
    assert repr(nn.MaxPool2d(2, stride=1, dilation=2, ceil_mode=True)) == (
        "MaxPool2d(kernel_size=2, stride=1, padding=0, dilation=(2, 2), ceil_mode=True)")


def test_a_bool_where_dilation_now_sits_is_refused_with_the_reason():
    """PyTorch's order puts dilation before bias (Conv2d) and ceil_mode (MaxPool2d): a call
    written without dilation would silently pass its bool as the dilation."""
    with pytest.raises(TypeError, match=r"^Conv2d: dilation must be .* got False \(bias comes "
                                        r"after dilation, as in PyTorch: pass bias=\.\.\.\)$"):
        nn.Conv2d(2, 3, 3, 1, 0, False)
    with pytest.raises(TypeError, match=r"^MaxPool2d: dilation .* got True \(ceil_mode comes"):
        nn.MaxPool2d(2, 2, 0, True)
    # other bad values: refused when the layer is built, naming the layer
    with pytest.raises(ValueError, match=r"^Conv2d: dilation must be >= 1, got 0$"):
        nn.Conv2d(2, 3, 3, dilation=0)
    with pytest.raises(ValueError, match=r"^ConvTranspose2d: stride must be >= 1, got \(1, 0\)$"):
        nn.ConvTranspose2d(2, 3, 4, stride=(1, 0))
