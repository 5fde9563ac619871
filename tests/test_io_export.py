"""minifcn.io.export's state dict for the PyTorch FCN port (pytorch_state_dict, to_pytorch): the
port's names, shapes and BGR conv1_1, written with or without torch; the port's nets, defined here
after its source, take it strictly and compute minifcn's scores. (torch's zip format itself:
tests/test_io_torchwrite.py; ONNX: tests/test_io_onnx.py; python -m minifcn.export:
tests/test_export.py.)"""
import sys

import numpy as np
import pytest

from minifcn import export, io, models
from minifcn.models.vgg import FC_CHANNELS, VGG16_BLOCKS, scaled

from _helpers import N_CLASS, NETS, WIDTH, port_keys, random_model, scores, write_for_port


# ---------------------------------------------------------------- the port's state dict

@pytest.mark.parametrize("name", NETS)
def test_pytorch_state_dict_has_the_ports_names_shapes_and_bgr_conv1_1(name):
    model = random_model(name)
    state = export.pytorch_state_dict(model)
    assert set(state) == port_keys(name)
    c5, fc = scaled(VGG16_BLOCKS[4][0], WIDTH), scaled(FC_CHANNELS, WIDTH)
    assert state["fc6.weight"].shape == (fc, c5, 7, 7)
    assert state["fc7.weight"].shape == (fc, fc, 1, 1)
    assert not any(k.startswith("upscore") and k.endswith(".bias") for k in state)
    own = model.state_dict()
    np.testing.assert_array_equal(state["conv1_1.weight"], own["conv1_1.weight"][:, ::-1])
    # minifcn.io.from_fcn_port converts the other way: it gives back the model's own weights
    back = io.from_fcn_port(state)
    assert set(back) == set(own)
    for k in own:
        np.testing.assert_array_equal(back[k], own[k])


def test_pytorch_state_dict_at_width_1_has_fc6_4096_512_7_7():
    model = models.fcn32s(n_class=21)
    state = export.pytorch_state_dict(model)
    assert state["fc6.weight"].shape == (4096, 512, 7, 7)
    assert state["upscore.weight"].shape == (21, 21, 64, 64)


def test_to_pytorch_warns_when_the_model_pads_conv1_1_otherwise(tmp_path):
    with pytest.warns(UserWarning, match="pads conv1_1 by 90, the PyTorch port by 100"):
        export.to_pytorch(random_model("fcn32s", pad1=90), tmp_path / "w.pth")


def test_to_pytorch_without_torch_installed_writes_by_hand(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    model = random_model("fcn16s")
    export.to_pytorch(model, tmp_path / "m.pth")
    back = io.read_torch_state_dict(tmp_path / "m.pth")
    assert set(back) == port_keys("fcn16s")


# ---------------------------------------------------------------- the port's nets, in PyTorch

def port_nets():
    """FCN32s, FCN16s, FCN8s, FCN8sAtOnce as torchfcn/models/ writes them (layer for layer:
    conv1_1 padding 100, ceil_mode pools, ReLU, Dropout2d, score layers, bias-free
    ConvTranspose2d upscores, crops at the fixed offsets 19; 5, 27; 5, 9, 31), with the channel
    counts passed in so a small width can be checked."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Trunk(nn.Module):
        def __init__(self, n_class, blocks, fc):
            super().__init__()
            c_in = 3
            for b, convs in enumerate(blocks, 1):
                for i, c in enumerate(convs, 1):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(c_in, c, 3,
                                                            padding=100 if b == i == 1 else 1))
                    setattr(self, f"relu{b}_{i}", nn.ReLU(inplace=True))
                    c_in = c
                setattr(self, f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.fc6, self.relu6, self.drop6 = nn.Conv2d(c_in, fc, 7), nn.ReLU(True), nn.Dropout2d()
            self.fc7, self.relu7, self.drop7 = nn.Conv2d(fc, fc, 1), nn.ReLU(True), nn.Dropout2d()
            self.score_fr = nn.Conv2d(fc, n_class, 1)
            self.blocks = [len(c) for c in blocks]

        def trunk(self, x):
            h, pools = x, []
            for b, n in enumerate(self.blocks, 1):
                for i in range(1, n + 1):
                    h = getattr(self, f"relu{b}_{i}")(getattr(self, f"conv{b}_{i}")(h))
                h = getattr(self, f"pool{b}")(h)
                pools.append(h)
            h = self.drop6(self.relu6(self.fc6(h)))
            h = self.drop7(self.relu7(self.fc7(h)))
            return pools[2], pools[3], self.score_fr(h)

    def up(n, k, s):
        return nn.ConvTranspose2d(n, n, k, stride=s, bias=False)

    class FCN32s(Trunk):
        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.upscore = up(n_class, 64, 32)

        def forward(self, x):
            h = self.upscore(self.trunk(x)[2])
            return h[:, :, 19:19 + x.size()[2], 19:19 + x.size()[3]].contiguous()

    class FCN16s(Trunk):
        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.score_pool4 = nn.Conv2d(blocks[3][-1], n_class, 1)
            self.upscore2, self.upscore16 = up(n_class, 4, 2), up(n_class, 32, 16)

        def forward(self, x):
            _, pool4, h = self.trunk(x)
            upscore2 = self.upscore2(h)
            h = self.score_pool4(pool4)
            h = h[:, :, 5:5 + upscore2.size()[2], 5:5 + upscore2.size()[3]]
            h = self.upscore16(upscore2 + h)
            return h[:, :, 27:27 + x.size()[2], 27:27 + x.size()[3]].contiguous()

    class FCN8s(Trunk):
        scale4, scale3 = 1, 1

        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.score_pool3 = nn.Conv2d(blocks[2][-1], n_class, 1)
            self.score_pool4 = nn.Conv2d(blocks[3][-1], n_class, 1)
            self.upscore2, self.upscore8 = up(n_class, 4, 2), up(n_class, 16, 8)
            self.upscore_pool4 = up(n_class, 4, 2)

        def forward(self, x):
            pool3, pool4, h = self.trunk(x)
            upscore2 = self.upscore2(h)
            h = self.score_pool4(pool4 if self.scale4 == 1 else pool4 * self.scale4)
            h = h[:, :, 5:5 + upscore2.size()[2], 5:5 + upscore2.size()[3]]
            upscore_pool4 = self.upscore_pool4(upscore2 + h)
            h = self.score_pool3(pool3 if self.scale3 == 1 else pool3 * self.scale3)
            h = h[:, :, 9:9 + upscore_pool4.size()[2], 9:9 + upscore_pool4.size()[3]]
            h = self.upscore8(upscore_pool4 + h)
            return h[:, :, 31:31 + x.size()[2], 31:31 + x.size()[3]].contiguous()

    class FCN8sAtOnce(FCN8s):  # pool4 * 0.01, pool3 * 0.0001 before their score layers
        scale4, scale3 = 0.01, 0.0001

    return torch, {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s,
                   "fcn8s-atonce": FCN8sAtOnce}


@pytest.mark.parametrize("use_torch", [False, True], ids=["by-hand", "by-torch"])
@pytest.mark.parametrize("name", NETS)
def test_the_ports_nets_load_it_strictly_and_give_minifcns_scores(tmp_path, name, use_torch):
    torch, nets = port_nets()
    model = random_model(name, seed=NETS.index(name)).double()
    path = tmp_path / "port.pth"
    write_for_port(model, path, "by-torch" if use_torch else "by-hand")
    blocks = [tuple(scaled(c, WIDTH) for c in block) for block in VGG16_BLOCKS]
    net = nets[name](N_CLASS, blocks, scaled(FC_CHANNELS, WIDTH)).double().eval()
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = np.random.default_rng(7).normal(0, 60, (2, 3, 45, 37))
    want = scores(model, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x[:, ::-1].copy())).numpy()  # the port reads BGR
    assert got.shape == want.shape == (2, N_CLASS, 45, 37) and want.std() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
