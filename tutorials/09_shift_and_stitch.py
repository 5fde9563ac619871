# %% [markdown]
# # 09 · Denser scores without skips: shift-and-stitch and filter rarefaction
#
# FCN-32s scores an image on a grid with one cell per 32 pixels (notebook 03). Notebook 06 made
# the grid finer with **skips**: FCN-16s and FCN-8s add scores from pool4 and pool3. Section 3.2
# of the FCN paper describes two other ways, which keep FCN-32s's weights and change only how
# the net is run:
#
# * **shift-and-stitch**: run the net on f x f copies of the image, each shifted by a fraction
#   of the stride, and interlace the f² coarse outputs into one map f times denser;
# * **filter rarefaction**: set a pooling layer's stride to 1 and spread every later filter out
#   with zeros between its taps, so that it still reads the inputs it read before. Today we call
#   such a filter *dilated*.
#
# The paper says the two give the same result, tried them, and kept the skips: "the cost to
# improvement ratio from this method [was] worse than layer fusion" (section 4.2). This notebook
# builds both with `minifcn.models.shift_and_stitch` and `minifcn.models.rarefy`, draws what they
# do, checks that they agree (and where they do not), and puts their scores and their cost next to
# FCN-8s's. It uses the small FCN-32s and FCN-8s that notebook 06 ships in `assets/` (trained
# on the embedded 96x96 shapes), so nothing trains here.

# %%
# %matplotlib inline
import os
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, metrics, no_grad, training
from minifcn.data import Shapes, from_input, to_input
from minifcn.models import coarse_scores, geometry, rarefy, shift, shift_and_stitch, stitched_scores

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite scores fewer images

net32, cfg = training.load_model("assets/shapes-fcn32s.npz")
net8, _ = training.load_model("assets/shapes-fcn8s.npz")
print("both trained with:", {k: cfg[k] for k in ("width", "size", "pad1", "iters")})
val = Shapes("val", n=100, size=96)
image, label = val[3]
x = to_input(image)[None]                    # (1, 3, 96, 96): pixels minus the mean colour
with no_grad():
    coarse = coarse_scores(net32, Tensor(x)).numpy()   # the net up to score_fr
grid = shift.coarse_map(net32)                # cell u sits at input pixel b + a*u
print("coarse scores", coarse.shape, f"stride a = {grid.a}, cell 0 at pixel b = {float(grid.b)}")

# %% [markdown]
# ## 1. Shift-and-stitch: f x f shifted copies
#
# A cell of the coarse map sits every 32 pixels. Shift the image 8 pixels to the right (pad 8
# columns on the left) and the net's cells fall 8 pixels further left *in the image*: the same
# grid, offset by a quarter of a cell. With f = 4 and shifts of 0, 8, 16 and 24 pixels
# in each direction, the 16 copies together put a cell every 8 pixels. The paper's recipe is
# one-pixel shifts for an output downsampled by f; shifting by 32/f pixels at the input is the
# same thing seen through the net's 32-pixel stride.
#
# The 16 copies of one image, each drawn where its pixels sit relative to the image (the padding
# is zero, i.e. the mean colour once the net's input mean is added back; white is outside the
# copy):

# %%
f = 4
step = int(grid.a) // f                      # 8 pixels
fig, axes = plt.subplots(f, f, figsize=(6, 6))
for y in range(f):
    for c in range(f):
        shifted = np.pad(x, ((0, 0), (0, 0), (y * step, 0), (c * step, 0)))
        axes[y, c].imshow(from_input(shifted[0]), extent=(-c * step, 96, 96, -y * step))
        axes[y, c].set_xlim(-24, 96); axes[y, c].set_ylim(96, -24)
        axes[y, c].set_xticks([]); axes[y, c].set_yticks([])
        axes[y, c].set_title(f"down {y * step}, right {c * step}", fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Each copy goes through the net to `score_fr`. Copy (y, c) is shifted y steps down: its cell u
# sees the image y steps *before* where cell u of the unshifted copy does, so in the dense map
# (stride 8) it lands at row 4u + 3 - y, and at column 4u + 3 - c. We interlace the copies by
# hand with that rule and compare with `shift_and_stitch`:

# %%
copies = {}
for y in range(f):
    for c in range(f):
        shifted = np.pad(x, ((0, 0), (0, 0), (y * step, 0), (c * step, 0)))
        with no_grad():
            copies[y, c] = coarse_scores(net32, Tensor(shifted)).numpy()
dense = shift_and_stitch(net32, x, f).numpy()
who = np.full(dense.shape[2:], -1)
worst = 0.0
for (y, c), out in copies.items():
    cells = dense[:, :, f - 1 - y::f, f - 1 - c::f]
    worst = max(worst, np.abs(cells - out[:, :, :cells.shape[2], :cells.shape[3]]).max())
    who[f - 1 - y::f, f - 1 - c::f] = y * f + c
print("copies:", copies[0, 0].shape, "->  stitched:", dense.shape)
print("max |stitched by hand - shift_and_stitch| =", worst)
print("every dense cell written by exactly one copy:", (who >= 0).all())

# %% [markdown]
# Which copy wrote which cell, in colours (right: the top-left corner, each cell labelled with
# its copy's shift in steps, down and right). Each colour is one copy's coarse grid; the
# unshifted copy (0, 0) owns every fourth cell starting at (3, 3), and those are the coarse map's
# own cells:

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4.2))
ax1.imshow(who, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
ax1.set_title(f"dense map {who.shape[0]}x{who.shape[1]}: the copy of every cell", fontsize=9)
corner = who[:8, :8]
ax2.imshow(corner, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
for (r, c), k in np.ndenumerate(corner):
    ax2.text(c, r, f"{k // f},{k % f}", ha="center", va="center", fontsize=8)
ax2.set_title("top-left 8x8 cells: (down, right) of the copy", fontsize=9)
for ax in (ax1, ax2):
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. Filter rarefaction: the same map from one pass
#
# Shift-and-stitch runs the whole net 16 times. Most of that work is repeated: the early layers
# of two copies shifted by 8 pixels compute the same values, a few cells apart. Filter
# rarefaction computes each of them once. Take pool5 (stride 2): with stride 1 its output is 2x
# denser, and the next filter, fc6 (7x7), must now read every *second* cell to see the inputs it
# saw before. That is the paper's rarefied filter, f'_ij = f_(i/2, j/2) when 2 divides i and j,
# else 0, a 13x13 kernel with zeros between the taps. Rarefying pool4 as well doubles the spacing
# again for everything after it (fc6 then reads every fourth cell: 25x25).
#
# One of the trained fc6 kernels (output channel 0, input channel 0), before and after:

# %%
w = net32.fc6.weight.numpy()                 # (256, 32, 7, 7)


def rarefied_kernel(w, s):
    """The paper's rarefied filter: the taps of w spread s cells apart, zeros between."""
    k = w.shape[-1]
    out = np.zeros(w.shape[:-2] + (s * (k - 1) + 1,) * 2, w.dtype)
    out[..., ::s, ::s] = w
    return out


kernels = [w[0, 0], rarefied_kernel(w, 2)[0, 0], rarefied_kernel(w, 4)[0, 0]]
lim = np.abs(w[0, 0]).max()
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, k, title in zip(axes, kernels, ["fc6, 7x7", "rarefied once (pool5): 13x13",
                                        "rarefied twice (pool5, pool4): 25x25"]):
    ax.imshow(k, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(title, fontsize=9); ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Nobody stores those zeros: a convolution with dilation d places tap i at i*d, which is the
# rarefied filter computed without multiplying by zero. `F.conv2d(..., dilation=2)` with the 7x7
# kernel against a plain convolution with the explicit 13x13 one, on a random map of pool5's
# channels:

# %%
h = Tensor(np.random.default_rng(0).standard_normal((1, 32, 20, 20)).astype(np.float32))
with no_grad():
    dilated = F.conv2d(h, Tensor(w), None, 1, 0, dilation=2).numpy()
    explicit = F.conv2d(h, Tensor(rarefied_kernel(w, 2)), None).numpy()
print("output", dilated.shape, " max |dilated - explicit| =", np.abs(dilated - explicit).max())

# %% [markdown]
# (The difference is float32 rounding: the two add the same products in another order.)
#
# `rarefy(model, "pool5")` does this to a whole FCN-32s: pool5 gets stride 1, and every later
# conv and pool gets its dilation and its padding multiplied by 2 (a padding of p old cells is
# 2p new ones). Rarefying pool4 next multiplies conv5_x, pool5 and fc6 again. The
# upsampling becomes a fixed bilinear one by the new stride, and the final crop is derived again
# from the layers. The weights do not change. The rows of `minifcn.summary` that changed
# (`jump` is the stride in input pixels):

# %%
net16r = rarefy(net32, "pool5")
net8r = rarefy(net16r, "pool4")
rows = minifcn.summary(net8r, (1, 3, 96, 96)).splitlines()
print("\n".join(rows[2:4] + [r for r in rows if r.split()[:1] and r.split()[0] in
      ("pool4", "conv5_1", "conv5_3", "pool5", "fc6", "fc7", "score_fr", "upscore", "score")]))
for name, net in (("FCN-32s", net32), ("rarefied at pool5", net16r), ("... and pool4", net8r)):
    print(f"{name:18s} coarse stride {shift.coarse_map(net).a}")

# %% [markdown]
# ## 3. The same scores? Checked numerically
#
# The module docstring of `minifcn.models.shift` says when the two agree exactly; here are the
# numbers for this trained net.
#
# * At the original positions the rarefied map *is* the coarse map: cell 2u of the
#   pool5-rarefied map is cell u of FCN-32s.
# * The stitched map starts f - 1 cells earlier (its first copies are shifted), so rarefied cell
#   t is stitched cell t + f - 1.

# %%
with no_grad():
    r16, r8 = coarse_scores(net16r, Tensor(x)).numpy(), coarse_scores(net8r, Tensor(x)).numpy()
s2, s4 = shift_and_stitch(net32, x, 2).numpy(), shift_and_stitch(net32, x, 4).numpy()


def aligned(rare, stitched, f):
    """The stitched cells t + f - 1 that match the rarefied cells t."""
    n, m = rare.shape[2:]
    return stitched[:, :, f - 1:f - 1 + n, f - 1:f - 1 + m]


print("coarse vs rarefied(pool5) at every 2nd cell:", np.abs(r16[:, :, ::2, ::2] - coarse).max())
k = r8[:, :, ::4, ::4].shape[2]
print("coarse vs rarefied(pool5, pool4), 4th cells:", np.abs(r8[:, :, ::4, ::4] - coarse[:, :, :k, :k]).max())
print("rarefied(pool5) vs stitched f=2:            ", np.abs(r16 - aligned(r16, s2, 2)).max())
print("rarefied(pool5, pool4) vs stitched f=4:     ", np.abs(r8 - aligned(r8, s4, 4)).max())
print("largest score:                              ", np.abs(coarse).max())

# %% [markdown]
# The first line is float32 rounding. The second is not quite (exercise 3 asks why), and the
# rarefied and stitched scores differ by up to a few tenths. The reason is the padding. A shifted copy adds zero rows to the
# *image*, and they pass through conv1_1 ... conv5_3 before the pool that the rarefied net makes
# dense; the rarefied net adds its zeros *inside*, around that pool's output. The two agree only
# if the copy's extra rows stay zero through those layers, relu(0·w + b) = 0, that is if every
# bias there is <= 0. This trained net has positive biases, and with a receptive field of 404
# pixels on a 96-pixel image every cell sees some padding. Clip those biases to <= 0, and in
# float64 the maps agree to rounding:

# %%
clipped, _ = training.load_model("assets/shapes-fcn32s.npz")
clipped = clipped.double()
state = clipped.state_dict()
for key in state:
    if key.startswith("conv") and key.endswith("bias"):
        state[key] = np.minimum(state[key], 0)
clipped.load_state_dict(state)
x64 = x.astype(np.float64)
with no_grad():
    c8 = coarse_scores(rarefy(rarefy(clipped, "pool5"), "pool4"), Tensor(x64)).numpy()
c4 = shift_and_stitch(clipped, x64, 4).numpy()
print("biases <= 0, float64: rarefied(pool5, pool4) vs stitched f=4:", np.abs(c8 - aligned(c8, c4, 4)).max())

# %% [markdown]
# How much the difference matters for the labels: on this image the two full-size
# predictions differ on a handful of pixels.

# %%
with no_grad():
    full_r, full_s = net8r(Tensor(x)).numpy(), stitched_scores(net32, Tensor(x), 4).numpy()
print(f"rarefied vs stitched, f = 4: {(full_r.argmax(1) != full_s.argmax(1)).mean():.2%} of the "
      f"pixels labelled differently, max |score difference| {np.abs(full_r - full_s).max():.3f}")

# %% [markdown]
# ## 4. The denser map next to FCN-32s's and FCN-8s's
#
# Each coarse map drawn where its cells sit in the image (cell u covers b + a·u ± a/2; the
# cells around the image see mostly padding), then the full-size predictions. The rarefied net's
# dense map has FCN-8s's stride, 8, but every one of its cells is still FCN-32s's classifier,
# made for a 32-pixel grid: it draws FCN-32s's blobs more finely rather than new detail. FCN-8s
# learned scores from pool3 and pool4 for its finer cells.

# %%
shown = [3, 7, 12]
with no_grad():
    maps = {"FCN-32s, stride 32": (net32, coarse_scores(net32, Tensor(x))),
            "rarefied, stride 8": (net8r, coarse_scores(net8r, Tensor(x)))}
fig, axes = plt.subplots(len(shown), 7, figsize=(11, 1.6 * len(shown)))
for row, i in zip(axes, shown):
    xi = Tensor(to_input(val[i][0])[None])
    with no_grad():
        cmaps = [(coarse_scores(n, xi).numpy()[0].argmax(0), shift.coarse_map(n)) for n in (net32, net8r)]
        preds = [n(xi).numpy()[0].argmax(0) for n in (net32, net8r, net8)]
    row[0].imshow(val[i][0]); row[1].imshow(minifcn.viz.colorize(val[i][1]))
    for ax, (cells, cm) in zip(row[2:4], cmaps):
        a, b = float(cm.a), float(cm.b)
        ext = (b - a / 2, b + a * (cells.shape[1] - 0.5), b + a * (cells.shape[0] - 0.5), b - a / 2)
        ax.imshow(minifcn.viz.colorize(cells), extent=ext, interpolation="nearest")
        ax.add_patch(plt.Rectangle((-0.5, -0.5), 96, 96, fill=False, color="w", lw=1.5))
    for ax, p in zip(row[4:], preds):
        ax.imshow(minifcn.viz.colorize(p), interpolation="nearest")
    titles = ["image", "truth", "FCN-32s cells (a=32)", "rarefied cells (a=8)",
              "FCN-32s", "FCN-32s rarefied", "FCN-8s"]
    for ax, t in zip(row, titles):
        ax.set_xticks([]); ax.set_yticks([])
        if i == shown[0]:
            ax.set_title(t, fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# (The white square is the image; the coarse maps reach beyond it because conv1_1's padding of
# 124 puts cells in the margin.)
#
# ## 5. What the denser scores cost, and what they buy
#
# Work per image, counted by `geometry.trace` (multiply-adds of every layer: the same on every
# machine), and mean IU over the first validation images. Times per image, measured with care
# (one image at a time, the methods alternated, the median over many passes), are in
# [docs/experiments.md](../docs/experiments.md); on an idle CPU they follow the work. Shift-and-stitch's cost is the
# sum over its f² copies (each a little larger, by its padding), plus the bilinear upsampling.

# %%
def macs(net, shape, until=None):
    steps = geometry.trace(net, shape)
    last = [s.name for s in steps].index(until) + 1 if until else len(steps)
    return sum(s.macs for s in steps[:last])


def stitched_macs(net, f, size=96):
    a = int(shift.coarse_map(net).a) // f
    copies = sum(macs(net, (1, 3, size + y * a, size + c * a), "score_fr")
                 for y in range(f) for c in range(f))
    n = net.score_fr.out_channels
    cells = np.prod(shift_and_stitch(net, x, f).shape[2:])
    return copies + cells * n * n * (2 * a) ** 2   # the k 2a, stride a bilinear upsampling


methods = {"FCN-32s": (net32, macs(net32, (1, 3, 96, 96))),
           "rarefied pool5 (16)": (net16r, macs(net16r, (1, 3, 96, 96))),
           "rarefied pool5+4 (8)": (net8r, macs(net8r, (1, 3, 96, 96))),
           "stitch f=2 (16)": (lambda t: stitched_scores(net32, t, 2), stitched_macs(net32, 2)),
           "stitch f=4 (8)": (lambda t: stitched_scores(net32, t, 4), stitched_macs(net32, 4)),
           "FCN-8s": (net8, macs(net8, (1, 3, 96, 96)))}
n_images = 4 if FAST else 24
vx = np.stack([to_input(val[i][0]) for i in range(n_images)])
vy = np.stack([val[i][1] for i in range(n_images)])
print(f"{'':22s} {'MMACs':>7s} {'x FCN-32s':>10s} {'mean IU':>8s}   ({n_images} images)")
for name, (run, work) in methods.items():
    with no_grad():
        pred = np.concatenate([run(Tensor(vx[i:i + 12])).numpy().argmax(1) for i in range(0, n_images, 12)])
    iu = metrics.scores(metrics.confusion_matrix(vy, pred, val.n_class))["mean_iu"]
    print(f"{name:22s} {work / 1e6:7.0f} {work / methods['FCN-32s'][1]:10.1f} {iu:8.3f}")

# %% [markdown]
# Read the numbers with the sizes in mind. At 1/16 of VGG16's width the early layers, on a
# 344-pixel padded input, do most of the work and fc6 little: rarefying both pools costs less
# than twice FCN-32s, and FCN-8s's skips cost almost nothing. Shift-and-stitch runs the whole net
# f² times, 17 times the work for f = 4, for (nearly) the same scores. At VGG16's full width on a
# 500x500 image (conv1_1 padding 105, 21 classes), `geometry.trace` counts 189 GMACs for FCN-32s,
# 30 of them in fc6. Rarefied at pool5 and pool4, fc6 reads 16 times as many cells and costs 395
# on its own, and the whole net 655 (3.5x). FCN-8s's skips add 0.2 GMACs (0.1 %).
#
# What the denser map buys: on these images the rarefied FCN-32s gains a few points of mean IU
# over FCN-32s as it was trained, and FCN-8s is far ahead of both. Every dense cell is still
# FCN-32s's classifier, and nothing learned to use the finer grid; FCN-8s learned its pool3 and
# pool4 scores for it. This is one trained net of each kind and a couple of dozen images.
# [docs/experiments.md](../docs/experiments.md) trains the three nets over seeds and measures
# all seven ways of scoring them (`python -m minifcn.experiments.paper_ablations --study shift`).
# The paper's verdict was the same: the skips buy more per unit of cost.
#
# ## Exercise
#
# 1. Rarefy only **pool4** of FCN-32s (`rarefy(net32, "pool4")`): which layers change, what is the
#    coarse stride, and how does its map compare with the pool5-rarefied one's?
# 2. Shift-and-stitch with f = 8 (`shift_and_stitch(net32, x, 8)`): how many copies run, what is
#    the stride of the result, and can `rarefy` give the same map? (Hint: `rarefy(..., "pool3")`,
#    and read its error message on conv1_1's padding.)
# 3. In section 3 the f = 4 rarefied map matched the coarse one only approximately at its 4th
#    cells, even though pool5 alone matched to rounding. The docstring of `minifcn.models.shift`
#    says why (pool4 must tile its input). Find an image size near 96 where it matches exactly,
#    and check it.
