"""minifcn.data.Textures (regions told apart by texture) and write_voc / python -m minifcn.data,
which put a set on disk in VOC's layout for the real-data path."""
import numpy as np
import pytest
from PIL import Image

from minifcn.data import VOCSegmentation
from minifcn.data.__main__ import main
from minifcn.data.textures import TEXTURE_CLASSES, Textures
from minifcn.data.writer import write_voc

from _helpers import check_interface


def test_textures_interface_and_determinism():
    ds = Textures("train", n=6, size=64)
    check_interface(ds, len(TEXTURE_CLASSES))
    again = Textures("train", n=6, size=64)
    for i in (5, 0, 3):  # any order of access gives the same arrays
        np.testing.assert_array_equal(ds[i][0], again[i][0])
        np.testing.assert_array_equal(ds[i][1], again[i][1])
    val = Textures("val", n=6, size=64)
    assert not np.array_equal(ds[0][0], val[0][0])  # the splits draw from different streams
    assert all(set(np.unique(ds[i][1])) <= set(range(5)) for i in range(6))


def _box(a, k):
    """Mean of each k x k window (k odd), edges wrapped: a plain sum of shifted copies."""
    out = np.zeros_like(a)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(np.roll(a, dy, 0), dx, -1 if a.ndim == 2 else 1)
    return out / k**2


def _roughness(image):
    """Local spread (std over 7 x 7 windows) of the image after a 3 x 3 blur, summed over the
    colour channels: the blur takes out most of the pixel noise, the window sees a pattern's
    period; smooth blotches hardly vary inside one window."""
    out = 0
    for c in range(3):
        g = _box(image[:, :, c].astype(np.float64), 3)
        out = out + np.sqrt(np.maximum(_box(g * g, 7) - _box(g, 7) ** 2, 0))
    return out


def _interior(mask, margin=3):
    """``mask`` shrunk by ``margin`` pixels (a pixel stays if its whole square does)."""
    out = mask.copy()
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            out &= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_regions_carry_texture_and_the_background_none():
    # what makes the set a texture task: inside every class's regions the image has far more
    # fine detail than the background, which holds only blotches and pixel noise
    ds = Textures("train", n=40, size=96)
    rough = {c: [] for c in range(5)}
    for i in range(len(ds)):
        image, label = ds[i]
        r = _roughness(image)
        for c in range(5):
            inside = _interior(label == c)
            if inside.sum() > 50:
                rough[c].append(r[inside].mean())
    background = np.mean(rough[0])
    for c in range(1, 5):
        assert len(rough[c]) >= 3, TEXTURE_CLASSES[c]
        assert np.mean(rough[c]) > 2 * background, (TEXTURE_CLASSES[c], rough[c], background)


def test_write_voc_round_trip(tmp_path):
    splits = {"train": Textures("train", n=3, size=48), "val": Textures("val", n=2, size=48)}
    root = write_voc(tmp_path / "tex", splits)
    for split, ds in splits.items():
        back = VOCSegmentation(root, split)
        assert len(back) == len(ds)
        for i in range(len(ds)):
            image, label = ds[i]
            got_image, got_label = back[i]
            np.testing.assert_array_equal(got_label, label)  # PNG: exact
            assert np.abs(got_image.astype(int) - image).mean() < 8  # JPEG quality 90, 4:4:4
    ids = (root / "ImageSets/Segmentation/trainval.txt").read_text().split()
    assert ids == [f"train_{i:05d}" for i in range(3)] + [f"val_{i:05d}" for i in range(2)]
    assert Image.open(root / "SegmentationClass/train_00000.png").mode == "P"


def test_write_voc_never_writes_into_a_used_folder(tmp_path):
    (tmp_path / "used").mkdir()
    keep = tmp_path / "used" / "mine.txt"
    keep.write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        write_voc(tmp_path / "used", {"train": Textures("train", n=1, size=32)})
    assert keep.read_text() == "mine" and len(list((tmp_path / "used").iterdir())) == 1


def test_command_writes_and_refuses(tmp_path, capsys):
    assert main(["textures", str(tmp_path / "t"), "--n-train", "2", "--n-val", "1",
                 "--size", "32"]) == 0
    assert "--data voc:" in capsys.readouterr().out
    assert len(VOCSegmentation(tmp_path / "t", "train")) == 2
    for argv, words in ((["textures", str(tmp_path / "t")], "already exists"),
                        (["textures", str(tmp_path / "u"), "--size", "9"], "--size"),
                        (["textures", str(tmp_path / "u"), "--n-val", "0"], "--n-val")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err
