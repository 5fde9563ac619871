"""python -m minifcn.experiments.skip_architectures: it prints the table and saves float16 weights
that load as a checkpoint; seeds trained side by side are averaged; the table averages the seeds
that finished; a worker reports a failed run and the others go on."""
import json
import os

import numpy as np
import pytest

from minifcn import io, training


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def test_skip_architecture_script_prints_the_table_and_saves_loadable_weights(tmp_path, capsys):
    from minifcn.autograd import Tensor
    from minifcn.experiments import skip_architectures as skip

    out, weights = tmp_path / "runs", tmp_path / "weights"
    assert skip.main(["--iters", "2", "--size", "64", "--n-train", "8", "--n-val", "4",
                      "--device", "cpu", "--out", str(out), "--save-weights", str(weights)]) == 0
    table = capsys.readouterr().out
    for net in ("FCN-32s", "FCN-16s", "FCN-8s"):
        assert f"| {net} |" in table
    rows = json.loads((out / "shapes-table.json").read_text())
    assert [r["net"] for r in rows] == list(skip.VARIANTS)
    pads = {json.loads((out / f"shapes-{v}" / "config.json").read_text())["pad1"] for v in skip.VARIANTS}
    assert pads == {skip.common_pad1(0.0625, 64)}  # one padding for all three
    # the float16 weights rebuild the trained net, and load as any checkpoint does
    best, _ = io.load_checkpoint(out / "shapes-fcn8s" / training.BEST)
    arrays, meta = io.load_checkpoint(weights / "shapes-fcn8s.npz")
    assert meta["config"]["model"] == "fcn8s" and "mean_iu" in meta["best"]
    assert "model/upscore8.weight" not in arrays and arrays  # fixed layers are left out
    for name, a in arrays.items():
        assert a.dtype == np.float16
        np.testing.assert_allclose(a.astype(np.float32), best[name], rtol=1e-3, atol=1e-6,
                                   err_msg=name)
    full, _ = training.load_model(out / "shapes-fcn8s" / training.BEST)
    small, _ = training.load_model(weights / "shapes-fcn8s.npz")
    np.testing.assert_array_equal(small.upscore8.weight.data, full.upscore8.weight.data)
    x = Tensor(np.random.default_rng(0).normal(0, 60, (1, 3, 64, 64)).astype(np.float32))
    np.testing.assert_allclose(small(x).data, full(x).data, rtol=0.02, atol=1e-4)


def test_skip_architecture_script_averages_seeds_trained_side_by_side(tmp_path, capsys):
    from minifcn.experiments import skip_architectures as skip

    out = tmp_path / "runs"
    env_before = dict(os.environ)
    assert skip.main(["--iters", "3", "--size", "64", "--n-train", "8", "--n-val", "4",
                      "--device", "cpu", "--out", str(out), "--seed", "5", "--seeds", "2",
                      "--jobs", "2", "--data", "digits"]) == 0
    assert dict(os.environ) == env_before  # the workers' thread settings stay theirs
    printed = capsys.readouterr().out
    rows = json.loads((out / "digits-table.json").read_text())
    assert [(r["net"], r["seed"]) for r in rows] == [(v, s) for v in skip.VARIANTS for s in (5, 6)]
    for r in rows:  # each row is the best validation of its own run folder, trained with its seed
        run = out / f"digits-{r['net']}-seed{r['seed']}"
        assert json.loads((run / "config.json").read_text())["seed"] == r["seed"]
        assert "epoch" in (run / "train.log").read_text()
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        same = [m for m in records if m["iteration"] == r["iteration"]]
        assert len(same) == 1 and same[0]["loss"] == r["loss"]
        assert same[0]["mean_iu"] == max(m["mean_iu"] for m in records)
    assert len({r["loss"] for r in rows}) == len(rows)  # six different runs
    for net in skip.VARIANTS:
        ius = [100 * r["mean_iu"] for r in rows if r["net"] == net]
        line = next(l for l in printed.splitlines() if l.startswith(f"| FCN-{net[3:]} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == f"{np.mean(ius):.1f} ± {np.std(ius, ddof=1):.1f}"
        assert cells[5] == " / ".join(f"{iu:.1f}" for iu in ius)
    with pytest.raises(SystemExit):
        skip.main(["--seeds", "0"])


def test_skip_architecture_table_averages_the_seeds_that_finished():
    from minifcn.experiments import skip_architectures as skip

    def run(iu, seconds):
        return {"pixel_acc": iu + 0.5, "mean_acc": iu + 0.1, "mean_iu": iu, "fw_iu": iu + 0.3}, seconds

    text = skip.table([("FCN-16s", [run(0.50, 60), None, run(0.40, 180), run(0.30, 120)]),
                       ("FCN-8s", [None] * 4)], 4)
    lines = text.splitlines()
    assert lines[0].count("|") == lines[2].count("|") == lines[3].count("|") == 8
    # means, sample standard deviation (0.1) and the per-seed column, by hand
    assert lines[2] == ("| FCN-16s | 90.0 | 50.0 | 40.0 ± 10.0 | 70.0 | 50.0 / failed / 40.0 / "
                        "30.0 | 2.0 min |")
    assert lines[3] == "| FCN-8s | - | - | - | - | - | - |"
    single = skip.table([("FCN-32s", [run(0.25, 30)])], 1).splitlines()
    assert single[2] == "| FCN-32s | 75.0 | 35.0 | 25.0 | 55.0 | 0.5 min |"


def test_skip_architecture_workers_report_a_failed_run_and_go_on(tmp_path, capsys):
    from minifcn.experiments import skip_architectures as skip
    from minifcn.train import DEFAULTS, resolve

    bad = resolve({**DEFAULTS, "model": "fcn8s", "data": "shapes", "size": 64, "n_train": 8,
                   "n_val": 4, "iters": 1, "epochs": None, "device": "cpu", "pad1": 3})
    results = skip.run_jobs([(bad, tmp_path / "a"), (dict(bad, pad1=2), tmp_path / "b")], 2)
    assert results == [None, None]
    printed = capsys.readouterr().out
    assert printed.count("FAILED") == 2 and "seed 0" in printed
