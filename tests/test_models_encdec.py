"""The encoder-decoders (minifcn.models: SegNet, SegNetBasic, DeconvNet, UNet): scores, gradients
and batch-norm statistics against independent torch.nn nets in float64 (tests/_torchnets.py),
end-to-end gradient checks, shapes down to the minimum input, the summary and its command, and
the start from the shipped classifier. (Training, evaluating, predicting and exporting them:
tests/test_train_encdec.py.)"""
import re

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, no_grad
from minifcn.models import ENCODER_DECODERS, build, pretrained_classifier, shipped_classifier_path
from minifcn.models.__main__ import main as models_main
from minifcn.models.vgg import trunk
from minifcn.training.build import freeze_trunk, load_weights_into

NETS = list(ENCODER_DECODERS)
W = 0.0625
# the smallest side each net takes, from the docstrings' arithmetic: every 2x2 pool (rounding
# up) needs a map of 2 or more, so with p pools the side must be at least 2**(p-1) + 1
MIN_SIZE = {"segnet": 2**4 + 1, "deconvnet": 2**4 + 1, "segnet-basic": 2**3 + 1,
            "unet": 2**3 + 1}
VGG_CONVS = [f"conv{b}_{j}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]


def randomized(model, seed):
    """Every parameter and batch-norm statistic random, so that no layer is the identity and
    every ReLU is half on: weights N(0, 2/fan_in), biases and BN shifts U(-0.2, 0.2), BN scales
    U(0.5, 1.5), running means U(-0.5, 0.5), running variances U(0.5, 2)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, v in model.state_dict().items():
        leaf = name.rsplit(".", 1)[1]
        if v.ndim == 4:  # conv (out, in, k, k) or transposed conv (in, out, k, k): same fan
            fan = v.shape[1] * v.shape[2] * v.shape[3]
            v = rng.standard_normal(v.shape) * np.sqrt(2 / fan)
        elif leaf in ("bias", "running_mean"):
            v = rng.uniform(-0.2, 0.2, v.shape) * (2.5 if leaf == "running_mean" else 1)
        elif leaf == "weight":
            v = rng.uniform(0.5, 1.5, v.shape)
        elif leaf == "running_var":
            v = rng.uniform(0.5, 2.0, v.shape)
        state[name] = v  # num_batches_tracked as it is
    return model.load_state_dict(state)


def as_torch(state):
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def torch_pair(name, seed=0, n_class=3, width=W):
    """(our net, the torch net) with the same random weights and statistics, float64."""
    from _torchnets import NETS as TORCH

    ours = randomized(build(name, n_class=n_class, width=width), seed).double()
    theirs = TORCH[name](n_class, width).double()
    theirs.load_state_dict(as_torch(ours.state_dict()), strict=True)
    return ours, theirs


# --------------------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("name", NETS)
def test_scores_gradients_and_statistics_match_pytorch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = torch_pair(name, seed=NETS.index(name))
    rng = np.random.default_rng(7)
    # odd sizes: the pools round up and every unpooling / crop must come back to them exactly
    batches = [rng.standard_normal((2, 3, 37, 29)) * 40, rng.standard_normal((2, 3, 33, 33)) * 40]
    for step, x in enumerate(batches):  # two training forwards: the statistics move twice
        xt = torch.from_numpy(x).requires_grad_(True)
        ours_x = Tensor(x, requires_grad=True)
        y, yt = ours(ours_x), theirs(xt)
        assert y.shape == (2, 3) + x.shape[2:]
        np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=f"train-mode scores, batch {step}")
    g = rng.standard_normal(y.shape)
    for p in ours.parameters():
        p.grad = None
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    theirs_grads = dict(theirs.named_parameters())
    own = dict(ours.named_parameters())
    assert own.keys() == theirs_grads.keys()
    # a conv's bias before a train-mode BN has gradient 0 (BN takes the mean away), up to
    # rounding: the tolerance is scaled by the largest gradient of the net
    scale = max(float(np.abs(p.grad.numpy()).max()) for p in theirs_grads.values())
    for k, p in own.items():
        want = theirs_grads[k].grad.numpy()
        np.testing.assert_allclose(p.grad, want, rtol=1e-7, atol=1e-10 * scale,
                                   err_msg=f"gradient of {k}")
    np.testing.assert_allclose(xt.grad.numpy(), ours_x.grad, rtol=1e-7,
                               atol=1e-10 * np.abs(xt.grad.numpy()).max(), err_msg="input")
    theirs_state = theirs.state_dict()
    buffers = [k for k in ours.state_dict() if "running" in k or "num_batches" in k]
    assert len(buffers) == 3 * sum(k.endswith("_bn") for k, _ in ours.named_modules())
    for k, v in ours.state_dict().items():
        if k in buffers:
            np.testing.assert_allclose(v, theirs_state[k].numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=k)
    assert ours.conv1_1_bn.num_batches_tracked.data == 2

    ours.eval()
    theirs.eval()
    x = batches[0][:1]
    with no_grad():
        y = ours(Tensor(x)).data
    with torch.no_grad():
        yt = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-9, atol=1e-10, err_msg="eval-mode scores")


@pytest.mark.parametrize("name", NETS)
def test_the_exported_pth_loads_strictly_into_the_torch_net(name, tmp_path):
    torch = pytest.importorskip("torch")
    from _torchnets import NETS as TORCH

    ours = randomized(build(name, n_class=3, width=W), seed=11).eval()
    minifcn.export.to_pytorch(ours, tmp_path / "w.pth")
    theirs = TORCH[name](3, W)
    theirs.load_state_dict(torch.load(tmp_path / "w.pth", weights_only=True), strict=True)
    theirs.eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 35, 27)).astype(np.float32) * 40
    with no_grad():
        y = ours(Tensor(x)).data
    with torch.no_grad():
        yt = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-4, atol=1e-4 * np.abs(yt).max())


# ---------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("name, width, size, mode", [("segnet", 0.03125, (17, 18), "train"),
                                                     ("segnet-basic", W, (9, 10), "train"),
                                                     ("unet", W, (11, 9), "train"),
                                                     ("deconvnet", 0.03125, (17, 18), "eval")])
def test_gradcheck_end_to_end(name, width, size, mode):
    # train mode: batch norm normalises by the batch, so its gradient runs through the batch's
    # mean and variance too; the output does not depend on the running statistics it updates.
    # DeconvNet in eval mode: in train mode its fc6, fc7 and deconv6 normalise 2 values a
    # channel (pool5 is 1x1 on a small input) and the deep transposed-conv decoder makes
    # gradients of thousands whose central differences cross ReLU kinks (7 of 10 seeds failed,
    # as large inputs did); its train-mode gradients are checked against torch above
    model = randomized(build(name, n_class=2, width=width), seed=5).double().train(mode == "train")
    x = Tensor(np.random.default_rng(5).standard_normal((2, 3) + size) * 10, requires_grad=True)
    assert minifcn.gradcheck(model, [x], max_elements=1, seed=5, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NETS)
def test_any_size_from_the_minimum_gives_scores_of_its_size(name):
    model = build(name, n_class=3, width=W).eval()
    m = MIN_SIZE[name]
    assert model.min_input_size == m
    for h, w in [(m, m), (m, m + 1), (m + 2, m + 5), (37, 29)]:
        with no_grad():
            y = model(Tensor(np.zeros((2, 3, h, w), np.float32)))
        assert y.shape == (2, 3, h, w)
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
    model = build(name, n_class=3, width=W)
    params, _ = _totals(minifcn.summary(model, (1, 3, 37, 29)))
    assert params == sum(p.data.size for p in model.parameters())


def test_summary_macs_of_unet_counted_by_hand():
    # every layer's multiply-accumulates: a conv's, one per output element and kernel tap and
    # input channel; a transposed conv's, one per *input* element and tap and output channel;
    # batch norm (a folded scale and shift), one per element; pools, ReLU, crops, concat none
    model = build("unet", n_class=3, width=W)
    n, (h, w), c = 2, (37, 29), [4, 8, 16, 32, 64]
    sizes = [(h, w)]
    for _ in range(4):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    macs, c_in = 0, 3
    for (hh, ww), cc in zip(sizes, c):
        macs += n * cc * hh * ww * c_in * 9 + n * cc * hh * ww  # conv_1, its BN
        macs += n * cc * hh * ww * cc * 9 + n * cc * hh * ww  # conv_2, its BN
        c_in = cc
    for b in range(4, 0, -1):
        (hh, ww), (hs, ws) = sizes[b], sizes[b - 1]
        macs += n * c[b] * hh * ww * c[b - 1] * 4  # up_b: 2x2 transposed
        macs += n * c[b - 1] * hs * ws * 2 * c[b - 1] * 9 + n * c[b - 1] * hs * ws
        macs += n * c[b - 1] * hs * ws * c[b - 1] * 9 + n * c[b - 1] * hs * ws
    macs += n * 3 * h * w * c[0]  # score
    assert _totals(minifcn.summary(model, (n, 3, h, w)))[1] == macs


@pytest.mark.parametrize("name", NETS)
def test_models_command_prints_the_table(name, capsys):
    assert models_main([name, "--width", "0.0625", "--size", "37", "--n-class", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{type(build(name, n_class=3, width=W)).__name__} on input 1x3x37x37")
    rows = {line.split()[0] for line in out.splitlines()[4:-3]}
    layers = {k.rsplit(".", 1)[0] for k in build(name, n_class=3, width=W).state_dict()}
    assert layers <= rows  # every layer with weights has its row
    assert re.search(r"^score\S*\s+conv\s+1x3x37x37\s", out, re.M) or name == "segnet"
    if name == "segnet":
        assert re.search(r"^conv1_1_D\s+conv\s+1x3x37x37\s", out, re.M)


def test_pad1_is_refused_for_an_encoder_decoder(capsys):
    with pytest.raises(SystemExit) as e:
        models_main(["segnet", "--width", "0.0625", "--size", "37", "--pad1", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pad1" in err and "segnet" in err
    with pytest.raises(ValueError, match="segnet takes n_class and width only.*pad1") as e:
        build("segnet", pad1=3)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- from the shipped classifier


@pytest.mark.parametrize("name", ["segnet", "deconvnet"])
def test_the_shipped_classifier_fills_the_trunk_by_name(name):
    classifier = pretrained_classifier(W)
    want = {k: p.data for k, p in classifier.named_parameters()}
    model = build(name, n_class=3, width=W)
    before = model.state_dict()
    load_weights_into(model, shipped_classifier_path(W), log=lambda *a: None)
    got = model.state_dict()
    layers = VGG_CONVS + (["fc6", "fc7"] if name == "deconvnet" else [])
    for layer in layers:
        for leaf in ("weight", "bias"):
            k = f"{layer}.{leaf}"
            # fc6 and fc7 are fully connected in the classifier: (fc, c*7*7) read as (fc, c, 7, 7)
            np.testing.assert_array_equal(got[k], want[k].reshape(got[k].shape), err_msg=k)
    for k, v in got.items():
        if k.rsplit(".", 1)[0] not in layers:
            np.testing.assert_array_equal(v, before[k], err_msg=k)  # the rest: as built
    for layer, m in model.named_modules():
        if layer.endswith("_bn"):  # batch norm starts at the identity
            assert (m.weight.data == 1).all() and (m.bias.data == 0).all()
            assert (m.running_mean.data == 0).all() and (m.running_var.data == 1).all()


def test_segnets_encoder_from_the_classifier_computes_the_classifiers_pool5():
    classifier = pretrained_classifier(W)
    model = build("segnet", n_class=3, width=W)
    load_weights_into(model, shipped_classifier_path(W), log=lambda *a: None)
    assert model.min_input_size == 17  # traced now, before a layer is replaced by a probe
    seen = {}
    unpool5 = model.unpool5

    def record(x, indices, output_size):  # what the decoder receives: the encoder's pool5
        seen["pool5"] = x.data.copy()
        return unpool5(x, indices, output_size=output_size)

    model.unpool5 = record
    model.eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 45, 38)).astype(np.float32) * 50
    with no_grad():
        model(Tensor(x))
        want = trunk(classifier, Tensor(x))[2].data
    assert want.shape == seen["pool5"].shape == (2, 32, 2, 2) and want.std() > 0
    # identity BN in eval divides by sqrt(1 + eps) once per conv: 13 times 1 - 5e-6
    np.testing.assert_allclose(seen["pool5"], want, rtol=2e-4, atol=1e-5 * np.abs(want).max())


def test_freeze_trunk_freezes_exactly_segnets_classifier_layers():
    model = freeze_trunk(build("segnet", n_class=3, width=W))
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{c}.{leaf}" for c in VGG_CONVS for leaf in ("weight", "bias")}
    for name in ("unet", "segnet-basic"):
        with pytest.raises(ValueError, match="no classifier trunk"):
            freeze_trunk(build(name, n_class=3, width=W))
