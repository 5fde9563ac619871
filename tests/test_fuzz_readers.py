"""Fuzzing every weight reader: mutated copies of valid files (bytes flipped, cut, inserted,
repeated, lengths made huge; tests/_fuzz.py) must each end in a value or in one of minifcn's
one-line errors (a minifcn.io.errors.WeightFileError naming the file), within a time and a
memory bound per case, in a worker process of its own.

MINIFCN_FUZZ_CASES (default 200) sets the cases per reader; ``pytest -s`` prints each reader's
counts by mutation and outcome (the long run in docs/code.md is this test with 5000).

The seed files are written by the real tools, or by encoders independent of the readers:
Caffe's protobuf by tests/_caffe_encoder.py, torch.save's zip and legacy stream by torch itself
(tests/fixtures, made by tests/fixtures/make_fixtures.py), .safetensors by the safetensors
package (by hand below where it is not installed), .npz by np.savez and np.savez_compressed.
Besides the readers, import_weights (read, then renamed into minifcn's layers, as --init-from
does) is fuzzed on an FCN it takes: the port's tiny FCN-8s, and an FCN-32s in Caffe's format.
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from minifcn import models

from _caffe_encoder import caffe_layers, layer, net, v1layer
from _helpers import fixture

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = int(os.environ.get("MINIFCN_FUZZ_CASES", "200"))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the worker's bounds use Linux's RLIMIT_AS and SIGALRM")


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv1_1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
            "conv1_1.bias": rng.normal(size=4).astype(np.float32),
            "fc.weight": rng.normal(size=(5, 6)),  # float64
            "steps": np.arange(3, dtype=np.int64), "scale": np.full(2, 0.5, np.float16)}


def _safetensors_by_hand(arrays):
    """The format's layout (8-byte header length, JSON, data), independent of the reader."""
    names = {"float32": "F32", "float64": "F64", "int64": "I64", "float16": "F16"}
    header, data = {}, b""
    for k, a in arrays.items():
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": names[a.dtype.name], "shape": list(a.shape),
                     "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def seeds(reader, folder):
    """Valid files for ``reader``, written by the real tools or independent encoders."""
    a = _arrays()
    if reader == "caffemodel":
        paths = {"new.caffemodel": net([
            layer("conv1", "Convolution", [a["conv1_1.weight"], a["conv1_1.bias"]]),
            layer("fc", "InnerProduct", [a["fc.weight"]], data="unpacked", dims="legacy")]),
            "v1.caffemodel": net([v1layer("conv", "Convolution", [a["conv1_1.bias"]],
                                          data="double", diff=False)], v1=True)}
        for name, raw in paths.items():
            (folder / name).write_bytes(raw)
        return [str(folder / n) for n in paths]
    if reader == "import-caffemodel":  # an FCN-32s the renaming takes, at width 1/64
        rng = np.random.default_rng(0)
        shapes = models.build("fcn32s", n_class=3, width=1 / 64).state_dict()
        state = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in shapes.items()}
        (folder / "fcn32s.caffemodel").write_bytes(net([
            layer(name, "Convolution", blobs) for name, blobs in caffe_layers(state).items()]))
        return [str(folder / "fcn32s.caffemodel")]
    if reader == "torch-zip":
        return [fixture("dtypes_tiny.pt"), fixture("fcn8s_port_tiny.pt")]
    if reader == "import-torch":
        return [fixture("fcn8s_port_tiny.pt")]
    if reader == "torch-legacy":
        return [fixture("legacy_tiny.pt")]
    if reader == "safetensors":
        path = folder / "w.safetensors"
        try:
            from safetensors.numpy import save_file
        except ImportError:
            path.write_bytes(_safetensors_by_hand(a))
        else:
            save_file(a, str(path), metadata={"format": "np"})
        return [str(path)]
    if reader == "npz":
        np.savez(folder / "plain.npz", **a)
        np.savez_compressed(folder / "compressed.npz", **a)
        return [str(folder / "plain.npz"), str(folder / "compressed.npz")]
    assert reader in ("checkpoint", "checkpoint-meta")
    meta = np.array(json.dumps({"step": 3, "config": {"model": "fcn8s", "width": 0.5}}))
    np.savez(folder / "ckpt.npz", **{f"model/{k}": v for k, v in a.items()}, __meta__=meta)
    return [str(folder / "ckpt.npz")]


def fuzz(reader, cases, paths, first=0, **env):
    """The worker's report (tests/_fuzz.py) for ``cases`` cases of ``reader`` on ``paths``."""
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, os.path.join(HERE, "_fuzz.py"), reader, str(cases),
                           str(first), *paths], capture_output=True, text=True, env=env,
                          timeout=120 + 6 * cases)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def table(report):
    """Per mutation, how many cases gave each outcome: 'flip: value 12, NpzFileError 30'."""
    lines = [f"{report['reader']}: {report['cases']} cases, slowest {report['slowest']} s, "
             f"max RSS {report['max_rss_mib']} MiB"]
    for mutation, counts in sorted(report["outcomes"].items()):
        lines.append(f"  {mutation:<9}" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


READERS = ("caffemodel", "torch-zip", "torch-legacy", "safetensors", "npz", "checkpoint",
           "checkpoint-meta", "import-caffemodel", "import-torch")


@pytest.mark.parametrize("reader", READERS)
def test_mutated_weight_files_end_in_a_value_or_a_one_line_error_in_bounded_time_and_memory(
        reader, tmp_path):
    report = fuzz(reader, CASES, seeds(reader, tmp_path))
    print("\n" + table(report))
    assert not report["failures"], "\n".join(report["failures"][:20])
    assert sum(sum(c.values()) for c in report["outcomes"].values()) == CASES
    # the mutations reach past the first check: some cases are read, some refused
    outcomes = {k for c in report["outcomes"].values() for k in c}
    assert len(outcomes) >= 2, outcomes


@pytest.mark.parametrize("broken, failure", [
    ("bare", "struct.error"), ("greedy", "MemoryError"), ("slow", "over 0.5 s"),
    ("chatty", "not one line"), ("anonymous", "not one line naming the file"),
    ("partial", "read in part, 1 of 2 tensors")])
def test_the_worker_catches_each_kind_of_failure(broken, failure, tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"PK" + bytes(100))
    report = fuzz(broken, 2, [str(path)], MINIFCN_FUZZ_SECONDS="0.5")
    assert len(report["failures"]) == 2 and all(failure in f for f in report["failures"])
