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


# ---- buffers (batch norm's running statistics) and the consumers of state_dict -------------

class WithBN(nn.Module):
    """conv -> bn -> relu -> conv, and a parameter of its own set after its children."""

    def __init__(self):
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.out = nn.Conv2d(4, 2, 1)
        self.scale = nn.Parameter(np.ones(1, np.float32))

    def forward(self, x):
        return self.out(self.relu(self.bn(self.conv(x)))) * self.scale


def trained_with_bn(steps=3):
    minifcn.manual_seed(0)
    m, rng = WithBN(), np.random.default_rng(0)
    for _ in range(steps):  # training forwards move the running statistics
        m(Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32)))
    return m


def torch_twin():
    """The same net in PyTorch, to compare state dict names with."""
    torch = pytest.importorskip("torch")

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.relu = torch.nn.ReLU()
            self.out = torch.nn.Conv2d(4, 2, 1)
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.out(self.relu(self.bn(self.conv(x)))) * self.scale

    return torch, Twin()


def test_state_dict_holds_buffers_in_pytorchs_order_and_parameters_do_not():
    torch, twin = torch_twin()
    m = WithBN()
    assert list(m.state_dict()) == list(twin.state_dict())  # scale first: the module's own
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in twin.named_buffers()]
    assert all(isinstance(b, nn.Buffer) and not b.requires_grad for b in m.buffers())
    assert not any(isinstance(p, nn.Buffer) for p in m.parameters())


def test_the_optimiser_never_sees_buffers():
    from minifcn.optim import SGD
    m = trained_with_bn()
    before = {k: b.data.copy() for k, b in m.named_buffers()}
    m.eval()(Tensor(np.ones((1, 3, 5, 5), np.float32))).sum().backward()
    SGD(m.parameters(), lr=0.1).step()
    for k, b in m.named_buffers():
        np.testing.assert_array_equal(b.data, before[k])
        assert b.grad is None


def test_to_casts_float_buffers_and_keeps_num_batches_tracked_int64():
    m = trained_with_bn().double()
    assert m.bn.running_mean.dtype == m.bn.running_var.dtype == np.float64
    assert m.bn.num_batches_tracked.dtype == np.int64 and m.bn.num_batches_tracked.item() == 3
    assert m.to(dtype=np.float32).bn.running_var.dtype == np.float32
    with pytest.raises(TypeError, match="WithBN.to: dtype must be a floating dtype"):
        m.to(dtype=np.int32)


def test_load_state_dict_checks_buffers_as_parameters_in_one_line():
    m, sd = WithBN(), trained_with_bn().state_dict()
    missing = {k: v for k, v in sd.items() if k != "bn.running_var"}
    cases = [(missing, "missing keys: bn.running_var"),
             ({**sd, "bn.running_mean": np.zeros(5, np.float32)},
              r"shape mismatch: bn.running_mean: file \(5,\) vs model \(4,\)"),
             ({**sd, "bn.num_batches_tracked": np.array(3.0, np.float32)},
              "dtype mismatch: bn.num_batches_tracked: file float32 vs model int64"),
             ({**sd, "bn.extra": np.zeros(4)}, "unexpected keys: bn.extra")]
    for state, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            m.load_state_dict(state)
        assert "\n" not in str(e.value)
    np.testing.assert_array_equal(m.bn.running_var.data, 1)  # nothing half-loaded
    m.load_state_dict({**sd, "bn.num_batches_tracked": np.array(3, np.int32)})
    assert m.bn.num_batches_tracked.dtype == np.int64 and m.bn.num_batches_tracked.item() == 3


def assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        np.testing.assert_array_equal(sa[k], sb[k])
    x = Tensor(np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32))
    np.testing.assert_array_equal(a.eval()(x).data, b.eval()(x).data)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_model_with_batch_norm_round_trips_through_weight_files(tmp_path, suffix):
    from minifcn import io
    m = trained_with_bn()
    io.save(m, tmp_path / f"w{suffix}")
    state = io.load(tmp_path / f"w{suffix}")
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert state["bn.num_batches_tracked"].shape == ()
    assert_same_model(m, WithBN().load_state_dict(state))


def test_a_model_with_batch_norm_resumes_from_a_training_checkpoint(tmp_path):
    from minifcn.optim import SGD
    from minifcn.training import runs
    m = trained_with_bn()
    opt = SGD(m.parameters(), lr=0.1)
    m(Tensor(np.ones((2, 3, 5, 5), np.float32))).sum().backward()
    opt.step()
    run = runs.Run(tmp_path)
    runs.save_training_checkpoint(run.path(runs.LAST), m, opt,
                                  runs.position(1, 2, 3, None, {"model": "withbn"}))
    fresh = WithBN()
    fresh_opt = SGD(fresh.parameters(), lr=0.1)
    assert runs.restore(run, fresh, fresh_opt)[:3] == (1, 2, 3)
    assert fresh.bn.num_batches_tracked.item() == 4
    assert_same_model(m, fresh)


def test_torch_loads_our_pth_of_a_model_with_batch_norm(tmp_path):
    torch, twin = torch_twin()
    from minifcn.io.torchwrite import save_torch_state_dict
    m = trained_with_bn()
    save_torch_state_dict(m.state_dict(), tmp_path / "w.pth")
    state = torch.load(tmp_path / "w.pth", weights_only=True)
    assert list(state) == list(twin.state_dict())
    assert state["bn.num_batches_tracked"].dtype == torch.int64
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 3
    twin.load_state_dict(state)  # strict: every key, shape and dtype as PyTorch's own
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(twin.eval()(torch.from_numpy(x)).detach().numpy(),
                               m.eval()(Tensor(x)).data, rtol=1e-5, atol=1e-5)
    from minifcn.io import read_torch_state_dict
    assert_same_model(m, WithBN().load_state_dict(read_torch_state_dict(tmp_path / "w.pth")))
    torch.save(twin.state_dict(), tmp_path / "theirs.pth")  # and torch's own file, read by ours
    theirs = read_torch_state_dict(tmp_path / "theirs.pth")
    assert theirs["bn.num_batches_tracked"].dtype == np.int64
    assert_same_model(m, WithBN().load_state_dict(theirs))


def test_init_from_a_file_loads_the_running_statistics_too(tmp_path):
    from minifcn import io
    from minifcn.training.build import load_weights_into
    m, logged = trained_with_bn(), []
    io.save(m, tmp_path / "w.npz")
    fresh = WithBN()
    load_weights_into(fresh, tmp_path / "w.npz", log=logged.append)
    assert "kept at init: none" in logged[0] and "ignored from file: none" in logged[0]
    assert_same_model(m, fresh)
