"""Tests of the file-backed sets of minifcn.data: the VOC and folder readers, get_dataset."""
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from minifcn.data import (VOC_CLASSES, Digits, FolderSegmentation, Loader, Shapes,
                          ShapesTouching, VOCSegmentation, get_dataset, voc_palette)

from minifcn.data.readers import read_image, read_image_size, read_label

from _helpers import check_interface


# ---------------------------------------------------------------- VOC

def write_label(path, label):
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())
    im.putpalette(voc_palette().tobytes())
    im.save(path)


def make_voc(root, year="VOC2012", sizes=((40, 50), (30, 30), (24, 36)), seed=0):
    """A tiny VOC tree under root/VOCdevkit/year; returns {name: (image, label)} written."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / year
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    written = {}
    for k, (h, w) in enumerate(sizes):
        name = f"2007_{k:06d}"
        yy, xx = np.mgrid[:h, :w]
        image = np.stack([yy * 3 + 20 * k, xx * 3, np.full_like(yy, 128)], -1).astype(np.uint8)
        label = rng.integers(0, 21, (h, w))
        label[0, :] = 255  # a boundary
        Image.fromarray(image).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        write_label(base / "SegmentationClass" / f"{name}.png", label)
        written[name] = (image, label)
    names = list(written)
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:2]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text(names[2] + "\n")
    return base, written


def test_voc_palette():
    def slow(i):  # the VOC devkit's construction, bit by bit
        r = g = b = 0
        for j in range(8):
            r += ((i >> (3 * j)) & 1) * 2 ** (7 - j)
            g += ((i >> (3 * j + 1)) & 1) * 2 ** (7 - j)
            b += ((i >> (3 * j + 2)) & 1) * 2 ** (7 - j)
        return r, g, b

    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert [tuple(pal[i]) for i in range(256)] == [slow(i) for i in range(256)]
    # published values: background, aeroplane, person, ignore
    assert tuple(pal[0]) == (0, 0, 0) and tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[15]) == (192, 128, 128) and tuple(pal[255]) == (224, 224, 192)
    np.testing.assert_array_equal(voc_palette(21), pal[:21])
    with pytest.raises(ValueError):
        voc_palette(300)


def test_voc_loads_what_was_written(tmp_path):
    base, written = make_voc(tmp_path)
    ds = VOCSegmentation(base, "train")
    check_interface(ds, 21)
    assert ds.class_names == list(VOC_CLASSES) and ds.class_names[15] == "person"
    assert len(ds) == 2 and len(VOCSegmentation(base, "val")) == 1
    for i, name in enumerate(list(written)[:2]):
        image, label = ds[i]
        np.testing.assert_array_equal(label, written[name][1])
        assert image.shape == written[name][0].shape
        assert np.abs(image.astype(int) - written[name][0]).mean() < 3  # JPEG is lossy


def write_objects(base, written, seed=1):
    """SegmentationObject/ palette PNGs for the tree ``make_voc`` wrote: a few rectangles per
    image, each one instance of one class, later ones over earlier ones; returns {name: map}."""
    rng = np.random.default_rng(seed)
    (base / "SegmentationObject").mkdir()
    maps = {}
    for name, (image, label) in written.items():
        h, w = label.shape
        inst, cls = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
        for k in range(1, 4):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            inst[y:y + 8, x:x + 10], cls[y:y + 8, x:x + 10] = k, rng.integers(1, 21)
        inst[0, :] = cls[0, :] = 255  # the void band, as VOC draws it on both maps
        cls[:, -1] = 255  # void on the class map alone: the reader voids the instance map too
        write_label(base / "SegmentationObject" / f"{name}.png", inst)
        write_label(base / "SegmentationClass" / f"{name}.png", cls)
        written[name] = (image, cls)
        maps[name] = np.where(cls == 255, 255, inst)
    return maps


def test_voc_reads_segmentation_object_instance_maps(tmp_path):
    base, written = make_voc(tmp_path)
    assert not VOCSegmentation(base, "train").has_instances  # no SegmentationObject/ yet
    with pytest.raises(ValueError, match="no instance maps"):
        VOCSegmentation(base, "train").item(0, instances=True)
    maps = write_objects(base, written)
    with Image.open(base / "SegmentationObject" / f"{next(iter(maps))}.png") as im:
        assert im.mode == "P"  # a palette PNG, as VOC ships them
    ds = VOCSegmentation(base, "train")
    assert ds.has_instances and ds.notice is None
    for i, name in enumerate(ds.names):
        image, label, inst = ds.item(i, instances=True)
        assert inst.dtype == np.int64
        np.testing.assert_array_equal(inst, maps[name])
        np.testing.assert_array_equal(label, written[name][1])
        np.testing.assert_array_equal(ds[i][1], label)  # ds[i] still gives the pair
        for k in np.unique(inst[(inst > 0) & (inst < 255)]):
            assert len(np.unique(label[inst == k])) == 1  # one class per instance
    x, y, inst = next(Loader(ds, batch_size=1, shuffle=False, flip=False, crop=(20, 20),
                             instances=True).epoch(0))
    np.testing.assert_array_equal(inst[0], maps[ds.names[0]][:20, :20])
    # a list naming an id without its object PNG: no instance maps, and a notice says why
    (base / "SegmentationObject" / f"{ds.names[1]}.png").unlink()
    partial = VOCSegmentation(base, "train")
    assert not partial.has_instances and "lacks 1 of the 2" in partial.notice
    assert len(partial) == 2 and partial[1][1].shape == written[ds.names[1]][1].shape


def test_voc_root_discovery(tmp_path):
    base, _ = make_voc(tmp_path)
    devkit = tmp_path / "VOCdevkit"
    for root in (base, devkit, tmp_path):
        assert VOCSegmentation(root, "train").root == base
    make_voc(tmp_path / "old", year="VOC2011")
    assert VOCSegmentation(tmp_path / "old" / "VOCdevkit").root.name == "VOC2011"
    both = tmp_path / "both"
    make_voc(both, year="VOC2011")
    make_voc(both, year="VOC2012")
    assert VOCSegmentation(both / "VOCdevkit").root.name == "VOC2012"  # 2012 preferred


MIXED_VOC = ((40, 50), (30, 30), (40, 50), (24, 36), (30, 30), (40, 50), (17, 23))


def test_group_by_size_loader_over_voc_of_mixed_sizes_batches_each_size_apart(tmp_path):
    base, written = make_voc(tmp_path, sizes=MIXED_VOC)
    names = list(written)
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(names) + "\n")
    ds = VOCSegmentation(base, "train")
    labels = [ds[i][1] for i in range(len(ds))]  # random, so they tell the images apart
    for shuffle in (False, True):
        loader = Loader(ds, batch_size=2, shuffle=shuffle, group_by_size=True)
        batches = list(loader.epoch(0))
        assert len(batches) == len(loader) == 5  # 40x50: 2 + 1, 30x30: 1, 24x36: 1, 17x23: 1
        seen = []
        for x, y in batches:
            for j in range(len(x)):
                (k,) = [i for i, lab in enumerate(labels)
                        if lab.shape == y[j].shape and (lab == y[j]).all()]
                seen.append(k)
            assert y.shape[1:] == MIXED_VOC[seen[-1]] and x.shape[2:] == y.shape[1:]
        assert sorted(seen) == list(range(len(MIXED_VOC)))  # every image exactly once
    with pytest.raises(ValueError, match="mixes image sizes 40x50 .item 0. and 30x30 .item 1."):
        list(Loader(ds, batch_size=2, shuffle=False).epoch(0))


def test_image_size_is_the_loaded_image_size_for_every_dataset(tmp_path):
    base, _ = make_voc(tmp_path / "v", sizes=MIXED_VOC)
    make_folder(tmp_path / "f", n=3)
    for ds in (VOCSegmentation(base, "train"), VOCSegmentation(base, "val"),
               FolderSegmentation(tmp_path / "f"), Shapes("val", n=2, size=40),
               Digits("val", n=2, size=24)):
        for i in range(len(ds)):
            size = ds.image_size(i)
            assert size == ds[i][0].shape[:2] and all(type(s) is int for s in size)
        assert ds.image_size(-1) == ds.image_size(len(ds) - 1)
        with pytest.raises(IndexError):
            ds.image_size(len(ds))


def test_image_size_reads_the_file_header_only(tmp_path, monkeypatch):
    base, written = make_voc(tmp_path / "v")
    make_folder(tmp_path / "f", n=2)
    voc, folder = VOCSegmentation(base, "train"), FolderSegmentation(tmp_path / "f")
    from minifcn.data import folder as folder_module, voc as voc_module

    def no_decoding(*args):
        raise AssertionError("image_size decoded the image")

    monkeypatch.setattr(voc_module, "read_pair", no_decoding)
    monkeypatch.setattr(folder_module, "read_pair", no_decoding)
    assert voc.image_size(0) == (40, 50) and folder.image_size(1) == (12, 16)
    monkeypatch.undo()
    # a corrupt or missing file: the error names it
    name = list(written)[0]
    (base / "JPEGImages" / f"{name}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=f"cannot decode image .*{name}.jpg"):
        voc.image_size(0)
    (base / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{name}.jpg"):
        voc.image_size(0)


def test_voc_errors(tmp_path):
    base, written = make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCSegmentation(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        VOCSegmentation(base, "trainval")
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        VOCSegmentation(base, "bogus")
    (base / "ImageSets/Segmentation/seg11valid.txt").write_text(list(written)[0] + "\n")
    assert len(VOCSegmentation(base, "seg11valid")) == 1  # any list present is a split

    names = list(written)
    # undecodable image
    (base / "JPEGImages" / f"{names[0]}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=f"{names[0]}.jpg"):
        VOCSegmentation(base, "train")[0]
    # label of another size
    write_label(base / "SegmentationClass" / f"{names[1]}.png", np.zeros((10, 10), int))
    with pytest.raises(ValueError, match=f"{names[1]}.png.*must match"):
        VOCSegmentation(base, "train")[1]
    # label value >= n_class and not 255
    bad = written[names[2]][1].copy()
    bad[5, 5] = 21
    write_label(base / "SegmentationClass" / f"{names[2]}.png", bad)
    with pytest.raises(ValueError, match=f"{names[2]}.png has values \\[21\\]"):
        VOCSegmentation(base, "val")[0]
    # colour (RGB) label instead of indices
    Image.fromarray(np.zeros((24, 36, 3), np.uint8)).save(
        base / "SegmentationClass" / f"{names[2]}.png")
    with pytest.raises(ValueError, match="mode RGB"):
        VOCSegmentation(base, "val")[0]
    # missing image
    (base / "JPEGImages" / f"{names[2]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{names[2]}.jpg"):
        VOCSegmentation(base, "val")[0]


# ---------------------------------------------------------------- folder format

def make_folder(root, n=30, n_class=4, seed=0, splits=False):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written = {}
    for k in range(n):
        name = f"img{k:03d}"
        image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        label = rng.integers(0, n_class, (12, 16)).astype(np.uint8)
        label[:, 0] = 255
        Image.fromarray(image).save(root / "images" / f"{name}.png")  # lossless
        Image.fromarray(label).save(root / "masks" / f"{name}.png")  # mode L
        written[name] = (image, label)
    if splits:
        (root / "splits").mkdir()
        names = sorted(written)
        (root / "splits/train.txt").write_text("\n".join(names[:5]))
        (root / "splits/val.txt").write_text("\n".join(names[5:7]))
    return written


def test_folder_loads_and_infers_n_class(tmp_path):
    written = make_folder(tmp_path, n_class=4)
    ds = FolderSegmentation(tmp_path)
    check_interface(ds, 4)
    assert len(ds) == 30 and ds.names == sorted(written)
    for i in (0, 7):
        image, label = ds[i]
        np.testing.assert_array_equal(image, written[ds.names[i]][0])
        np.testing.assert_array_equal(label, written[ds.names[i]][1])
    assert FolderSegmentation(tmp_path, n_class=9).n_class == 9
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\nperson\n")
    assert FolderSegmentation(tmp_path).class_names == ["sky", "road", "car", "person"]
    with pytest.raises(ValueError, match="classes.txt"):
        FolderSegmentation(tmp_path, n_class=5)


def test_folder_notice_says_when_the_number_of_classes_was_guessed(tmp_path):
    make_folder(tmp_path, n=5, n_class=4)
    mask = tmp_path / "masks" / "img002.png"
    label = np.array(Image.open(mask))
    label[3, 3] = 17  # one stray pixel, no classes.txt: an 18-class problem
    Image.fromarray(label).save(mask)
    ds = FolderSegmentation(tmp_path)
    assert ds.n_class == 18
    assert ds.notice == (f"folder:{tmp_path}: no classes.txt; 18 classes inferred from the "
                         "largest label (17) in the masks")
    assert FolderSegmentation(tmp_path, n_class=20).notice is None  # told, not guessed
    (tmp_path / "classes.txt").write_text("\n".join(f"c{k}" for k in range(18)))
    assert FolderSegmentation(tmp_path).notice is None
    base, _ = make_voc(tmp_path / "v")
    for other in (VOCSegmentation(base), Shapes("val", n=1), Digits("val", n=1)):
        assert other.notice is None


def test_folder_splits(tmp_path):
    written = make_folder(tmp_path / "a", n=40)
    train = FolderSegmentation(tmp_path / "a", split="train")
    val = FolderSegmentation(tmp_path / "a", split="val")
    assert sorted(train.names + val.names) == sorted(written) and not set(train.names) & set(val.names)
    assert val.names == [n for n in sorted(written) if zlib.crc32(n.encode()) % 10 == 0]
    assert 0 < len(val) < len(train)
    make_folder(tmp_path / "b", splits=True)
    assert FolderSegmentation(tmp_path / "b", split="train").names == [f"img{k:03d}" for k in range(5)]
    assert len(FolderSegmentation(tmp_path / "b", split="val")) == 2
    with pytest.raises(ValueError, match="unknown split 'test'"):
        FolderSegmentation(tmp_path / "a", split="test")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderSegmentation(tmp_path / "nowhere")
    written = make_folder(tmp_path, n=4)
    names = sorted(written)
    with pytest.raises(ValueError, match=f"{names[0]}.png has values \\[2, 3\\]"):
        FolderSegmentation(tmp_path, n_class=2)[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / f"{names[1]}.png")
    with pytest.raises(ValueError, match="must match"):
        FolderSegmentation(tmp_path)[1]
    (tmp_path / "images" / f"{names[2]}.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot decode image .*{names[2]}.png"):
        FolderSegmentation(tmp_path)[2]
    (tmp_path / "masks" / f"{names[3]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"masks.{names[3]}.png"):
        FolderSegmentation(tmp_path)


def test_get_dataset(tmp_path):
    assert isinstance(get_dataset("shapes", "val"), Shapes)
    assert isinstance(get_dataset("digits", "train", n=3), Digits)
    touching = get_dataset("shapes-touching", "val", n=2)
    assert isinstance(touching, ShapesTouching) and touching.class_names == Shapes.class_names
    base, _ = make_voc(tmp_path / "v")
    assert len(get_dataset(f"voc:{tmp_path / 'v' / 'VOCdevkit'}", "val")) == 1
    make_folder(tmp_path / "f", splits=True)
    assert len(get_dataset(f"folder:{tmp_path / 'f'}", "train")) == 5
    specs = "shapes, shapes-touching, digits, shapes-cls, voc:ROOT, folder:ROOT"
    with pytest.raises(ValueError, match=specs):
        get_dataset("cityscapes", "train")
    with pytest.raises(ValueError, match="needs a folder"):
        get_dataset("voc:", "train")


def test_voc_split_file_anywhere_and_ids_checked_up_front(tmp_path):
    base, written = make_voc(tmp_path, sizes=((40, 50), (30, 30), (24, 36), (20, 20)))
    names = list(written)
    listed = tmp_path / "seg11valid.txt"  # the authors' list, outside the VOC tree
    listed.write_text(f"{names[3]}\n\n  {names[1]}  \n")
    ds = get_dataset(f"voc:{tmp_path / 'VOCdevkit'}", "val", split_file=listed)
    assert ds.names == [names[3], names[1]] and ds.split == "seg11valid"
    np.testing.assert_array_equal(ds[0][1], written[names[3]][1])
    with pytest.raises(FileNotFoundError, match="split file .*nowhere.txt not found"):
        VOCSegmentation(base, split_file=tmp_path / "nowhere.txt")
    # ids of another year, or typos: one line naming the list and the first id missing
    listed.write_text(f"{names[0]}\n2011_999999\n{names[2]}\n2011_888888\n")
    for split_file, split in ((listed, None), (None, "extra")):
        if split:
            (base / "ImageSets/Segmentation/extra.txt").write_text(listed.read_text())
        with pytest.raises(FileNotFoundError) as e:
            VOCSegmentation(base, split or "val", split_file=split_file)
        msg = str(e.value)
        assert "\n" not in msg and "'2011_999999'" in msg and "lists 2 of its 4 ids" in msg, msg
        assert str(split_file or base / "ImageSets/Segmentation/extra.txt") in msg
    (base / "SegmentationClass" / f"{names[0]}.png").unlink()  # an image without its label
    listed.write_text(f"{names[1]}\n{names[0]}\n")
    with pytest.raises(FileNotFoundError, match=f"first is '{names[0]}' .*{names[0]}.png"):
        VOCSegmentation(base, split_file=listed)


# ---------------------------------------------------------------- issue 31: sizes and bit depths
# (the PNGs are written by hand: zlib and struct, after the PNG specification, not by Pillow)

def png_bytes(width, height, bit_depth, colour_type, rows=None):
    """A PNG of ``rows`` (big-endian samples, one array per row; none: an empty IDAT)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"" if rows is None else b"".join(b"\x00" + np.asarray(r).tobytes() for r in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type,
                                         0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


READERS = {"image": lambda p: read_image(p, "test"), "size": lambda p: read_image_size(p, "test"),
           "label": lambda p: read_label(p, 21, "test")}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_png_declaring_20000x20000_is_refused_before_decoding_saying_the_limit(tmp_path, reader):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(20000, 20000, 8, 0))  # 65 bytes, 400 million pixels declared
    assert path.stat().st_size < 100
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            READERS[reader](path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    message = str(e.value)
    assert f"{path} declares 400,000,000 pixels, more than the 16,777,216 minifcn reads; set " \
           "MINIFCN_MAX_IMAGE_PIXELS to allow more" in message and "\n" not in message
    assert peak < 4 * 2**20


def test_minifcn_max_image_pixels_sets_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(40, 30, 8, 0, np.zeros((30, 40), np.uint8)))
    monkeypatch.setenv("MINIFCN_MAX_IMAGE_PIXELS", "1199")
    for reader in READERS.values():
        with pytest.raises(ValueError, match=r"a\.png declares 40x30 = 1,200 pixels, more than "
                                             r"the 1,199 minifcn reads"):
            reader(path)
    monkeypatch.setenv("MINIFCN_MAX_IMAGE_PIXELS", "1200")
    assert read_image(path, "test").shape == (30, 40, 3) and read_label(path, 21, "t").sum() == 0
    monkeypatch.setenv("MINIFCN_MAX_IMAGE_PIXELS", "-5")
    with pytest.raises(ValueError, match=r"MINIFCN_MAX_IMAGE_PIXELS='-5': expected a number of "
                                         r"pixels"):
        read_image(path, "test")


SIXTEEN = np.array([[0, 255, 256, 1000], [32767, 32768, 65280, 65535]], dtype=">u2")


def test_a_16_bit_greyscale_image_is_scaled_to_8_bits_not_flattened_to_255(tmp_path):
    path = tmp_path / "grey16.png"
    path.write_bytes(png_bytes(4, 2, 16, 0, SIXTEEN))
    image = read_image(path, "test")
    high_bytes = np.frombuffer(SIXTEEN.tobytes(), np.uint8)[0::2].reshape(2, 4)
    assert image.dtype == np.uint8 and image.shape == (2, 4, 3)
    assert (image == high_bytes[..., None]).all()  # [0, 0, 1, 3], [127, 128, 255, 255]


def test_a_16_bit_colour_image_reads_as_its_high_bytes_as_greyscale_does(tmp_path):
    rgb = np.stack([SIXTEEN, SIXTEEN[:, ::-1], np.full_like(SIXTEEN, 40000)], -1).astype(">u2")
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(4, 2, 16, 2, rgb.reshape(2, -1)))
    assert (read_image(path, "test") == (rgb.astype(np.int64) >> 8)).all()


def test_16_bit_labels_are_read_as_they_are_and_values_past_the_classes_refused(tmp_path):
    label = np.array([[0, 1, 2, 255], [20, 3, 255, 0]], dtype=">u2")
    path = tmp_path / "label16.png"
    path.write_bytes(png_bytes(4, 2, 16, 0, label))
    assert (read_label(path, 21, "test") == label).all()  # class numbers, never scaled
    label[0, 0] = 300
    path.write_bytes(png_bytes(4, 2, 16, 0, label))
    with pytest.raises(ValueError, match=r"label16\.png has values \[300\] outside 0\.\.20"):
        read_label(path, 21, "test")


def test_a_floating_point_image_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.ones((3, 4), np.float32)).save(path)  # Pillow mode "F"
    with pytest.raises(ValueError, match=r"depth\.tif is a floating-point image \(Pillow mode "
                                         r"F\); expected 8 or 16 bits a channel"):
        read_image(path, "test")
