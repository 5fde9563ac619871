"""minifcn.experiments.shift_study, study (a) of python -m minifcn.experiments.paper_ablations
--study shift: it runs from the command line, writes its table and rescores; a rarefied net's
mean IU is computed over its dense scores; the methods are timed in alternation and their peak
memory seen; shift-and-stitch with one copy does the net's own work."""
import json

import numpy as np
import pytest


# ---------------------------------------------------------------- --study shift


@pytest.mark.slow
def test_the_shift_study_runs_from_the_cli_writes_its_table_and_rescores(tmp_path, capsys,
                                                                          monkeypatch):
    from minifcn.experiments import paper_ablations as ab
    from minifcn.experiments import shift_study

    monkeypatch.setenv("MINIFCN_NO_PROGRESS", "1")
    out = tmp_path / "abl"
    args = ["--study", "shift", "--iters", "2", "--seeds", "1", "--n-train", "16", "--n-val", "4",
            "--size", "48", "--device", "cpu", "--out", str(out), "--time-rounds", "1"]
    assert ab.main(args) == 0
    table = (out / "shift.md").read_text()
    printed = capsys.readouterr().out
    assert table.splitlines()[2] in printed  # the table is printed too
    for label, stride, _ in shift_study.METHODS.values():
        assert f"| {label} | {stride} |" in table
    assert (out / "shift.png").stat().st_size > 1000
    rows = json.loads((out / "summary.json").read_text())["shift"]
    assert [r["setting"] for r in rows] == list(shift_study.METHODS)
    for r in rows:
        assert r["ms_per_image"] > 0 and r["peak_bytes"] > 0
        if r["setting"] in shift_study.NETS:  # the study scores the checkpoint training validated
            assert r["mean_iu"] == pytest.approx(r["trained_best_mean_iu"], abs=1e-9)
    configs = [json.loads((out / "shift" / f"{net}-seed0" / "config.json").read_text())
               for net in shift_study.NETS]
    assert {c["pad1"] for c in configs} == {124}  # common_pad1: >= the 105 stride 8 needs
    assert [c["model"] for c in configs] == list(shift_study.NETS)
    assert {c["iters"] for c in configs} == {2} and {c["init"] for c in configs} == {"scratch"}
    # --rescore scores the same nets again without training: the same metrics
    assert ab.main(args + ["--rescore"]) == 0
    again = json.loads((out / "summary.json").read_text())["shift"]
    assert [r["mean_iu"] for r in again] == [r["mean_iu"] for r in rows]
    with pytest.raises(SystemExit):
        ab.main(["--study", "fixed", "--rescore", "--out", str(out)])
    # --score-weights: the float16 learned weights that skip_architectures --save-weights writes
    from minifcn.experiments.skip_architectures import save_weights

    for net in shift_study.NETS:
        save_weights(out / "shift" / f"{net}-seed0" / "checkpoint_best.npz",
                     tmp_path / "weights" / f"shapes-{net}.npz")
    assert ab.main(args[:-4] + ["--out", str(tmp_path / "w"), "--time-rounds", "1",
                                "--score-weights", str(tmp_path / "weights")]) == 0
    weighed = json.loads((tmp_path / "w" / "summary.json").read_text())["shift"]
    assert [r["setting"] for r in weighed] == list(shift_study.METHODS)
    assert [r["mean_iu"] for r in weighed] == pytest.approx([r["mean_iu"] for r in rows], abs=0.02)
    (tmp_path / "weights" / "shapes-fcn8s.npz").unlink()
    with pytest.raises(SystemExit, match="shapes-fcn8s.npz"):
        ab.main(args[:-4] + ["--out", str(tmp_path / "w"), "--score-weights",
                             str(tmp_path / "weights")])
    with pytest.raises(SystemExit, match="no checkpoint_best"):
        ab.main(args[:-4] + ["--out", str(tmp_path / "empty"), "--rescore"])


def tiny_nets(seed=0):
    """FCN-32s, 16s, 8s at width 1/16, conv1_1 padding 105, float64, eval mode, He-scale random
    weights with the trunk's conv biases <= 0 (so that rarefied == stitched exactly, as
    tests/test_models_shift.py checks) and random score layers (their zero start scores 0)."""
    from minifcn.models import fcn8s, fcn16s, fcn32s

    rng = np.random.default_rng(seed)
    nets = {}
    for name, build in (("fcn32s", fcn32s), ("fcn16s", fcn16s), ("fcn8s", fcn8s)):
        model = build(n_class=5, width=0.0625, pad1=105).double().eval()
        for key, p in model.named_parameters():
            if key.startswith("up"):
                continue
            if p.ndim == 4:
                p.data = rng.standard_normal(p.shape) * np.sqrt(2 / np.prod(p.shape[1:]))
            elif key.startswith("conv"):
                p.data = -np.abs(rng.standard_normal(p.shape)) * 0.1
            else:  # fc and score biases 0: no class favoured everywhere, the labels vary
                p.data = np.zeros(p.shape)
        model.conv1_1.weight.data /= 64  # pixels of std ~64
        nets[name] = model
    return nets


def linear_upsample(dense, a, b, size):
    """Full-size scores from a dense map whose cell t sits at input pixel b + a*t: linear
    interpolation between the two nearest cells per axis, cells off the map counting 0 (the
    bilinear transposed convolution's rim). A plain loop, for the test."""
    n, c, h, w = dense.shape
    out = np.zeros((n, c, size, size))
    for i in range(size):
        for j in range(size):
            qi, qj = (i - b) / a, (j - b) / a
            ti, tj = int(np.floor(qi)), int(np.floor(qj))
            for di, wi in ((0, 1 - (qi - ti)), (1, qi - ti)):
                for dj, wj in ((0, 1 - (qj - tj)), (1, qj - tj)):
                    u, v = ti + di, tj + dj
                    if 0 <= u < h and 0 <= v < w:
                        out[:, :, i, j] += wi * wj * dense[:, :, u, v]
    return out


def mean_iu(target, pred, n_class):
    """Mean IU by its definition: over the classes present in the truth or the prediction,
    TP / (TP + FP + FN), pixels labelled 255 left out."""
    keep = target != 255
    t, p = target[keep], pred[keep]
    ius = [np.sum((t == k) & (p == k)) / np.sum((t == k) | (p == k))
           for k in range(n_class) if np.any(t == k) or np.any(p == k)]
    return float(np.mean(ius))


class OneBatch:
    """A loader of one fixed (x, y) batch, for shift_study.evaluate."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def epoch(self, e):
        return iter([(self.x, self.y)])


@pytest.mark.slow
def test_a_rarefied_nets_mean_iu_is_computed_over_its_dense_scores():
    """shift_study scores the rarefied FCN-32s on its stride-8 (16) scores: the same mean IU as
    an independent computation from shift-and-stitch's interlaced coarse maps (equal to the
    rarefied ones when the trunk's biases are <= 0), interpolated by hand, and mean IU by its
    definition; and not the mean IU of the coarse net."""
    from minifcn import Tensor, no_grad
    from minifcn.models import coarse_scores, shift_and_stitch, stitched_scores
    from minifcn.models.shift import coarse_map
    from minifcn.experiments import shift_study

    nets = tiny_nets()
    rng = np.random.default_rng(1)
    # 48 + 2*105 - 2 is a multiple of 16: pool4 tiles, so the rarefied map keeps the coarse
    # net's last cell (at 40 pool3's output is odd, the stride-8 map ends one coarse cell short
    # and its scores fade over the last 8 pixels, where the longer stitched map does not)
    size = 48
    x = np.kron(rng.standard_normal((2, 3, 6, 6)), np.ones((8, 8))) * 60  # blocks of 8x8
    y = rng.integers(0, 5, (2, size, size))
    y[:, :4] = 255
    predicts = shift_study.methods(nets)
    cm = coarse_map(nets["fcn32s"])
    with no_grad():
        n = coarse_scores(nets["fcn32s"], Tensor(x)).shape[2]  # coarse cells per side
    seen = {}
    for key, f in (("rarefied16", 2), ("rarefied8", 4)):
        # rarefied cell t == stitched cell t + f - 1, from the coarse net's first cell to its
        # last (the stitched map runs on past it: its copies are larger images)
        m = f * (n - 1) + 1
        dense = shift_and_stitch(nets["fcn32s"], x, f).data[:, :, f - 1:f - 1 + m, f - 1:f - 1 + m]
        expected = linear_upsample(dense, float(cm.a / f), float(cm.b), size)
        pred = expected.argmax(1)
        got = shift_study.evaluate(predicts[key], OneBatch(x, y), 5)
        assert got["mean_iu"] == pytest.approx(mean_iu(y, pred, 5), abs=1e-12), key
        seen[key] = pred
    coarse = shift_study.evaluate(predicts["fcn32s"], OneBatch(x, y), 5)["mean_iu"]
    assert coarse != pytest.approx(mean_iu(y, seen["rarefied8"], 5), abs=1e-6)
    with no_grad():  # the stitched methods score the stitched map, upsampled and cropped
        for key, f in (("stitch2", 2), ("stitch4", 4)):
            assert np.array_equal(predicts[key](Tensor(x)).data,
                                  stitched_scores(nets["fcn32s"], Tensor(x), f).data)


def test_time_methods_alternates_the_methods_and_peak_bytes_sees_numpy_buffers():
    from minifcn.experiments import shift_study

    calls = []
    fns = {k: (lambda x, k=k: calls.append(k)) for k in "ABC"}
    seconds = shift_study.time_methods(fns, [0, 1], rounds=4)
    assert calls == list("ABC") + list("ABC" "CBA" "ABC" "CBA")  # a warm-up, then A B C, C B A
    assert {k: len(v) for k, v in seconds.items()} == {"A": 4, "B": 4, "C": 4}
    nbytes = 8 * 2**20
    peak = shift_study.peak_bytes(lambda x: np.ones(nbytes // 8).sum(), None)
    assert nbytes <= peak < nbytes + 2**20


def test_the_work_of_shift_and_stitch_with_one_copy_is_the_nets_own():
    """f = 1 is the net itself: one copy to score_fr, then a k 64, stride 32 bilinear
    upsampling, which is FCN-32s's upscore; and f = 2 does more than 4 times its work (4
    copies, each larger by its padding)."""
    from minifcn.experiments import shift_study
    from minifcn.models import fcn32s

    net = fcn32s(n_class=5, width=0.0625, pad1=105)
    assert shift_study.stitched_macs(net, 1, 64) == shift_study.macs(net, 64)
    assert shift_study.stitched_macs(net, 2, 64) > 4 * shift_study.macs(net, 64) * 0.99
