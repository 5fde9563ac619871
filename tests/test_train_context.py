"""The context nets through the commands, end to end on tiny data: train (from the shipped
classifier), --resume, evaluate (against metrics computed here from predict's label maps and
against training's own record), predict, export to ONNX (run by onnxruntime), safetensors and
PyTorch (loaded into the independent torch nets of tests/_torchcontext.py); and the FCN options
DeepLab refuses and FCN-8s + SE takes. One run per net, trained once for the module. (The nets
themselves: tests/test_models_context.py.)"""
import contextlib
import io as textio
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_train_encdec import paper_metrics, records, state_of

from minifcn import Tensor, evaluate, export, io, no_grad, predict, training, viz
from minifcn import train as train_cli
from minifcn.data import to_input
from minifcn.models import build
from minifcn.training.build import final_stride

NETS = ["deeplab-largefov", "deeplab-aspp", "fcn8s-se", "fcn8s-nonlocal"]
FCNS = ("fcn8s-se", "fcn8s-nonlocal")
ARGS = ["--width", "0.0625", "--size", "48", "--n-train", "32", "--n-val", "8", "--iters", "4",
        "--val-every", "2", "--batch-size", "4", "--device", "cpu"]
VGG_CONVS = [f"conv{b}_{j}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]

pytestmark = pytest.mark.usefixtures("quiet", "no_plots")


@pytest.fixture(scope="module")
def _no_plots():
    # the runs' plots (matplotlib, ~1 s a validation) are tested with the other nets; here they
    # would be a third of the time
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(viz, "plot_history", lambda *a, **k: None)
        mp.setattr(viz, "save_prediction_grid", lambda *a, **k: None)
        yield


@pytest.fixture
def no_plots(_no_plots):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory, _no_plots):
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


# ------------------------------------------------------------------------------------ train


@pytest.mark.parametrize("name", NETS)
def test_training_starts_from_the_classifier_and_writes_a_run(runs, name):
    run, printed = runs[name]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == name and config["init"] == "classifier"
    # the 13 convolutions; FCN-8s's fc6 and fc7 too (7x7 and 1x1 as VGG16's), not DeepLab's
    n = 2 * (len(VGG_CONVS) + (2 if name in FCNS else 0))
    assert f"loaded {n} tensors" in printed
    if name in FCNS:  # conv1_1's padding resolved for 48x48 ('auto'), as for FCN-8s
        assert isinstance(config["pad1"], int) and 69 <= config["pad1"] < 100
    else:
        assert config["pad1"] is None
    assert [r["iteration"] for r in records(run)] == [2, 4]
    state, meta = state_of(run / training.LAST)
    assert meta["iteration"] == 4
    bns = [k[:-len(".running_mean")] for k in state if k.endswith(".running_mean")]
    assert len(bns) == (6 if name == "deeplab-aspp" else 0)
    for bn in bns:  # one training forward an iteration; validation (eval) counts none
        assert int(state[f"{bn}.num_batches_tracked"]) == 4, bn
        assert np.abs(state[f"{bn}.running_mean"]).max() > 0, bn
    # the new layers learned: the zero-started scores, and the context blocks
    score = {"deeplab-largefov": "fc8", "deeplab-aspp": "score"}.get(name, "score_pool3")
    assert np.abs(state[f"{score}.weight"]).max() > 0
    if name == "fcn8s-nonlocal":
        assert np.abs(state["pool4_context.W.weight"]).max() > 0  # no longer the identity


@pytest.mark.parametrize("name", NETS)
def test_resume_to_more_iterations_continues(runs, name, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[name][0], run)
    before, _ = state_of(run / training.LAST)
    assert train_cli.main(["--resume", str(run), "--iters", "6"]) == 0
    assert [r["iteration"] for r in records(run)] == [2, 4, 6]
    state, meta = state_of(run / training.LAST)
    assert meta["iteration"] == 6 and state.keys() == before.keys()
    assert any(not np.array_equal(state[k], before[k]) for k in state)
    if name == "deeplab-aspp":
        assert int(state["aspp_pool_conv_bn.num_batches_tracked"]) == 6


# ----------------------------------------------------------------------- evaluate, predict


def write_images(tmp_path, images, stem):
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{stem}{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.parametrize("name", NETS)
def test_evaluate_scores_as_predicts_label_maps_and_as_training_validated(runs, name, tmp_path):
    run, _ = runs[name]
    best = run / training.BEST
    scores = tmp_path / "scores.json"
    assert evaluate.main([str(best), "--json", str(scores), "--device", "cpu"]) == 0
    got = json.loads(scores.read_text())
    config = json.loads((run / "config.json").read_text())
    val = training.dataset(config, "val")
    images, labels = zip(*(val[i] for i in range(len(val))))
    paths = write_images(tmp_path, images, "val")
    assert predict.main([str(best), *map(str, paths), "--out", str(tmp_path / "pred"),
                         "--device", "cpu"]) == 0
    predictions = []
    for p in paths:
        with Image.open(tmp_path / "pred" / f"{p.name}.label.png") as im:
            predictions.append(np.array(im))
    want = paper_metrics(labels, predictions, config["n_class"])
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    it = io.load_checkpoint(best)[1]["iteration"]
    (record,) = [r for r in records(run) if r["iteration"] == it]
    for k in want:  # (to a pixel: batches of 16 there, of 1 here, may round a near-tie)
        assert record[k] == pytest.approx(got[k], abs=1e-4), k
    assert record["loss"] == pytest.approx(got["loss"], rel=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_predict_labels_an_odd_image_and_refuses_one_below_the_minimum(runs, name, tmp_path,
                                                                      capsys):
    run, _ = runs[name]
    model, _ = training.load_model(run / training.LAST)
    m = model.min_input_size
    assert m == 5 if name not in FCNS else m > 1  # FCN's pad1 resolved for 48: not 100
    rng = np.random.default_rng(4)
    sizes = [(m + 40, m + 56), (m, m + 2)]  # DeepLab: 45x61, 5x7
    paths = write_images(tmp_path, [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                                    for h, w in sizes + [(m - 1, 40)]], "in")
    rc = predict.main([str(run / training.LAST), *map(str, paths), "--out",
                       str(tmp_path / "pred"), "--device", "cpu"])
    err = capsys.readouterr().err
    if name in FCNS:  # predict pads conv1_1 more for an image the trained padding cannot take
        assert rc == 0 and err == ""
        with Image.open(tmp_path / "pred" / f"{paths[-1].name}.label.png") as im:
            assert im.size == (40, m - 1)
    else:
        assert rc == 1 and paths[-1].name in err and f"at least {m}" in err
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
    m = model.min_input_size
    for h, w in [(m, m), (m, m + 3), (m + 32, m + 24), (48, 48)]:  # DeepLab: 37x29
        x = (rng.standard_normal((2, 3, h, w)) * 50).astype(np.float32)
        with no_grad():
            want = model(Tensor(x)).data
        (got,) = session.run(["scores"], {"image": x})
        assert got.shape == want.shape == (2, 5, h, w)
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"{h}x{w}")


@pytest.mark.parametrize("name", NETS)
def test_onnx_of_random_weights_scores_as_the_model(name, tmp_path):
    # 4 steps from zero leave the non-local W and the score layers too small for the run's
    # export to show a wrong attention axis or BN rule: every weight and statistic random here
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from test_models_encdec import randomized

    options = {"dropout": 0.0} if name in FCNS else {}
    model = randomized(build(name, n_class=3, width=0.0625, **options), seed=12).eval()
    export.to_onnx(model, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(13)
    m = model.min_input_size
    for h, w in [(m, m + 2), (37, 29)]:
        x = (rng.standard_normal((2, 3, h, w)) * 50).astype(np.float32)
        with no_grad():
            want = model(Tensor(x)).data
        (got,) = session.run(["scores"], {"image": x})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"{h}x{w}")


@pytest.mark.parametrize("name", NETS)
def test_safetensors_and_pytorch_exports_round_trip(runs, name, tmp_path, capsys):
    run, _ = runs[name]
    model, config = training.load_model(run / training.LAST)
    own = model.state_dict()
    for to, read in (("safetensors", io.load_safetensors), ("pytorch", io.read_torch_state_dict)):
        out = tmp_path / f"w.{to}"
        assert export.main([str(run / training.LAST), "--to", to, "--out", str(out)]) == 0
        # the FCNs go to PyTorch as the FCN port's nets: BGR conv1_1, and a warning that the
        # port pads by 100 where this one pads by less; DeepLab as it is (RGB), as the
        # encoder-decoders
        port = to == "pytorch" and name in FCNS
        assert ("pads conv1_1 by" in capsys.readouterr().err) == port
        back = read(out)
        assert set(back) == set(own), to
        for k in own:
            assert back[k].dtype == own[k].dtype, k
            v = own[k][:, ::-1] if port and k == "conv1_1.weight" else own[k]
            np.testing.assert_array_equal(back[k], v, err_msg=f"{to}: {k}")
    m = model.min_input_size
    x = (np.random.default_rng(8).standard_normal((1, 3, m + 28, m + 36)) * 50).astype(np.float32)
    with no_grad():
        want = model(Tensor(x)).data
    again = training.build_model(json.loads((run / "config.json").read_text()))
    again.load_state_dict(io.load_safetensors(tmp_path / "w.safetensors")).eval()
    with no_grad():
        np.testing.assert_array_equal(again(Tensor(x)).data, want)
    torch = pytest.importorskip("torch")
    from _torchcontext import NETS as TORCH

    theirs = TORCH[name](5, 0.0625, *([config["pad1"]] if name in FCNS else []))
    theirs.load_state_dict(torch.load(tmp_path / "w.pytorch", weights_only=True), strict=True)
    bgr = x[:, ::-1] if name in FCNS else x
    with torch.no_grad():
        got = theirs.eval()(torch.from_numpy(np.ascontiguousarray(bgr))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ----------------------------------------------------------------------- FCN options


def config_of(*args):
    return train_cli.make_config(train_cli.parser().parse_args(["--width", "0.0625", *args]))


@pytest.mark.parametrize("name", ["deeplab-largefov", "deeplab-aspp"])
@pytest.mark.parametrize("option, value", [("--pad1", "5"), ("--loss-sampling", "0.5"),
                                           ("--learn-upsampling", "all")])
def test_fcn_options_are_refused_for_deeplab_in_one_line(name, option, value, tmp_path):
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--model", name, *ARGS, option, value, "--out", str(tmp_path / "r")])
    text = str(e.value)
    assert text.startswith("error: ") and "\n" not in text, text
    assert option in text and name in text
    assert not (tmp_path / "r").exists()


def test_fcn_options_are_taken_by_fcn8s_se(tmp_path, capsys):
    config = config_of("--model", "fcn8s-se", "--pad1", "80", "--loss-sampling", "0.5")
    assert config["pad1"] == 80 and config["loss_sampling"] == 0.5
    model = training.build_model({**config, "n_class": 5})
    assert type(model).__name__ == "FCN8sSE" and model.config["pad1"] == 80
    assert final_stride(model) == 8  # the grid --loss-sampling samples: FCN-8s's
    # a padding too small is refused for what it is (FCN-8s's geometry), not as an option
    # these nets lack
    rc = train_cli.main(["--model", "fcn8s-se", *ARGS, "--pad1", "5", "--out",
                         str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1 and "pad1=5" in err and "69" in err and "has none" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", NETS)
def test_freeze_trunk_freezes_exactly_the_classifiers_layers(name):
    # what the classifier fills keeps its weights; what starts new learns, the context blocks
    # included (a frozen non-local W stays at zero: the block would stay the identity)
    config = config_of("--model", name, "--freeze-trunk")
    model = training.build_model({**config, "n_class": 5})
    frozen = {k.rsplit(".", 1)[0] for k, p in model.named_parameters() if not p.requires_grad}
    trunk = set(VGG_CONVS) | ({"fc6", "fc7"} if name in FCNS else set())
    fixed = {"upscore2", "upscore_pool4", "upscore8"} if name in FCNS else set()  # bilinear
    assert frozen == trunk | fixed
    learned = {k for k, p in model.named_parameters() if p.requires_grad}
    assert any("_context." in k for k in learned) == (name in FCNS)
