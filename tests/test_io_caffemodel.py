"""minifcn.io.caffemodel (io.read_caffemodel), minifcn.io.fromcaffe and io.import_weights on .caffemodel
files.

The fixtures are written by the protobuf encoder of tests/_caffe_encoder.py (varints and
length-delimited fields by hand, after caffe.proto's field numbers), independent of the reader
under test.
"""
import struct
import tracemalloc

import numpy as np
import pytest

from minifcn import Tensor, io, models
from minifcn import functional as F
from minifcn.io.caffemodel import looks_like_caffemodel
from minifcn.io.fromcaffe import AT_ONCE_SCALES, TRUNK, from_caffe

from _caffe_encoder import UNKNOWN, caffe_layers, key, ld, layer, net, v1layer, varint, vint
from _helpers import TINY


def write(tmp_path, data, name="net.caffemodel"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def arr(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def vgg16_state(rng, width=TINY, fc_as="conv"):
    """A VGG16 at ``width`` with random weights, in minifcn's names and layout."""
    model = models.fcn32s(width=width)
    state = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in model.state_dict().items() if k.split(".")[0] in TRUNK + ("fc6", "fc7")}
    return state


# ---------------------------------------------------------------- read_caffemodel

def test_new_style_layers_in_file_order_with_unknown_fields_skipped(tmp_path, rng):
    w, b, up = arr(rng, 4, 3, 3, 3), arr(rng, 4), arr(rng, 5, 5, 4, 4)
    path = write(tmp_path, net([layer("data", "Input", []), layer("conv1_1", "Convolution", [w, b]),
                                layer("relu1_1", "ReLU", []), UNKNOWN,
                                layer("upscore", "Deconvolution", [up])]) + UNKNOWN)
    got = io.read_caffemodel(path)
    assert list(got) == ["conv1_1", "upscore"]  # layers with blobs only, in file order
    np.testing.assert_array_equal(got["conv1_1"][0], w)
    np.testing.assert_array_equal(got["conv1_1"][1], b)
    assert got["upscore"][0].shape == (5, 5, 4, 4) and got["upscore"][0].dtype == np.float32
    np.testing.assert_array_equal(got["upscore"][0], up)


def test_v1_layers_with_legacy_4d_dims(tmp_path, rng):
    w, b, fc = arr(rng, 4, 3, 3, 3), arr(rng, 4), arr(rng, 6, 10)
    path = write(tmp_path, net([v1layer("conv1_1", "Convolution", [w, b], dims="legacy"),
                                v1layer("relu", "ReLU", []),
                                v1layer("fc6", "InnerProduct", [fc, b[:2]], dims="legacy")], v1=True))
    got = io.read_caffemodel(path)
    assert [x.shape for x in got["conv1_1"]] == [(4, 3, 3, 3), (1, 1, 1, 4)]
    assert [x.shape for x in got["fc6"]] == [(1, 1, 6, 10), (1, 1, 1, 2)]
    np.testing.assert_array_equal(got["fc6"][0][0, 0], fc)
    np.testing.assert_array_equal(got["conv1_1"][1].ravel(), b)


def test_legacy_dims_win_over_shape_and_unset_ones_are_zero(tmp_path):
    a = np.arange(6, dtype=np.float32)
    # shape says (6,); legacy says 1x2x3x1: Caffe takes the legacy dims
    msg = vint(1, 1) + vint(2, 2) + vint(3, 3) + vint(4, 1) + ld(5, a.tobytes()) + ld(7, ld(1, varint(6)))
    got = io.read_caffemodel(write(tmp_path, net([ld(1, "x") + ld(7, msg)])))
    assert got["x"][0].shape == (1, 2, 3, 1)
    msg = vint(2, 6) + ld(5, a.tobytes())  # channels only: (0, 6, 0, 0), count 0, not 6
    with pytest.raises(ValueError, match=r"6 values in data for shape \(0, 6, 0, 0\)"):
        io.read_caffemodel(write(tmp_path, net([ld(1, "x") + ld(7, msg)])))


def test_double_data_blob_is_float64(tmp_path, rng):
    a = rng.standard_normal((3, 2))
    got = io.read_caffemodel(write(tmp_path, net([layer("x", "Scale", [a], data="double")])))
    assert got["x"][0].dtype == np.float64
    np.testing.assert_array_equal(got["x"][0], a)  # bit-exact: no float32 round trip


@pytest.mark.parametrize("packed_dims", [True, False])
def test_packed_and_unpacked_float_blobs(tmp_path, rng, packed_dims):
    a = arr(rng, 2, 3, 5)
    for data in ("packed", "unpacked"):
        path = write(tmp_path, net([layer("x", "Convolution", [a, a[0, 0]], data=data,
                                          packed_dims=packed_dims)]))
        got = io.read_caffemodel(path)["x"]
        np.testing.assert_array_equal(got[0], a)
        np.testing.assert_array_equal(got[1], a[0, 0])
    # a repeated field may come in pieces (protobuf concatenates): unpacked, a field, packed
    half = a.ravel()[:7]
    msg = (b"".join(key(5, 5) + struct.pack("<f", x) for x in half) + vint(90, 1)
           + ld(5, a.ravel()[7:].tobytes()) + ld(7, ld(1, b"".join(map(varint, a.shape)))))
    got = io.read_caffemodel(write(tmp_path, net([ld(1, "x") + ld(7, msg)])))
    np.testing.assert_array_equal(got["x"][0], a)
    # a tag is a varint, which may be written in more bytes than needed: 0x2d as 0xad 0x00
    msg = (b"\xad\x00" + struct.pack("<f", 1.5) + key(5, 5) + struct.pack("<f", 2.5)
           + ld(7, ld(1, varint(2))))
    got = io.read_caffemodel(write(tmp_path, net([ld(1, "x") + ld(7, msg)])))
    np.testing.assert_array_equal(got["x"][0], [1.5, 2.5])


def test_count_not_matching_the_shape_is_refused(tmp_path):
    msg = ld(5, np.zeros(5, "<f4").tobytes()) + ld(7, ld(1, varint(2) + varint(3)))
    path = write(tmp_path, net([ld(1, "conv1_1") + ld(7, msg)]))
    with pytest.raises(ValueError) as e:
        io.read_caffemodel(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "conv1_1" in msg
    assert "5 values in data for shape (2, 3) (6 expected)" in msg


def test_truncated_file_is_one_line_naming_the_file(tmp_path, rng):
    full = net([layer("conv1_1", "Convolution", [arr(rng, 4, 3, 3, 3), arr(rng, 4)]),
                layer("fc6", "InnerProduct", [arr(rng, 8, 12)], data="unpacked")])
    io.read_caffemodel(write(tmp_path, full))
    end_of_header = len(ld(1, "test-net") + ld(3, "input"))
    for cut in (end_of_header + 1, end_of_header + 3, len(full) // 2, len(full) - 1):
        path = write(tmp_path, full[:cut], f"cut{cut}.caffemodel")
        with pytest.raises(ValueError) as e:
            io.read_caffemodel(path)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"read_caffemodel: {path}: "), msg
        assert "cut short" in msg or "values in data" in msg, msg


def test_lying_length_is_refused_before_allocating(tmp_path):
    claim = 1 << 28  # 256 MB of floats announced in a file of a few bytes
    lying_data = ld(1, "x") + ld(7, key(5, 2) + varint(claim) + b"\0" * 16)
    lying_layer = key(100, 2) + varint(claim) + ld(1, "x")
    lying_dims = ld(1, "x") + ld(7, ld(5, b"\0" * 4) + ld(7, ld(1, varint(1 << 40) * 3)))
    for i, data in enumerate((lying_data, lying_layer, lying_dims)):
        path = write(tmp_path, ld(1, "n") + (data if i == 1 else ld(100, data)), f"l{i}.caffemodel")
        tracemalloc.start()
        try:
            with pytest.raises(ValueError) as e:
                io.read_caffemodel(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak  # nothing near the claim was allocated
        assert str(path) in str(e.value) and "\n" not in str(e.value)
        assert ("claims" in str(e.value)) if i < 2 else "expected)" in str(e.value)


def test_each_blob_is_copied_out_of_the_file_once(tmp_path, rng):
    """The read allocates the arrays it returns and little else: no second copy of a blob
    (fc6 of the authors' FCN-8s is 411 MB), packed or unpacked. (tracemalloc sees NumPy's
    allocations, not the file's memory map.)"""
    packed, unpacked = arr(rng, 1024, 1024), arr(rng, 512, 512)  # 4 MB, 1 MB
    path = write(tmp_path, net([layer("fc6", "Convolution", [packed]),
                                layer("fc7", "Convolution", [unpacked], data="unpacked")]))
    tracemalloc.start()
    try:
        got = io.read_caffemodel(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got["fc6"][0], packed)
    np.testing.assert_array_equal(got["fc7"][0], unpacked)
    assert peak < packed.nbytes + unpacked.nbytes + (1 << 19), peak  # + 0.5 MB of bookkeeping


@pytest.mark.parametrize("data, fault", [
    (b"", "empty"),
    (b'name: "VGG_ILSVRC_16_layers"\nlayers {\n', "wire type"),  # a text prototxt
    (ld(1, "net") + vint(3, 1), "no layer"),  # a valid message, but no layers
    (ld(1, "n") + key(100, 3) + vint(1, 1), "never closed"),
    (ld(1, "n") + key(100, 4), "never started"),
    (ld(1, "n") + b"\xff" * 11 + b"\x01", "varint longer than 10 bytes"),
    (ld(1, "n") + b"\x00\x00" + ld(100, ld(1, "x")), "field number 0"),
    (ld(1, "n") + key(100, 3) + key(7, 4), "end of group 7 inside group 100"),
    (ld(1, "n") + ld(100, ld(1, b"\xff\xfe")), "not UTF-8"),
    (ld(1, "n") + ld(100, ld(1, "x") + ld(7, ld(5, b"\0" * 6))), "not a multiple of 4"),
    (ld(1, "n") + ld(100, ld(1, "x") + ld(7, ld(5, b"\0" * 4) + ld(7, ld(1, varint(-1))))),
     "negative dimension"),
    (ld(1, "n") + ld(100, ld(1, "x") + ld(7, vint(1, -2) + vint(2, 1) + ld(5, b"\0" * 4))),
     "negative dimension in shape (-2, 1, 0, 0)"),
    (ld(1, "n") + ld(2, ld(1, ld(1, "conv1"))), "V0 layer"),
])
def test_damaged_files_are_one_line_errors(tmp_path, data, fault):
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as e:
        io.read_caffemodel(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and fault in msg, msg


def test_missing_file_and_duplicate_names(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="nowhere.caffemodel"):
        io.read_caffemodel(tmp_path / "nowhere.caffemodel")
    path = write(tmp_path, net([layer("a", "Convolution", [arr(rng, 2)])] * 2))
    with pytest.raises(ValueError, match="two layers named 'a'"):
        io.read_caffemodel(path)


# ---------------------------------------------------------------- import_weights

def test_vgg16_inner_product_fc6_fc7_become_convolutions(tmp_path, rng):
    state = vgg16_state(rng)
    c5, fc = state["conv5_3.weight"].shape[0], state["fc6.weight"].shape[0]
    layers = caffe_layers({k: v for k, v in state.items() if not k.startswith("fc")})
    ip6, ip7 = arr(rng, fc, c5 * 49), arr(rng, fc, fc)
    b6, b7 = state["fc6.bias"], state["fc7.bias"]
    fc8 = [arr(rng, 10, fc), arr(rng, 10)]  # the ImageNet classifier, dropped
    for v1 in (False, True):  # new-style 2-d blobs; V1 with legacy (1, 1, F, K) dims
        make = v1layer if v1 else layer
        dims = "legacy" if v1 else "shape"
        msgs = [make(n, "Convolution", bl, dims=dims) for n, bl in layers.items()]
        msgs += [make("fc6", "InnerProduct", [ip6, b6], dims=dims),
                 make("fc7", "InnerProduct", [ip7, b7], dims=dims),
                 make("fc8", "InnerProduct", fc8, dims=dims)]
        path = write(tmp_path, net(msgs, v1=v1), f"vgg16_v1{v1}.caffemodel")
        got = io.import_weights(path)
        assert set(got) == set(state)
        assert got["fc6.weight"].shape == (fc, c5, 7, 7) and got["fc7.weight"].shape == (fc, fc, 1, 1)
        assert got["fc6.bias"].shape == (fc,) and got["conv2_1.bias"].shape == (state["conv2_1.bias"].shape)
        # the 7x7 conv on a 7x7 map computes the InnerProduct on the map flattened in C-order
        x = rng.standard_normal((2, c5, 7, 7)).astype(np.float32)
        conv = F.conv2d(Tensor(x), Tensor(got["fc6.weight"]), Tensor(got["fc6.bias"])).data
        np.testing.assert_allclose(conv[:, :, 0, 0], x.reshape(2, -1) @ ip6.T + b6, rtol=1e-4,
                                   atol=1e-4)
        h = rng.standard_normal((2, fc, 1, 1)).astype(np.float32)
        conv = F.conv2d(Tensor(h), Tensor(got["fc7.weight"]), Tensor(got["fc7.bias"])).data
        np.testing.assert_allclose(conv[:, :, 0, 0], h.reshape(2, -1) @ ip7.T + b7, rtol=1e-4,
                                   atol=1e-4)
        for k in state:
            if not k.startswith("fc"):
                np.testing.assert_array_equal(got[k], state[k])  # BGR went back to RGB
        # the trunk fits a minifcn FCN of that width
        model = models.fcn32s(width=TINY)
        model.load_state_dict(io.merge_state(model, got))


def test_conv1_1_reversed_by_import_weights_not_by_read_caffemodel(tmp_path, rng):
    state = vgg16_state(rng)
    layers = caffe_layers(state)
    path = write(tmp_path, net([layer(n, "Convolution", bl) for n, bl in layers.items()]))
    raw = io.read_caffemodel(path)["conv1_1"][0]
    np.testing.assert_array_equal(raw, layers["conv1_1"][0])  # as stored: BGR
    np.testing.assert_array_equal(raw[:, ::-1], state["conv1_1.weight"])
    got = io.import_weights(path)
    np.testing.assert_array_equal(got["conv1_1.weight"], state["conv1_1.weight"])  # RGB
    assert got["conv1_1.weight"].flags.c_contiguous
    kept = io.import_weights(path, bgr_to_rgb=False)
    np.testing.assert_array_equal(kept["conv1_1.weight"], raw)
    np.testing.assert_array_equal(kept["conv1_2.weight"], got["conv1_2.weight"])


def test_at_once_scale_layers_are_skipped(tmp_path, rng):
    model = models.fcn8s_atonce(width=TINY)
    assert AT_ONCE_SCALES == {"scale_pool4": model.scale_pool4.factor,
                              "scale_pool3": model.scale_pool3.factor}
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    layers = caffe_layers(state)
    c4, c3 = state["conv4_3.weight"].shape[0], state["conv3_3.weight"].shape[0]
    order = list(layers)
    for scale, c, before in (("scale_pool4", c4, "score_pool4"), ("scale_pool3", c3, "score_pool3")):
        order.insert(order.index(before), scale)
        layers[scale] = [np.full(c, AT_ONCE_SCALES[scale], np.float32)]
    path = write(tmp_path, net([layer(n, "Scale" if n.startswith("scale") else "Convolution",
                                      layers[n]) for n in order]))
    assert "scale_pool4" in io.read_caffemodel(path)  # raw: every layer with blobs
    got = io.import_weights(path)
    assert set(got) == set(state)  # no scale_* keys
    model.load_state_dict(got)
    layers["scale_pool3"] = [np.full(c3, 0.001, np.float32)]  # not what minifcn computes
    path = write(tmp_path, net([layer(n, "Convolution", layers[n]) for n in order]), "bad.caffemodel")
    with pytest.raises(ValueError, match="scale_pool3 does not hold 0.0001"):
        io.import_weights(path)


def test_import_refuses_what_it_cannot_convert(tmp_path, rng):
    layers = caffe_layers(vgg16_state(rng))
    for change, fault in [
        (lambda ls: ls.pop("conv3_2"), "missing layers: conv3_2"),
        (lambda ls: ls.update(cls_score=[arr(rng, 2, 2)]), "do not have: cls_score"),
        (lambda ls: ls["conv1_2"].append(arr(rng, 2)), "conv1_2 has 3 blobs"),
        (lambda ls: ls.update(conv2_1=[arr(rng, 8, 5, 3, 3), arr(rng, 8)]), "conv2_1 weight"),
        (lambda ls: ls.update(fc6=[arr(rng, 4, 100), arr(rng, 4)]), "fc6 (InnerProduct)"),
        (lambda ls: ls.update(upscore=[arr(rng, 2, 2, 4, 4), np.ones(2, np.float32)]),
         "non-zero bias"),
    ]:
        changed = {k: list(v) for k, v in layers.items()}
        change(changed)
        with pytest.raises(ValueError, match=fault.replace("(", r"\(").replace(")", r"\)")):
            from_caffe(changed)
    del layers["fc7"]  # through import_weights, the error names the file
    path = write(tmp_path, net([layer(n, "Convolution", bl) for n, bl in layers.items()]))
    with pytest.raises(ValueError, match=f"from_caffe: {path}: missing layers: fc7"):
        io.import_weights(path)


def test_caffemodel_found_by_content_and_torch_files_left_alone(tmp_path, rng):
    from _helpers import fixture

    state = vgg16_state(rng)
    data = net([layer(n, "Convolution", bl) for n, bl in caffe_layers(state).items()])
    unnamed = write(tmp_path, data, "weights.dat")  # no .caffemodel suffix
    v1 = write(tmp_path, net([v1layer(n, "Convolution", bl) for n, bl in
                              caffe_layers(state).items()], v1=True)[len(ld(1, "test-net") + ld(3, "input")):],
               "v1.weights")  # no name: starts with a layers field
    for path in (unnamed, v1):
        assert looks_like_caffemodel(path)
        np.testing.assert_array_equal(io.import_weights(path)["fc6.weight"], state["fc6.weight"])
    legacy = write(tmp_path, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.",
                   "legacy.pth")  # torch's legacy stream: a pickle of its magic number
    safet = write(tmp_path, struct.pack("<Q", 10) + b'{"a":{}}  ', "w.safetensors")
    tar = write(tmp_path, b"storages" + b"\0" * 92 + b"0000644\0", "old.pth")  # torch <= 0.1.9
    # a valid NetParameter, but one that starts with neither a name nor a layer: not guessed
    odd = write(tmp_path, vint(5, 1) + data, "odd.dat")
    for path in (fixture("vgg16_tiny.pt"), fixture("fcn8s_port_tiny.pt"), legacy, safet, tar, odd):
        assert not looks_like_caffemodel(path), path
    got = io.import_weights(fixture("vgg16_tiny.pt"))  # torchvision's names, via torchfile
    assert "fc6.weight" in got
    with pytest.raises(ValueError) as e:
        io.import_weights(legacy)
    assert "read_caffemodel" not in str(e.value)
    with pytest.raises(ValueError, match="is a caffemodel; kind='fcn_port'"):
        io.import_weights(unnamed, kind="fcn_port")
