"""The context nets (minifcn.models: DeepLabLargeFOV, DeepLabASPP, FCN8sSE, FCN8sNonLocal): scores,
gradients and batch-norm statistics against independent torch.nn nets in float64
(tests/_torchcontext.py); the blocks inside FCN-8s against FCN-8s itself; end-to-end gradient
checks; shapes down to the minimum input; the summary and its command; the start from the
shipped classifier; the non-local block's attention. (Training, evaluating, predicting and
exporting them: tests/test_train_context.py.)"""
import re

import numpy as np
import pytest
from test_models_encdec import as_torch, randomized

import minifcn
from minifcn import Tensor, no_grad
from minifcn.models import DEEPLABS, build, pretrained_classifier, shipped_classifier_path
from minifcn.models.__main__ import main as models_main
from minifcn.models.geometry import trace
from minifcn.training.build import load_weights_into

NETS = ["deeplab-largefov", "deeplab-aspp", "fcn8s-se", "fcn8s-nonlocal"]
FCNS = ["fcn8s-se", "fcn8s-nonlocal"]
W = 0.0625  # 4-8-16-32-32 channels; DeepLab's fc 64, ASPP's branches 16; FCN's fc 256
VGG_CONVS = [f"conv{b}_{j}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]
# DeepLab keeps pool1..pool3 (2x2, rounding up): each needs a map of 2 or more, 5 -> 3 -> 2 -> 1
DEEPLAB_MIN = 2**2 + 1


def ours_of(name, n_class=3, width=W, **options):
    if name in FCNS:  # no dropout: train mode must be deterministic to compare
        options = {"dropout": 0.0, **options}
    return build(name, n_class=n_class, width=width, **options)


def torch_pair(name, seed=0):
    """(our net, the torch net) with the same random weights and statistics, float64; the
    layers that start at zero (score, fc8, the skips' scores, the non-local W) random too."""
    from _torchcontext import NETS as TORCH

    ours = randomized(ours_of(name), seed).double()
    theirs = TORCH[name](3, W).double()
    theirs.load_state_dict(as_torch(ours.state_dict()), strict=True)
    return ours, theirs


# --------------------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("name", NETS)
def test_scores_gradients_and_statistics_match_pytorch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = torch_pair(name, seed=NETS.index(name))
    for k, v in ours.state_dict().items():
        if k.endswith(("fc8.weight", "score.weight", "score_pool3.weight", "context.W.weight")):
            assert np.abs(v).min() > 0, k  # randomised, not left at zero
    rng = np.random.default_rng(7)
    # odd sizes: the stride-8 map (5x4) is resized to 37x29, FCN's crops must land on it. On a
    # 5x4 map every dilated tap but the centre falls in the padding, so DeepLab's second batch
    # has a 20x21 map (157x161), on which fc6's rate 12 and ASPP's 18 reach inside
    second = (157, 161) if name in DEEPLABS else (23, 19)
    batches = [rng.standard_normal((2, 3, 37, 29)) * 40, rng.standard_normal((2, 3) + second) * 40]
    for step, x in enumerate(batches):  # two training forwards: the statistics move twice
        xt = torch.from_numpy(x).requires_grad_(True)
        ours_x = Tensor(x, requires_grad=True)
        y, yt = ours(ours_x), theirs(xt)
        assert y.shape == (2, 3) + x.shape[2:]
        np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-9,
                                   atol=1e-10 * np.abs(y.data).max(),
                                   err_msg=f"train-mode scores, batch {step}")
    g = rng.standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    theirs_params = dict(theirs.named_parameters())
    own = {k: p for k, p in ours.named_parameters() if p.requires_grad}
    # every torch parameter but FCN's fixed bilinear upsampling is learned here
    assert own.keys() == {k for k in theirs_params if not k.startswith("upscore")}
    scale = max(float(np.abs(theirs_params[k].grad.numpy()).max()) for k in own)
    for k, p in own.items():
        want = theirs_params[k].grad.numpy()
        np.testing.assert_allclose(p.grad, want, rtol=1e-7, atol=1e-10 * scale,
                                   err_msg=f"gradient of {k}")
    np.testing.assert_allclose(ours_x.grad, xt.grad.numpy(), rtol=1e-7,
                               atol=1e-10 * np.abs(xt.grad.numpy()).max(), err_msg="input")
    theirs_state = theirs.state_dict()
    buffers = [k for k in ours.state_dict() if "running" in k or "num_batches" in k]
    assert len(buffers) == (3 * 6 if name == "deeplab-aspp" else 0)  # 5 branches + projection
    for k in buffers:
        np.testing.assert_allclose(ours.state_dict()[k], theirs_state[k].numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=k)

    ours.eval()
    theirs.eval()
    x = batches[1]
    with no_grad():
        y = ours(Tensor(x)).data
    with torch.no_grad():
        yt = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-9, atol=1e-10 * np.abs(y).max(),
                               err_msg="eval-mode scores")


# ------------------------------------------------------- the blocks inside FCN-8s, against it


def fcn8s_with_weights_of(model):
    """An FCN8s carrying ``model``'s weights (all but its context blocks), float64, eval."""
    plain = build("fcn8s", n_class=3, width=W, dropout=0.0).double()
    state = {k: v for k, v in model.state_dict().items() if "_context." not in k}
    plain.load_state_dict(state)
    assert set(plain.state_dict()) == set(state)
    return plain.eval()


def scores(model, x):
    with no_grad():
        return model(Tensor(x)).data


def test_nonlocal_with_W_at_zero_is_fcn8s_exactly_and_differs_once_W_learns():
    model = randomized(ours_of("fcn8s-nonlocal"), seed=3).double().eval()
    block = model.pool4_context
    block.W.weight.data[...] = 0
    block.W.bias.data[...] = 0
    plain = fcn8s_with_weights_of(model)
    x = np.random.default_rng(1).standard_normal((2, 3, 37, 29)) * 40
    want = scores(plain, x)
    assert np.abs(want).max() > 0
    np.testing.assert_array_equal(scores(model, x), want)
    block.W.weight.data = np.random.default_rng(2).standard_normal(block.W.weight.shape) * 0.3
    assert np.abs(scores(model, x) - want).max() > 1e-3 * np.abs(want).max()


def test_fcn8s_se_is_fcn8s_with_its_pool_maps_gated():
    model = randomized(ours_of("fcn8s-se"), seed=4).double().eval()
    plain = fcn8s_with_weights_of(model)
    state = model.state_dict()

    def gate(pool):  # SE-Net's eq. 2-3 in NumPy, with the block's weights
        w1, b1 = state[f"{pool}_context.fc1.weight"][:, :, 0, 0], state[f"{pool}_context.fc1.bias"]
        w2, b2 = state[f"{pool}_context.fc2.weight"][:, :, 0, 0], state[f"{pool}_context.fc2.bias"]
        assert w1.shape[0] == max(1, w1.shape[1] // 16)  # reduction 16

        def apply(x):
            z = np.maximum(x.data.mean((2, 3)) @ w1.T + b1, 0)
            s = 1 / (1 + np.exp(-(z @ w2.T + b2)))
            return x * Tensor(s[:, :, None, None])
        return apply

    assert plain.min_input_size == 1  # traced now, before the gates (which take no Blob)
    for pool in ("pool3", "pool4", "pool5"):  # the trunk calls NAME_context after each pool
        setattr(plain, f"{pool}_context", gate(pool))
    x = np.random.default_rng(5).standard_normal((2, 3, 37, 29)) * 40
    want = scores(plain, x)
    np.testing.assert_allclose(scores(model, x), want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    del plain.pool5_context  # and each gate matters
    assert np.abs(scores(plain, x) - want).max() > 1e-4 * np.abs(want).max()


# ---------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("name, size, mode", [("deeplab-largefov", (13, 11), "train"),
                                              ("deeplab-aspp", (13, 11), "train"),
                                              ("fcn8s-se", (9, 7), "eval"),
                                              ("fcn8s-nonlocal", (9, 7), "eval")])
def test_gradcheck_end_to_end(name, size, mode):
    # ASPP in train mode: the gradient runs through its BN's batch statistics too. The FCNs
    # have no BN (train = eval without dropout); their trunk is FCN-8s's, checked in
    # tests/test_models.py (slow): here the blocks, and a layer before, between and after them
    model = randomized(ours_of(name, n_class=2, width=0.03125), seed=5).double()
    if name in FCNS:
        for k, p in model.named_parameters():
            p.requires_grad = "_context." in k or k in ("conv1_1.weight", "conv4_1.weight",
                                                        "fc6.weight", "score_pool3.weight")
    model.train(mode == "train")
    x = Tensor(np.random.default_rng(5).standard_normal((2, 3) + size) * 10, requires_grad=True)
    assert minifcn.gradcheck(model, [x], max_elements=1, seed=5, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NETS)
def test_any_size_from_the_minimum_gives_scores_of_its_size(name):
    model = ours_of(name).eval()
    m = DEEPLAB_MIN if name in DEEPLABS else 1  # FCN's conv1_1 pads by 100: any size
    assert model.min_input_size == m
    for h, w in [(m, m), (m, m + 1), (m + 2, m + 5), (37, 29)]:
        assert scores(model, np.zeros((2, 3, h, w), np.float32)).shape == (2, 3, h, w)
    if name in FCNS:  # at pad1 69 the crop needs the upsampled scores to cover the input
        model = ours_of(name, pad1=69)
        m = model.min_input_size
        assert m == ours_of("fcn8s", pad1=69).min_input_size > 1  # the blocks keep the geometry
        assert scores(model.eval(), np.zeros((1, 3, m, m + 3), np.float32)).shape == (1, 3, m, m + 3)
    for h, w in [(m - 1, m), (m + 4, m - 1)]:
        with pytest.raises(ValueError, match=f"at least {m}") as e:
            model(Tensor(np.zeros((1, 3, h, w), np.float32)))
        assert "\n" not in str(e.value) and f"{h}x{w}" in str(e.value)


def _totals(table):
    params = int(re.search(r"total params ([\d,]+)", table).group(1).replace(",", ""))
    macs = int(re.search(r"\(([\d,]+) multiply-accumulates\)", table).group(1).replace(",", ""))
    return params, macs


@pytest.mark.parametrize("name", NETS)
def test_summary_counts_every_parameter(name):
    model = ours_of(name)
    params, _ = _totals(minifcn.summary(model, (1, 3, 37, 29)))
    assert params == sum(p.data.size for p in model.parameters())


def test_summary_macs_of_deeplab_largefov_fc6_counted_by_hand():
    # a dilated conv has as many taps as an undilated one: N * C_out * H * W * C_in * 3 * 3, on
    # the stride-8 map (three 2x2 pools rounding up: 37x29 -> 19x15 -> 10x8 -> 5x4)
    table = minifcn.summary(ours_of("deeplab-largefov"), (2, 3, 37, 29))
    row = re.search(r"^fc6\s+conv\s+(\S+)\s+8\s+(\d+)\s+([\d,]+)\s+(\S+)\s+dilation 12$", table,
                    re.M)
    assert row, table
    shape, rf, params, macs = row.groups()
    assert shape == "2x64x5x4" and int(params.replace(",", "")) == 64 * 32 * 9 + 64
    # rf: pool5's (each of the 13 convs, pools and dilations adds (k - 1) * d * jump), then
    # fc6's 2 * 12 * 8
    pool5_rf = 1 + 2 * 1 * 2 + 1 + 2 * 2 * 2 + 2 + 3 * 2 * 4 + 4 + 3 * 2 * 8 + 2 * 8 \
        + 3 * 2 * 2 * 8 + 2 * 8
    assert int(rf) == pool5_rf + 2 * 12 * 8 == 412
    want = 2 * 64 * 5 * 4 * 32 * 9
    assert float(macs[:-1]) * {"K": 1e3, "M": 1e6}[macs[-1]] == pytest.approx(want, rel=1e-4)
    (step,) = [s for s in trace(ours_of("deeplab-largefov"), (2, 3, 37, 29)) if s.name == "fc6"]
    assert step.macs == want


def test_models_command_prints_deeplab_aspp_with_image_pooling_seeing_everything(capsys):
    assert models_main(["deeplab-aspp", "--width", "0.0625", "--size", "96"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DeepLabASPP on input 1x3x96x96")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[4:-3]}
    layers = {k.rsplit(".", 1)[0] for k in ours_of("deeplab-aspp").state_dict()}
    assert layers <= rows.keys()
    # image pooling sees the whole image; the branches without it see a finite window
    for name in ("aspp_pool", "aspp_pool_conv", "aspp_pool_up", "aspp_cat", "aspp_project",
                 "score", "upsample"):
        assert rows[name][4] == "all", name
    for name in ("pool5", "aspp_1x1", "aspp_d6", "aspp_d18"):
        assert rows[name][4].isdigit(), name
    assert rows["aspp_d18"][2] == "1x16x12x12" and rows["upsample"][2] == "1x21x96x96"
    assert _totals(out)[0] == sum(p.data.size for p in ours_of("deeplab-aspp", 21).parameters())


def test_models_command_shows_the_nonlocal_block_seeing_everything(capsys):
    assert models_main(["fcn8s-nonlocal", "--width", "0.0625", "--size", "37"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[4:-3]}
    assert rows["pool4"][4].isdigit() and rows["pool4_context"][4] == "all"
    assert rows["conv5_1"][4] == "all" and rows["pool3"][4].isdigit()


@pytest.mark.parametrize("name", list(DEEPLABS))
def test_fcn_options_are_refused_for_deeplab(name, capsys):
    with pytest.raises(SystemExit) as e:
        models_main([name, "--width", "0.0625", "--size", "37", "--pad1", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pad1" in err and name in err
    with pytest.raises(ValueError, match=f"{name} takes n_class and width only.*dropout"):
        build(name, dropout=0.5)


# ---------------------------------------------------------------- from the shipped classifier


def loaded(name, **options):
    model = ours_of(name, **options)
    before = model.state_dict()
    load_weights_into(model, shipped_classifier_path(W), log=lambda *a: None)
    return model, before


@pytest.mark.parametrize("name", list(DEEPLABS))
def test_the_shipped_classifier_fills_deeplabs_vgg16_convolutions(name):
    want = {k: p.data for k, p in pretrained_classifier(W).named_parameters()}
    model, before = loaded(name)
    got = model.state_dict()
    for layer in VGG_CONVS:
        for leaf in ("weight", "bias"):
            np.testing.assert_array_equal(got[f"{layer}.{leaf}"], want[f"{layer}.{leaf}"])
    if name == "deeplab-largefov":  # VGG's fc6 is no 3x3 of 64 channels: it stays as built
        assert want["fc6.weight"].size != got["fc6.weight"].size
    else:
        assert "fc6.weight" not in got
    for k, v in got.items():
        if k.rsplit(".", 1)[0] not in VGG_CONVS:
            np.testing.assert_array_equal(v, before[k], err_msg=k)  # the rest: as built


@pytest.mark.parametrize("name", FCNS)
def test_the_fcn8s_variants_load_the_classifier_as_fcn8s_does(name):
    model, before = loaded(name)
    plain, _ = loaded("fcn8s")
    got, want = model.state_dict(), plain.state_dict()
    for k, v in want.items():
        if not k.startswith(("score", "upscore")):  # the trunk, fc6, fc7: the classifier's
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    for k, v in got.items():
        if "_context." in k:  # the blocks start new
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert {k for k in got if "_context." not in k} == set(want)


def test_fcn8s_nonlocal_from_the_classifier_computes_fcn8s_from_the_classifier():
    model, _ = loaded("fcn8s-nonlocal")
    plain, _ = loaded("fcn8s")
    rng = np.random.default_rng(9)
    # the score layers start at zero in both: give them the same random weights, so the
    # comparison sees the trunk, fc6, fc7 and every skip
    for k, p in plain.named_parameters():
        if k.startswith("score"):
            p.data = rng.standard_normal(p.shape).astype(np.float32) * 0.1
            dict(model.named_parameters())[k].data = p.data.copy()
    x = rng.standard_normal((2, 3, 37, 29)).astype(np.float32) * 50
    want = scores(plain.eval(), x)
    assert np.abs(want).max() > 0
    np.testing.assert_array_equal(scores(model.eval(), x), want)


# ------------------------------------------------------------------- the attention picture


def test_kept_attention_rows_are_distributions_over_pool4s_cells():
    model = randomized(ours_of("fcn8s-nonlocal"), seed=6).eval()
    block = model.pool4_context
    assert block.last_attention is None
    x = np.random.default_rng(2).standard_normal((2, 3, 37, 29)).astype(np.float32) * 40
    scores(model, x)
    assert block.last_attention is None  # off unless asked: (HW)^2 numbers
    block.keep_attention = True
    scores(model, x)
    f = np.asarray(block.last_attention)
    # pool4 at pad1 100: (37 + 198) -> 118 -> 59 -> 30 -> 15 rows, (29 + 198) -> 114 -> 57 ->
    # 29 -> 15 columns
    assert f.shape == (2, 15 * 15, 15 * 15)
    assert (f >= 0).all() and f.std() > 0
    np.testing.assert_allclose(f.sum(-1), 1, rtol=1e-5)
    assert not np.allclose(f[0], f[1])  # one matrix per image
