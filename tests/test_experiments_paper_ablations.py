"""python -m minifcn.experiments.paper_ablations: every study trains its settings, prints its
table, and the sampling study's curves count 1/P times the images per step. (--study shift:
tests/test_experiments_shift_study.py.)"""
import json

import numpy as np
import pytest


@pytest.mark.slow
def test_the_studies_run_print_their_tables_and_log_the_losses(tmp_path, capsys, monkeypatch):
    from minifcn.experiments import paper_ablations as ab

    monkeypatch.setenv("MINIFCN_NO_PROGRESS", "1")
    out = tmp_path / "abl"
    args = ["--iters", "2", "--seeds", "1", "--n-train", "16", "--n-val", "4", "--size", "48",
            "--device", "cpu", "--out", str(out)]
    assert ab.main(args + ["--study", "sampling"]) == 0
    printed = capsys.readouterr().out
    for label, _ in ab.STUDIES["sampling"]:
        assert f"| {label} |" in printed
    steps = [np.load(out / "sampling" / f"{i}-seed0" / "train_loss.npy") for i in range(3)]
    assert [s.shape for s in steps] == [(2, 3)] * 3
    assert [s[:, 2].tolist() for s in steps] == [[4, 4], [8, 8], [16, 16]]  # 1/P times the images
    assert (out / "sampling.png").stat().st_size > 1000
    assert ab.main(args + ["--study", "fixed"]) == 0  # a second study in the same --out
    summary = json.loads((out / "summary.json").read_text())
    assert [r["setting"] for r in summary["fixed"]] == [lab for lab, _ in ab.STUDIES["fixed"]]
    with pytest.raises(SystemExit, match="already holds runs"):
        ab.main(args + ["--study", "fixed"])
