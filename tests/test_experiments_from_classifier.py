"""python -m minifcn.experiments.from_classifier: both starts trained per seed with their recipes,
the table of each seed's best validation averaged, the plot, and an --out that already holds
runs refused."""
import json

import pytest


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def test_from_classifier_experiment_trains_both_starts_and_writes_its_table_and_plot(tmp_path,
                                                                                     capsys):
    from minifcn.experiments import from_classifier

    out = tmp_path / "cmp"
    assert from_classifier.main(["--nets", "fcn8s", "--seeds", "2", "--iters", "2",
                                 "--val-every", "1", "--n-train", "8", "--n-val", "4",
                                 "--size", "48", "--device", "cpu", "--out", str(out)]) == 0
    table = (out / "from-classifier.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| FCN-8s")]
    assert [row.split("|")[2].strip() for row in rows] == ["scratch", "classifier"]
    for init in ("scratch", "classifier"):
        records = [json.loads(line) for line in
                   (out / f"{init}-fcn8s-seed1" / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in records] == [1, 2]
        best = [max(json.loads(line)["mean_iu"] for line in
                    (out / f"{init}-fcn8s-seed{s}" / "metrics.jsonl").read_text().splitlines())
                for s in (0, 1)]
        mean = 100 * sum(best) / 2  # each seed's best validation, averaged
        cells = [r for r in rows if init in r][0].split("|")  # net, start, 4 metrics, minutes
        assert cells[5].strip().startswith(f"{mean:.1f} ±")
    cfg = json.loads((out / "classifier-fcn8s-seed0" / "config.json").read_text())
    assert cfg["init"] == "classifier" and cfg["lr"] == 0.08 and cfg["epochs"] is None
    assert (out / "from-classifier.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="already holds runs"):
        from_classifier.main(["--nets", "fcn8s", "--out", str(out)])
