"""minifcn.instances: the discriminative loss and the centre/offset loss against loops written
here and against PyTorch in float64 (values and gradients), their gradient checks, and the
grouping (connected components, embedding clustering, centre grouping, majority classes)
against plain loops and synthetic scenes whose instances are known."""
import math
from collections import deque

import numpy as np
import pytest

from minifcn import Tensor, gradcheck
from minifcn.instances import (CentreTargets, centre_offset_loss, centre_targets,
                               cluster_embeddings, connected_components, discriminative_loss,
                               group_by_centres, instance_classes)

# ---------------------------------------------------------------- discriminative loss


def instance_batch(rng, n=4, h=6, w=7):
    """Random ids: image 0 ids 1..3 and 255, image 1 the non-contiguous 2 and 7, image 2 one
    instance (no pairs), image 3 none (left out of the average)."""
    inst = np.zeros((n, h, w), np.int64)
    inst[0] = rng.choice([0, 1, 2, 3, 255], size=(h, w))
    inst[1] = rng.choice([0, 2, 7], size=(h, w))
    inst[2, 1:4, 2:5] = 1
    inst[3] = rng.choice([0, 255], size=(h, w))
    return inst


def slow_discriminative(emb, inst, dv, dd):
    """The paper's three terms with loops over images, instances, pixels and pairs."""
    terms, images = np.zeros(3), 0
    for i in range(emb.shape[0]):
        ids = [c for c in sorted(set(inst[i].ravel().tolist())) if c not in (0, 255)]
        if not ids:
            continue
        images += 1
        mus, var = [], 0.0
        for c in ids:
            xs = [emb[i, :, y, x] for y, x in zip(*np.nonzero(inst[i] == c))]
            mu = sum(xs) / len(xs)
            mus.append(mu)
            var += sum(max(math.dist(mu, x) - dv, 0) ** 2 for x in xs) / len(xs)
        dist = sum(max(2 * dd - math.dist(a, b), 0) ** 2
                   for j, a in enumerate(mus) for k, b in enumerate(mus) if j != k)
        cc = len(ids)
        terms += [var / cc, dist / (cc * (cc - 1)) if cc > 1 else 0.0,
                  sum(math.hypot(*m) for m in mus) / cc]
    return terms / max(images, 1)


def torch_discriminative(torch, emb, inst, dv, dd, a, b, g):
    """The same loss in PyTorch, per image with boolean masks (norms with the same 1e-8)."""
    def norm(v):
        return torch.sqrt((v * v).sum(-1) + 1e-8)
    var = dist = reg = 0
    images = 0
    for i in range(emb.shape[0]):
        ids = [c for c in np.unique(inst[i]).tolist() if c not in (0, 255)]
        if not ids:
            continue
        images += 1
        x = emb[i].reshape(emb.shape[1], -1).T
        lab = torch.from_numpy(inst[i].reshape(-1))
        mus = torch.stack([x[lab == c].mean(0) for c in ids])
        v = sum((torch.relu(norm(x[lab == c] - mus[j]) - dv) ** 2).mean()
                for j, c in enumerate(ids))
        var = var + v / len(ids)
        if len(ids) > 1:
            gap = norm(mus[:, None] - mus[None])
            off = ~torch.eye(len(ids), dtype=torch.bool)
            dist = dist + (torch.relu(2 * dd - gap[off]) ** 2).sum() / (len(ids) * (len(ids) - 1))
        reg = reg + norm(mus).mean()
    return (a * var + b * dist + g * reg) / images


def test_discriminative_loss_against_loops(rng):
    inst = instance_batch(rng)
    emb = rng.standard_normal((4, 3, 6, 7))
    emb[0, :, inst[0] == 2] += 3  # one instance far from the rest: some pairs past 2 delta_d
    loss, terms = discriminative_loss(Tensor(emb), inst, 0.5, 1.5, 1.0, 1.0, 0.001,
                                      return_terms=True)
    want = slow_discriminative(emb, inst, 0.5, 1.5)
    got = [terms[k].item() for k in ("var", "dist", "reg")]
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert want[1] > 0 and want[0] > 0
    np.testing.assert_allclose(loss.item(), want @ [1, 1, 0.001], rtol=1e-7)
    other = discriminative_loss(Tensor(emb), inst, 0.3, 2.0, 0.5, 2.0, 0.1)
    want = slow_discriminative(emb, inst, 0.3, 2.0) @ [0.5, 2, 0.1]
    np.testing.assert_allclose(other.item(), want, rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_discriminative_loss_matches_pytorch(rng, dtype):
    torch = pytest.importorskip("torch")
    inst = instance_batch(rng)
    emb = (rng.standard_normal((4, 2, 6, 7)) * 1.5).astype(dtype)
    ours = Tensor(emb, requires_grad=True)
    theirs = torch.tensor(emb, requires_grad=True)
    y = discriminative_loss(ours, inst, 0.5, 1.5, 1.0, 0.7, 0.01)
    ty = torch_discriminative(torch, theirs, inst, 0.5, 1.5, 1.0, 0.7, 0.01)
    y.backward()
    ty.backward()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert y.dtype == dtype and ours.grad.dtype == dtype
    np.testing.assert_allclose(y.item(), ty.item(), rtol=tol)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=tol, atol=tol * 1e-2)


def test_discriminative_loss_gradcheck(rng):
    inst = instance_batch(rng)
    emb = Tensor(rng.standard_normal((4, 3, 6, 7)), requires_grad=True)
    assert gradcheck(lambda e: discriminative_loss(e, inst, 0.5, 1.5, 1.0, 1.0, 0.1), [emb])


def test_discriminative_loss_without_instances_is_zero_with_a_gradient(rng):
    emb = Tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    inst = np.where(rng.random((2, 4, 4)) < 0.5, 255, 0)
    loss, terms = discriminative_loss(emb, inst, return_terms=True)
    loss.backward()
    assert loss.item() == 0 and terms["dist"].item() == 0
    np.testing.assert_array_equal(emb.grad, 0)


def test_discriminative_loss_errors(rng):
    emb = Tensor(rng.standard_normal((2, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"discriminative_loss: expected instance of shape "
                                         r"\(2, 4, 4\)"):
        discriminative_loss(emb, np.zeros((2, 4, 5), np.int64))
    with pytest.raises(TypeError, match="discriminative_loss: instance must be an integer array"):
        discriminative_loss(emb, np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="discriminative_loss: embedding must be 4-D"):
        discriminative_loss(Tensor(np.zeros((2, 4, 4))), np.zeros((2, 4, 4), np.int64))


# ---------------------------------------------------------------- centres and offsets


def touching_discs(n=2, size=24):
    """Instance maps of discs that touch (so one class, several instances), and 255 pixels."""
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for k, (cy, cx, r) in enumerate([(7 + i, 7, 5), (7 + i, 16, 4.5), (17, 11 - i, 4)], 1):
            inst[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    inst[:, 20:23, 1] = 4  # an L whose centre of mass (21.4, 1.6) is off the pixel grid
    inst[:, 22, 1:4] = 4
    inst[1, :, 22:] = 255
    return inst


def test_centre_targets_against_loops():
    inst = touching_discs()
    n, h, w = inst.shape
    t = centre_targets(inst, sigma=1.5)
    heat, off = np.zeros((n, 1, h, w)), np.zeros((n, 2, h, w))
    for i in range(n):
        for c in set(inst[i].ravel().tolist()) - {0, 255}:
            pts = list(zip(*np.nonzero(inst[i] == c)))
            cy, cx = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
            ry, rx = math.floor(cy + 0.5), math.floor(cx + 0.5)
            for y in range(h):
                for x in range(w):
                    g = math.exp(-((y - ry) ** 2 + (x - rx) ** 2) / (2 * 1.5 ** 2))
                    heat[i, 0, y, x] = max(heat[i, 0, y, x], g)
            for y, x in pts:
                off[i, :, y, x] = cy - y, cx - x
    assert isinstance(t, CentreTargets) and t.heatmap.dtype == np.float32
    np.testing.assert_allclose(t.heatmap, heat, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t.offset, off, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(t.offset_mask[:, 0], (inst != 0) & (inst != 255))
    np.testing.assert_array_equal(t.heat_mask[:, 0], inst != 255)
    assert t.heatmap.max() == 1.0  # the peaks sit on pixels
    empty = centre_targets(np.zeros((1, 5, 5), np.int64))
    assert not empty.heatmap.any() and not empty.offset_mask.any()


def torch_centre_offset(torch, hp, op, t, cw, ow):
    hm, om = torch.from_numpy(t.heat_mask).double(), torch.from_numpy(t.offset_mask).double()
    mse = torch.nn.functional.mse_loss(hp, torch.from_numpy(t.heatmap).double(), reduction="none")
    l1 = torch.nn.functional.l1_loss(op, torch.from_numpy(t.offset).double(), reduction="none")
    return cw * (mse * hm).sum() / hm.sum() + ow * (l1 * om).sum() / om.sum()


def test_centre_offset_loss_matches_pytorch_and_loops(rng):
    torch = pytest.importorskip("torch")
    t = centre_targets(touching_discs(), sigma=2.0)
    hp, op = rng.random(t.heatmap.shape), rng.standard_normal(t.offset.shape) * 3
    hp_t, op_t = Tensor(hp, requires_grad=True), Tensor(op, requires_grad=True)
    loss, terms = centre_offset_loss(hp_t, op_t, t, 200.0, 0.1, return_terms=True)
    loss.backward()
    th, to = torch.tensor(hp, requires_grad=True), torch.tensor(op, requires_grad=True)
    ref = torch_centre_offset(torch, th, to, t, 200.0, 0.1)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(hp_t.grad, th.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(op_t.grad, to.grad.numpy(), rtol=1e-12, atol=1e-15)
    # the terms, with loops
    mse = l1 = cnt_h = cnt_o = 0.0
    for idx in np.ndindex(hp.shape):
        if t.heat_mask[idx]:
            mse, cnt_h = mse + (hp[idx] - t.heatmap[idx]) ** 2, cnt_h + 1
        if t.offset_mask[idx]:
            n, _, y, x = idx
            l1 += sum(abs(op[n, c, y, x] - t.offset[n, c, y, x]) for c in (0, 1))
            cnt_o += 1
    np.testing.assert_allclose([terms["centre"].item(), terms["offset"].item()],
                               [mse / cnt_h, l1 / cnt_o], rtol=1e-10)


def test_centre_offset_loss_gradcheck(rng):
    t = centre_targets(touching_discs(), sigma=2.0)
    hp = Tensor(rng.random(t.heatmap.shape), requires_grad=True)
    # offsets kept 0.05 away from the targets: |.| has a kink there
    step = rng.choice([-1, 1], t.offset.shape) * (0.05 + rng.random(t.offset.shape))
    op = Tensor(t.offset + step, requires_grad=True)
    assert gradcheck(lambda a, b: centre_offset_loss(a, b, t, 2.0, 0.5), [hp, op])


def test_centre_offset_loss_errors(rng):
    t = centre_targets(touching_discs())
    with pytest.raises(ValueError, match=r"centre_offset_loss: expected off_pred of shape "
                                         r"\(2, 2, 24, 24\)"):
        centre_offset_loss(Tensor(t.heatmap), Tensor(t.offset[:, :1]), t)
    with pytest.raises(ValueError, match="centre_targets: expected instance of shape"):
        centre_targets(np.zeros((4, 4), np.int64))


# ---------------------------------------------------------------- connected components


def bfs_components(cls, stuff, eight):
    """Breadth-first search from each unvisited thing pixel, in raster order."""
    n, h, w = cls.shape
    out = np.zeros(cls.shape, np.int64)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if eight:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    for i in range(n):
        k = 0
        for y in range(h):
            for x in range(w):
                c = cls[i, y, x]
                if c in stuff or c == 255 or out[i, y, x]:
                    continue
                k += 1
                out[i, y, x] = k
                queue = deque([(y, x)])
                while queue:
                    py, px = queue.popleft()
                    for dy, dx in steps:
                        qy, qx = py + dy, px + dx
                        if 0 <= qy < h and 0 <= qx < w and not out[i, qy, qx] \
                                and cls[i, qy, qx] == c:
                            out[i, qy, qx] = k
                            queue.append((qy, qx))
    return out


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("p", [0.3, 0.55, 0.8])
def test_connected_components_against_bfs(rng, connectivity, p):
    cls = rng.choice([0, 1, 2, 3, 255], size=(3, 17, 23), p=[1 - p, p / 3, p / 3, p / 6, p / 6])
    got = connected_components(cls, stuff=(0, 3), connectivity=connectivity)
    np.testing.assert_array_equal(got, bfs_components(cls, (0, 3), connectivity == 8))


def test_connected_components_of_a_long_snake_and_a_2d_map():
    snake = np.zeros((15, 15), np.int64)
    snake[::2] = 1  # rows joined at alternating ends: one component 113 pixels long
    snake[1::4, -1] = 1
    snake[3::4, 0] = 1
    got = connected_components(snake)
    assert got.shape == (15, 15) and got.max() == 1 and (got > 0).sum() == (snake > 0).sum()
    np.testing.assert_array_equal(got, bfs_components(snake[None], (0,), False)[0])


# ---------------------------------------------------------------- clustering and grouping


def canonical(inst):
    """Renumber an instance map by each instance's first pixel in raster order, per image."""
    out = np.zeros_like(inst)
    for i in range(inst.shape[0]):
        seen = {}
        for idx, v in np.ndenumerate(inst[i]):
            if v:
                out[i][idx] = seen.setdefault(v, len(seen) + 1)
    return out


def test_cluster_embeddings_recovers_known_clusters(rng):
    n, d, h, w = 2, 3, 16, 18
    truth = rng.integers(0, 5, size=(n, h, w))  # 0 background, 1..4 scattered instances
    emb = np.zeros((n, d, h, w), np.float32)
    for i in range(n):
        centres = np.eye(d)[rng.permutation(d)] * 3.5  # >= 3 (2 delta_d) apart
        centres = np.vstack([centres, -centres[:1]])
        for c in range(1, 5):
            m = truth[i] == c
            v = rng.standard_normal((m.sum(), d))
            v *= (rng.random((m.sum(), 1)) * 0.5) / np.linalg.norm(v, axis=1, keepdims=True)
            emb[i][:, m] = (centres[c - 1] + v).T  # within delta_v of the centre
        emb[i][:, truth[i] == 0] = 50  # background embeddings are never looked at
    got = cluster_embeddings(emb, truth > 0, delta_v=0.5)
    np.testing.assert_array_equal(got, canonical(truth))
    np.testing.assert_array_equal(cluster_embeddings(Tensor(emb), truth > 0), got)


def test_cluster_embeddings_keeps_a_seed_its_centre_drifted_from():
    # 1-D embeddings: the seed 0 pulls in the 0.95s, their mean pulls in the 1.8s, and the
    # centre settles near 1.72, out of the seed's reach (bandwidth 1): the seed still joins
    emb = np.array([0.0] + [0.95] * 10 + [1.8] * 100 + [5.0] * 3).reshape(1, 1, 1, -1)
    got = cluster_embeddings(emb, np.ones((1, 1, emb.shape[-1]), bool), delta_v=0.5)
    np.testing.assert_array_equal(got[0, 0], [1] * 111 + [2] * 3)


def slow_group(heat, off, fg, threshold, k):
    n, _, h, w = heat.shape
    out = np.zeros((n, h, w), np.int64)
    r = k // 2
    for i in range(n):
        peaks = []
        for y in range(h):
            for x in range(w):
                v = heat[i, 0, y, x]
                window = heat[i, 0, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
                if v > threshold and v == window.max():
                    peaks.append((y, x))
        if not peaks:
            continue
        for y in range(h):
            for x in range(w):
                if fg[i, y, x]:
                    ty, tx = y + off[i, 0, y, x], x + off[i, 1, y, x]
                    dists = [(ty - py) ** 2 + (tx - px) ** 2 for py, px in peaks]
                    out[i, y, x] = dists.index(min(dists)) + 1
        used = sorted(set(out[i][out[i] > 0].tolist()))
        out[i] = np.where(out[i] > 0, np.searchsorted(used, out[i]) + 1, 0)
    return out


@pytest.mark.parametrize("k", [3, 7])
def test_group_by_centres_against_loops(rng, k):
    heat = rng.random((2, 1, 14, 15)) ** 4
    off = rng.standard_normal((2, 2, 14, 15)) * 3
    fg = rng.random((2, 14, 15)) < 0.7
    got = group_by_centres(heat, off, fg, threshold=0.2, nms_kernel=k)
    np.testing.assert_array_equal(got, slow_group(heat, off, fg, 0.2, k))


def test_group_by_centres_separates_touching_discs(rng):
    inst = touching_discs(size=24)
    t = centre_targets(inst, sigma=2.0)  # the targets themselves, as a perfect net would predict
    noisy = t.offset + rng.standard_normal(t.offset.shape).astype(np.float32) * 0.3
    got = group_by_centres(t.heatmap, noisy, (inst > 0) & (inst != 255))
    np.testing.assert_array_equal(got, canonical(np.where(inst == 255, 0, inst)))
    top = group_by_centres(t.heatmap, t.offset, inst > 0, top_k=1)
    assert set(np.unique(top).tolist()) == {0, 1}
    at = t.heatmap.astype(np.float64) * 0.1  # every peak exactly at the threshold: not above it
    assert not group_by_centres(at, t.offset, inst > 0, threshold=0.1).any()
    assert group_by_centres(at, t.offset, inst > 0, threshold=0.0999).max() == 4


def test_instance_classes_against_loops(rng):
    inst = rng.integers(0, 4, size=(2, 9, 10))
    inst[0, 0] = 255
    cls = rng.choice([0, 1, 2, 255], size=(2, 9, 10), p=[0.3, 0.3, 0.3, 0.1])
    cls[1][inst[1] == 3] = 255  # an instance whose pixels are all void
    want = cls.copy()
    for i in range(2):
        for c in set(inst[i].ravel().tolist()) - {0, 255}:
            votes = cls[i][inst[i] == c].tolist()
            real = [v for v in votes if v != 255]
            top = min(set(real), key=lambda v: (-real.count(v), v)) if real else 255
            want[i][inst[i] == c] = top
    got = instance_classes(cls, inst)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(instance_classes(cls[0], inst[0]), want[0])


# ---------------------------------------------------------------- GPU (skipped without CuPy)


def test_losses_on_gpu_match_the_cpu(rng):
    from minifcn import backend

    cp = backend.cupy_or_none()
    if cp is None:
        pytest.skip(f"needs CuPy and a CUDA device ({backend.cupy_unavailable_reason()})")
    inst = instance_batch(rng)
    emb = rng.standard_normal((4, 3, 6, 7))
    t = centre_targets(inst)
    hp, op = rng.random(t.heatmap.shape), rng.standard_normal(t.offset.shape)

    def run(put):
        e, h, o = (Tensor(put(a), requires_grad=True) for a in (emb, hp, op))
        loss = discriminative_loss(e, put(inst)) + centre_offset_loss(h, o, t)
        loss.backward()
        return [backend.as_numpy(a) for a in (loss.data, e.grad, h.grad, o.grad)]

    for got, want in zip(run(cp.asarray), run(np.asarray)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
