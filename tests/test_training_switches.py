"""The paper's other training switches (sections 3.4, 4.2, 4.3): loss sampling, a frozen trunk
(FCN-32s-fixed), class balancing and which upsampling layers learn."""
import json

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, training
from minifcn import train as train_cli
from minifcn.training.build import balanced_class_weights, final_stride, freeze_trunk
from minifcn.training.step import sample_loss_cells, segmentation_loss

from test_train import TINY


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def config(*args):
    return train_cli.make_config(train_cli.parser().parse_args(list(args)))


def test_loss_sampling_keeps_a_share_p_of_whole_cells_and_ignored_cells_get_no_gradient():
    labels = np.ones((4, 64, 60), np.int64)
    sampled = sample_loss_cells(labels, 0.25, 8, np.random.default_rng(0))
    blocks = sampled[:, :64, :56].reshape(4, 8, 8, 7, 8).transpose(0, 1, 3, 2, 4).reshape(4, 8, 7, 64)
    assert ((blocks == 255).all(-1) | (blocks == 1).all(-1)).all()  # cells are whole
    kept = (blocks[..., 0] == 1).mean()
    assert 0.17 < kept < 0.33  # 224 cells at p = 0.25
    assert ((sampled[:, :, 56:] == 255).all(-1) | (sampled[:, :, 56:] == 1).all(-1)).all()  # the cut-off last column of cells
    assert (labels == 1).all()  # the input is left alone

    scores = Tensor(np.random.default_rng(1).standard_normal((4, 3, 64, 60)), requires_grad=True)
    segmentation_loss(scores, sampled).backward()
    grad = np.abs(scores.grad).sum(1)
    assert (grad[sampled == 255] == 0).all() and (grad[sampled != 255] > 0).all()


def test_the_sampled_cell_is_the_nets_final_stride():
    assert [final_stride(minifcn.models.build(m, n_class=3, width=0.0625))
            for m in ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")] == [32, 16, 8, 8]


@pytest.mark.parametrize("batch, expected", [("scaled", 8), ("same", 4)])
def test_loss_sampling_takes_1_over_p_images_per_step_unless_same(tmp_path, monkeypatch, batch,
                                                                  expected):
    seen = []
    real = training.loop.train_step

    def spy(model, opt, images, labels, *rest):
        seen.append((len(images), float((labels == 255).mean())))
        return real(model, opt, images, labels, *rest)

    monkeypatch.setattr(training.loop, "train_step", spy)
    cfg = config(*TINY, "--n-train", "16", "--iters", "2", "--loss-sampling", "0.5",
                 "--sampling-batch", batch)
    training.fit(cfg, tmp_path / "run", log=lambda *a: None)
    assert [n for n, _ in seen] == [expected, expected]
    assert all(0 < ignored < 1 for _, ignored in seen)


def test_freeze_trunk_lets_only_the_score_layers_learn():
    def trained(freeze):
        minifcn.manual_seed(0)
        model = minifcn.models.fcn16s(n_class=3, width=0.0625, pad1=100, dropout=0.0)
        if freeze:
            freeze_trunk(model)
        before = {k: v.copy() for k, v in model.state_dict().items()}
        opt = training.make_optimizer(model, {"lr": 0.5, "momentum": 0.9, "weight_decay": 0.0,
                                              "conv1_lr_mult": 1.0})
        rng = np.random.default_rng(0)
        for _ in range(3):  # score_fr starts at zero: the trunk's gradient needs a step first
            training.train_step(model, opt, rng.standard_normal((2, 3, 40, 40)).astype(np.float32),
                                rng.integers(0, 3, (2, 40, 40)))
        after = model.state_dict()
        return {k for k in before if not np.array_equal(before[k], after[k])}

    changed = trained(freeze=True)
    assert changed == {"score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias"}
    assert "conv1_1.weight" in trained(freeze=False) and "fc7.weight" in trained(freeze=False)


def test_balanced_class_weights_give_every_class_the_same_total():
    labels = [np.array([[0, 0, 0, 1], [0, 0, 255, 1]]), np.array([[0, 0, 0, 0], [2, 2, 0, 0]])]
    data = [(None, y) for y in labels]
    w = balanced_class_weights(data, 4)
    counts = np.array([11, 2, 2, 0])
    np.testing.assert_allclose(w[:3], 15 / (4 * counts[:3]))
    assert w[3] == 0
    np.testing.assert_allclose(w[:3] * counts[:3], 15 / 4)


def test_the_weighted_loss_is_the_weighted_mean_of_the_pixels_terms_and_its_gradient_checks():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, 3, 4, 5))
    y = rng.integers(0, 3, (2, 4, 5))
    y[0, 0, :2] = 255
    w = np.array([0.5, 2.0, 3.0])
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    keep = y != 255
    terms = -np.take_along_axis(logp, np.where(keep, y, 0)[:, None], 1)[:, 0]
    wy = w[np.where(keep, y, 0)] * keep
    expected = (terms * wy).sum() / wy.sum()
    assert segmentation_loss(Tensor(s), y, "mean", w).item() == pytest.approx(expected, rel=1e-12)
    assert segmentation_loss(Tensor(s), y, "sum", w).item() == pytest.approx((terms * wy).sum())
    x = Tensor(s, requires_grad=True)
    assert minifcn.gradcheck(lambda t: segmentation_loss(t, y, "mean", w), [x])


@pytest.mark.parametrize("choice, learns", [("fixed", False), ("all", True)])
def test_learn_upsampling_sets_which_upsampling_layers_learn(choice, learns):
    cfg = dict(config("--learn-upsampling", choice), n_class=3)
    model = training.build_model(cfg)
    assert model.upscore8.weight.requires_grad is learns


@pytest.mark.parametrize("args", [("--loss-sampling", "0"), ("--loss-sampling", "1.5"),
                                  ("--loss-sampling", "nan")])
def test_bad_switch_values_are_refused_by_name(args):
    with pytest.raises(SystemExit, match="--loss-sampling must be in"):
        config(*args)


def test_the_switches_train_from_the_command_line_and_are_recorded(tmp_path):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "2", "--loss-sampling", "0.5", "--freeze-trunk",
                                  "--class-weights", "balanced", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["loss_sampling"], cfg["freeze_trunk"], cfg["class_weights"]) == (0.5, True,
                                                                                 "balanced")


def test_val_every_validates_mid_epoch_and_records_elapsed_seconds(tmp_path):
    run = tmp_path / "run"
    # 16 images in batches of 4: epochs end at 4 and 8; --val-every 3 adds 3 and 6
    args = ["--n-train", "16", "--iters", "8", "--val-every", "3", "--out", str(run)]
    assert train_cli.main(TINY + args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [3, 4, 6, 8]
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert train_cli.main(["--resume", str(run), "--iters", "9", "--val-every", "0"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [3, 4, 6, 8, 9]
    assert records[-1]["elapsed_s"] > elapsed[-1]  # a resumed run goes on counting
    with pytest.raises(SystemExit, match="--val-every must be >= 0"):
        config("--val-every", "-1")
