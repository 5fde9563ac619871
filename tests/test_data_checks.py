"""Bad data found before a run starts, not after an epoch: a bad validation label, train and
val lists that overlap; and split files with a byte order mark (issue 31)."""
import numpy as np
import pytest
from PIL import Image

from minifcn import train as train_cli
from minifcn.data import FolderSegmentation, VOCSegmentation
from minifcn.training import loop

from test_train import make_voc

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)

VOC = ["--model", "fcn32s", "--width", "0.0625", "--batch-size", "1", "--lr", "0.001",
       "--device", "cpu", "--iters", "50"]


@pytest.fixture
def no_training(monkeypatch):
    """A run that trains a single step fails the test: what is checked must be found before."""
    def trained(*args, **kw):
        raise AssertionError("a training step ran before the data was checked")

    monkeypatch.setattr(loop, "train_step", trained)


def train(tmp_path, capsys, *extra):
    run = tmp_path / "run"
    rc = train_cli.main(["--data", f"voc:{tmp_path / 'VOCdevkit'}", *VOC, "--out", str(run),
                         *extra])
    return rc, capsys.readouterr().err, run


@pytest.mark.parametrize("bad", ["value", "size"])
def test_a_bad_validation_label_is_found_before_training(tmp_path, capsys, no_training, bad):
    voc = make_voc(tmp_path, n=6)  # train: the first 4, val: the last 2
    label = voc / "SegmentationClass" / "2007_000005.png"
    with Image.open(label) as im:
        values, palette = np.array(im), im.getpalette()
    if bad == "value":
        values[3, 3] = 30  # VOC has classes 0..20 and 255
    else:
        values = values[:-2]
    png = Image.fromarray(values.astype(np.uint8), mode="P")
    png.putpalette(palette)
    png.save(label)
    rc, err, run = train(tmp_path, capsys)
    assert rc == 1 and err.count("\n") == 1 and str(label) in err, err
    assert ("[30]" if bad == "value" else "they must match") in err
    assert not run.exists()  # nothing written: the run never started


def test_train_and_val_lists_that_overlap_are_refused(tmp_path, capsys, no_training):
    voc = make_voc(tmp_path, n=6)
    (voc / "ImageSets/Segmentation/val.txt").write_text(
        "2007_000004\n2007_000001\n2007_000005\n2007_000000\n")
    rc, err, run = train(tmp_path, capsys)
    assert rc == 1 and err.count("\n") == 1, err
    assert "the train and val splits share 2 of their ids (2007_000000, 2007_000001)" in err
    assert not run.exists()


def test_folder_train_and_val_lists_that_overlap_are_refused(tmp_path, capsys, no_training):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    for i in range(8):
        Image.fromarray(np.full((24, 24, 3), 10 * i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full((24, 24), i % 2, np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "splits" / "train.txt").write_text("\n".join(map(str, range(7))) + "\n")
    (root / "splits" / "val.txt").write_text("7\n" + "\n".join(map(str, range(7))) + "\n")
    rc = train_cli.main(["--data", f"folder:{root}", *VOC, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert "share 7 of their ids (0, 1, 2, 3, 4 and 2 more)" in err


def test_a_split_file_with_a_byte_order_mark_reads_its_first_id(tmp_path):
    voc = make_voc(tmp_path, n=6)
    names = [f"2007_{i:06d}" for i in range(4)]
    (voc / "ImageSets/Segmentation/train.txt").write_bytes(
        b"\xef\xbb\xbf" + "\r\n".join(names).encode() + b"\r\n")  # as Notepad saves it
    assert VOCSegmentation(voc, split="train").names == names
    split_file = tmp_path / "mine.txt"
    split_file.write_bytes(b"\xef\xbb\xbf2007_000005\n")
    assert VOCSegmentation(voc, split_file=split_file).names == ["2007_000005"]

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    for name in ("cat", "dog"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{name}.png")
    (root / "splits" / "train.txt").write_bytes(b"\xef\xbb\xbfcat\ndog\n")
    (root / "classes.txt").write_bytes(b"\xef\xbb\xbfbackground\nthing\n")
    data = FolderSegmentation(root, split="train")
    assert data.names == ["cat", "dog"] and data.class_names == ["background", "thing"]


def test_a_split_file_that_is_not_utf8_is_a_one_line_error(tmp_path):
    voc = make_voc(tmp_path, n=6)
    split = voc / "ImageSets/Segmentation/train.txt"
    split.write_bytes(b"2007_000000\n\xff\xfe2007_000001\n")
    with pytest.raises(ValueError, match=f"{split} is not UTF-8 text"):
        VOCSegmentation(voc, split="train")
