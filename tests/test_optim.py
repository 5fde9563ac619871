"""SGD against steps worked out by hand, and the schedules."""
import numpy as np
import pytest

from minifcn import Tensor, nn, optim


def test_sgd_two_steps_by_hand():
    w = nn.Parameter(np.array([1.0, -2.0]))
    b = nn.Parameter(np.array([0.5]))
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr_mult": 2.0, "decay_mult": 0.0}],
                    lr=0.1, momentum=0.9, weight_decay=0.01)
    w.grad, b.grad = np.array([0.2, 0.4]), np.array([1.0])
    opt.step()
    # v_w = 0.1 * (g + 0.01 w) = 0.1 * ([0.2, 0.4] + [0.01, -0.02]) = [0.021, 0.038]
    np.testing.assert_allclose(w.data, [1 - 0.021, -2 - 0.038])
    # v_b = 0.2 * 1.0 (double lr, no decay)
    np.testing.assert_allclose(b.data, [0.3])
    w.grad, b.grad = np.array([0.0, 0.0]), np.array([0.0])
    opt.step()
    # v_w = 0.9 * [0.021, 0.038] + 0.1 * 0.01 * w_1
    v = 0.9 * np.array([0.021, 0.038]) + 0.001 * np.array([0.979, -2.038])
    np.testing.assert_allclose(w.data, np.array([0.979, -2.038]) - v)
    np.testing.assert_allclose(b.data, [0.3 - 0.9 * 0.2])


def test_param_groups_follow_reference():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ConvTranspose2d(3, 3, 4, bias=False))
    m[1].weight.requires_grad = False  # a fixed upsampling layer
    weights, biases = optim.param_groups(m)
    assert weights["params"] == [m[0].weight] and biases["params"] == [m[0].bias]
    assert (biases["lr_mult"], biases["decay_mult"]) == (2.0, 0.0)


def test_parameters_without_grad_are_untouched():
    w = nn.Parameter(np.ones(2))
    opt = optim.SGD([w], lr=1.0)
    opt.step()
    np.testing.assert_array_equal(w.data, 1.0)


def test_state_dict_round_trip_continues_identically():
    def run(split):
        w = nn.Parameter(np.array([1.0, 2.0]))
        opt = optim.SGD([w], lr=0.1)
        for i in range(4):
            if i == split:
                state = {k: v.copy() for k, v in opt.state_dict().items()}
                data = w.data.copy()
                w = nn.Parameter(data)
                opt = optim.SGD([w], lr=0.1)
                opt.load_state_dict(state)
            w.grad = w.data * 0.5 + i
            opt.step()
        return w.data

    np.testing.assert_array_equal(run(split=2), run(split=99))


def test_schedules():
    assert optim.constant()(1000) == 1.0
    s = optim.step(10, 0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]
    p = optim.poly(100, 0.9)
    assert p(0) == 1.0 and p(100) == 0.0 and p(50) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(ValueError, match="unknown lr schedule 'cosine'"):
        optim.make_schedule("cosine", 10)


@pytest.mark.parametrize("kw,match", [({"lr": 0}, "lr must be"), ({"lr": 0.1, "momentum": 1.0}, "momentum"),
                                      ({"lr": 0.1, "weight_decay": -1}, "weight_decay")])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        optim.SGD([nn.Parameter(np.ones(1))], **kw)


def test_sgd_trains_a_tiny_conv():
    """A 1x1 conv learns to copy its input: the loss falls by orders of magnitude."""
    import minifcn

    minifcn.manual_seed(0)
    conv = nn.Conv2d(2, 2, 1)
    opt = optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, weight_decay=0)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32))
    losses = []
    for _ in range(100):
        d = conv(x) - x
        loss = (d * d).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
