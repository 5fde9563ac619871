"""python -m minifcn.experiments.pad_and_upsampling: its tables come from its own runs (mean IU
of each region recomputed here from the best checkpoints), the padding's multiply-adds from the
layer sizes, --redraw prints the same tables from table.json, a second call keeps the runs."""
import json
import re

import numpy as np
import pytest

from minifcn import metrics, training
from minifcn.data import to_input
from minifcn.models import padding
from minifcn.training.step import predict_labels

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)
SIZE, BAND = 32, 4
TINY = ["--iters", "2", "--seeds", "1", "--size", str(SIZE), "--n-train", "4", "--n-val", "2",
        "--batch-size", "2", "--rounds", "1", "--band", str(BAND), "--width", "0.03125",
        "--device", "cpu"]


def mean_iu_by_region(run_dir):
    """Mean IU of the run's best checkpoint on every pixel, the border band, the rest."""
    model, config = training.load_model(f"{run_dir}/{training.BEST}")
    val = training.dataset(config, "val")
    x = np.stack([to_input(val[i][0]) for i in range(len(val))])
    y = np.stack([val[i][1] for i in range(len(val))])
    pred = predict_labels(model, x)
    rows = np.arange(SIZE)
    edge = np.minimum(rows, SIZE - 1 - rows)
    near = np.broadcast_to(np.minimum(edge[:, None], edge[None, :]) < BAND, y.shape)
    n = model.config["n_class"]
    return [metrics.scores(metrics.confusion_matrix(y[m], pred[m], n))["mean_iu"]
            for m in (np.ones_like(near), near, ~near)]


@pytest.mark.slow  # three short runs, scored and timed
def test_tables_come_from_the_runs_and_redraw_repeats_them(tmp_path, capsys):
    from minifcn.experiments import pad_and_upsampling as pu

    out = tmp_path / "runs"
    assert pu.main(TINY + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "table.json").read_text())
    results = saved["results"]
    pad_min = padding.min_pad1("fcn8s", SIZE)
    assert (results["pad100"]["pad1"], results["padmin"]["pad1"],
            results["learned"]["pad1"]) == (100, pad_min, pad_min)
    assert results["learned"]["learn_upsampling"] == "all"
    for name, r in results.items():
        run = r["runs"][0]
        got = [r["scores"][0][g] for g in ("all", "border", "inside")]
        np.testing.assert_allclose(got, mean_iu_by_region(run))
        best = max(json.loads(line)["mean_iu"] for line in open(f"{run}/metrics.jsonl"))
        assert got[0] == pytest.approx(best)
        cells = f"{100 * got[0]:.1f} | {100 * got[1]:.1f} | {100 * got[2]:.1f}"
        assert f"| {pu.label(name, r)} | {cells} |" in printed
    model, _ = training.load_model(f"{results['learned']['runs'][0]}/{training.BEST}")
    assert model.upscore8.weight.requires_grad and model.upscore2.weight.requires_grad
    # conv1_1 and conv1_2 by hand: (S + 2p - 2)^2 outputs of c1 channels, 27 and 9 c1 MACs each
    c1 = model.conv1_1.out_channels
    for r in (results["pad100"], results["padmin"]):
        side = SIZE + 2 * r["pad1"] - 2
        assert r["conv1_share"] * r["macs"] == pytest.approx(side**2 * (c1 * 27 + c1 * c1 * 9))
    a, b = results["pad100"], results["padmin"]
    assert f"| ratio 100 / {pad_min} | {a['macs'] / b['macs']:.2f} | | " \
           f"{a['step_s'] / b['step_s']:.2f} | {a['peak'] / b['peak']:.2f} |" in printed
    assert a["macs"] > b["macs"] and a["peak"] > 0
    assert (out / "pad.png").stat().st_size > 0 and (out / "upsampling.png").stat().st_size > 0
    assert re.search(r"Made by: `python -m minifcn.experiments.pad_and_upsampling .*` · "
                     r"\d{4}-\d\d-\d\d · commit ", printed)
    tables = printed[printed.index("| run |"):printed.index("Made by")]
    assert pu.main(["--redraw", "--out", str(out), "--figures", str(tmp_path / "img")]) == 0
    again = capsys.readouterr().out
    assert again[again.index("| run |"):again.index("Made by")] == tables
    assert (tmp_path / "img" / "pad-100.png").exists()
    assert (tmp_path / "img" / "learned-upsampling.png").exists()
    with pytest.raises(SystemExit, match="already holds runs"):
        pu.main(TINY + ["--out", str(out)])


def test_bad_options_are_named():
    from minifcn.experiments import pad_and_upsampling as pu

    with pytest.raises(SystemExit):
        pu.main(["--band", "20", "--size", "40"])
    with pytest.raises(SystemExit, match="cannot read"):
        pu.main(["--redraw", "--out", "/nonexistent/folder"])
