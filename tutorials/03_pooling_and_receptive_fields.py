# %% [markdown]
# # 03 · Max pooling, receptive fields, and why the last layer sees with stride 32
#
# A convolution looks at a small window; stacking them lets a unit deep in the net depend on a
# large region of the image, its **receptive field**. Pooling layers shrink the maps, so each step
# in a deep map is a big step in the image: the **stride** (or "jump"). Both numbers matter for
# segmentation, and they pull in opposite directions: a large receptive field lets a pixel's class
# depend on context, a large stride makes the predictions coarse. This notebook
#
# 1. looks at max pooling with Caffe's *ceil* rounding (what FCN uses) and at its gradient,
# 2. computes receptive field and stride layer by layer through VGG16 and checks them against
#    `minifcn.summary`,
# 3. shows what stride 32 costs: the best score a stride-32 prediction could ever reach.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor
from minifcn import primitives as P

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)

def show_matrix(ax, m, title, fmt="{:.0f}"):
    """A small matrix as a picture, each cell labelled with its value."""
    finite = m[np.isfinite(m)]
    lo, hi = min(0, finite.min()), finite.max()
    ax.imshow(np.where(np.isfinite(m), m, np.nan), cmap="Oranges", vmin=lo, vmax=hi)
    for (r, c), v in np.ndenumerate(m):
        dark = np.isfinite(v) and v > lo + 0.6 * (hi - lo)
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=9,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]); ax.set_yticks([])


# %% [markdown]
# ## 1. Max pooling, rounding up
#
# A 2x2 max pool with stride 2 keeps the largest value of each 2x2 block. On a 5x5 input the
# blocks do not fit exactly: there is one row and one column left over. There are two
# conventions:
#
# * **floor** (`ceil_mode=False`, the default of most frameworks): drop the leftover, output 2x2;
# * **ceil** (`ceil_mode=True`, Caffe's pooling, used by all the FCN reference nets): keep a last
#   window that hangs over the edge, output 3x3. Only the real pixels in it compete.

# %%
rng = np.random.default_rng(3)
x = rng.integers(0, 20, (1, 1, 5, 5)).astype(np.float32)
floor = F.max_pool2d(Tensor(x), 2, stride=2).numpy()
ceil = F.max_pool2d(Tensor(x), 2, stride=2, ceil_mode=True).numpy()

fig, axes = plt.subplots(1, 3, figsize=(8, 3))
show_matrix(axes[0], x[0, 0], "input 5x5 and the 2x2 windows")
for k in (1.5, 3.5):
    axes[0].axhline(k, color="k", lw=1.5); axes[0].axvline(k, color="k", lw=1.5)
show_matrix(axes[1], floor[0, 0], "floor: 2x2")
show_matrix(axes[2], ceil[0, 0], "ceil: 3x3")
plt.tight_layout(); plt.show()

# %% [markdown]
# The output size for a window k, stride s and padding p over n inputs is
# $\lfloor (n + 2p - k)/s \rfloor + 1$, or the same with $\lceil\cdot\rceil$ for ceil mode
# (`P.conv_out_size`). The choice changes every map size after the first odd one. Through FCN's
# five pools for a 500x500 image (conv1_1 pads it to 698x698):

# %%
sizes = {"floor": [698], "ceil": [698]}
for mode in sizes:
    for _ in range(5):
        sizes[mode].append(P.conv_out_size(sizes[mode][-1], 2, 2, 0, ceil_mode=(mode == "ceil")))
    print(f"{mode:5s}: conv1 {sizes[mode][0]} -> pools {sizes[mode][1:]}")

# %% [markdown]
# The ceil sizes (349, 175, 88, 44, 22) are the reference nets'. With floor rounding, weights
# trained in Caffe would still load, but every later map would be smaller and the crop offsets
# that align the skips (notebook 06) would be wrong.
#
# ### Padding never wins
#
# When pooling pads the input, the padding must hold $-\infty$, not 0: a zero would beat every
# negative activation at the border. (Behind ReLUs activations are $\ge 0$ and nobody notices,
# which is how this bug survives in some from-scratch implementations.)

# %%
neg = -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
print("input:\n", neg[0, 0])
print("3x3 max pool, stride 1, padding 1:\n", F.max_pool2d(Tensor(neg), 3, stride=1, padding=1).numpy()[0, 0])

# %% [markdown]
# ### The gradient of max pooling
#
# Each output is one of its window's inputs, so its gradient goes back to that one input (the
# **argmax**, stored during the forward pass) and the others get zero. An input that wins two
# overlapping windows collects both gradients.

# %%
xt = Tensor(x, requires_grad=True)
F.max_pool2d(xt, 2, stride=2, ceil_mode=True).backward(np.ones((1, 1, 3, 3), np.float32))
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
show_matrix(axes[0], x[0, 0], "input")
show_matrix(axes[1], xt.grad[0, 0], "gradient of sum(pool(x))")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. Receptive field and stride, layer by layer
#
# Track two numbers per layer, both measured in input pixels:
#
# * the **jump** $j$: how far apart in the image two neighbouring units of this map are;
# * the **receptive field** $r$: how wide a patch of the image one unit depends on.
#
# A layer with kernel $k$ and stride $s$ on a map with $(j, r)$ gives
#
# $$ j' = j\,s, \qquad r' = r + (k - 1)\,j .$$
#
# (Each extra kernel tap reaches one more unit of the map below, which is $j$ pixels further.)
# VGG16 is thirteen 3x3 convolutions (stride 1) in five blocks, each block ending in a 2x2
# stride-2 pool, then `fc6`, a 7x7 convolution (notebook 05), and 1x1 layers after it:

# %%
VGG16 = ([("conv1_1", 3, 1), ("conv1_2", 3, 1), ("pool1", 2, 2),
          ("conv2_1", 3, 1), ("conv2_2", 3, 1), ("pool2", 2, 2)]
         + [(f"conv3_{i}", 3, 1) for i in (1, 2, 3)] + [("pool3", 2, 2)]
         + [(f"conv4_{i}", 3, 1) for i in (1, 2, 3)] + [("pool4", 2, 2)]
         + [(f"conv5_{i}", 3, 1) for i in (1, 2, 3)] + [("pool5", 2, 2)]
         + [("fc6", 7, 1), ("fc7", 1, 1), ("score_fr", 1, 1)])

jump, rf, by_hand = 1, 1, {}
for name, k, s in VGG16:
    rf = rf + (k - 1) * jump
    jump = jump * s
    by_hand[name] = (jump, rf)
    print(f"{name:9s} k={k} s={s}   jump {jump:3d}   receptive field {rf:4d}")

# %% [markdown]
# `minifcn.summary(model, input_shape)` prints the same two columns for a real model, traced
# through the model's own forward pass on shapes only (no arithmetic on pixels, so it is instant
# even for the full-size net). Here the full-width FCN-32s, as in the paper, on a 500x500 image:

# %%
model = minifcn.models.fcn32s(n_class=21)      # VGG16 at full width: builds in a few seconds
table = minifcn.summary(model, (1, 3, 500, 500))
print(table)

# %% [markdown]
# The table ends with about 134 million trainable parameters, the paper's figure for FCN-VGG16,
# and a receptive field of 404 pixels, the number in the paper's Table 1. The rows come from
# `minifcn.models.geometry.trace`, which returns them as data, so we can compare with our loop
# (notebook 14 draws them against the image: `minifcn.viz.layers_figure` for every layer's grid
# and receptive field, `minifcn.viz.pixel_figure` for what one pixel sees):

# %%
from minifcn.models import geometry

traced = {step.name: (step.jump, step.rf) for step in geometry.trace(model, (1, 3, 500, 500))}
same = all(traced[name] == by_hand[name] for name in by_hand)
print("hand computation == summary for all", len(by_hand), "layers:", same)
del model   # 540 MB of weights we no longer need

# %% [markdown]
# ## 3. Stride 32
#
# Five pools, each halving the map: $2^5 = 32$. One step in `fc6` (and in `score_fr`, the class
# scores) is 32 pixels in the image, so the net predicts one vector of class scores per 32x32
# block, and each of those is computed from a 404x404 window. The trace also gives where each
# unit's window is centred (`shift` is the image coordinate of unit 0): for a 500x500 input the
# 16x16 score map's centres start at 12.5 and step by 32. Here they are on the image, with one
# receptive field drawn:

# %%
fc6 = next(s for s in geometry.trace(minifcn.models.fcn32s(n_class=21, width=1 / 16), (1, 3, 500, 500))
           if s.name == "fc6")
centres = float(fc6.shift) + float(fc6.jump) * np.arange(fc6.shape[2])
print("fc6 map", fc6.shape[2:], " centres:", centres[:4], "...", centres[-1])

fig, ax = plt.subplots(figsize=(4, 4))
ax.add_patch(plt.Rectangle((0, 0), 500, 500, fill=False, lw=2))
cy, cx = np.meshgrid(centres, centres, indexing="ij")
ax.plot(cx.ravel(), cy.ravel(), ".", ms=3, color="tab:blue")
c = centres[5]
ax.add_patch(plt.Rectangle((c - fc6.rf / 2, c - fc6.rf / 2), fc6.rf, fc6.rf, fill=False,
                           ec="tab:red", lw=1.5, ls="--"))
ax.plot([c], [c], "o", color="tab:red")
ax.set_xlim(-150, 650); ax.set_ylim(650, -150); ax.set_aspect("equal")
ax.set_title("500x500 image: score centres (stride 32)\nand one 404x404 receptive field", fontsize=9)
plt.show()

# %% [markdown]
# Large receptive fields are good: whether a patch of grey is road or sky depends on its
# surroundings. But 32-pixel steps are coarse. How much does that cost, at best? Take true label
# maps, keep one label per s x s block (its centre pixel), blow the blocks back up, and score the
# result as if it were a prediction: even a perfect stride-s net cannot do better. The metric is
# the mean IU of notebook 07; here on the embedded `Shapes` data (96x96 images with a thin
# cross):

# %%
from minifcn.data import Shapes
from minifcn.metrics import RunningScore

val = Shapes("val", n=60, size=96)

def best_at_stride(label, s):
    """Nearest-neighbour down- and upsampling of a label map by stride s."""
    h, w = label.shape
    ys = np.minimum(np.arange(h) // s * s + s // 2, h - 1)
    xs = np.minimum(np.arange(w) // s * s + s // 2, w - 1)
    return label[ys][:, xs]

for s in (32, 16, 8):
    score = RunningScore(val.n_class)
    for i in range(len(val)):
        _, label = val[i]
        score.update(label, best_at_stride(label, s))
    r = score.scores()
    print(f"stride {s:2d}: best possible mean IU {r['mean_iu']:.3f}   (cross: {r['per_class_iu'][4]:.3f})")

# %% [markdown]
# The authors report the same ceiling on PASCAL VOC: mean IU 86.1, 92.8 and 96.4 for ground truth
# downsampled by 32, 16 and 8 (Long, Shelhamer, Darrell, journal version, PAMI 2016). Our shapes
# are small and thin, so stride 32 hurts even more, most of all on the cross:

# %%
i = next(i for i in range(len(val)) if (val[i][1] == 4).sum() > 300)   # an image with a big cross
image, label = val[i]
fig, axes = plt.subplots(1, 5, figsize=(10, 2.3))
axes[0].imshow(image); axes[0].set_title("image", fontsize=9)
axes[1].imshow(minifcn.viz.colorize(label), interpolation="nearest")
axes[1].set_title("true labels", fontsize=9)
for ax, s in zip(axes[2:], (32, 16, 8)):
    ax.imshow(minifcn.viz.colorize(best_at_stride(label, s)), interpolation="nearest")
    ax.set_title(f"best at stride {s}", fontsize=9)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Getting the fine detail back without giving up the large receptive field is the subject of
# notebooks 04 (learned upsampling) and 06 (skips from the finer pool3 and pool4 maps).
#
# ## Exercise
#
# 1. By hand, what are the jump and receptive field at `pool4`? Check them in the summary table.
# 2. AlexNet-style pooling uses 3x3 windows with stride 2. Change the pools in `VGG16` above and
#    recompute: how does the receptive field of `fc6` change? And the jump?
# 3. Compute the "best possible" mean IU at strides 4 and 2 on `Shapes`. At what stride does the
#    cross stop being the hardest class?
