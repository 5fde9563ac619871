"""Instance maps in minifcn.data: Shapes and shapes-touching scenes, and the Loader's
instances=True. (VOC's SegmentationObject maps: tests/test_data_readers.py.)"""
import numpy as np
import pytest

from minifcn.data import Digits, Loader, MEAN_RGB, Shapes, ShapesClassification, ShapesTouching
from minifcn.data import shapes as shapes_module
from minifcn.data import shapes_touching as touching_module
from minifcn.data.shapes import renumber

from _helpers import check_interface


def adjacent(a, b):
    """True when boolean masks a and b share a pixel or a 4-neighbour edge (plain loops)."""
    h, w = a.shape
    for y in range(h):
        for x in range(w):
            if a[y, x]:
                for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                    if 0 <= y + dy < h and 0 <= x + dx < w and b[y + dy, x + dx]:
                        return True
    return False


def recorded_scenes(monkeypatch, ds, indices):
    """[(image, label, instance, objects)] where objects are the (class, whole-image mask) of
    every object painted, in drawing order, recorded from the drawing code's paint calls."""
    log = []
    real = shapes_module._paint

    def spy(rng, d, canvas, label, inst, rows, cols, mask, cls, j, color):
        full = np.zeros(label.shape, bool)
        full[rows, cols] = mask
        log.append((cls, full))
        return real(rng, d, canvas, label, inst, rows, cols, mask, cls, j, color)

    monkeypatch.setattr(shapes_module, "_paint", spy)
    monkeypatch.setattr(touching_module, "_paint", spy)
    out = []
    for i in indices:
        log.clear()
        out.append(ds.item(i, instances=True) + (list(log),))
    return out


def check_instances(label, inst, objects):
    """The instance map against the objects painted: each shown object's visible pixels (its
    mask less every later object's) carry one id, and only those; ids 1..K in drawing order;
    background 0; each id of one class, the object's."""
    assert inst.dtype == np.int64 and inst.shape == label.shape
    covered = np.zeros(label.shape, bool)
    visible = []
    for cls, mask in reversed(objects):  # the last drawn shows whole
        visible.append((cls, mask & ~covered))
        covered |= mask
    visible = [v for v in reversed(visible) if v[1].any()]
    assert (inst[~covered] == 0).all() and (label[~covered] == 0).all()
    assert sorted(np.unique(inst[covered])) == list(range(1, len(visible) + 1))
    for k, (cls, pixels) in enumerate(visible, 1):
        assert ((inst == k) == pixels).all(), k  # its visible pixels and only those
        assert (label[pixels] == cls).all()


def test_shapes_instances_match_the_objects_drawn(monkeypatch):
    ds = Shapes(n=30, seed=1)
    assert ds.has_instances
    scenes = recorded_scenes(monkeypatch, ds, range(30))
    for image, label, inst, objects in scenes:
        check_instances(label, inst, objects)
    monkeypatch.undo()
    for i in (0, 7):  # ds[i] and the instance-free path give the same pair
        image, label, inst = ds.item(i, instances=True)
        np.testing.assert_array_equal(ds[i][0], image)
        np.testing.assert_array_equal(ds[i][1], label)
        np.testing.assert_array_equal(ds.instance(i), inst)


def test_fixed_positions_stack_objects_and_later_ones_cover_earlier(monkeypatch):
    # every object at nearly one place: each covers part of the ones before it
    def place(rng, size, r, centres, tries=10):
        cy, cx = 40.0 + 6 * len(centres), 40.0 + 5 * len(centres)
        centres.append((cy, cx, r))
        return cy, cx

    monkeypatch.setattr(shapes_module, "_place", place)
    ds = Shapes(n=40, max_shapes=4)
    scenes = recorded_scenes(monkeypatch, ds, range(40))
    several, hidden = 0, 0
    for image, label, inst, objects in scenes:
        hidden += int(inst.max()) < len(objects)
        check_instances(label, inst, objects)
        shown = [inst == k for k in range(1, inst.max() + 1)]
        several += len(shown) > 1
        for a in range(1, len(shown)):
            # the objects overlap in a chain: each shown one touches some other
            assert any(adjacent(shown[a], shown[b]) for b in range(len(shown)) if b != a)
    assert several > 10 and hidden > 0  # some object hidden whole: its id is dropped


def test_renumber_drops_hidden_ids_and_marks_ignored_pixels():
    inst = np.array([[0, 3, 3], [5, 0, 5], [2, 2, 0]])
    label = np.array([[0, 1, 1], [2, 255, 2], [4, 4, 255]])
    np.testing.assert_array_equal(renumber(inst, label),
                                  [[0, 2, 2], [3, 255, 3], [1, 1, 255]])


def test_shapes_touching_interface_and_determinism(monkeypatch):
    ds = ShapesTouching(n=6)
    check_interface(ds, 5)
    assert ds.class_names == Shapes.class_names and ds.name == "shapes-touching"
    assert len(ShapesTouching()) == 10000 and len(ShapesTouching("val")) == 200
    a, b = ds.item(4, instances=True), ShapesTouching(n=6).item(4, instances=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(ds[4][0], Shapes(n=6)[4][0])
    for bad in (dict(max_groups=0), dict(split="test"), dict(size=8)):
        with pytest.raises(ValueError, match="ShapesTouching|Shapes"):
            ShapesTouching(**bad)


def test_shapes_touching_puts_touching_objects_of_one_class_in_every_scene(monkeypatch):
    ds = ShapesTouching(n=25, seed=2)
    merged = 0
    for image, label, inst, objects in recorded_scenes(monkeypatch, ds, range(25)):
        check_instances(label, inst, objects)
        ids = range(1, inst.max() + 1)
        cls = {k: int(label[inst == k][0]) for k in ids}
        pairs = [(a, b) for a in ids for b in ids
                 if a < b and cls[a] == cls[b] and adjacent(inst == a, inst == b)]
        assert pairs, "no two objects of one class touch"
        merged += len(pairs)
    assert merged >= 25


def test_datasets_without_instances_say_so_in_one_line():
    for ds in (Digits(n=2), ShapesClassification(n=2, size=32)):
        assert not ds.has_instances
        ds[0]  # the pair still comes
        with pytest.raises(ValueError, match="no instance maps") as e:
            ds.item(0, instances=True)
        assert "\n" not in str(e.value)
        with pytest.raises(ValueError, match="Loader: instances=True") as e:
            Loader(ds, instances=True)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- Loader


class Coded:
    """Item k: image green = column, label = column, instance = 1 + the pixel's (row, column)
    code, so a batch tells where each instance pixel came from."""

    n_class, class_names, ignore_index, name, has_instances = 2, ["a", "b"], 255, "coded", True

    def __init__(self, n, size=(6, 9)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def item(self, k, instances=False):
        h, w = self.size
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 0], image[..., 1] = k, np.arange(w)
        label = np.tile(np.arange(w), (h, 1)).astype(np.int64)
        inst = 1 + np.arange(h * w).reshape(h, w) % 200
        return (image, label, inst) if instances else (image, label)

    def __getitem__(self, k):
        return self.item(k)


@pytest.mark.parametrize("crop", [None, (4, 5), (8, 11)])
def test_loader_moves_instances_with_labels(crop):
    ds = Coded(12)
    loader = Loader(ds, batch_size=4, seed=3, flip=True, crop=crop, instances=True)
    plain = Loader(ds, batch_size=4, seed=3, flip=True, crop=crop)
    flipped = 0
    for (x, y, inst), (x2, y2) in zip(loader.epoch(1), plain.epoch(1)):
        np.testing.assert_array_equal(x, x2)  # the same plan as without instances
        np.testing.assert_array_equal(y, y2)
        assert inst.dtype == np.int64 and inst.shape == y.shape
        pad = y == 255
        assert (inst[pad] == 255).all()
        column = (inst - 1) % 9
        np.testing.assert_array_equal(column[~pad], y[~pad])
        np.testing.assert_array_equal(np.rint(x[:, 1] + MEAN_RGB[1])[~pad], y[~pad])
        for b in range(len(x)):  # each item: a window of the original, mirrored or not
            h, w = int((~pad[b]).any(1).sum()), int((~pad[b]).any(0).sum())
            code = (inst[b][:h, :w] - 1)  # crop_or_pad pads only at the bottom and right
            assert (np.diff(code // 9, axis=0) == 1).all()
            steps = np.diff(code % 9, axis=1)
            assert (steps == 1).all() or (steps == -1).all()
            flipped += bool(w > 1 and steps[0, 0] == -1)
    assert flipped > 0


def test_loader_instances_of_shapes_touching_are_the_datasets():
    ds = ShapesTouching(n=5)
    x, y, inst = next(Loader(ds, batch_size=5, shuffle=False, instances=True).epoch(0))
    for i in range(5):
        np.testing.assert_array_equal(inst[i], ds.instance(i))
        np.testing.assert_array_equal(y[i], ds[i][1])
    plain = type("Plain", (), {"__len__": lambda self: 1, "name": "plain"})()
    with pytest.raises(ValueError, match="Loader: instances=True but the dataset 'plain'"):
        Loader(plain, instances=True)
