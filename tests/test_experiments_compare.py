"""The comparison experiments (python -m minifcn.experiments.encoder_decoders and .context,
on minifcn/experiments/compare.py): each prints its table from its own runs, with the columns
the docs show, writes table.json and its figures; boundary IU scores only the pixels near an
edge; a second call refuses to overwrite the runs."""
import json
import statistics

import numpy as np
import pytest

from minifcn import metrics, training
from minifcn.training.step import predict_labels

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)
TINY = ["--iters", "2", "--seeds", "2", "--size", "40", "--n-train", "8", "--n-val", "4",
        "--steps", "1", "--batch-size", "4", "--device", "cpu"]


def _rows(table):
    return [line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| net |")]


def test_encoder_decoders_prints_its_table_from_its_runs(tmp_path, capsys):
    from minifcn.experiments import encoder_decoders as ed

    out = tmp_path / "runs"
    assert ed.main(TINY + ["--nets", "fcn8s,unet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| net | start | mean IU | boundary IU | params | MACs / image | time / step |" in printed
    rows = json.loads((out / "table.json").read_text())
    assert [(r["model"], r["start"]) for r in rows] == [
        ("fcn8s", "classifier"), ("fcn8s", "scratch"), ("unet", "scratch")]
    for r, cells in zip(rows, _rows(printed)):
        assert cells[0] == f"| {r['label']}" and cells[1] == r["start"]
        # each seed's mean IU is the best record of its own run folder
        for run, iu in zip(r["runs"], r["ius"]):
            records = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
            assert iu == max(rec["mean_iu"] for rec in records)
        assert cells[2].startswith(f"{100 * statistics.fmean(r['ius']):.1f} ± ")
        model, _ = training.load_model(f"{r['runs'][0]}/{training.BEST}")
        assert r["params"] == sum(p.data.size for p in model.parameters())
    assert (out / "predictions.png").stat().st_size > 0
    # boundary IU, recomputed from the best checkpoint of the first U-Net run: only pixels
    # within 3 of an edge of the truth count
    unet = rows[2]
    model, config = training.load_model(f"{unet['runs'][0]}/{training.BEST}")
    val = training.dataset(config, "val")
    from minifcn.data import to_input

    x = np.stack([to_input(val[i][0]) for i in range(len(val))])
    y = np.stack([val[i][1] for i in range(len(val))])
    near = metrics.boundary_mask(y, 3)
    assert 0 < near.mean() < 1
    want = metrics.scores(metrics.confusion_matrix(y[near], predict_labels(model, x)[near],
                                                   model.config["n_class"]))["mean_iu"]
    assert unet["boundary"][0] == pytest.approx(want)
    with pytest.raises(SystemExit, match="already holds runs"):
        ed.main(TINY + ["--nets", "unet", "--out", str(out)])


def test_context_prints_its_table_and_draws_the_attention(tmp_path, capsys):
    from minifcn.experiments import context

    out = tmp_path / "runs"
    assert context.main(TINY + ["--nets", "deeplab-aspp,fcn8s-nonlocal", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "table.json").read_text())
    assert [r["model"] for r in rows] == ["deeplab-aspp", "fcn8s-nonlocal"]
    assert [c[0] for c in _rows(printed)] == ["| DeepLab-ASPP", "| FCN-8s + non-local"]
    assert all(r["start"] == "classifier" for r in rows)  # the same start for every net
    for name in ("predictions.png", "attention.png"):
        assert (out / name).stat().st_size > 0


def test_boundary_mask_against_a_window_loop():
    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = rng.integers(1, 12, 2)
        width = int(rng.integers(0, 4))
        t = rng.integers(0, 3, (2, h, w))
        if trial % 3 == 0:
            t[...] = 1  # one label: no edge anywhere
            t[:, 0, 0] = 255  # but an ignored pixel is a label of its own
        want = np.zeros(t.shape, bool)
        for n in range(2):
            for i in range(h):
                for j in range(w):
                    window = t[n, max(0, i - width):i + width + 1, max(0, j - width):j + width + 1]
                    want[n, i, j] = len(np.unique(window)) > 1
        np.testing.assert_array_equal(metrics.boundary_mask(t, width), want)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="boundary_mask: width"):
            metrics.boundary_mask(np.zeros((3, 3), int), bad)
