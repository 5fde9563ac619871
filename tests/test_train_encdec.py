"""The encoder-decoders through the commands, end to end on tiny data: train, --resume, evaluate
(against metrics computed here from predict's label maps), predict, export to ONNX (run by
onnxruntime), safetensors and PyTorch; and the options they refuse. One run per net, trained
once for the module. (The nets themselves: tests/test_models_encdec.py.)"""
import contextlib
import io as textio
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from minifcn import Tensor, evaluate, export, io, no_grad, predict, training
from minifcn import train as train_cli
from minifcn.data import to_input
from minifcn.loss import IGNORE_INDEX
from minifcn.models import ENCODER_DECODERS

NETS = list(ENCODER_DECODERS)
ARGS = ["--width", "0.0625", "--size", "48", "--n-train", "32", "--n-val", "8", "--iters", "4",
        "--val-every", "2", "--batch-size", "4", "--device", "cpu"]
MIN_SIZE = {"segnet": 17, "deconvnet": 17, "segnet-basic": 9, "unet": 9}  # 2**(pools-1) + 1
VGG_CONVS = [f"conv{b}_{j}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{net: (run folder, what training printed)}: 4 iterations each, validated at 2 and 4."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIFCN_NO_PROGRESS", "1")
        for name in NETS:
            run, printed = tmp_path_factory.mktemp(name) / "run", textio.StringIO()
            with contextlib.redirect_stdout(printed):
                assert train_cli.main(["--model", name, *ARGS, "--out", str(run)]) == 0
            out[name] = (run, printed.getvalue())
    return out


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def state_of(checkpoint):
    arrays, meta = io.load_checkpoint(checkpoint)
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}, meta


# ------------------------------------------------------------------------------------ train


@pytest.mark.parametrize("name", NETS)
def test_training_writes_a_run_with_the_batch_norm_statistics(runs, name):
    run, printed = runs[name]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == name and config["pad1"] is None
    if name in ("segnet", "deconvnet"):  # the default start where a VGG16 trunk takes it
        n = 2 * (len(VGG_CONVS) + (2 if name == "deconvnet" else 0))
        assert config["init"] == "classifier" and f"loaded {n} tensors" in printed
    else:
        assert config["init"] == "scratch" and "training from scratch" in printed
    assert [r["iteration"] for r in records(run)] == [2, 4]
    state, meta = state_of(run / training.LAST)
    assert meta["iteration"] == 4
    bns = [k[:-len(".running_mean")] for k in state if k.endswith(".running_mean")]
    assert "conv1_1_bn" in bns
    for bn in bns:  # one training forward an iteration; validation (eval) counts none
        assert int(state[f"{bn}.num_batches_tracked"]) == 4, bn
        assert np.abs(state[f"{bn}.running_mean"]).max() > 0, bn  # moved from 0


@pytest.mark.parametrize("name", NETS)
def test_resume_to_more_iterations_continues(runs, name, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[name][0], run)
    assert train_cli.main(["--resume", str(run), "--iters", "6"]) == 0
    assert [r["iteration"] for r in records(run)] == [2, 4, 6]
    state, meta = state_of(run / training.LAST)
    assert meta["iteration"] == 6 and int(state["conv1_1_bn.num_batches_tracked"]) == 6


def test_an_interrupted_run_resumed_ends_as_an_uninterrupted_one(tmp_path):
    name = "segnet"
    # the checkpoint must carry the BN statistics (a resumed run that lost them would end with
    # other running means), and validating in eval mode must leave them as they were
    args = ["--model", name, *ARGS]
    args[args.index("--iters") + 1] = "5"
    assert train_cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    config = train_cli.make_config(train_cli.parser().parse_args(args))
    with pytest.raises(KeyboardInterrupt):  # stop after iteration 3, as Ctrl-C would
        training.fit(dict(config), tmp_path / "b", on_iteration=lambda it: it == 3)
    assert io.load_checkpoint(tmp_path / "b" / training.LAST)[1]["iteration"] == 3
    assert train_cli.main(["--resume", str(tmp_path / "b")]) == 0
    a, _ = state_of(tmp_path / "a" / training.LAST)
    b, _ = state_of(tmp_path / "b" / training.LAST)
    assert a.keys() == b.keys() and any("running_var" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------- evaluate, predict


def paper_metrics(labels, predictions, n_class):
    """The FCN paper's four metrics (section 5) from a confusion matrix counted here."""
    hist = np.zeros((n_class, n_class))
    for y, p in zip(labels, predictions):
        keep = y != IGNORE_INDEX
        np.add.at(hist, (y[keep], p[keep]), 1)
    n_ii, t_i = np.diag(hist), hist.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = n_ii / (t_i + hist.sum(0) - n_ii)
        return {"pixel_acc": n_ii.sum() / t_i.sum(), "mean_acc": np.nanmean(n_ii / t_i),
                "mean_iu": np.nanmean(iu), "fw_iu": (t_i[t_i > 0] * iu[t_i > 0]).sum() / t_i.sum()}


@pytest.mark.parametrize("name", NETS)
def test_evaluate_scores_as_predicts_label_maps_and_as_training_validated(runs, name, tmp_path,
                                                                         capsys):
    run, _ = runs[name]
    best = run / training.BEST
    scores = tmp_path / "scores.json"
    assert evaluate.main([str(best), "--json", str(scores), "--device", "cpu"]) == 0
    got = json.loads(scores.read_text())
    config = json.loads((run / "config.json").read_text())
    val = training.dataset(config, "val")
    paths, labels = [], []
    for i in range(len(val)):
        image, label = val[i]
        paths.append(tmp_path / f"val{i}.png")
        Image.fromarray(image).save(paths[-1])
        labels.append(label)
    assert predict.main([str(best), *map(str, paths), "--out", str(tmp_path / "pred"),
                         "--device", "cpu"]) == 0
    predictions = []
    for p in paths:
        with Image.open(tmp_path / "pred" / f"{p.name}.label.png") as im:
            predictions.append(np.array(im))
    want = paper_metrics(labels, predictions, config["n_class"])
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    # the run's validation at the best checkpoint's iteration scored the same images
    it = io.load_checkpoint(best)[1]["iteration"]
    (record,) = [r for r in records(run) if r["iteration"] == it]
    # (to a pixel: batches of 16 there, of 1 here, may round a float32 near-tie either way)
    for k in want:
        assert record[k] == pytest.approx(got[k], abs=1e-4), k
    assert record["loss"] == pytest.approx(got["loss"], rel=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_predict_labels_an_odd_image_and_refuses_one_below_the_minimum(runs, name, tmp_path,
                                                                      capsys):
    run, _ = runs[name]
    rng = np.random.default_rng(4)
    m = MIN_SIZE[name]
    sizes = [(45, 61), (m, m + 2)]
    paths = []
    for h, w in sizes + [(m - 1, 40)]:
        paths.append(tmp_path / f"in{h}x{w}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    rc = predict.main([str(run / training.LAST), *map(str, paths), "--out",
                       str(tmp_path / "pred"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and paths[-1].name in err and f"at least {m}" in err
    model, _ = training.load_model(run / training.LAST)
    for (h, w), path in zip(sizes, paths):
        with Image.open(tmp_path / "pred" / f"{path.name}.label.png") as im:
            assert im.mode == "P" and im.size == (w, h)
            label = np.array(im)
        image = np.array(Image.open(path).convert("RGB"))
        with no_grad():
            scores = model(Tensor(to_input(image)[None])).data[0]
        np.testing.assert_array_equal(label, scores.argmax(0))


# -------------------------------------------------------------------------------- export


@pytest.mark.parametrize("name", NETS)
def test_onnxruntime_scores_as_the_model_down_to_the_minimum_size(runs, name, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    run, _ = runs[name]
    out = tmp_path / "net.onnx"
    assert export.main([str(run / training.LAST), "--to", "onnx", "--out", str(out)]) == 0
    model, _ = training.load_model(run / training.LAST)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(6)
    m = MIN_SIZE[name]
    for h, w in [(m, m), (m, m + 3), (37, 29), (48, 48)]:
        x = (rng.standard_normal((2, 3, h, w)) * 50).astype(np.float32)
        with no_grad():
            want = model(Tensor(x)).data
        (got,) = session.run(["scores"], {"image": x})
        assert got.shape == want.shape == (2, 5, h, w)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"{h}x{w}")


@pytest.mark.parametrize("name", NETS)
def test_safetensors_and_pytorch_exports_round_trip(runs, name, tmp_path):
    run, _ = runs[name]
    model, _ = training.load_model(run / training.LAST)
    own = model.state_dict()
    for to, read in (("safetensors", io.load_safetensors), ("pytorch", io.read_torch_state_dict)):
        out = tmp_path / f"w.{to}"
        assert export.main([str(run / training.LAST), "--to", to, "--out", str(out)]) == 0
        back = read(out)
        assert set(back) == set(own), to
        for k in own:  # the buffers too, num_batches_tracked an int64
            assert back[k].dtype == own[k].dtype, k
            np.testing.assert_array_equal(back[k], own[k], err_msg=f"{to}: {k}")
    x = (np.random.default_rng(8).standard_normal((1, 3, 33, 41)) * 50).astype(np.float32)
    with no_grad():
        want = model(Tensor(x)).data
    again = training.build_model(json.loads((run / "config.json").read_text()))
    again.load_state_dict(io.load_safetensors(tmp_path / "w.safetensors")).eval()
    with no_grad():
        np.testing.assert_array_equal(again(Tensor(x)).data, want)
    torch = pytest.importorskip("torch")
    from _torchnets import NETS as TORCH

    theirs = TORCH[name](5, 0.0625)
    theirs.load_state_dict(torch.load(tmp_path / "w.pytorch", weights_only=True), strict=True)
    with torch.no_grad():
        got = theirs.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# -------------------------------------------------------------------------------- refusals


def one_line(e):
    text = str(e.value)
    assert text.startswith("error: ") and "\n" not in text, text
    return text


@pytest.mark.parametrize("option, value", [("--loss-sampling", "0.5"),
                                           ("--learn-upsampling", "all"), ("--pad1", "5")])
def test_fcn_options_are_refused_for_segnet_in_one_line(option, value, tmp_path):
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--model", "segnet", *ARGS, option, value, "--out", str(tmp_path / "r")])
    text = one_line(e)
    assert option in text and "segnet" in text
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["unet", "segnet-basic"])
def test_no_classifier_start_or_frozen_trunk_without_a_vgg16_trunk(name, tmp_path):
    for option in (["--init", "classifier"], ["--freeze-trunk"]):
        with pytest.raises(SystemExit) as e:
            train_cli.main(["--model", name, *ARGS, *option, "--out", str(tmp_path / "r")])
        text = one_line(e)
        assert option[0] in text and name in text
        assert not (tmp_path / "r").exists()


def test_freeze_trunk_builds_segnet_with_exactly_the_classifier_layers_frozen():
    config = train_cli.make_config(train_cli.parser().parse_args(
        ["--model", "segnet", *ARGS, "--freeze-trunk"]))
    model = training.build_model({**config, "n_class": 5})
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{c}.{leaf}" for c in VGG_CONVS for leaf in ("weight", "bias")}


def test_evaluate_refuses_weights_without_the_running_statistics(runs, tmp_path, capsys):
    state, _ = state_of(runs["segnet"][0] / training.LAST)
    full, partial = tmp_path / "full.npz", tmp_path / "no_stats.npz"
    np.savez(full, **state)
    np.savez(partial, **{k: v for k, v in state.items() if "running" not in k})
    rc = evaluate.main([str(partial), "--model", "segnet", "--width", "0.0625", "--data",
                        "shapes", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "no_stats.npz" in err and "running_" in err
    # the same file with them loads, statistics and all
    model = evaluate.load_weights_model(str(full), "segnet", 0.0625, 5, "cpu")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
