"""minifcn.training.limits: every size option has an upper bound that names itself, a
checkpoint's config is checked before a net is built from it, and --device cuda without a GPU
is one line, in every command."""
import numpy as np
import pytest

from minifcn import backend, evaluate, export, io, predict, training
from minifcn import pretrain as pretrain_cli
from minifcn import train as train_cli
from minifcn.training import limits

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def one_line(text):
    text = text.strip()
    assert text.startswith("error: ") and "\n" not in text, text
    return text


# ---- the size options of train and pretrain ---------------------------------------------------

@pytest.mark.parametrize("option, value, bound", [
    ("--pad1", "100000", f"<= {limits.MAX_PAD1}"),
    ("--crop", "20000", f"<= {limits.MAX_SIZE}"),
    ("--size", "5000", f"<= {limits.MAX_SIZE}"),
    ("--loss-sampling", "1e-9", f">= {limits.MIN_LOSS_SAMPLING}"),
    ("--n-train", str(10**12), f"<= {limits.MAX_IMAGES}"),
    ("--n-val", str(10**12), f"<= {limits.MAX_IMAGES}"),
    ("--batch-size", "5000", f"<= {limits.MAX_BATCH}"),
    ("--val-batch-size", "5000", f"<= {limits.MAX_BATCH}"),
    ("--width", "100", f"(0, {limits.MAX_WIDTH:g}]"),
    ("--width", "nan", "positive number"),
    ("--lr", "nan", "positive number"),
    ("--seed", "-1", f"0..{limits.MAX_SEED}"),
])
def test_train_size_options_have_upper_bounds_that_name_themselves(option, value, bound):
    args = train_cli.parser().parse_args([option, value, "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        train_cli.make_config(args)
    message = one_line(str(e.value))
    assert message.startswith(f"error: {option} ") and bound in message, message


def test_loss_sampling_that_asks_for_too_many_images_a_step_says_so():
    args = train_cli.parser().parse_args(["--loss-sampling", "0.01", "--batch-size", "16"])
    with pytest.raises(SystemExit, match=r"takes 1600 images a step, more than 1024"):
        train_cli.make_config(args)
    same = train_cli.parser().parse_args(["--loss-sampling", "0.01", "--batch-size", "16",
                                          "--sampling-batch", "same"])
    assert train_cli.make_config(same)["loss_sampling"] == 0.01  # 16 images a step: fine


def test_a_refused_option_makes_no_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--pad1", "100000", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert "--pad1 must be <= 500" in str(e.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--n-train", str(10**12)), ("--batch-size", "5000"),
                                           ("--width", "nan"), ("--seed", "-1")])
def test_pretrain_size_options_are_bounded_too(tmp_path, option, value):
    with pytest.raises(SystemExit) as e:
        pretrain_cli.main([option, value, "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert one_line(str(e.value)).startswith(f"error: {option} ")
    assert not (tmp_path / "run").exists()


def test_evaluate_batch_size_has_an_upper_bound(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "none.npz"), "--batch-size", "5000",
                          "--device", "cpu"]) == 1
    assert "--batch-size must be <= 1024" in one_line(capsys.readouterr().err)


# ---- --device cuda without a GPU ----------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    """As on a machine where CuPy sees no GPU (whatever this one has)."""
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_reason", "CuPy sees no CUDA device")


@pytest.mark.parametrize("command", ["train", "pretrain", "evaluate", "predict"])
def test_device_cuda_without_a_gpu_is_one_line_in_every_command(tmp_path, capsys, monkeypatch,
                                                                no_gpu, command):
    monkeypatch.setattr(training.build, "load_model", lambda *a, **k: pytest.fail("loaded"))
    ckpt = str(tmp_path / "checkpoint.npz")
    argv = {"train": ["--iters", "1", "--out", str(tmp_path / "run")],
            "pretrain": ["--iters", "1", "--out", str(tmp_path / "run")],
            "evaluate": [ckpt], "predict": [ckpt, str(tmp_path / "a.png"), "--out",
                                            str(tmp_path / "out")]}[command]
    main = {"train": train_cli.main, "pretrain": pretrain_cli.main, "evaluate": evaluate.main,
            "predict": predict.main}[command]
    try:
        rc, err = main(argv + ["--device", "cuda"]), capsys.readouterr().err
    except SystemExit as e:
        rc, err = 1, str(e)
    assert rc == 1
    assert one_line(err).startswith("error: --device cuda: no GPU here (CuPy sees no CUDA device)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no outputs


# ---- a checkpoint's config, checked before anything is built -----------------------------------

GOOD = dict(model="fcn8s", n_class=3, width=1 / 64, pad1=100, data="shapes", size=32,
            data_seed=0, device="cpu")
BAD_CONFIGS = {
    "a billion classes": ({**GOOD, "n_class": 10**9}, "n_class 1000000000; expected an int "
                                                      "in 1..255"),
    "n_class a string": ({**GOOD, "n_class": "21"}, "n_class '21'"),
    "n_class missing": ({k: v for k, v in GOOD.items() if k != "n_class"}, "lacks n_class"),
    "width a string": ({**GOOD, "width": "0.5"}, "width '0.5'"),
    "width huge": ({**GOOD, "width": 1e9}, "width 1000000000.0"),
    "width nan": ({**GOOD, "width": float("nan")}, "width nan"),
    "pad1 huge": ({**GOOD, "pad1": 10**6}, "pad1 1000000"),
    "pad1 missing": ({k: v for k, v in GOOD.items() if k != "pad1"}, "lacks pad1"),
    "unknown model": ({**GOOD, "model": "fcn9s"}, "names the model 'fcn9s'"),
    "model a list": ({**GOOD, "model": ["fcn8s"]}, "names the model ['fcn8s']"),
    "size huge": ({**GOOD, "size": 10**7}, "size 10000000"),
    "not a dict": ([1, 2], "is a list, not a dict"),
}


def tiny_checkpoint(path, config):
    """A checkpoint of a few hundred bytes: one small array and ``config``."""
    io.save_checkpoint(path, {"model/conv1_1.bias": np.zeros(1, np.float32)}, {"config": config})
    assert path.stat().st_size < 3000
    return str(path)


@pytest.mark.parametrize("case", BAD_CONFIGS)
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_bad_checkpoint_config_is_one_line_before_any_net_is_built(tmp_path, capsys,
                                                                    monkeypatch, case, command):
    config, expect = BAD_CONFIGS[case]
    ckpt = tiny_checkpoint(tmp_path / "checkpoint.npz", config)
    monkeypatch.setattr(training.build, "build_model", lambda *a, **k: pytest.fail("built"))
    if command == "evaluate":
        rc = evaluate.main([ckpt, "--device", "cpu"])
    elif command == "predict":
        from PIL import Image
        Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
        rc = predict.main([ckpt, str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                           "--device", "cpu"])
    else:
        rc = export.main([ckpt, "--to", "safetensors", "--out", str(tmp_path / "w.safetensors")])
    assert rc == 1
    err = one_line(capsys.readouterr().err)
    assert f"{ckpt}: its config " in err and expect in err, err


def test_a_good_checkpoint_config_passes_the_check():
    assert limits.check_checkpoint_config(dict(GOOD), "x.npz") == GOOD
    plain = {k: v for k, v in GOOD.items() if k != "pad1"}
    assert limits.check_checkpoint_config({**plain, "model": "unet"}, "x.npz")["model"] == "unet"
    auto = {**GOOD, "pad1": "auto"}
    assert limits.check_checkpoint_config(auto, "x.npz")["pad1"] == "auto"


@pytest.mark.parametrize("cli", [train_cli, pretrain_cli])
def test_the_help_says_each_bound(cli):
    helps = {a.dest: a.help or "" for a in cli.parser()._actions}
    for dest, bound in (("size", "2048"), ("crop", "2048"), ("pad1", "500"),
                        ("n_train", "1000000"), ("n_val", "1000000"), ("batch_size", "1024"),
                        ("val_batch_size", "1024"), ("loss_sampling", "0.01"),
                        ("width", "4"), ("seed", "2**32")):
        if dest in helps and not (cli is pretrain_cli and dest == "size"):
            assert bound in helps[dest], (dest, helps[dest])


def test_weights_that_do_not_fit_the_checkpoints_config_name_the_file(tmp_path, capsys):
    model = training.build_model({**GOOD, "n_class": 5})
    ckpt = tmp_path / "checkpoint.npz"
    io.save_checkpoint(ckpt, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": GOOD})  # the config says 3 classes, the weights have 5
    assert evaluate.main([str(ckpt), "--device", "cpu"]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {ckpt}: load_state_dict into FCN8s: ") and "score_fr" in err
