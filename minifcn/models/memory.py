"""How much memory a net's forward pass takes at inference, from its layers' shapes alone.

``predict`` and ``evaluate`` run a whole image through the net at once; FCN pads conv1_1 by
100, so a 9000 x 9000 photo makes conv1_1's output 64 x 9200 x 9200 floats (21.7 GB at width
1). Before such a forward starts, ``forward_bytes`` estimates its peak from ``geometry.trace``
(no number is computed): at inference (no_grad) a layer's output is freed once the next layer
has read it, so the peak is one layer's input, the padded copy it reads and its output, plus
what waits for later (the input image, the pooled maps the skips add back), the im2col columns
(at most ``conv.COL_BYTES`` at once) and a non-local block's HW x HW attention.

Measured with tracemalloc on FCN-8s, FCN-32s, FCN-8s + non-local, FCN-8s-embed, SegNet, U-Net
and DeepLab-ASPP at widths 1/16 and 1/4, the estimate was 1.3 to 2.4 times the real peak on
images of 600x500 and more (more on small ones, where a block of im2col columns is most of it),
never below (tests/test_models_memory.py): a refusal may come early, never late.
``largest_fitting`` is the size, in the image's proportions, that a budget allows.
"""
import math

from ..conv import COL_BYTES
from .geometry import trace

__all__ = ["forward_bytes", "largest_fitting"]


def forward_bytes(model, input_shape, itemsize=4, per_pixel=0):
    """An upper estimate of the bytes ``model``'s forward holds at once at inference for an
    input of ``input_shape`` (N, C, H, W), float32 by default (``itemsize``), plus
    ``per_pixel`` bytes for each of the N x H x W input pixels (what the caller keeps beside:
    evaluate's loss maps). Raises ``GeometryError`` where the net does not take the input."""
    steps = trace(model, tuple(input_shape))
    size = [math.prod(s.shape) * itemsize for s in steps]

    def work(i):  # one layer at work: its input, the padded copy it reads, its output, and
        # for a convolution its im2col columns (a 3x3 kernel: 9 per input value, in blocks)
        cols = min(COL_BYTES, 9 * max(size[i - 1], size[i])) \
            if steps[i].kind in ("conv", "upscore") else 0
        if steps[i].kind == "nonlocal":  # every position against every other: HW x HW, twice
            n, _, h, w = steps[i].shape  # (the scores and their softmax)
            cols = 2 * n * (h * w) ** 2 * itemsize
        return 2 * size[i - 1] + size[i] + cols

    kept = sum(b for b, s in zip(size, steps) if s.kind == "pool")  # the skips' maps wait
    n, _, h, w = input_shape
    return size[0] + max(work(i) for i in range(1, len(size))) + kept + per_pixel * n * h * w


def largest_fitting(model, h, w, budget, n=1, itemsize=4, per_pixel=0):
    """(h', w'): the largest image in the proportions of h x w (at most h x w) whose forward
    (``forward_bytes`` at batch ``n``) stays within ``budget`` bytes; (0, 0) if none does."""
    def fits(scale):
        hs, ws = max(1, int(h * scale)), max(1, int(w * scale))
        try:
            shape = (n, model.conv1_1.in_channels, hs, ws)
            return forward_bytes(model, shape, itemsize, per_pixel) <= budget
        except ValueError:  # too small for the net (GeometryError): not an answer
            return False

    lo, hi = 0.0, 1.0
    if fits(hi):
        return h, w
    for _ in range(30):  # bisection on the scale: the bytes grow with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return (int(h * lo), int(w * lo)) if lo > 0 and fits(lo) else (0, 0)
