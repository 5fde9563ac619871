"""A protobuf encoder for Caffe's .caffemodel files, for the tests and benchmarks: varints and
length-delimited fields by hand, after caffe.proto's field numbers, independent of the reader
under test (minifcn/io/caffemodel.py). Used by tests/test_io_caffemodel.py, tests/test_evaluate.py,
tests/test_weights_doc.py and benchmarks/caffemodel_memory.py.
"""
import struct

import numpy as np


def varint(n):
    n &= (1 << 64) - 1  # a negative int32/int64 is written as its 64-bit two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def ld(field, payload):  # length-delimited: strings, messages, packed arrays
    payload = payload.encode() if isinstance(payload, str) else payload
    return key(field, 2) + varint(len(payload)) + payload


def vint(field, n):
    return key(field, 0) + varint(n)


# fields of every wire type that no reader of weights knows, to be skipped
UNKNOWN = (vint(90, 7) + key(91, 1) + b"\x01" * 8 + key(92, 5) + b"\x02" * 4 + ld(93, b"\x00\xff")
           + key(94, 3) + vint(1, 3) + key(95, 3) + ld(2, "x") + key(95, 4) + key(94, 4))


def blob(a, data="packed", dims="shape", packed_dims=True, diff=True):
    """BlobProto of array ``a``: data 'packed' / 'unpacked' floats or 'double' (double_data);
    dims 'shape' (BlobShape) or 'legacy' (num, channels, height, width, padded with 1s); diff:
    a zero diff (field 6, which readers skip) beside the data, or none, as Caffe writes its
    snapshots. Fields in number order, as protobuf writes them (data 5 before shape 7)."""
    a = np.asarray(a)
    msg = b""
    if dims == "legacy":
        for field, d in enumerate((1,) * (4 - a.ndim) + a.shape, start=1):
            msg += vint(field, d)
    if data == "packed":
        msg += ld(5, a.astype("<f4").tobytes())
    elif data == "unpacked":
        msg += b"".join(key(5, 5) + struct.pack("<f", x) for x in a.ravel())
    if diff:
        msg += ld(6, np.zeros(a.size, "<f4").tobytes())  # diff: skipped
    if dims == "shape":
        msg += ld(7, ld(1, b"".join(map(varint, a.shape))) if packed_dims
                  else b"".join(vint(1, d) for d in a.shape))
    if data == "double":
        msg += ld(8, a.astype("<f8").tobytes())
    return msg


def layer(name, kind, blobs, **kw):
    """LayerParameter: name 1, type 2, bottom 3, top 4 (skipped), blobs 7."""
    return (ld(1, name) + ld(2, kind) + ld(3, "bottom") + ld(4, name) + UNKNOWN
            + b"".join(ld(7, blob(b, **kw)) for b in blobs))


V1 = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39, "ReLU": 18}


def v1layer(name, kind, blobs, **kw):
    """V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6."""
    return (ld(2, "bottom") + ld(3, name) + ld(4, name) + vint(5, V1[kind])
            + b"".join(ld(6, blob(b, **kw)) for b in blobs))


def net(layers, v1=False, name="test-net"):
    """NetParameter: name 1, then layers 2 (V1) or layer 100."""
    return ld(1, name) + ld(3, "input") + b"".join(ld(2 if v1 else 100, m) for m in layers)


def caffe_layers(state):
    """minifcn state_dict -> Caffe layers in file order: {name: [weight, (bias)]}, conv1_1 BGR."""
    out = {}
    for k, v in state.items():
        name, kind = k.rsplit(".", 1)
        if name == "conv1_1" and kind == "weight":
            v = v[:, ::-1]
        out.setdefault(name, []).append(np.ascontiguousarray(v))
    return out
