"""Tests of minifcn.metrics.panoptic_quality and RunningPanoptic: against a slow implementation
in panopticapi's way (plain loops over pixels and segments), and hand-worked cases."""
import math
from collections import Counter

import numpy as np
import pytest

from minifcn.metrics import RunningPanoptic, panoptic_quality

VOID = "void"


def slow_panoptic(tc, ti, pc, pi, n_class, stuff=(0,), ignore=255):
    """panopticapi's evaluation.py, per image, with segment labels as (class, id) tuples."""
    tp, fp, fn, iou_sum = [0] * n_class, [0] * n_class, [0] * n_class, [0.0] * n_class
    for n in range(tc.shape[0]):
        gt_area, pred_area, pairs = Counter(), Counter(), Counter()
        for y in range(tc.shape[1]):
            for x in range(tc.shape[2]):
                c, i, d, j = (int(a[n, y, x]) for a in (tc, ti, pc, pi))
                g = VOID if c == ignore else (c, 0) if c in stuff else (c, i)
                if g != VOID and g[1] in (0, ignore) and c not in stuff:
                    g = VOID  # a thing pixel without an instance
                p = (d, 0) if d in stuff else VOID if j == 0 else (d, j)
                if g != VOID:
                    gt_area[g] += 1
                if p != VOID:
                    pred_area[p] += 1
                pairs[g, p] += 1
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in pairs.items():
            if g == VOID or p == VOID or g[0] != p[0]:
                continue
            union = pred_area[p] + gt_area[g] - inter - pairs.get((VOID, p), 0)
            iou = inter / union
            if iou > 0.5:
                tp[g[0]] += 1
                iou_sum[g[0]] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        for g in gt_area:
            if g not in gt_matched:
                fn[g[0]] += 1
        for p in pred_area:
            if p in pred_matched or pairs.get((VOID, p), 0) / pred_area[p] > 0.5:
                continue
            fp[p[0]] += 1
    per_class, pqs, sqs, rqs = [], [], [], []
    for c in range(n_class):
        if tp[c] + fp[c] + fn[c] == 0:
            per_class.append((math.nan,) * 3)
            continue
        sq = iou_sum[c] / tp[c] if tp[c] else 0.0
        rq = tp[c] / (tp[c] + 0.5 * fp[c] + 0.5 * fn[c])
        per_class.append((sq * rq, sq, rq))
        pqs.append(sq * rq), sqs.append(sq), rqs.append(rq)
    return (sum(pqs) / len(pqs), sum(sqs) / len(sqs), sum(rqs) / len(rqs), per_class,
            tp, fp, fn)


def check_against_slow(args, n_class, stuff=(0,)):
    got = panoptic_quality(*args, n_class, stuff=stuff)
    pq, sq, rq, per_class, tp, fp, fn = slow_panoptic(*args, n_class, stuff)
    assert (got["pq"], got["sq"], got["rq"]) == pytest.approx((pq, sq, rq), abs=1e-12)
    for k, name in enumerate(("pq", "sq", "rq")):
        np.testing.assert_allclose(got["per_class"][name], [v[k] for v in per_class], atol=1e-12)
    for name, want in (("tp", tp), ("fp", fp), ("fn", fn)):
        np.testing.assert_array_equal(got["per_class"][name], want)
    return got


def scene(rng, n, h, w, n_class, objects=4):
    """(class, instance) maps of n images: rectangles of random classes on class 0, later ones
    over earlier ones, a band of void; ids count up within each image."""
    tc, ti = np.zeros((n, h, w), np.int64), np.zeros((n, h, w), np.int64)
    for b in range(n):
        for k in range(1, objects + 1):
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            dy, dx = rng.integers(2, 6), rng.integers(2, 6)
            tc[b, y:y + dy, x:x + dx], ti[b, y:y + dy, x:x + dx] = rng.integers(1, n_class), k
        tc[b, rng.integers(h), :] = 255
    return tc, ti


@pytest.mark.parametrize("seed", range(12))
def test_against_panopticapi_loops_on_noisy_predictions(seed):
    rng = np.random.default_rng(seed)
    n_class = 5
    tc, ti = scene(rng, 3, 12, 14, n_class)
    pc, pi = np.where(tc == 255, 0, tc), ti.copy()
    noise = rng.random(tc.shape) < [0.0, 0.1, 0.3][seed % 3]
    pc[noise] = rng.integers(0, n_class, noise.sum())
    pi[noise] = rng.integers(0, 4, noise.sum())  # ids 0 too: unlabeled predictions
    pi[rng.random(tc.shape) < 0.05] = 0
    if seed % 4 == 1:  # merge every object of a class, as connected components would
        pi = np.where(pc > 0, 1, pi)
    ti[(tc == 2) & (rng.random(tc.shape) < 0.1)] = 0  # unlabeled thing pixels in the truth
    stuff = [(0,), (0, 3), ()][seed % 3]
    check_against_slow((tc, ti, pc, pi), n_class, stuff)


def test_running_panoptic_streams_to_the_whole_sets_result():
    rng = np.random.default_rng(7)
    tc, ti = scene(rng, 6, 10, 10, 4)
    pc, pi = np.where(tc == 255, 0, tc), ti.copy()
    noise = rng.random(tc.shape) < 0.2
    pc[noise], pi[noise] = rng.integers(0, 4, noise.sum()), rng.integers(0, 5, noise.sum())
    whole = panoptic_quality(tc, ti, pc, pi, 4)
    rp = RunningPanoptic(4)
    for b in (slice(0, 1), slice(1, 4), slice(4, 6)):
        rp.update(tc[b], ti[b], pc[b], pi[b])
    assert rp.scores()["pq"] == pytest.approx(whole["pq"])
    for name in ("tp", "fp", "fn", "iou", "pq"):
        np.testing.assert_allclose(rp.scores()["per_class"][name], whole["per_class"][name])
    per_image = np.mean([panoptic_quality(tc[b], ti[b], pc[b], pi[b], 4)["pq"] for b in range(6)])
    assert per_image != pytest.approx(whole["pq"])  # counted over the set, not averaged
    rp.reset()
    with pytest.raises(ValueError, match="no segment"):
        rp.scores()


def maps(h=6, w=6):
    return [np.zeros((1, h, w), np.int64) for _ in range(4)]


def test_split_object():
    tc, ti, pc, pi = maps()
    tc[0, 1:3, 1:5], ti[0, 1:3, 1:5] = 1, 1  # one object of 8 pixels
    pc[0, 1:3, 1:5], pi[0, 1:3, 1:3], pi[0, 1:3, 3:5] = 1, 1, 2  # cut in two halves
    got = check_against_slow((tc, ti, pc, pi), 3)
    # IoU 4/8 = 0.5 is not above 0.5: no match; background matches exactly
    assert list(got["per_class"]["tp"]) == [1, 0, 0] and got["per_class"]["fp"][1] == 2
    assert got["per_class"]["fn"][1] == 1 and got["pq"] == 0.5 and np.isnan(got["per_class"]["pq"][2])
    pi[0, 1:3, 1:4], pi[0, 1:3, 4] = 1, 2  # a 6 + 2 cut: the big piece matches (IoU 0.75)
    got = check_against_slow((tc, ti, pc, pi), 3)
    assert got["per_class"]["pq"][1] == pytest.approx(0.75 / (1 + 0.5))
    assert got["per_class"]["sq"][1] == 0.75 and got["per_class"]["rq"][1] == pytest.approx(2 / 3)
    assert got["pq"] == pytest.approx((1 + 0.5) / 2)


def test_merged_pair():
    tc, ti, pc, pi = maps()
    tc[0, 1:3, 1:3], ti[0, 1:3, 1:3] = 1, 1
    tc[0, 1:3, 3:5], ti[0, 1:3, 3:5] = 1, 2  # two touching objects of 4 pixels
    pc[0, 1:3, 1:5], pi[0, 1:3, 1:5] = 1, 1  # predicted as one
    got = check_against_slow((tc, ti, pc, pi), 2)
    assert (got["per_class"]["tp"][1], got["per_class"]["fp"][1], got["per_class"]["fn"][1]) == (0, 1, 2)
    tc[0, 1:3, 1:4], ti[0, 1:3, 1:4] = 1, 1  # 6 + 2: the merge still matches the big one
    got = check_against_slow((tc, ti, pc, pi), 2)
    assert got["per_class"]["pq"][1] == pytest.approx(0.75 / 1.5)


def test_segment_over_void():
    tc, ti, pc, pi = maps()
    tc[0, 0, :] = 255  # a void row
    pc[0, 0, 0:4], pi[0, 0, 0:4] = 1, 1  # all over void: neither TP nor FP
    got = check_against_slow((tc, ti, pc, pi), 2)
    assert got["per_class"]["fp"][1] == 0 and np.isnan(got["per_class"]["pq"][1])
    tc[0, 0, 2:4] = 0  # half void exactly: an FP (only more than half is forgiven)
    got = check_against_slow((tc, ti, pc, pi), 2)
    assert got["per_class"]["fp"][1] == 1
    tc[0, 0, 2:4] = 255
    tc[0, 1, 0:4], ti[0, 1, 0:4] = 1, 1  # an object under the void row...
    pc[0, 1, 0:4], pi[0, 1, 0:4] = 1, 1  # ...predicted with the void row: IoU 4/(8+4-4-4) = 1
    got = check_against_slow((tc, ti, pc, pi), 2)
    assert got["per_class"]["tp"][1] == 1 and got["per_class"]["sq"][1] == 1.0


def test_class_absent_from_the_ground_truth_and_unlabeled_predictions():
    tc, ti, pc, pi = maps()
    pc[0, 2:4, 2:4], pi[0, 2:4, 2:4] = 2, 7  # class 2 is not in the truth: an FP, PQ 0
    got = check_against_slow((tc, ti, pc, pi), 4)
    assert got["per_class"]["pq"][2] == 0 and np.isnan(got["per_class"]["pq"][1])
    assert got["pq"] == pytest.approx((32 / 36 + 0) / 2)  # background IoU 32/36 and class 2
    pi[0, 2:4, 2:4] = 0  # id 0 on a thing class: unlabeled, no segment, no FP
    got = check_against_slow((tc, ti, pc, pi), 4)
    assert got["per_class"]["fp"][2] == 0 and got["pq"] == pytest.approx(32 / 36)
    pc[0, 2:4, 2:4], pi[0, 2:4, 2:4] = 0, [[1, 2], [3, 0]]  # stuff ignores its ids
    assert panoptic_quality(tc, ti, pc, pi, 4)["pq"] == 1.0


def test_bad_inputs_say_what_in_one_line():
    tc, ti, pc, pi = maps()
    cases = [
        ((tc, ti, pc, pi[:, :5]), {}, ValueError, "one shape"),
        ((tc[0, 0], ti[0, 0], pc[0, 0], pi[0, 0]), {}, ValueError, r"\(N, H, W\)"),
        ((tc, ti, pc.astype(np.float32), pi), {}, TypeError, "pred_class must be an integer"),
        ((tc + 3, ti, pc, pi), {}, ValueError, "true_class holds 3"),
        ((tc, ti, pc - 1, pi), {}, ValueError, "pred_class holds values"),
        ((tc, ti - 1, pc, pi), {}, ValueError, "true_instance holds -1"),
        ((tc, ti, pc, pi), {"stuff": (5,)}, ValueError, "stuff classes"),
        ((tc, ti, pc, pi), {"stuff": "x"}, TypeError, "stuff must be"),
    ]
    for args, kw, error, match in cases:
        with pytest.raises(error, match=match) as e:
            panoptic_quality(*args, 3, **kw)
        assert str(e.value).startswith("panoptic_quality: ") and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="RunningPanoptic: n_class"):
        RunningPanoptic(0)
    with pytest.raises(ValueError, match="RunningPanoptic: .*one shape"):
        RunningPanoptic(3).update(tc, ti, pc, pi[:, :, :2])
    with pytest.raises(ValueError, match="no segment"):
        panoptic_quality(tc + 255, ti, pc, pi + 1, 3, stuff=())  # all void, nothing predicted
