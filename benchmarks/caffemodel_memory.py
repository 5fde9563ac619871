"""Peak memory of reading a caffemodel: minifcn.io.read_caffemodel and minifcn.io.import_weights
on a width-1 FCN-8s, 21 classes (about the size of the authors' fcn8s-heavy-pascal.caffemodel).

    python benchmarks/caffemodel_memory.py [--before COMMIT | --before none] [--repeat N]

The file: the learned layers of minifcn's FCN-8s at width 1 (conv1_1 ... fc7 as convolutions,
score_*, upscore* as deconvolutions without bias), each blob as Caffe writes it (a BlobProto
with packed float `data` and a BlobShape, no diff), written by the tests' own protobuf encoder
(tests/_caffe_encoder.py, independent of the reader) into a temporary folder under /tmp and
deleted at the end. fc6, (4096, 512, 7, 7) float32, is 411 MB (392 MiB) of it.

The measure: peak RSS of a fresh Python process that imports minifcn, calls the function once
on the file and reports its high-water RSS (VmHWM of /proc/self/status, Linux). That is what a
user sees, the file's memory-mapped pages included (read_caffemodel maps the file and copies the
blobs out of the map), where tracemalloc would see only the arrays. Not resource.getrusage's
ru_maxrss: Linux carries it across fork and exec, so a child started by a big parent reports
the parent's peak. Each (code, function) runs --repeat times, each in a fresh process; the
table gives the median. The file is written by a process of its own, so this one stays small.

The code: this checkout's minifcn (the folder above this script), and, with --before COMMIT
(default 97b3ee8, before each blob was copied once), that commit's minifcn/ extracted with
`git archive` into a temporary folder, measured by the same child process code.

The ideal: what the process holds before the call (Python, NumPy, minifcn) + the file (mapped)
+ the arrays returned. Sizes in MiB (2**20 bytes).
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from _common import ROOT, commit, machine, markdown_table  # benchmarks/ is on the path

MIB = 1 << 20

CHILD = r"""
import json, os, sys
tree, function, path = sys.argv[1:4]
sys.path.insert(0, tree)
import minifcn
from minifcn import io
assert os.path.dirname(os.path.dirname(os.path.abspath(minifcn.__file__))) == tree, minifcn.__file__


def peak_rss():  # this process's high-water RSS, file-mapped pages included
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))


before = peak_rss()
got = getattr(io, function)(path)
peak = peak_rss()
arrays = [a for v in got.values() for a in (v if isinstance(v, list) else [v])]
print(json.dumps({"before_call": before, "peak": peak, "arrays": sum(a.nbytes for a in arrays),
                  "n": len(arrays)}))
"""


def write_fcn8s(path):
    """The width-1 FCN-8s as a caffemodel, layer by layer (the bytes of the encoder's net(): a
    name, an input, then one `layer` message per layer), so the whole file is never in memory."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, ROOT)
    from _caffe_encoder import caffe_layers, ld, layer
    from minifcn import models

    state = models.fcn8s(n_class=21, width=1).state_dict()
    layers = caffe_layers(state)  # Caffe's layout: conv1_1 reads BGR
    del state
    with open(path, "wb") as f:
        f.write(ld(1, "fcn8s-width1") + ld(3, "input"))
        for name in list(layers):
            kind = "Deconvolution" if name.startswith("upscore") else "Convolution"
            f.write(ld(100, layer(name, kind, layers.pop(name), diff=False)))


def measure(tree, function, path):
    done = subprocess.run([sys.executable, "-c", CHILD, tree, function, path],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        sys.exit(f"{function} with minifcn from {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="97b3ee8",
                   help="the commit to compare with ('none': this checkout only)")
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per (code, function)")
    p.add_argument("--write", metavar="PATH", help=argparse.SUPPRESS)  # the writing process
    args = p.parse_args()
    if args.write:
        write_fcn8s(args.write)
        return
    work = tempfile.mkdtemp(prefix="caffemodel-memory-", dir="/tmp")
    try:
        trees = {"now": ROOT}
        if args.before != "none":
            before = os.path.join(work, "before")
            os.mkdir(before)
            archive = subprocess.run(["git", "-C", ROOT, "archive", args.before, "minifcn"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
            trees = {args.before: before, "now": ROOT}
        path = os.path.join(work, "fcn8s-width1.caffemodel")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write", path], check=True)
        size = os.path.getsize(path)
        print(f"file: {path}, {size / MIB:.0f} MiB ({size:,} bytes)", file=sys.stderr)
        rows = []
        for function in ("read_caffemodel", "import_weights"):
            got = {}
            for label, tree in trees.items():
                runs = [measure(tree, function, path) for _ in range(args.repeat)]
                got[label] = runs
                print(f"{function} {label}: peak MiB "
                      f"{[round(r['peak'] / MIB) for r in runs]}, before the call "
                      f"{[round(r['before_call'] / MIB) for r in runs]}", file=sys.stderr)
            runs = got["now"]
            base = statistics.median(r["before_call"] for r in runs)
            arrays = runs[0]["arrays"]
            rows.append((function, base, arrays,
                         {k: statistics.median(r["peak"] for r in v) for k, v in got.items()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    labels = list(trees)
    head = (["call", "file", "arrays returned", "before the call"]
            + [f"peak RSS, {'commit ' + k if k != 'now' else 'this commit'}" for k in labels]
            + ["ideal: before the call + file + arrays"])
    print(markdown_table(head, [
        [f"`io.{function}(path)`", f"{size / MIB:.0f}", f"{arrays / MIB:.0f}", f"{base / MIB:.0f}"]
        + [f"{peaks[k] / MIB:.0f}" for k in labels] + [f"{(base + size + arrays) / MIB:.0f}"]
        for function, base, arrays, peaks in rows]))
    print()
    print(f"Made by: `python benchmarks/caffemodel_memory.py` · {datetime.date.today()} · "
          f"commit {commit()} · {machine()}")


if __name__ == "__main__":
    main()
