"""The train / evaluate / predict entry points, end to end on tiny data."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minifcn import io, training
from minifcn import train as train_cli
from minifcn.data import voc_palette

TINY = ["--model", "fcn8s", "--width", "0.0625", "--size", "64", "--n-train", "8", "--n-val",
        "4", "--batch-size", "4", "--device", "cpu", "--lr", "0.01"]


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def make_voc(root, n=6, size=(40, 52), n_bad=0):
    """A VOC2012-layout folder with n random images and labels (classes 0..3, 255 borders);
    ``size`` is one (h, w), or a list of them taken in turn (images of mixed sizes)."""
    sizes = [size] if isinstance(size[0], int) else list(size)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"2007_{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        h, w = sizes[i % len(sizes)]
        label = np.zeros((h, w), np.uint8)
        label[h // 4: 3 * h // 4, w // 4: w // 2] = rng.integers(1, 4)
        label[h // 4, :] = 255
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image[label > 0] = 200
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg")
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_palette().reshape(-1).tolist())
        png.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[: n - 2]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[n - 2:]) + "\n")
    return voc


def read_records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_voc_folder_trains_through_the_cli(tmp_path):
    make_voc(tmp_path)
    run = tmp_path / "run"
    rc = train_cli.main(["--data", f"voc:{tmp_path / 'VOCdevkit'}", "--model", "fcn32s",
                         "--width", "0.0625", "--batch-size", "1", "--iters", "3", "--pad1", "100", "--lr", "0.001",
                         "--device", "cpu", "--out", str(run)])
    assert rc == 0
    config = json.loads((run / "config.json").read_text())
    assert config["n_class"] == 21 and config["model"] == "fcn32s"
    (record,) = read_records(run)
    assert record["iteration"] == 3
    assert set(record) >= {"epoch", "iteration", "loss", "pixel_acc", "mean_acc", "mean_iu", "fw_iu"}
    for png in ("history.png", "predictions.png"):
        with Image.open(run / png) as im:
            im.verify()
    arrays, meta = io.load_checkpoint(run / training.LAST)
    assert meta["iteration"] == 3 and "model/conv1_1.weight" in arrays
    assert (run / training.BEST).exists()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    args = TINY + ["--epochs", "2"]
    assert train_cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    config = train_cli.make_config(train_cli.parser().parse_args(args))
    with pytest.raises(KeyboardInterrupt):  # stop mid-epoch 2, as Ctrl-C would
        training.fit(dict(config), tmp_path / "b", on_iteration=lambda it: it == 3)
    assert io.load_checkpoint(tmp_path / "b" / training.LAST)[1]["iteration"] == 3
    assert train_cli.main(["--resume", str(tmp_path / "b")]) == 0
    a, _ = io.load_checkpoint(tmp_path / "a" / training.LAST)
    b, _ = io.load_checkpoint(tmp_path / "b" / training.LAST)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    def same_run(records):  # the metrics, not the seconds each run took
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]

    assert same_run(read_records(tmp_path / "a")) == same_run(read_records(tmp_path / "b"))


def test_nan_loss_stops_with_the_iteration_and_keeps_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--epochs", "1", "--out", str(run)]) == 0
    before = (run / training.LAST).read_bytes()
    rc = train_cli.main(["--resume", str(run), "--lr", "1e30", "--epochs", "3"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "loss is" in err and "at iteration" in err
    assert (run / training.LAST).read_bytes() == before


def test_evaluate_and_predict_on_a_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 0
    from minifcn import evaluate, predict

    assert evaluate.main([str(run / training.BEST), "--json", str(tmp_path / "s.json"),
                          "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "mean IU" in out and "frequency-weighted IU" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert 0 <= scores["mean_iu"] <= 1 and len(scores["per_class_iu"]) == 5
    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(img)
    assert predict.main([str(run / training.BEST), str(img), "--out", str(tmp_path / "pred"),
                         "--device", "cpu"]) == 0
    with Image.open(tmp_path / "pred" / "in.png.label.png") as label:
        assert label.mode == "P" and label.size == (61, 45)
    with Image.open(tmp_path / "pred" / "in.png.overlay.png") as ov:
        assert ov.mode == "RGB" and ov.size == (61, 45)
    assert predict.main([str(run / training.BEST), str(tmp_path / "nope.png"), "--out",
                         str(tmp_path / "pred")]) == 1
    assert "nope.png" in capsys.readouterr().err


def test_bad_data_errors_name_the_file(tmp_path, capsys):
    voc = make_voc(tmp_path)
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"not a jpeg")
    rc = train_cli.main(["--data", f"voc:{voc}", "--width", "0.0625", "--batch-size", "4",
                         "--iters", "1", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert rc == 1 and "2007_000001.jpg" in capsys.readouterr().err
    rc = train_cli.main(["--data", f"voc:{tmp_path / 'missing'}", "--out", str(tmp_path / "r2")])
    assert rc == 1 and "missing" in capsys.readouterr().err


def test_staged_init_from_a_32s_checkpoint(tmp_path, capsys):
    run32 = tmp_path / "r32"
    args = TINY[:1] + ["fcn32s"] + TINY[2:]
    assert train_cli.main(args + ["--iters", "1", "--out", str(run32)]) == 0
    args16 = TINY[:1] + ["fcn16s"] + TINY[2:]
    assert train_cli.main(args16 + ["--iters", "1", "--init-from", str(run32 / training.LAST),
                                    "--out", str(tmp_path / "r16")]) == 0
    out = capsys.readouterr().out
    assert "init from" in out and "score_pool4.weight" in out and "upscore" in out


def _start(run, *extra):
    env = {**os.environ, "MINIFCN_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "minifcn.train", *TINY, "--epochs", "50",
           "--checkpoint-every", "1", "--out", str(run), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / training.LAST).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_kill_during_training_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    try:
        time.sleep(1.5)  # it writes a checkpoint every iteration: kill it somewhere in there
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    _, meta = io.load_checkpoint(run / training.LAST)
    assert meta["iteration"] >= 1
    # the killed process's lock is stale: taken over
    assert train_cli.main(["--resume", str(run), "--iters", str(meta["iteration"] + 1)]) == 0
    assert io.load_checkpoint(run / training.LAST)[1]["iteration"] == meta["iteration"] + 1


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    first = io.load_checkpoint(run / training.LAST)[1]["iteration"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    _, meta = io.load_checkpoint(run / training.LAST)
    assert meta["iteration"] >= first


def test_from_scratch_defaults_and_their_effect():
    def config(*args):
        return train_cli.make_config(train_cli.parser().parse_args(list(args)))

    for args in [("--init", "scratch"), ("--init-from", "runs/x/checkpoint_best.npz")]:  # or staged
        synthetic = config(*args)
        assert (synthetic["lr"], synthetic["warmup"], synthetic["dropout"]) == (0.08, 50, 0.0)
        assert synthetic["conv1_lr_mult"] == pytest.approx(1 / 64**2)
    voc = config("--data", "voc:/nowhere", "--init-from", "vgg16.npz")
    assert (voc["lr"], voc["dropout"], voc["conv1_lr_mult"], voc["warmup"]) == (0.01, 0.5, 1.0, 0)
    given = config("--dropout", "0.3", "--conv1-lr-mult", "1", "--warmup", "7", "--lr", "0.2")
    assert (given["dropout"], given["conv1_lr_mult"], given["warmup"], given["lr"]) == (0.3, 1.0, 7, 0.2)
    with pytest.raises(SystemExit, match="--dropout"):
        config("--dropout", "1.5")
    with pytest.raises(SystemExit, match="--conv1-lr-mult must be >= 0, got nan"):
        config("--conv1-lr-mult", "nan")

    # the trainer builds what the config says
    scratch = dict(config("--init", "scratch"), n_class=5, size=64)
    model = training.build_model(scratch)
    assert model.drop6.p == 0.0 and model.drop7.p == 0.0
    groups = training.make_optimizer(model, scratch).groups
    (own,) = [g for g in groups if g["params"] == [model.conv1_1.weight]]
    assert own["lr_mult"] == pytest.approx(1 / 64**2)
    assert not any(model.conv1_1.weight is p for g in groups[:2] for p in g["params"])
    assert any(model.conv1_1.bias is p for p in groups[1]["params"])  # bias: x2, as every bias
    # a config.json from before these options trains as it did then
    old = {k: v for k, v in scratch.items() if k not in ("dropout", "conv1_lr_mult", "warmup")}
    assert training.build_model(old).drop6.p == 0.5
    assert len(training.make_optimizer(model, old).groups) == 2


def test_pad1_full_builds_the_net_whose_scores_cover_the_input():
    from minifcn.models import padding

    config = train_cli.make_config(train_cli.parser().parse_args(
        ["--model", "fcn32s", "--size", "64", "--pad1", "full"]))
    config["n_class"] = 5
    model = training.build_model(config)  # resolves "full" in the config, for config.json
    assert config["pad1"] == model.config["pad1"] == padding.full_cover_pad1("fcn32s", 64)
    assert padding.score_coverage(model, 64).min() >= 0.99
    with pytest.raises(SystemExit):
        train_cli.parser().parse_args(["--pad1", "most"])


def test_real_data_defaults_fine_tune_the_shipped_classifier_for_a_number_of_steps():
    # what docs/training.md's table promises, written out: from the shipped classifier on real
    # data, the fine-tuning recipe at lr 0.04 with 100 warm-up steps for 800 steps; from other
    # weights the reference's recipe for 5 epochs
    ours = training.resolve({**training.DEFAULTS, "data": "voc:/somewhere"})
    assert ours["init"] == "classifier"
    assert (ours["lr"], ours["warmup"], ours["dropout"], ours["pad1"]) == (0.04, 100, 0.0, 100)
    assert (ours["iters"], ours["epochs"]) == (800, None)
    assert ours["conv1_lr_mult"] == 1 / 64 ** 2
    given = training.resolve({**training.DEFAULTS, "data": "folder:/x", "epochs": 3})
    assert (given["epochs"], given["iters"]) == (3, None)
    for other in ({"init": "scratch"}, {"init_from": "vgg16.pth"}):
        ref = training.resolve({**training.DEFAULTS, "data": "voc:/somewhere", **other})
        assert (ref["lr"], ref["warmup"], ref["dropout"], ref["pad1"]) == (0.01, 0, 0.5, 100)
        assert (ref["epochs"], ref["iters"]) == (5, None)


def test_a_voc_folder_trains_from_the_shipped_classifier_by_default(tmp_path, capsys):
    voc = make_voc(tmp_path, n=6, size=(100, 100))
    run = tmp_path / "r"
    assert train_cli.main(["--data", f"voc:{voc}", "--iters", "2", "--device", "cpu",
                           "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "classifier-shapes-cls-w0.0625.npz: loaded 30 tensors" in out
    config = json.loads((run / "config.json").read_text())
    assert (config["init"], config["lr"], config["iters"]) == ("classifier", 0.04, 2)
    # resumed for longer, the run keeps its recipe
    assert train_cli.main(["--resume", str(run), "--iters", "3"]) == 0
    assert [r["iteration"] for r in read_records(run)][-1] == 3
