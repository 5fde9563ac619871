"""minifcn.io.safetensors: .safetensors written and read by hand; the safetensors package reads ours
and we read its; a header that lies about its tensors is refused before anything is allocated."""
import json
import struct

import numpy as np
import pytest

from minifcn.io.safetensors import (SafetensorsError, load_safetensors, read_safetensors_metadata,
                                 save_safetensors)

from _helpers import assert_same


def every_dtype(rng):
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "f64": rng.standard_normal((2, 5)),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": rng.integers(-2**62, 2**62, (3,)),
        "i32": rng.integers(-2**31, 2**31, (2, 2)).astype(np.int32),
        "i16": np.array([-32768, 0, 32767], np.int16),
        "i8": np.array([-128, 1, 127], np.int8),
        "u8": np.arange(11, dtype=np.uint8),
        "u16": np.array([0, 65535], np.uint16),
        "bool": np.array([[True, False, True]]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }


def encode(header, data, pad=True):
    """A .safetensors file from a header dict and the data buffer, encoded here by hand."""
    text = json.dumps(header).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# ---------------------------------------------------------------- our writer and reader

def test_round_trip_keeps_every_dtype_shape_and_value(tmp_path, rng):
    arrays = every_dtype(rng)
    save_safetensors(arrays, tmp_path / "w.safetensors", metadata={"step": "3"})
    back = load_safetensors(tmp_path / "w.safetensors")
    assert set(back) == set(arrays)
    for k in arrays:
        assert_same(back[k], arrays[k])
        assert back[k].flags.writeable and back[k].dtype.isnative
    assert read_safetensors_metadata(tmp_path / "w.safetensors") == {"step": "3"}


def test_non_contiguous_and_big_endian_arrays_are_written_as_their_values(tmp_path):
    arrays = {"t": np.arange(12.0).reshape(3, 4).T, "be": np.arange(5, dtype=">i4"),
              "émoji ✓": np.ones(2, np.float32)}
    save_safetensors(arrays, tmp_path / "w.safetensors")
    back = load_safetensors(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(back["t"], arrays["t"])
    assert back["be"].dtype == np.int32 and back["be"].tolist() == [0, 1, 2, 3, 4]
    assert back["émoji ✓"].tolist() == [1, 1]


def test_the_layout_is_the_formats(tmp_path):
    """Header length, JSON, space padding to 8 bytes, offsets into the buffer back to back in
    header order, larger item sizes first, the caller's order within one size."""
    arrays = {"b": np.arange(3, dtype=np.uint8), "a": np.arange(2, dtype=np.float32),
              "c": np.arange(2, dtype=np.float64), "d": np.arange(1, dtype=np.float32)}
    save_safetensors(arrays, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0 and raw[8:8 + n].endswith(b"}" + b" " * (n - raw[8:8 + n].rindex(b"}") - 1))
    header = json.loads(raw[8:8 + n])
    assert list(header) == ["c", "a", "d", "b"]
    assert header["c"] == {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
    assert header["a"]["data_offsets"] == [16, 24] and header["d"]["data_offsets"] == [24, 28]
    assert header["b"] == {"dtype": "U8", "shape": [3], "data_offsets": [28, 31]}
    assert raw[8 + n:] == (arrays["c"].tobytes() + arrays["a"].tobytes() + arrays["d"].tobytes()
                           + arrays["b"].tobytes())
    assert "__metadata__" not in header


def test_reads_a_file_encoded_by_hand(tmp_path):
    """Written here from the specification alone: unpadded header, little-endian bytes, BF16
    (read as float32: the top half of each float32), offsets in no particular header order."""
    f32 = np.array([1.5, -2.0, 3.25], "<f4")
    bf16 = (np.array([1.0, -0.5, 3.0e38, 2.0**-126], "<f4").view("<u4") >> 16).astype("<u2")
    i16 = np.array([[1, -2], [3, -4]], "<i2")
    data = bf16.tobytes() + f32.tobytes() + i16.tobytes() + bytes([1, 0])
    header = {"__metadata__": {"who": "hand"},
              "w": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]},
              "bf": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "flag": {"dtype": "BOOL", "shape": [2], "data_offsets": [28, 30]},
              "i": {"dtype": "I16", "shape": [2, 2], "data_offsets": [20, 28]}}
    (tmp_path / "h.safetensors").write_bytes(encode(header, data, pad=False))
    back = load_safetensors(tmp_path / "h.safetensors")
    assert list(back) == ["bf", "w", "i", "flag"]  # the data's order
    assert back["bf"].dtype == np.float32 and back["bf"].shape == (2, 2)
    bits = back["bf"].ravel().view("<u4")
    np.testing.assert_array_equal(bits, bf16.astype("<u4") << 16)  # exact, bit for bit
    assert back["bf"].ravel()[[0, 1, 3]].tolist() == [1.0, -0.5, 2.0**-126]
    assert back["w"].tolist() == [1.5, -2.0, 3.25]
    assert back["i"].tolist() == [[1, -2], [3, -4]] and back["i"].dtype == np.int16
    assert back["flag"].tolist() == [True, False]
    assert read_safetensors_metadata(tmp_path / "h.safetensors") == {"who": "hand"}


def test_a_file_with_no_tensors(tmp_path):
    save_safetensors({}, tmp_path / "e.safetensors")
    assert load_safetensors(tmp_path / "e.safetensors") == {}


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.array([1 + 2j])}, "complex128"),
    ({"x": np.array(["a"])}, "<U1"),
    ({"x": np.array([object()])}, "object"),
    ({"": np.zeros(1)}, "non-empty strings"),
    ({"__metadata__": np.zeros(1)}, "__metadata__"),
    ({3: np.zeros(1)}, "non-empty strings"),
])
def test_writer_refuses_what_the_format_cannot_hold_and_keeps_the_old_file(tmp_path, arrays,
                                                                          match):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(SafetensorsError, match=match):
        save_safetensors(arrays, path)
    assert path.read_bytes() == b"old"


def test_writer_refuses_metadata_that_is_not_str_to_str(tmp_path):
    with pytest.raises(SafetensorsError, match="metadata must be a dict of str to str"):
        save_safetensors({"x": np.zeros(1)}, tmp_path / "w.safetensors", metadata={"a": 1})


# ---------------------------------------------------------------- damaged files

GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]}}
DATA = bytes(11)


def with_(name, **changes):
    return {**GOOD, name: {**GOOD[name], **changes}}


DAMAGED = {
    "overlapping": (with_("b", data_offsets=[6, 9]), DATA[:9], "overlaps"),
    "a gap": (with_("b", data_offsets=[9, 12]), bytes(12), "leaves bytes 8..9 unused"),
    "not covering": (GOOD, DATA + b"x", "cover 11 bytes of the 12-byte"),
    "beyond the buffer": (with_("b", shape=[10**12], data_offsets=[8, 8 + 10**12]), DATA,
                          "ends at byte"),
    "shape and span disagree": (with_("a", shape=[10**9, 10**9]), DATA, "offsets span 8"),
    "unknown dtype": (with_("a", dtype="F8_E4M3"), DATA, "has dtype 'F8_E4M3'"),
    "negative dimension": (with_("a", shape=[-2]), DATA, "non-negative integers"),
    "boolean dimension": (with_("a", shape=[True, 2]), DATA, "non-negative integers"),
    "float dimension": (with_("a", shape=[2.0]), DATA, "non-negative integers"),
    "reversed offsets": (with_("b", data_offsets=[11, 8]), DATA, "begin <= end"),
    "three offsets": (with_("b", data_offsets=[8, 9, 11]), DATA, "expected \\[begin, end\\]"),
    "missing shape": ({**GOOD, "a": {"dtype": "F32", "data_offsets": [0, 8]}}, DATA,
                      "exactly dtype, shape and data_offsets"),
    "extra field": (with_("a", strides=[1]), DATA, "exactly dtype, shape and data_offsets"),
    "not an object": ([1, 2], DATA, "a JSON list"),
    "metadata not strings": ({**GOOD, "__metadata__": {"k": 1}}, DATA, "object of strings"),
    "bool bytes": (GOOD, bytes(8) + bytes([0, 1, 2]), None),  # b is U8: 2 is fine there
    "bad bool": (with_("b", dtype="BOOL"), bytes(8) + bytes([0, 1, 2]), "other than 0 and 1"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_lying_header_is_one_line_naming_the_file(tmp_path, case):
    header, data, match = DAMAGED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(encode(header, data))
    if match is None:
        assert load_safetensors(path)["b"].tolist() == [0, 1, 2]
        return
    with pytest.raises(SafetensorsError, match=match) as e:
        load_safetensors(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and message.startswith("load_safetensors")


@pytest.mark.parametrize("raw, match", [
    (b"", "too short"),
    (b"\x01\x02\x03", "too short"),
    (struct.pack("<Q", 10**15) + b"{}", "header length says 1000000000000000 bytes"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "header length says"),
    (struct.pack("<Q", 5) + b"{nope", "not UTF-8 JSON"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8 JSON"),
    (struct.pack("<Q", 22) + b'{"a": 1, "a": 2}      ', "appears twice"),
    (b"PK\x03\x04 a zip, not this", "header length says"),
])
def test_broken_framing_is_refused(tmp_path, raw, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(SafetensorsError, match=match) as e:
        load_safetensors(path, where="minifcn.io.load")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"minifcn.io.load: {path}")


def test_a_header_larger_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import minifcn.io.safetensors as st

    path = tmp_path / "big.safetensors"
    path.write_bytes(encode(GOOD, DATA))
    monkeypatch.setattr(st, "MAX_HEADER_SIZE", 64)
    with pytest.raises(SafetensorsError, match="exceeds 64 bytes"):
        load_safetensors(path)


@pytest.mark.parametrize("where", ["tensor", "metadata", "shape"])
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_header_nested_a_thousand_levels_deep_is_one_line_not_a_recursion_error(tmp_path,
                                                                                  where, depth):
    nested = "[" * depth + "]" * depth
    text = {"tensor": f'{{"a": {nested}}}', "metadata": f'{{"__metadata__": {nested}}}',
            "shape": f'{{"a": {{"dtype": "F32", "shape": {nested}, "data_offsets": [0, 0]}}}}'}
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(text[where])) + text[where].encode())
    with pytest.raises(SafetensorsError, match="nests JSON about a thousand levels deep") as e:
        load_safetensors(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_header_nested_just_under_the_parsers_limit_is_refused_in_a_short_line(tmp_path):
    nested = "[" * 500 + "]" * 500
    path = tmp_path / "deep.safetensors"
    text = f'{{"{"n" * 10_000}": {nested}}}'
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode())
    with pytest.raises(SafetensorsError, match="must have exactly dtype, shape") as e:
        load_safetensors(path)
    assert len(str(e.value)) < 400  # the name and the value shortened, however long or deep


def test_a_folder_is_named_a_folder(tmp_path):
    with pytest.raises(SafetensorsError, match="is a folder, expected a weights file"):
        load_safetensors(tmp_path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_safetensors(tmp_path / "none.safetensors")


# ---------------------------------------------------------------- the safetensors package

def test_we_read_the_packages_files(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    arrays = every_dtype(rng)
    st.save_file(arrays, str(tmp_path / "p.safetensors"), metadata={"format": "np"})
    back = load_safetensors(tmp_path / "p.safetensors")
    assert set(back) == set(arrays)
    for k in arrays:
        assert_same(back[k], arrays[k])
    assert read_safetensors_metadata(tmp_path / "p.safetensors") == {"format": "np"}


def test_the_package_reads_ours(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    arrays = every_dtype(rng)
    save_safetensors(arrays, tmp_path / "w.safetensors", metadata={"model": "FCN8s"})
    back = st.load_file(str(tmp_path / "w.safetensors"))
    assert set(back) == set(arrays)
    for k in arrays:
        assert_same(back[k], arrays[k])
    with safe_open(str(tmp_path / "w.safetensors"), framework="np") as f:
        assert f.metadata() == {"model": "FCN8s"}


def test_one_dtype_files_are_byte_for_byte_the_packages(tmp_path, rng):
    """With one dtype and names in sorted order, the package lays the file out as we do."""
    st = pytest.importorskip("safetensors.numpy")
    arrays = {k: rng.standard_normal(s).astype(np.float32)
              for k, s in [("a", (2, 3)), ("b", (5,)), ("c", ())]}
    st.save_file(arrays, str(tmp_path / "p.safetensors"), metadata={"m": "x"})
    save_safetensors(arrays, tmp_path / "w.safetensors", metadata={"m": "x"})
    assert (tmp_path / "w.safetensors").read_bytes() == (tmp_path / "p.safetensors").read_bytes()
