"""Instances: telling apart touching objects of one class (docs: AFTER-FCN.md, "Instances").

FCN labels pixels with classes, so two touching discs come out as one region. Two trainable
heads tell instances apart, and a grouping step turns their outputs into an instance map:

- ``discriminative_loss`` (De Brabandere, Neven, Van Gool 2017): a D-dimensional embedding per
  pixel, pulled to its instance's mean and pushed away from other instances' means;
  ``cluster_embeddings`` groups it at inference.
- ``centre_targets`` and ``centre_offset_loss`` (Panoptic-DeepLab, Cheng et al. 2020): a heatmap
  of instance centres and each pixel's offset to its centre; ``group_by_centres`` groups them.
- ``connected_components``: the baseline without any head (each connected blob of a thing class
  is one instance), and ``instance_classes``: each instance's class by majority vote.

Maps: instance maps (N, H, W) int, 0 = no instance (background, stuff), 1..K the instances of
each image, 255 = ignore; class maps (N, H, W), 255 = ignore. The losses are compositions of
gradient-checked ops (so they run wherever the embedding lives, CPU or GPU); the grouping is
NumPy (CuPy inputs are copied to the host) and deterministic.
"""
from typing import NamedTuple

import numpy as np

from . import functional as F
from .autograd import Tensor, as_tensor
from .backend import as_numpy, get_array_module
from .primitives import check_4d, check_float

IGNORE = 255
EPS = 1e-8  # inside every norm's sqrt: a finite gradient where two embeddings coincide


def _norm(v, axis):
    """||v|| along axis, as sqrt(sum(v * v) + EPS): sqrt's gradient is infinite at 0."""
    return F.sqrt(F.sum(v * v, axis) + EPS)


def _host(a):
    return as_numpy(a.data if isinstance(a, Tensor) else a)


def _check_maps(op, name, maps, shape):
    if tuple(maps.shape) != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)} (N, H, W), got "
                         f"{tuple(maps.shape)}")
    if maps.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer array, got dtype {maps.dtype}")


def _zero_loss(x):
    return F.sum(x) * 0.0  # still a node of the graph: backward of an all-background batch works


# ----------------------------------------------------------------------------- discriminative loss


def discriminative_loss(embedding, instance, delta_v=0.5, delta_d=1.5, alpha=1.0, beta=1.0,
                        gamma=0.001, return_terms=False):
    """alpha L_var + beta L_dist + gamma L_reg of De Brabandere et al. (2017), a scalar Tensor.

    embedding (N, D, H, W) Tensor; instance (N, H, W) integer map. Per image, with mu_c the mean
    embedding of instance c's N_c pixels and C the number of instances:
        L_var  = 1/C sum_c 1/N_c sum_{i in c} [||mu_c - x_i|| - delta_v]_+^2
        L_dist = 1/(C(C-1)) sum_{A != B} [2 delta_d - ||mu_A - mu_B||]_+^2   (0 when C < 2)
        L_reg  = 1/C sum_c ||mu_c||
    averaged over the images that have an instance (0, with a gradient of 0, when none has).
    Only instance pixels (ids other than 0 and 255) enter: the paper computes the loss over the
    objects, the background is left to the semantic head. Norms are sqrt(sum v^2 + 1e-8).
    return_terms=True returns (loss, {"var": Tensor, "dist": Tensor, "reg": Tensor}) for logging.
    """
    op = "discriminative_loss"
    x = as_tensor(embedding)
    check_4d(op, "embedding", x)
    check_float(op, "embedding", x)
    n, d, h, w = x.shape
    xp = get_array_module(x.data)
    lab = xp.asarray(instance)
    _check_maps(op, "instance", lab, (n, h, w))
    lab = lab.reshape(n, h * w)
    ids = xp.unique(lab)
    ids = ids[(ids != 0) & (ids != IGNORE)]  # the batch's ids, one column each
    onehot = (lab[:, None, :] == ids[:, None]).astype(x.dtype)  # (N, K, HW)
    count = onehot.sum(-1)  # (N, K): 0 where the image lacks that id
    present = (count > 0).astype(x.dtype)
    c = present.sum(-1)  # (N,) instances per image
    images = int((c > 0).sum())
    if images == 0:
        zero = _zero_loss(x)
        return (zero, {"var": zero, "dist": zero, "reg": zero}) if return_terms else zero
    per_c = xp.maximum(c, 1)[:, None] * images  # each instance's share: 1 / (C images)
    average = onehot / xp.maximum(count, 1)[..., None]  # rows sum to 1: the segment means
    pixels = F.transpose(F.reshape(x, (n, d, h * w)), (0, 2, 1))  # (N, HW, D)
    mu = F.matmul(average, pixels)  # (N, K, D)

    # pull: every instance pixel against its own instance's mean; the pixel weights
    # 1 / (N_c C images) make the sums the nested means (0 off the instances)
    own_mean = F.matmul(xp.ascontiguousarray(onehot.transpose(0, 2, 1)), mu)  # (N, HW, D)
    pull = F.relu(_norm(own_mean - pixels, -1) - delta_v)
    l_var = F.sum(pull * pull * (average / per_c[..., None]).sum(1))

    # push: every ordered pair of distinct instances of an image
    k = ids.shape[0]
    gap = _norm(F.reshape(mu, (n, k, 1, d)) - F.reshape(mu, (n, 1, k, d)), -1)  # (N, K, K)
    push = F.relu(2 * delta_d - gap)
    pairs = present[:, :, None] * present[:, None, :] * (1 - xp.eye(k, dtype=x.dtype))
    pairs /= (xp.maximum(c * (c - 1), 1) * images)[:, None, None]
    l_dist = F.sum(push * push * pairs)

    l_reg = F.sum(_norm(mu, -1) * (present / per_c))
    loss = alpha * l_var + beta * l_dist + gamma * l_reg
    return (loss, {"var": l_var, "dist": l_dist, "reg": l_reg}) if return_terms else loss


# ----------------------------------------------------------------------------- centres and offsets


class CentreTargets(NamedTuple):
    """Panoptic-DeepLab's targets for a batch of instance maps, float32 NumPy arrays."""
    heatmap: np.ndarray  # (N, 1, H, W): a Gaussian (peak 1) per instance's centre, their max
    offset: np.ndarray  # (N, 2, H, W): (cy - y, cx - x) to the instance's centre of mass, or 0
    heat_mask: np.ndarray  # (N, 1, H, W): 1, 0 at ignored (255) pixels
    offset_mask: np.ndarray  # (N, 1, H, W): 1 at instance pixels, else 0


def centre_targets(instance, sigma=2.0):
    """The heatmap and offset targets of a batch of instance maps (N, H, W) -> CentreTargets.

    Each instance's centre is its centre of mass (cy, cx): the offsets point there; its Gaussian
    exp(-r^2 / 2 sigma^2) is centred on the nearest pixel, so the peak is exactly 1 (as in
    Panoptic-DeepLab's target generator; the Gaussian is not truncated here). sigma = 2 pixels:
    the paper's 8 pixels on 1024x2048 Cityscapes (and 641x641 COCO crops) scale to 0.75-1.2 at
    96x96, rounded up because the heads predict at output stride 4-8 and upsample bilinearly,
    which cannot draw a narrower peak; it stays well inside the smallest synthetic object.
    """
    op = "centre_targets"
    inst = _host(instance)
    if inst.ndim != 3:
        raise ValueError(f"{op}: expected instance of shape (N, H, W), got {inst.shape}")
    _check_maps(op, "instance", inst, inst.shape)
    if not sigma > 0:
        raise ValueError(f"{op}: sigma must be positive, got {sigma}")
    n, h, w = inst.shape
    flat = inst.reshape(n, -1).astype(np.int64)
    own = (flat != 0) & (flat != IGNORE)
    heat = np.zeros((n, 1, h, w), np.float32)
    offset = np.zeros((n, 2, h * w), np.float32)
    if own.any():
        key = np.arange(n)[:, None] * (int(flat.max()) + 1) + flat  # (image, id), sorted by image
        keys, seg = np.unique(key[own], return_inverse=True)
        image, pixel = np.nonzero(own)
        ys, xs = np.divmod(pixel, w)
        count = np.bincount(seg)
        cy, cx = np.bincount(seg, ys) / count, np.bincount(seg, xs) / count
        offset[image, 0, pixel] = cy[seg] - ys
        offset[image, 1, pixel] = cx[seg] - xs
        ry, rx = np.floor(cy + 0.5), np.floor(cx + 0.5)
        gy = np.exp(-(np.arange(h) - ry[:, None]) ** 2 / (2 * sigma ** 2))
        gx = np.exp(-(np.arange(w) - rx[:, None]) ** 2 / (2 * sigma ** 2))
        gauss = gy[:, :, None] * gx[:, None, :]  # (instances, H, W)
        owner = keys // (int(flat.max()) + 1)
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # each image's first
        heat[owner[first], 0] = np.maximum.reduceat(gauss, first, axis=0)
    return CentreTargets(heat, offset.reshape(n, 2, h, w),
                         (inst != IGNORE).astype(np.float32)[:, None],
                         own.reshape(n, 1, h, w).astype(np.float32))


def centre_offset_loss(heat_pred, off_pred, targets, centre_weight=200.0, offset_weight=0.1,
                       return_terms=False):
    """centre_weight MSE(heatmap) + offset_weight L1(offsets), Panoptic-DeepLab's instance loss.

    heat_pred (N, 1, H, W) and off_pred (N, 2, H, W) Tensors; targets a CentreTargets (from
    ``centre_targets``). MSE: the mean over the pixels not ignored; L1: |dy| + |dx| per pixel,
    the mean over instance pixels (both as Panoptic-DeepLab's code: sum of weighted losses over
    the sum of the weights). The paper's weights are 200 and 0.01 at 1024x2048. 200 stays:
    a Gaussian's share of the pixels is about the same here (sigma 2 at 96 px, sigma 8 at
    ~1000 px) so the heatmap MSE is of the same size. The offsets are in pixels and shrink with
    the image, about 10x from ~1000 to 96 px, so 0.01 becomes 0.1 to keep their share.
    return_terms=True returns (loss, {"centre": Tensor, "offset": Tensor}).
    """
    op = "centre_offset_loss"
    hp, opred = as_tensor(heat_pred), as_tensor(off_pred)
    for name, t, c in (("heat_pred", hp, 1), ("off_pred", opred, 2)):
        check_4d(op, name, t)
        check_float(op, name, t)
        want = (targets.heatmap.shape[0], c) + tuple(targets.heatmap.shape[2:])
        if tuple(t.shape) != want:
            raise ValueError(f"{op}: expected {name} of shape {want} (the targets'), got "
                             f"{tuple(t.shape)}")
    xp = get_array_module(hp.data)

    def put(a):
        return xp.asarray(a, dtype=hp.dtype)

    heat_mask, offset_mask = put(targets.heat_mask), put(targets.offset_mask)
    err = hp - put(targets.heatmap)
    centre = F.sum(err * err * heat_mask) * (1.0 / max(float(heat_mask.sum()), 1.0))
    diff = opred - put(targets.offset)
    absolute = F.relu(diff) + F.relu(-diff)  # |diff|, its gradient sign(diff) (0 at 0, as torch)
    offset = F.sum(absolute * offset_mask) * (1.0 / max(float(offset_mask.sum()), 1.0))
    loss = centre_weight * centre + offset_weight * offset
    return (loss, {"centre": centre, "offset": offset}) if return_terms else loss


# ----------------------------------------------------------------------------- grouping (NumPy)


def _batch(op, maps, name="class_map"):
    a = _host(maps)
    if a.ndim not in (2, 3):
        raise ValueError(f"{op}: expected {name} of shape (N, H, W) or (H, W), got {a.shape}")
    return a[None] if a.ndim == 2 else a, a.ndim == 2


def _number(roots, labels, plane):
    """Per image, ids 1..K for the sorted, distinct flat indices ``roots`` (in their order)."""
    image = roots // plane
    rank = np.arange(roots.size) - np.searchsorted(image, image)
    return rank[np.searchsorted(roots, labels)] + 1


def connected_components(class_map, stuff=(0,), connectivity=4):
    """Each connected region of one thing class is an instance: (N, H, W) -> instance map.

    Classes in ``stuff`` and 255 get 0. connectivity 4 (edge neighbours, the default, as
    scipy.ndimage.label's) or 8 (corners too). Ids 1..K per image in raster order of each
    component's first pixel. Vectorised min-label propagation: every pixel starts with its own
    flat index, takes the smallest label among its same-class neighbours, then follows its
    label's label (pointer jumping, which halves long chains), until nothing changes; each
    component ends labelled by its first pixel.
    """
    op = "connected_components"
    cls, single = _batch(op, class_map)
    if connectivity not in (4, 8):
        raise ValueError(f"{op}: connectivity must be 4 or 8, got {connectivity!r}")
    n, h, w = cls.shape
    size = n * h * w
    thing = ~np.isin(cls, np.asarray(list(stuff) + [IGNORE]))
    # label[size] is a sentinel that no pixel of a thing ever takes (label[label] stays defined)
    label = np.append(np.where(thing.ravel(), np.arange(size), size), size)
    grid = label[:size].reshape(n, h, w)  # a view: updates write into label
    steps = [(1, 0), (0, 1)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    pairs = []
    for dy, dx in steps:  # a: pixels (y, x) that have a neighbour (y + dy, x + dx), b: those
        a = (slice(None), slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
        b = (slice(None), slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
        pairs.append((a, b, thing[a] & (cls[a] == cls[b])))
    while True:
        before = label.copy()
        for a, b, same in pairs:  # labels only ever fall, and stay a pixel of the component
            grid[a] = np.minimum(grid[a], np.where(same, grid[b], size))
            grid[b] = np.minimum(grid[b], np.where(same, grid[a], size))
        while True:  # pointer jumping
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
            grid = label[:size].reshape(n, h, w)
        if np.array_equal(label, before):
            break
    out = np.zeros(size, np.int64)
    lab = label[:size][thing.ravel()]
    out[thing.ravel()] = _number(np.unique(lab), lab, h * w)
    out = out.reshape(n, h, w)
    return out[0] if single else out


def cluster_embeddings(embedding, foreground_mask, delta_v=0.5, bandwidth=None, max_iter=50):
    """The discriminative loss's grouping: (N, D, H, W) embeddings -> (N, H, W) instance map.

    Per image, while a foreground pixel is unassigned: seed at the first one in raster order
    (deterministic, where the paper picks at random), move the centre to the mean of the
    unassigned embeddings within ``bandwidth`` of it until it stops (mean-shift), then give the
    pixels within ``bandwidth`` of that centre (and the seed) the next id. bandwidth defaults to
    the paper's threshold 2 delta_v: a trained net keeps each pixel within delta_v of its mean
    and the means 2 delta_d = 3 apart, so 2 delta_v around a mean takes its whole instance and
    none of another. Background (mask False) is 0.
    """
    op = "cluster_embeddings"
    emb = _host(embedding)
    if emb.ndim != 4:
        raise ValueError(f"{op}: expected embedding of shape (N, D, H, W), got {emb.shape}")
    n, d, h, w = emb.shape
    fg, _ = _batch(op, foreground_mask, "foreground_mask")
    if fg.shape != (n, h, w):
        raise ValueError(f"{op}: expected foreground_mask of shape {(n, h, w)}, got {fg.shape}")
    radius2 = (2 * delta_v if bandwidth is None else bandwidth) ** 2
    out = np.zeros((n, h * w), np.int64)
    for i in range(n):
        where = np.flatnonzero(fg[i])
        pts = emb[i].reshape(d, -1).T[where].astype(np.float64)
        ids = np.zeros(where.size, np.int64)
        k = 0
        while (ids == 0).any():
            free = ids == 0
            seed = int(np.argmax(free))
            centre = pts[seed]
            for _ in range(max_iter):
                near = free & (((pts - centre) ** 2).sum(1) <= radius2)
                moved = pts[near].mean(0) if near.any() else centre
                if np.allclose(moved, centre, rtol=0, atol=1e-9):
                    break
                centre = moved
            near = free & (((pts - centre) ** 2).sum(1) <= radius2)
            near[seed] = True  # progress even if the centre drifted off its seed
            k += 1
            ids[near] = k
        out[i, where] = ids
    return out.reshape(n, h, w)


def group_by_centres(heatmap, offsets, foreground_mask, threshold=0.1, nms_kernel=7, top_k=None):
    """Panoptic-DeepLab's grouping: heatmap (N, 1, H, W), offsets (N, 2, H, W) -> (N, H, W).

    Centres are the pixels equal to the max of their nms_kernel x nms_kernel neighbourhood and
    above ``threshold`` (the strongest ``top_k`` per image, when given); every foreground pixel
    (x, y) goes to the centre nearest to (y + dy, x + dx). Ids 1..K in raster order of the
    centres that got pixels. nms_kernel 7 (odd): Cityscapes' value in the paper, at sigma 2 about
    +-1.5 sigma, far smaller than the objects. A plateau of equal maxima gives several centres.
    """
    op = "group_by_centres"
    heat = _host(heatmap)
    off = _host(offsets)
    if heat.ndim != 4 or heat.shape[1] != 1:
        raise ValueError(f"{op}: expected heatmap of shape (N, 1, H, W), got {heat.shape}")
    n, _, h, w = heat.shape
    if off.shape != (n, 2, h, w):
        raise ValueError(f"{op}: expected offsets of shape {(n, 2, h, w)}, got {off.shape}")
    fg, _ = _batch(op, foreground_mask, "foreground_mask")
    if fg.shape != (n, h, w):
        raise ValueError(f"{op}: expected foreground_mask of shape {(n, h, w)}, got {fg.shape}")
    if nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ValueError(f"{op}: nms_kernel must be a positive odd int, got {nms_kernel!r}")
    heat = heat[:, 0].astype(np.float64)
    r = nms_kernel // 2
    padded = np.pad(heat, ((0, 0), (r, r), (r, r)), constant_values=-np.inf)
    pooled = np.lib.stride_tricks.sliding_window_view(padded, (nms_kernel,) * 2, (1, 2))
    peaks = (heat == pooled.max((-2, -1))) & (heat > threshold)
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w), np.int64)
    for i in range(n):
        py, px = np.nonzero(peaks[i])
        if top_k is not None and py.size > top_k:
            keep = np.sort(np.argsort(-heat[i, py, px], kind="stable")[:top_k])
            py, px = py[keep], px[keep]
        if py.size == 0:
            continue
        m = fg[i].astype(bool)
        ty, tx = yy[m] + off[i, 0][m], xx[m] + off[i, 1][m]
        nearest = np.argmin((ty[:, None] - py) ** 2 + (tx[:, None] - px) ** 2, axis=1)
        _, ids = np.unique(nearest, return_inverse=True)  # drop centres that got no pixel
        out[i][m] = ids.ravel() + 1
    return out


def instance_classes(class_map, instance_map):
    """A class map consistent with the instances: every pixel of an instance takes the class
    most of its pixels have (ties: the smaller class; 255 votes only if nothing else does).
    Pixels outside the instances keep their class. (N, H, W) or (H, W), as class_map."""
    op = "instance_classes"
    cls, single = _batch(op, class_map)
    inst, _ = _batch(op, instance_map, "instance_map")
    if inst.shape != cls.shape:
        raise ValueError(f"{op}: instance_map {inst.shape} and class_map {cls.shape} differ")
    out = cls.copy()
    own = (inst != 0) & (inst != IGNORE)
    if own.any():
        valid = cls != IGNORE
        classes = int(cls[valid].max()) + 1 if valid.any() else 1
        key = (np.arange(cls.shape[0])[:, None, None] * (int(inst[own].max()) + 1) + inst)[own]
        vote = np.where(valid, cls, classes)[own]  # 255 counts as class `classes`
        counts = np.bincount(key * (classes + 1) + vote,
                             minlength=(int(key.max()) + 1) * (classes + 1))
        counts = counts.reshape(-1, classes + 1)
        counts[:, classes] = np.where(counts[:, :classes].any(1), 0, counts[:, classes])
        winner = counts.argmax(1)
        out[own] = np.where(winner[key] == classes, IGNORE, winner[key])
    return out[0] if single else out
