"""python -m minifcn.predict: it writes only new files, never loses an input, and goes on past a
bad image."""
import os

import numpy as np
import pytest
from PIL import Image

from minifcn import io, predict, training
from minifcn import train as train_cli


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny FCN-8s checkpoint, as python -m minifcn.train would write it."""
    args = ["--model", "fcn8s", "--width", "0.0625", "--size", "32", "--device", "cpu"]
    config = {**train_cli.make_config(train_cli.parser().parse_args(args)), "n_class": 5}
    model = training.build_model(config)
    path = tmp_path_factory.mktemp("run") / training.BEST
    io.save_checkpoint(path, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": config})
    return str(path)


def photo(path, size=(20, 28), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def run(ckpt, *args):
    return predict.main([ckpt, *map(str, args), "--device", "cpu"])


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_predict_writes_a_label_map_and_an_overlay_per_image(tmp_path, ckpt, capsys):
    photo(tmp_path / "in" / "cat.jpg")
    assert run(ckpt, tmp_path / "in" / "cat.jpg", "--out", tmp_path / "out") == 0
    assert files(tmp_path / "out") == ["cat.jpg.label.png", "cat.jpg.overlay.png"]
    with Image.open(tmp_path / "out" / "cat.jpg.label.png") as label:
        assert label.mode == "P" and label.size == (28, 20)
    with Image.open(tmp_path / "out" / "cat.jpg.overlay.png") as ov:
        assert ov.mode == "RGB" and ov.size == (28, 20)
    assert "cat.jpg.label.png" in capsys.readouterr().out


def test_predict_never_replaces_the_input_photo(tmp_path, ckpt, capsys):
    cat = photo(tmp_path / "photos" / "cat.png")
    before = cat.read_bytes()
    assert run(ckpt, cat, "--out", tmp_path / "photos") != 0
    err = one_line_error(capsys)
    assert "--overwrite" in err and "cat.png" in err
    assert files(tmp_path / "photos") == ["cat.png"] and cat.read_bytes() == before


def test_predict_into_an_image_folder_only_with_overwrite_and_never_over_an_input(tmp_path, ckpt,
                                                                                  capsys):
    cat = photo(tmp_path / "photos" / "cat.png")
    assert run(ckpt, cat, "--out", tmp_path / "photos", "--overwrite") == 0
    assert files(tmp_path / "photos") == ["cat.png", "cat.png.label.png", "cat.png.overlay.png"]
    # a second run over everything in the folder would put cat.png's label map over an input
    label = tmp_path / "photos" / "cat.png.label.png"
    inputs = {p: p.read_bytes() for p in (cat, label)}
    assert run(ckpt, cat, label, "--out", tmp_path / "photos", "--overwrite") != 0
    err = one_line_error(capsys)
    assert "cat.png.label.png" in err and "input" in err
    assert {p: p.read_bytes() for p in inputs} == inputs
    assert len(files(tmp_path / "photos")) == 3


def test_predict_never_overwrites_an_existing_output_without_overwrite(tmp_path, ckpt, capsys):
    cat = photo(tmp_path / "in" / "cat.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cat.png.overlay.png").write_bytes(b"mine")
    assert run(ckpt, cat, "--out", out) != 0
    err = one_line_error(capsys)
    assert "cat.png.overlay.png" in err and "--overwrite" in err
    assert files(out) == ["cat.png.overlay.png"]  # nothing written, not even the label map
    assert (out / "cat.png.overlay.png").read_bytes() == b"mine"
    assert run(ckpt, cat, "--out", out, "--overwrite") == 0
    assert (out / "cat.png.overlay.png").read_bytes() != b"mine"


def test_predict_refuses_an_empty_out(tmp_path, ckpt, capsys, monkeypatch):
    cat = photo(tmp_path / "in" / "cat.png")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # where an empty --out would write
    assert run(ckpt, cat, "--out", "") != 0
    err = one_line_error(capsys)
    assert "--out" in err and "empty" in err
    assert files(tmp_path) == ["in/cat.png"]


def test_predict_outputs_of_same_named_images_in_two_folders_do_not_collide(tmp_path, ckpt):
    photo(tmp_path / "a" / "x.jpg", seed=1)
    photo(tmp_path / "b" / "x.png", size=(24, 24), seed=2)
    photo(tmp_path / "b" / "x.jpg", size=(16, 30), seed=3)
    out = tmp_path / "out"
    assert run(ckpt, tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "b" / "x.jpg",
               "--out", out) == 0
    assert files(out) == ["a/x.jpg.label.png", "a/x.jpg.overlay.png", "b/x.jpg.label.png",
                          "b/x.jpg.overlay.png", "b/x.png.label.png", "b/x.png.overlay.png"]
    for name, size in (("a/x.jpg", (28, 20)), ("b/x.png", (24, 24)), ("b/x.jpg", (30, 16))):
        with Image.open(out / f"{name}.label.png") as label:
            assert label.size == size, name


def test_predict_overlay_of_one_image_is_not_the_label_map_of_another(tmp_path, ckpt):
    dog = photo(tmp_path / "in" / "dog.png", seed=1)
    dog_overlay = photo(tmp_path / "in" / "dog_overlay.png", size=(12, 40), seed=2)
    dog_overlay_label = photo(tmp_path / "in" / "dog.png.overlay.png", size=(36, 8), seed=3)
    out = tmp_path / "out"
    assert run(ckpt, dog, dog_overlay, dog_overlay_label, "--out", out) == 0
    assert len(files(out)) == 6
    for name, size in (("dog.png", (28, 20)), ("dog_overlay.png", (40, 12)),
                       ("dog.png.overlay.png", (8, 36))):
        for kind in ("label", "overlay"):
            with Image.open(out / f"{name}.{kind}.png") as im:
                assert im.size == size, (name, kind)


def test_predict_refuses_an_out_that_is_a_file_before_loading_the_model(tmp_path, ckpt, capsys,
                                                                        monkeypatch):
    cat = photo(tmp_path / "cat.png")
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("model loaded"))
    for out in (not_a_folder, not_a_folder / "sub"):
        assert run(ckpt, cat, "--out", out) != 0
        err = one_line_error(capsys)
        assert "--out" in err and "notes.txt" in err and "not a folder" in err
    assert not_a_folder.read_text() == "mine"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into a read-only folder anyway, so there is no refusal "
                           "to see")
def test_predict_refuses_a_read_only_out_before_loading_the_model(tmp_path, ckpt, capsys,
                                                                  monkeypatch):
    cat = photo(tmp_path / "cat.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("model loaded"))
    try:
        assert run(ckpt, cat, "--out", locked / "sub") != 0
        err = one_line_error(capsys)
        assert "--out" in err and "not writable" in err
    finally:
        locked.chmod(0o755)


def test_predict_reports_an_out_it_cannot_write_into_before_loading_the_model(tmp_path, ckpt,
                                                                             capsys, monkeypatch):
    """The read-only case as root sees it too: the probe file cannot be made (simulated)."""
    cat = photo(tmp_path / "cat.png")

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", refused)  # the probe of io.check_folder
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("model loaded"))
    assert run(ckpt, cat, "--out", tmp_path / "out") != 0
    err = one_line_error(capsys)
    assert "--out" in err and "not writable" in err and "Permission denied" in err
    assert not (tmp_path / "out").exists()


def test_predict_goes_on_past_bad_images_and_reports_each(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    good = [photo(src / "a.png", seed=1), photo(src / "z.png", seed=2)]
    (src / "broken.png").write_bytes(b"not a png")
    (src / "truncated.png").write_bytes((src / "a.png").read_bytes()[:60])
    bad = [src / "broken.png", src / "missing.png", src / "truncated.png"]
    out = tmp_path / "out"
    assert run(ckpt, good[0], *bad, good[1], "--out", out) == 1
    assert files(out) == ["a.png.label.png", "a.png.overlay.png", "z.png.label.png",
                          "z.png.overlay.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 + 1  # one line per failure and a count
    for path, line in zip(bad, err):
        assert str(path) in line
    assert "3 of 5" in err[-1]


def test_predict_writes_atomically(tmp_path, ckpt, monkeypatch, capsys):
    cat = photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    calls = []
    real = io.atomic_path

    def spy(path):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(io, "atomic_path", spy)

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    assert run(ckpt, cat, "--out", out) == 1
    assert calls == [str(out / "cat.png.label.png")]
    assert files(out) == []  # no half-written file, no temporary left behind
    assert "disk full" in capsys.readouterr().err


def test_predict_refuses_a_png_declaring_20000x20000_in_one_line_and_goes_on(tmp_path, ckpt,
                                                                             capsys):
    from test_data_readers import png_bytes

    src = tmp_path / "in"
    good = [photo(src / "a.png", seed=1), photo(src / "z.png", seed=2)]
    bomb = src / "bomb.png"
    bomb.write_bytes(png_bytes(20000, 20000, 8, 0))  # 65 bytes
    out = tmp_path / "out"
    assert run(ckpt, good[0], bomb, good[1], "--out", out) == 1
    assert files(out) == ["a.png.label.png", "a.png.overlay.png", "z.png.label.png",
                          "z.png.overlay.png"]  # the image after it too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "1 of 3 images failed" in err[-1]
    assert err[0] == (f"error: predict: image {bomb} declares 400,000,000 pixels, more than the "
                      "16,777,216 minifcn reads; set MINIFCN_MAX_IMAGE_PIXELS to allow more, if "
                      "memory allows")


def test_predict_help_says_how_large_an_image_it_reads(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "MINIFCN_MAX_IMAGE_PIXELS" in text and "16,777,216" in text and "no tiling" in text


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_symlink_in_out_refused(tmp_path, ckpt, capsys, monkeypatch, overwrite):
    a, b = photo(tmp_path / "in" / "a" / "x.png"), photo(tmp_path / "in" / "b" / "y.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "a").symlink_to(elsewhere, target_is_directory=True)  # planted: out/a -> elsewhere
    monkeypatch.setattr(predict, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert run(ckpt, a, b, "--out", out, *overwrite) == 1
    err = one_line_error(capsys)
    assert f"--out {out}: {out / 'a'} leads outside --out (to {elsewhere})" in err, err
    assert list(elsewhere.iterdir()) == [] and files(out) == []


def test_predict_symlink_planted_while_it_runs_is_refused_at_the_write(tmp_path, ckpt, capsys,
                                                                      monkeypatch):
    a, b = photo(tmp_path / "in" / "a" / "x.png"), photo(tmp_path / "in" / "b" / "y.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    planned = predict.plan

    def plan_then_plant(*args, **kw):
        outputs = planned(*args, **kw)
        out.mkdir()
        (out / "b").symlink_to(elsewhere, target_is_directory=True)
        return outputs

    monkeypatch.setattr(predict, "plan", plan_then_plant)
    assert run(ckpt, a, b, "--out", out) == 1
    err = capsys.readouterr().err
    assert "leads outside --out" in err and "1 of 2 images failed" in err
    assert list(elsewhere.iterdir()) == [] and files(out) == ["a/x.png.label.png",
                                                              "a/x.png.overlay.png"]


def test_predict_out_that_is_itself_a_symlink_writes_where_it_leads(tmp_path, ckpt):
    cat = photo(tmp_path / "in" / "cat.png")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert run(ckpt, cat, "--out", tmp_path / "link") == 0
    assert files(real) == ["cat.png.label.png", "cat.png.overlay.png"]


def test_predict_refuses_an_output_that_is_a_folder_even_with_overwrite(tmp_path, ckpt, capsys,
                                                                       monkeypatch):
    cat = photo(tmp_path / "in" / "cat.png")
    (tmp_path / "out" / "cat.png.label.png").mkdir(parents=True)
    monkeypatch.setattr(predict, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert run(ckpt, cat, "--out", tmp_path / "out", "--overwrite") == 1
    err = one_line_error(capsys)
    assert "cat.png.label.png: is a folder" in err, err
    assert files(tmp_path / "out") == []


def test_predict_refuses_an_image_too_big_for_memory_naming_the_size_that_fits(tmp_path, ckpt,
                                                                               capsys):
    import re

    from minifcn.models.memory import forward_bytes

    big = photo(tmp_path / "in" / "big.png", size=(300, 400))
    small = photo(tmp_path / "in" / "small.png")
    model, _ = training.load_model(ckpt)
    gib = forward_bytes(model, (1, 3, 120, 160)) / 2**30  # room for 120x160, not 300x400
    out = tmp_path / "out"
    assert run(ckpt, big, small, "--out", out, "--max-memory", repr(gib)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[-1] == "error: 1 of 2 images failed", err
    assert err[0].startswith(f"error: {big}: the image (400x300) would need about "), err[0]
    w, h = map(int, re.search(r"up to about (\d+)x(\d+) fits", err[0]).groups())
    assert 110 <= h <= 120 and abs(w / h - 4 / 3) < 0.02
    assert forward_bytes(model, (1, 3, h, w)) <= gib * 2**30  # what it says fits, fits
    assert files(out) == ["small.png.label.png", "small.png.overlay.png"]


def test_predict_refuses_a_max_memory_that_is_not_a_positive_number(tmp_path, ckpt, capsys):
    cat = photo(tmp_path / "cat.png")
    assert run(ckpt, cat, "--out", tmp_path / "out", "--max-memory", "nan") == 1
    assert "--max-memory must be a positive number of GiB, got nan" in one_line_error(capsys)
