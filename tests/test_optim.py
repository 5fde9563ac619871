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


def test_lr_mults_put_a_parameter_in_a_group_of_its_own():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, 1))
    weights, biases, first, first_b = optim.param_groups(
        m, lr_mults={"0.weight": 0.25, "0.bias": 0.5})
    assert weights["params"] == [m[1].weight] and biases["params"] == [m[1].bias]
    assert first["params"] == [m[0].weight] and (first["lr_mult"], first["decay_mult"]) == (0.25, 1.0)
    # a bias keeps its reference multipliers (x2, no decay) times the extra one
    assert first_b["params"] == [m[0].bias] and (first_b["lr_mult"], first_b["decay_mult"]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="conv9.weight"):
        optim.param_groups(m, lr_mults={"conv9.weight": 0.1})
    m[1].weight.requires_grad = False  # fixed: an lr multiplier for it is a mistake
    with pytest.raises(ValueError, match="1.weight"):
        optim.param_groups(m, lr_mults={"1.weight": 0.1})


def test_first_layer_lr_mult_equals_training_on_scaled_inputs():
    # SGD on a first layer fed x with lr * 1/s^2 must follow exactly SGD on the same layer fed
    # x / s with its weight scaled by s (no decay): the claim in first_layer_lr_mult's docstring
    s, rng = 64.0, np.random.default_rng(0)
    x, target = rng.normal(0, s, (4, 3, 6, 6)), rng.normal(size=(4, 2, 4, 4))

    def train(input_div, mult):
        # input_div 1: raw x, weights ~1/s (as conv1_1's); input_div s: x / s, weights ~1.
        # Returned weights are rescaled to the unit-input convention, to compare the two.
        rescale = s / input_div
        conv = nn.Conv2d(3, 2, 3)
        conv.weight.data = np.random.default_rng(1).normal(size=(2, 3, 3, 3)) * 0.1 / rescale
        conv.bias.data = np.zeros(2)
        opt = optim.SGD(optim.param_groups(conv, lr_mults={"weight": mult}), lr=1e-2,
                        momentum=0.9, weight_decay=0.0)
        for _ in range(3):
            err = conv(Tensor(x / input_div)) - Tensor(target)
            loss = (err * err).sum() * (1 / err.data.size)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return conv.weight.data * rescale, conv.bias.data

    w_raw, b_raw = train(1.0, optim.first_layer_lr_mult(s))
    w_unit, b_unit = train(s, 1.0)
    np.testing.assert_allclose(w_raw, w_unit, rtol=1e-9)
    np.testing.assert_allclose(b_raw, b_unit, rtol=1e-9)
    assert not np.allclose(w_unit, train(s, 0.0)[0])  # the steps did move the weights
    # and without the multiplier the raw-input run takes a very different path
    w_plain, _ = train(1.0, 1.0)
    assert not np.allclose(w_plain, w_unit, rtol=1e-2)


def test_warmup_ramps_then_follows_the_schedule():
    sched = optim.make_schedule("poly", 100, warmup_iters=4)
    poly = optim.poly(100)
    assert [sched(i) for i in range(4)] == pytest.approx([poly(i) * (i + 1) / 4 for i in range(4)])
    assert [sched(i) for i in range(4, 100)] == pytest.approx([poly(i) for i in range(4, 100)])
    assert optim.make_schedule("constant", 10, warmup_iters=0)(0) == 1.0
    with pytest.raises(ValueError, match="warmup"):
        optim.warmup(optim.constant(), -1)


def test_in_place_step_matches_the_formula_bit_for_bit():
    # the formula written out with fresh arrays, as the docstring states it
    rng = np.random.default_rng(0)
    shapes = [(4, 3, 3, 3), (4,), (2, 4, 1, 1), (7,)]
    params = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    ref = [p.data.copy() for p in params]
    groups = [{"params": params[:1] + params[2:3]},
              {"params": params[1:2] + params[3:], "lr_mult": 2.0, "decay_mult": 0.0}]
    opt = optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=5e-4)
    mults = [(1.0, 1.0), (2.0, 0.0), (1.0, 1.0), (2.0, 0.0)]
    vel = [None] * 4
    for it in range(5):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.lr = 0.05 * (it + 1)  # a schedule changes lr between steps
        opt.step()
        for i, (g, (lm, dm)) in enumerate(zip(grads, mults)):
            lr, decay = np.float32(opt.lr * lm), opt.weight_decay * dm
            step = lr * (g + np.float32(decay) * ref[i]) if decay else lr * g
            vel[i] = step if vel[i] is None else np.float32(0.9) * vel[i] + step
            ref[i] = ref[i] - vel[i]
            np.testing.assert_array_equal(params[i].data, ref[i])
            np.testing.assert_array_equal(params[i].grad, g)  # the gradient is left alone


def test_load_state_dict_copies_the_callers_arrays():
    w = nn.Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    state = {"velocity.0.0": np.array([0.5, 0.5])}
    opt.load_state_dict(state)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(state["velocity.0.0"], [0.5, 0.5])
