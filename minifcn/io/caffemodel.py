"""Caffe's .caffemodel files, read without Caffe and without generated protobuf code.

A .caffemodel is one protobuf message, a ``NetParameter`` (caffe.proto), in protobuf's binary
wire format: a sequence of fields, each a varint *tag* ``field_number << 3 | wire_type`` then
its value: a varint (wire type 0), 8 bytes (1), a varint length and that many bytes (2: strings,
nested messages, packed arrays), the deprecated groups (3 ... 4), or 4 bytes (5). The reader
below knows the few fields that hold weights and skips every other field of every wire type:

    NetParameter      name 1, layers 2 (V1LayerParameter, old files), layer 100 (LayerParameter)
    LayerParameter    name 1, type 2 (a string, e.g. "Convolution"), blobs 7 (BlobProto)
    V1LayerParameter  name 4, type 5 (an enum, e.g. 14 = INNER_PRODUCT), blobs 6
    BlobProto         num, channels, height, width 1-4 (legacy dims), data 5 (float),
                      shape 7 (BlobShape: dim 1, int64), double_data 8

Every length is checked against the bytes left before anything is read or allocated, so a
truncated or damaged file is a one-line :class:`CaffemodelError` (a ValueError) naming the file,
not a crash or a MemoryError.
:func:`read_caffemodel` gives the raw blobs (Caffe's layouts, BGR conv1_1);
:func:`minifcn.io.fromcaffe.from_caffe` turns them into minifcn's state_dict
(``minifcn.io.import_weights`` does both).
"""
import math
import mmap
import os

import numpy as np

from .errors import WeightFileError, require_file

__all__ = ["read_caffemodel", "read_caffemodel_layers", "looks_like_caffemodel", "CaffemodelError"]

VARINT, I64, LEN, GROUP_START, GROUP_END, I32 = 0, 1, 2, 3, 4, 5

# V1LayerParameter.LayerType values (caffe.proto) of the layers FCN and VGG16 use
V1_TYPES = {4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN",
            17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
            25: "Eltwise", 39: "Deconvolution", 1: "Accuracy", 8: "Flatten"}


class CaffemodelError(WeightFileError):
    """A .caffemodel that cannot be read; the message (one line) names the file and the fault."""


class _Wire:
    """Field-by-field reading of a buffer holding protobuf messages; every error names the file."""

    def __init__(self, buf, path):
        self.buf, self.path = buf, path

    def fail(self, what, at):
        raise CaffemodelError(f"read_caffemodel: {self.path}: {what} (at byte {at})")

    def varint(self, pos, end):
        """(value, position after it) of the varint at ``pos`` (at most 10 bytes, < 2**64)."""
        value, shift, start = 0, 0, pos
        while True:
            if pos >= end:
                self.fail("truncated varint; the file is cut short or damaged", start)
            byte = self.buf[pos]
            value |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                self.fail("varint longer than 10 bytes", start)
        if value >= 1 << 64:
            self.fail("varint above 2**64", start)
        return value, pos

    def field(self, pos, end):
        """The field at ``pos``: (number, wire type, value, position after it). The value is an
        int for a varint, else the (start, stop) of its bytes; a group is skipped whole."""
        at = pos
        tag, pos = self.varint(pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            self.fail("field number 0; this is not a protobuf message", at)
        if wire == VARINT:
            value, pos = self.varint(pos, end)
            return number, wire, value, pos
        if wire == LEN:
            n, pos = self.varint(pos, end)
        elif wire in (I64, I32):
            n = 8 if wire == I64 else 4
        elif wire == GROUP_START:
            return number, wire, None, self._skip_group(number, pos, end, at)
        else:
            self.fail(f"field {number} has wire type {wire}, which protobuf does not have"
                      if wire != GROUP_END else f"end of group {number} that was never started", at)
        if n > end - pos:
            self.fail(f"field {number} claims {n} bytes but only {end - pos} are left; the file "
                      "is cut short or damaged", at)
        return number, wire, (pos, pos + n), pos + n

    def _skip_group(self, number, pos, end, at):
        open_groups = [number]  # a stack, not recursion: nesting depth is up to the file
        while open_groups:
            if pos >= end:
                self.fail(f"group {number} is never closed", at)
            tag_at = pos
            tag, pos = self.varint(pos, end)
            n, wire = tag >> 3, tag & 7
            if wire == GROUP_START:
                open_groups.append(n)
            elif wire == GROUP_END:
                if n != open_groups.pop():
                    self.fail(f"end of group {n} inside group {number}", tag_at)
            else:
                pos = self.field(tag_at, end)[3]
        return pos

    def fields(self, start, end):
        """Every field of the message in buf[start:end], as :meth:`field` gives them."""
        pos = start
        while pos < end:
            number, wire, value, after = self.field(pos, end)
            yield number, wire, value, pos
            pos = after

    def text(self, span, what, at):
        try:
            return bytes(self.buf[span[0]:span[1]]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8 text", at)

    def run(self, pos, end, tag_byte, size):
        """A run of unpacked repeated fixed-size values: each one tag byte then ``size`` bytes,
        starting at ``pos``. Scanned in blocks with NumPy (one Python step per block, not per
        value); nothing is copied. Returns (the pieces, each (offset of its first value, count,
        stride ``size + 1``); the position after the run)."""
        pieces = []
        stride = size + 1
        while True:
            rows = min((end - pos) // stride, 1 << 16)
            if rows == 0:
                break
            tags = np.frombuffer(self.buf, np.uint8, rows * stride, pos)[::stride]
            is_tag = tags == tag_byte
            del tags  # a view of the map: nothing may hold it when the map closes
            n = rows if is_tag.all() else int(np.argmin(is_tag))
            if n:
                pieces.append((pos + 1, n, stride))
            pos += n * stride
            if n < rows:
                break
        return pieces, pos

    def values(self, pieces, dtype):
        """The values of ``pieces`` ((offset, count, stride) each, in order) as one new array of
        ``dtype`` in native byte order: allocated once, each piece copied into it once."""
        out = np.empty(sum(n for _, n, _ in pieces), dtype)
        filled = 0
        for offset, n, stride in pieces:
            view = np.ndarray((n,), dtype.newbyteorder("<"), self.buf, offset, (stride,))
            out[filled:filled + n] = view  # the one copy (byte order converted on the way)
            filled += n
            del view
        return out


def _signed(value):
    return value - (1 << 64) if value >= 1 << 63 else value  # int32/int64 as protobuf writes them


def _blob(wire, start, end, where):
    """One BlobProto in buf[start:end] -> ndarray (float32, or float64 from double_data).

    The values are found first, as pieces of the file (a packed field is one piece, a run of
    unpacked ones one per block), and counted against the shape; then one array is allocated
    and each value copied into it once. (A blob is never held twice: fc6 of FCN-8s is 411 MB.)"""
    legacy, dims = {}, []
    pieces = {"data": [], "double_data": []}  # (offset, count, stride) in the file
    pos = start
    while pos < end:
        number, kind, value, after = wire.field(pos, end)
        if number in (1, 2, 3, 4) and kind == VARINT:  # num, channels, height, width
            legacy[number] = _signed(value)
        elif number == 7 and kind == LEN:  # shape: BlobShape { repeated int64 dim = 1 }
            for n, k, v, at in wire.fields(*value):
                if n == 1 and k == VARINT:
                    dims.append(_signed(v))
                elif n == 1 and k == LEN:  # packed
                    p = v[0]
                    while p < v[1]:
                        d, p = wire.varint(p, v[1])
                        dims.append(_signed(d))
        elif number in (5, 8) and kind in (LEN, I32 if number == 5 else I64):
            name, size = ("data", 4) if number == 5 else ("double_data", 8)
            if kind == LEN:  # packed: the length says how many bytes of values
                a, b = value
                if (b - a) % size:
                    wire.fail(f"{where}: packed {name} of {b - a} bytes, not a multiple of "
                              f"{size}", pos)
                pieces[name].append((a, (b - a) // size, size))
            else:  # unpacked: one tag per value; take the whole run at once
                run, run_end = wire.run(pos, end, (number << 3) | kind, size)
                if run:
                    pieces[name].extend(run)
                    after = run_end
                else:  # its tag in more bytes than needed (a valid varint): this one value
                    pieces[name].append((value[0], 1, size))
        pos = after
    if legacy:  # Caffe's rule (Blob::FromProto): any legacy dim set -> 4-d, unset ones 0
        shape = tuple(legacy.get(i, 0) for i in (1, 2, 3, 4))
    else:
        shape = tuple(dims)
    if any(d < 0 for d in shape):
        wire.fail(f"{where}: negative dimension in shape {shape}", start)
    name = "double_data" if pieces["double_data"] else "data"  # Caffe prefers double_data too
    count = sum(n for _, n, _ in pieces[name])
    expected = math.prod(shape)  # 1 for shape (): Caffe's count of a blob without dims
    if count != expected:  # checked before anything is allocated
        wire.fail(f"{where}: {count} values in {name} for shape {shape} "
                  f"({expected} expected)", start)
    dtype = np.dtype(np.float64 if name == "double_data" else np.float32)  # native byte order
    return wire.values(pieces[name], dtype).reshape(shape)


def _layer(wire, start, end, v1, at):
    """(name, type, [blobs]) of a LayerParameter (or V1LayerParameter if ``v1``)."""
    f_name, f_type, f_blobs = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, spans = None, None, []
    for number, wt, value, pos in wire.fields(start, end):
        if number == f_name and wt == LEN:
            name = wire.text(value, "a layer name", pos)
        elif number == f_type and v1 and wt == VARINT:
            kind = V1_TYPES.get(value, f"V1 type {value}")
        elif number == f_type and not v1 and wt == LEN:
            kind = wire.text(value, "a layer type", pos)
        elif number == f_blobs and wt == LEN:
            spans.append((value, pos))
        elif v1 and number == 1 and wt == LEN:
            wire.fail("a V0 layer (the format before 2014); upgrade the file with Caffe's "
                      "upgrade_net_proto_binary", pos)
    if name is None:
        name = f"(unnamed layer at byte {at})"
    blobs = [_blob(wire, a, b, f"layer {name!r} blob {i}") for i, ((a, b), _) in enumerate(spans)]
    return name, kind, blobs


def _open(path):
    path = require_file(path, "read_caffemodel", CaffemodelError)
    if os.path.getsize(path) == 0:
        raise CaffemodelError(f"read_caffemodel: {path}: the file is empty; not a caffemodel")
    return path


def read_caffemodel_layers(path):
    """Every layer of the NetParameter in ``path``, in file order: a list of
    ``(name, type, [blobs])`` (type a string such as 'Convolution', V1 enums translated; blobs
    as in :func:`read_caffemodel`, possibly none)."""
    path = _open(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        wire, layers, seen = _Wire(buf, path), [], False
        for number, kind, value, pos in wire.fields(0, len(buf)):
            if number in (2, 100) and kind == LEN:
                seen = True
                layers.append(_layer(wire, *value, v1=number == 2, at=pos))
        del wire  # every array above is a copy: nothing may hold the map when it closes
    if not seen:
        raise CaffemodelError(f"read_caffemodel: {path}: no layer (field 100) or layers (field 2) "
                              "in it; not a Caffe NetParameter")
    return layers


def read_caffemodel(path):
    """The weights of a Caffe .caffemodel: ``{layer name: [ndarray, ...]}`` for every layer that
    has blobs, in file order, each blob as Caffe stores it (raw: no renaming, no reshaping, no
    channel reordering; conv1_1 still expects BGR). Blob shapes follow Caffe: the 4-d legacy
    (num, channels, height, width) when any is set (V1 files: biases are (1, 1, 1, C), an
    InnerProduct weight (1, 1, out, in)), else BlobShape's dims. float32, or float64 for
    double_data. Raises FileNotFoundError, or CaffemodelError (a ValueError) in one line naming
    the file and the fault (truncated, damaged, a count that does not match the shape, two layers
    of one name, a folder).
    """
    out = {}
    for name, _, blobs in read_caffemodel_layers(path):
        if blobs:
            if name in out:
                raise CaffemodelError(f"read_caffemodel: {os.fspath(path)}: two layers named "
                                      f"{name!r} hold weights")
            out[name] = blobs
    return out


def looks_like_caffemodel(path):
    """True if the file starts as a NetParameter does: a name (field 1, printable text) or a
    layers (2) / layer (100) message whose length fits in the file, then a valid tag. Torch's
    files (zip 'PK', pickle 0x80, tar names), .npz and safetensors all fail this test."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(4096), os.fstat(f.fileno()).st_size
    except OSError:
        return False
    wire = _Wire(head, path)
    try:
        tag, pos = wire.varint(0, len(head))
        if tag & 7 != LEN or tag >> 3 not in (1, 2, 100):
            return False
        n, pos = wire.varint(pos, len(head))
        if n > size - pos:
            return False
        if tag >> 3 == 1:
            if pos + n > len(head) or not wire.text((pos, pos + n), "name", 0).isprintable():
                return False
            pos += n  # the next field is the net's first layer
        if pos < min(len(head), size):
            tag, _ = wire.varint(pos, len(head))
            return tag >> 3 != 0 and tag & 7 in (VARINT, I64, LEN, GROUP_START, I32)
        return True
    except ValueError:
        return False
