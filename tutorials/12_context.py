# %% [markdown]
# # 12 · After FCN: context from dilated filters, pyramids of rates, and attention
#
# FCN-8s gets its fine detail back with skips, but its view of the scene is the view of VGG16's
# fc6: a 7x7 filter on a map of stride 32. The nets that came next asked two questions FCN left
# open. How do you keep a dense map (stride 8) *and* VGG16's large view, without paying for
# either? And how does a position see the whole image, not just a square around it?
#
# * **DeepLab** (Chen et al., 2015-2017) keeps the map at stride 8 and spreads its filters
#   apart instead (*atrous*, or **dilated**, convolution: the rarefied filters of FCN's section
#   3.2, notebook 09, made the trunk itself). Its v3 head, **ASPP**, runs several dilation rates
#   side by side and adds **image pooling**, the whole map's mean.
# * **Attention** blocks compute their context from the image: the **non-local** block (Wang et
#   al., 2018) lets every position take a weighted mean of all the others, and
#   **squeeze-and-excitation** (Hu et al., 2018) reweighs the channels by a gate computed from
#   the whole map.
#
# This notebook draws where dilated filters look, counts how many of their taps are left on a
# small map, looks inside a non-local block, and ends with how DeepLab resizes its scores. The
# nets here are built at 1/16 of VGG16's width, for the embedded 96x96 `shapes` images; nothing
# trains.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, models, nn, no_grad, training
from minifcn.data import Shapes, to_input
from minifcn.models import geometry

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
minifcn.manual_seed(0)
rng = np.random.default_rng(0)

val = Shapes("val", n=16, size=96)
image, label = val[13]
x = Tensor(to_input(image)[None])            # (1, 3, 96, 96): pixels minus the mean colour
print(x.shape, "classes present:", np.unique(label))

# %% [markdown]
# ## 1. Where a dilated filter looks
#
# A 3x3 convolution at **dilation** d reads its input at offsets -d, 0 and +d in each direction:
# still 9 taps, but spread over a (2d + 1)-wide square. On a map of stride 8 one cell is 8 image
# pixels, so its taps sit 8d pixels apart in the image.
#
# Where is a cell in the image? `geometry.trace`, the walk behind `minifcn.summary` (notebooks 03
# and 06), gives every layer its *jump* (the stride, pixels per cell), the image position of cell 0
# (its `shift`) and its receptive field. Here DeepLab-LargeFOV's pool5, the map its fc6 reads:

# %%
largefov = models.deeplab_largefov(n_class=5, width=1 / 16)
steps = {s.name: s for s in geometry.trace(largefov, (1, 3, 96, 96))}
pool5 = steps["pool5"]
print(f"pool5: {pool5.shape}, jump {pool5.jump}, cell u at pixel {pool5.jump} u + {float(pool5.shift)}, "
      f"receptive field {pool5.rf} pixels")

# %% [markdown]
# A 3x3 filter at dilations 1, 2, 4 and 12 on that map, centred on one cell and drawn as its 9
# taps over the image (the grey square is the image; the taps may land outside it):

# %%
def cell_centre(step, u):
    return float(step.jump * u + step.shift)


def draw_taps(ax, centre, spacing, k=3, colour="red", size=30):
    offsets = spacing * (np.arange(k) - (k - 1) / 2)
    ty, tx = np.meshgrid(centre[0] + offsets, centre[1] + offsets, indexing="ij")
    ax.scatter(tx.ravel(), ty.ravel(), s=size, c=colour, edgecolors="white", linewidths=0.8, zorder=3)


def show_canvas(ax, title, lim=(-60, 156)):
    ax.add_patch(plt.Rectangle((-0.5, -0.5), 96, 96, fc="none", ec="gray", lw=1))
    ax.imshow(image, extent=(-0.5, 95.5, 95.5, -0.5))
    ax.set_xlim(*lim); ax.set_ylim(lim[1], lim[0])
    ax.set_title(title, fontsize=9); ax.set_xticks([]); ax.set_yticks([])


centre = (cell_centre(pool5, 6), cell_centre(pool5, 6))   # cell (6, 6) of the 12x12 map
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for ax, d in zip(axes, (1, 2, 4, 12)):
    show_canvas(ax, f"dilation {d}: taps {8 * d} px apart\n"
                    f"receptive field {pool5.rf + 2 * d * pool5.jump} px")
    draw_taps(ax, centre, 8 * d)
plt.tight_layout(); plt.show()

# %% [markdown]
# The receptive field, `pool5.rf + (k - 1) d * jump`, grows with d at no cost: the same 9 weights,
# the same multiply-adds. The price is the gaps. At dilation 12 the taps are 96 pixels apart, as
# far as the image is wide, so from a cell in the middle every tap but the centre reads padding.
#
# DeepLab-LargeFOV's fc6 is exactly that filter: 3x3 at dilation 12 on the stride-8 map. FCN's
# fc6 is VGG16's 7x7 filter on the stride-32 map. Their rows of the trace:

# %%
net8, cfg = training.load_model("assets/shapes-fcn8s.npz")   # notebook 06's trained FCN-8s
steps8 = {s.name: s for s in geometry.trace(net8, (1, 3, 96, 96))}
for name, s in (("FCN-8s", steps8["fc6"]), ("LargeFOV", steps["fc6"])):
    k = getattr(net8 if name == "FCN-8s" else largefov, "fc6").kernel_size[0]
    print(f"{name:9s} fc6 {k}x{k} dilation {s.dilation:2d}: jump {int(s.jump):2d}, map {s.shape[2]}x{s.shape[3]}, "
          f"taps {k * k:2d}, {(k - 1) * s.dilation * s.jump} px between the outer taps, receptive field {s.rf}")

# %% [markdown]
# The same span (6 x 32 = 2 x 12 x 8 = 192 pixels between the outermost taps), 9 taps instead of
# 49, and a map 4 times denser in each direction. The receptive fields differ by 8 pixels, which
# come from the pools: LargeFOV's pool4 and pool5 are 3x3 windows at stride 1, FCN's are 2x2 at
# stride 2 (next section). Drawn on the image, each net's fc6 centred on the cell nearest the
# image's centre (FCN-8s's map covers its padding as well, notebook 06):

# %%
def nearest_cell(step, pixel=47.5):
    u = round((pixel - float(step.shift)) / float(step.jump))
    return cell_centre(step, u)


fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
c8 = nearest_cell(steps8["fc6"])
show_canvas(axes[0], f"FCN-8s fc6: 7x7, taps 32 px apart\ncell at ({c8:g}, {c8:g})")
draw_taps(axes[0], (c8, c8), 32, k=7, colour="orange", size=18)
cl = nearest_cell(steps["fc6"])
show_canvas(axes[1], f"LargeFOV fc6: 3x3 at dilation 12\ncell at ({cl:g}, {cl:g})")
draw_taps(axes[1], (cl, cl), 96)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. Why a stride-1 pool plus dilation keeps the view
#
# DeepLab takes VGG16 and sets pool4 and pool5 to stride 1, so the maps after them stay at stride
# 8. A filter after such a pool would now read neighbours one cell apart where it used to read
# them two cells apart, and see half as far. Dilating it by 2 puts its taps back where they were.
#
# On a small map: pool 2x2 at stride 2 and a 3x3 convolution, against the same pool at stride 1
# and the same weights at dilation 2. Every second output of the second path is an output of the
# first:

# %%
m = Tensor(rng.standard_normal((1, 1, 12, 12)).astype(np.float32))
w = Tensor(rng.standard_normal((1, 1, 3, 3)).astype(np.float32))
vgg = F.conv2d(F.max_pool2d(m, 2, stride=2), w, padding=1)                  # (1, 1, 6, 6)
dense = F.conv2d(F.max_pool2d(m, 2, stride=1), w, padding=2, dilation=2)    # (1, 1, 11, 11)
print("stride 2 then conv:", vgg.shape, "  stride 1 then dilated conv:", dense.shape)
print("max |dense[::2, ::2] - vgg| =", np.abs(dense.numpy()[..., ::2, ::2] - vgg.numpy()).max())

# %% [markdown]
# Why: pooled at stride 2, cell j is the window starting at input 2j; pooled at stride 1, that
# same window is cell 2j. The plain filter reads cells i - 1, i, i + 1 of the first map, which
# are cells 2i - 2, 2i, 2i + 2 of the second, exactly what the dilated filter reads from output
# 2i. The zero padding agrees too (1 cell at dilation 1, 2 cells at dilation 2). The outputs in
# between are new: what the first path gives on the input shifted by one pixel
# (shift-and-stitch, notebook 09).
#
# This holds for every layer after the pool, as long as each is dilated by the product of the
# strides it lost: pool4 gives 2 to conv5, pool5 another 2, so fc6 gets 4. (LargeFOV's 12 is 4
# times 3: its 3x3 fc6 keeps every third tap of VGG's 7x7.) `models.rarefy` does exactly this to an
# FCN-32s; its trace keeps every receptive field and halves the jump:

# %%
net32, _ = training.load_model("assets/shapes-fcn32s.npz")
dense32 = models.rarefy(net32, "pool5")
for name, net in (("FCN-32s", net32), ("rarefied", dense32)):
    row = {s.name: s for s in geometry.trace(net, (1, 3, 96, 96))}
    print(f"{name:9s}", "  ".join(f"{n} jump {row[n].jump} rf {row[n].rf}" for n in ("pool5", "fc6", "fc7")))

# %% [markdown]
# DeepLab's own pools are 3x3 windows padded by 1 at stride 1, not VGG's 2x2, so its trunk is
# close to VGG16's rather than equal (that is the 8 pixels of section 1); the weights are then
# fine-tuned anyway. Its summary rows from pool3 on, with the dilations:

# %%
rows = str(minifcn.summary(largefov, (1, 3, 96, 96))).splitlines()
print("\n".join(rows[2:4] + [r for r in rows if r.split()[:1] and r.split()[0] in
                             ("pool3", "pool4", "conv5_1", "conv5_3", "pool5", "fc6", "fc7", "fc8")]))

# %% [markdown]
# ## 3. ASPP: several rates side by side, and where they break
#
# DeepLab v3's head, atrous spatial pyramid pooling, reads the stride-8 map with five branches at
# once: a 1x1 convolution, three 3x3 convolutions at dilations 6, 12 and 18, and image pooling.
# Their outputs are concatenated and mixed by a 1x1 convolution. In minifcn's `deeplab_aspp`:

# %%
aspp = models.deeplab_aspp(n_class=5, width=1 / 16)
for name in ("aspp_1x1", "aspp_d6", "aspp_d12", "aspp_d18", "aspp_pool", "aspp_pool_conv", "aspp_project"):
    print(f"{name:15s} {getattr(aspp, name)}")

# %% [markdown]
# Each dilated branch pads by its rate, so the map keeps its size. On a 96x96 image that map is
# 12x12. How many of a branch's 9 taps land on the map rather than in the padding, at each
# position? A convolution can count them: convolve a map of ones, padded with zeros, with a 3x3
# kernel of ones at that dilation.

# %%
def taps_inside(size, rate):
    ones = Tensor(np.ones((1, 1, size, size), np.float32))
    return F.conv2d(ones, Tensor(np.ones((1, 1, 3, 3), np.float32)), padding=rate, dilation=rate).numpy()[0, 0]


fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for ax, rate in zip(axes, (1, 6, 12, 18)):
    count = taps_inside(12, rate)
    ax.imshow(count, cmap="viridis", vmin=1, vmax=9)
    for (r, c), v in np.ndenumerate(count):
        ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v < 6 else "black")
    ax.set_title(f"rate {rate}: mean {count.mean():.2f} taps of 9", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Rate 1, a plain 3x3 filter, loses taps only along the border. At rate 6 every position keeps
# exactly 4: along an axis of 12 cells, i - 6 and i + 6 are never both on the map, so each axis
# keeps 2 of its 3 taps. At rates 12 and 18 every tap but the centre one is 12 or more cells
# away, off the map: everywhere, only the centre tap reads it. A 3x3 filter at rate 12 or 18 **is** a 1x1 convolution here, with the
# centre weights. This is the argument of DeepLab v3's Fig. 4, made there on a 65x65 map (a
# 513-pixel image at stride 8): the mean number of taps on the map against the rate, for three
# map sizes:

# %%
rates = range(1, 71)
plt.figure(figsize=(5.5, 2.6))
for size in (12, 33, 65):
    plt.plot(rates, [taps_inside(size, r).mean() for r in rates], label=f"{size}x{size} map")
for r in (6, 12, 18):
    plt.axvline(r, color="gray", lw=0.8, ls=":")
plt.xlabel("rate (dilation)"); plt.ylabel("mean taps on the map")
plt.yticks([1, 3, 5, 7, 9]); plt.legend(fontsize=8); plt.show()

# %% [markdown]
# The same on the net itself. We record pool5's output on our image (as notebook 11 did: a
# function set as the layer's `forward` runs in place of the class's), then apply the branch
# `aspp_d18` and a 1x1 convolution made of its centre weights:

# %%
def record(net, name, kept):
    layer = getattr(net, name)
    def forward(*args, original=layer.forward):
        kept[name] = original(*args)
        return kept[name]
    layer.forward = forward


kept = {}
record(aspp, "pool5", kept)
aspp.eval()
with no_grad():
    aspp(x)
h = kept["pool5"]                                        # (1, 32, 12, 12), stride 8
for name in ("aspp_d6", "aspp_d12", "aspp_d18"):
    conv = getattr(aspp, name)
    with no_grad():
        full = conv(h).numpy()
        centre_only = F.conv2d(h, Tensor(conv.weight.numpy()[:, :, 1:2, 1:2]), conv.bias).numpy()
    print(f"{name}: max |branch - its centre tap as a 1x1 conv| = {np.abs(full - centre_only).max():.3g}")

# %% [markdown]
# Exactly zero at rates 12 and 18: on this map those branches are 1x1 convolutions with 8 idle
# weights each (their gradients are zero too). A rate that looks far sees nothing when the map is
# smaller than the rate.
#
# **Image pooling** is v3's answer: the one branch whose view is the whole map, whatever its
# size. `F.adaptive_avg_pool2d(h, 1)` is each channel's mean over the map, and spreading the 1x1
# result back over the 12x12 map with `F.interpolate` copies it to every position (a 1x1 map has
# nothing to interpolate between):

# %%
g = F.adaptive_avg_pool2d(h, 1)
spread = F.interpolate(g, size=h.shape[2:])
print("pooled", g.shape, "equals the channel means:", np.allclose(g.numpy()[:, :, 0, 0], h.numpy().mean(axis=(2, 3))))
print("spread", spread.shape, "the same vector at every position:",
      np.array_equal(spread.numpy(), np.broadcast_to(g.numpy(), spread.shape)))

# %% [markdown]
# In the head, a 1x1 convolution (with batch normalisation and ReLU) sits between the pooling and
# the spreading, so every position receives the same summary of the image, concatenated with
# its local branches. The trace marks its receptive field as the whole image ("all"), and every
# layer after the concatenation inherits it:

# %%
rows = str(minifcn.summary(aspp, (1, 3, 96, 96))).splitlines()
print("\n".join(rows[2:4] + [r for r in rows if r.split()[:1] and r.split()[0] in
                             ("pool5", "aspp_pool", "aspp_pool_conv", "aspp_1x1", "aspp_d6", "aspp_d12",
                              "aspp_d18", "aspp_pool_up", "aspp_cat", "aspp_project")]))

# %% [markdown]
# ## 4. A non-local block: every position looks everywhere
#
# `nn.NonLocal2d(C)` computes three 1x1 convolutions of the map, theta, phi and g (C channels to
# C' = C/2), and for every pair of positions i, j of the H x W map a weight
#
#     f_ij = softmax over j of  theta(x)_i . phi(x)_j          an HW x HW matrix
#
# Position i's output is the f-weighted mean of g(x) over all positions, brought back to C
# channels by a last 1x1 convolution `W` and added to x. With `keep_attention=True` the block
# keeps f of its last forward as `last_attention`, shaped (N, HW, HW), row i = h * W + w.
#
# A new block on our pool5 map, and f recomputed by hand from its own theta and phi:

# %%
C = h.shape[1]
block = nn.NonLocal2d(C, keep_attention=True)
print(block)
with no_grad():
    out = block(h)
    theta = block.theta(h).numpy().reshape(C // 2, -1).T       # (HW, C')
    phi = block.phi(h).numpy().reshape(C // 2, -1)             # (C', HW)
logits = theta @ phi
by_hand = np.exp(logits - logits.max(axis=1, keepdims=True))
by_hand /= by_hand.sum(axis=1, keepdims=True)
f = block.last_attention[0]
print("last_attention", block.last_attention.shape, " max |by hand - f| =", np.abs(by_hand - f).max())
print("rows sum to 1:", np.allclose(f.sum(axis=1), 1), "  output == input (W starts at zero):",
      np.array_equal(out.numpy(), h.numpy()))

# %% [markdown]
# A new block's theta and phi are random, so its weights say little. To see the mechanism at
# work we choose them. Take as the feature map the image's mean colour in each 8x8 cell (a
# 12x12 map, like pool5's), scaled to length 1 at every position, and set theta and phi to the
# identity times sqrt(30): then theta(x)_i . phi(x)_j = 30 cos(angle between the colours of i and
# j), and each position looks at the cells whose colour is like its own, wherever they are. Row i
# of f is one 12x12 picture; the cross marks position i, the white lines the shapes' outlines:

# %%
cells = F.adaptive_avg_pool2d(x, 12).numpy()                 # (1, 3, 12, 12): mean colour per cell
colours = Tensor(cells / np.sqrt((cells ** 2).sum(axis=1, keepdims=True)))
similar = nn.NonLocal2d(3, inter_channels=3, keep_attention=True)
for conv in (similar.theta, similar.phi):
    conv.weight.data[...] = np.eye(3, dtype=np.float32)[:, :, None, None] * np.float32(np.sqrt(30))
    conv.bias.data[...] = 0
with no_grad():
    similar(colours)
fc = similar.last_attention[0]
queries = [(10, 2), (4, 2), (2, 6), (7, 8)]      # (row, column): background, triangle, square, disc
fig, axes = plt.subplots(1, len(queries) + 1, figsize=(10, 2.4))
axes[0].imshow(image); axes[0].set_title("image", fontsize=9)
for ax, (r, c) in zip(axes[1:], queries):
    ax.imshow(fc[r * 12 + c].reshape(12, 12), extent=(-0.5, 95.5, 95.5, -0.5), cmap="magma")
    ax.contour(label, levels=np.arange(label.max()) + 0.5, colors="white", linewidths=0.6)
    ax.plot(cell_centre(pool5, c), cell_centre(pool5, r), "c+", ms=12, mew=2)
    ax.set_title(f"row {r * 12 + c} of f: cell ({r}, {c})\nlargest weight {fc[r * 12 + c].max():.3f}", fontsize=8)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# No window limits where a row can put its weight: a position on the background spreads it over
# all the background, a position on a shape over the cells of that shape's colour, near or far
# (cells that straddle an outline have a mixed colour and get less). A 3x3 filter at any rate
# has 9 places to look. In a trained block theta, phi and g are learned: what to
# compare, on features rather than colours, and what to carry.
#
# **The cost.** f has (HW)² entries per image, and backward keeps it. In float32, for square
# images at the strides where a block could sit (FCN-8s + non-local puts one after pool4, at
# stride 16), and measured on real blocks for the small ones:

# %%
print(f"{'image':>6s} {'stride 8':>14s} {'stride 16':>14s} {'stride 32':>14s}   (bytes of f per image)")
for side in (96, 224, 500, 1024):
    cells = [-(-side // s) ** 2 for s in (8, 16, 32)]
    print(f"{side:6d} " + " ".join(f"{4 * n * n:14,}" for n in cells))
probe = nn.NonLocal2d(8, keep_attention=True)
for side in (12, 24, 48):
    with no_grad():
        probe(Tensor(rng.standard_normal((1, 8, side, side)).astype(np.float32)))
    print(f"measured, a {side}x{side} map: last_attention.nbytes = {probe.last_attention.nbytes:,}")

# %% [markdown]
# At stride 8 on a 500x500 image (a 63x63 map) f alone is 63 MB per image and layer; at 1024
# pixels, 1 GB. Doubling the side multiplies it by 16. That is why the block goes on a coarse
# map, and why Wang et al. also subsample phi and g by a 2x2 max pool (4 times fewer columns).
#
# ## 5. Squeeze-and-excitation: a gate per channel
#
# `nn.SqueezeExcitation(C, reduction)` takes each channel's mean over the map (the squeeze), runs
# the C numbers through two 1x1 convolutions, C to C/reduction and back, with a ReLU between,
# and a sigmoid (the excitation), and multiplies each channel by its gate in (0, 1). The gate
# depends on the whole image, so the same block weighs the channels differently for different
# images. On the pool5 maps of two images, through LargeFOV's trunk loaded with the shipped
# classifier's weights (`classifier_layers` names the layers it fills), and by hand as well:

# %%
classifier = models.pretrained_classifier(width=1 / 16)
for name in largefov.classifier_layers:
    for p in ("weight", "bias"):
        getattr(getattr(largefov, name), p).data = getattr(getattr(classifier, name), p).data.copy()
record(largefov, "pool5", kept)
se = nn.SqueezeExcitation(C, reduction=4)
print(se)
other = Tensor(to_input(val[2][0])[None])
gates = {}
for name, img in (("image 13", x), ("image 2", other)):
    with no_grad():
        largefov(img)
        hs = kept["pool5"]
        out = se(hs).numpy()
    s = hs.numpy().mean(axis=(2, 3), keepdims=True)
    z = np.maximum(F.conv2d(Tensor(s), se.fc1.weight, se.fc1.bias).numpy(), 0)
    gate = 1 / (1 + np.exp(-F.conv2d(Tensor(z), se.fc2.weight, se.fc2.bias).numpy()))
    print(f"{name}: max |se(h) - h * gate by hand| = {np.abs(out - hs.numpy() * gate).max():.2g}")
    gates[name] = gate.ravel()
plt.figure(figsize=(6.5, 2.4))
for k, (name, gate) in enumerate(gates.items()):
    plt.bar(np.arange(C) + 0.4 * k, gate, width=0.4, label=name)
plt.axhline(0.5, color="gray", lw=0.8, ls=":")
plt.xlabel("channel"); plt.ylabel("gate"); plt.legend(fontsize=8); plt.show()

# %% [markdown]
# The gates of an untrained block spread around 0.5 and differ little between the two images:
# nothing has taught fc1 and fc2 what to look for yet. So, unlike the non-local block, SE does
# not start as the identity: put into a pretrained net (as in `models.fcn8s_se`) it first scales
# every channel it gates by about a half, and the layers after it must adapt. Trained, the gates
# are what makes the block worth having: which channels to stress, decided from the whole
# image.
#
# ## 6. FCN-8s + non-local starts as FCN-8s
#
# `models.fcn8s_nonlocal` is FCN-8s with one non-local block after pool4 (`pool4_context`).
# Because the block's `W` starts at zero, its output is its input: the net computes FCN-8s
# exactly until `W` learns. We load notebook 06's trained FCN-8s into it; the block's own
# parameters are the only ones left new:

# %%
nonlocal8 = models.fcn8s_nonlocal(n_class=5, width=1 / 16, pad1=cfg["pad1"])
state = nonlocal8.state_dict()
new = sorted(k for k in state if k not in net8.state_dict())
state.update(net8.state_dict())
nonlocal8.load_state_dict(state)
print("only in the non-local net:", new)
net8.eval(); nonlocal8.eval()
with no_grad():
    base = net8(x).numpy()
    print("max |FCN-8s + non-local - FCN-8s| =", np.abs(nonlocal8(x).numpy() - base).max())
    nonlocal8.pool4_context.W.weight.data = rng.normal(0, 0.1, nonlocal8.pool4_context.W.weight.shape).astype(np.float32)
    print("after a random W:             ", np.abs(nonlocal8(x).numpy() - base).max())

# %% [markdown]
# A block that starts as the identity is why it can be inserted into a trained net at all: the
# scores are the trained net's, and training moves away from them only as far as helps.
#
# ## 7. Resizing the scores: which pixel is a cell?
#
# DeepLab's scores come out at stride 8 and are resized to the image bilinearly with
# `F.interpolate`. Bilinear resizing needs a rule that says where each output pixel sits on the
# input's axis; there are two in use. With `align_corners=False` (the default) pixels are
# squares and their *centres* are matched: output pixel p sits at input position
# (p + 0.5) * n_in / n_out - 0.5 (clamped at 0). With `align_corners=True` the *corner* pixels are
# matched: p sits at p * (n_in - 1) / (n_out - 1). Four values resized to eight:

# %%
row = Tensor(np.array([[[[0.0, 10.0, 20.0, 30.0]]]], np.float32))
p = np.arange(8)
for align, src in ((False, np.maximum((p + 0.5) * 4 / 8 - 0.5, 0)), (True, p * 3 / 7)):
    out = F.interpolate(row, size=(1, 8), align_corners=align).numpy().ravel()
    print(f"align_corners={align!s:5s}", out, "  by hand:", np.interp(src, np.arange(4), [0, 10, 20, 30]))

# %% [markdown]
# In a picture, each input value drawn at the centre of its pixel on the output's axis:

# %%
fig, axes = plt.subplots(2, 1, figsize=(6, 2.8), sharex=True)
for ax, align in zip(axes, (False, True)):
    out = F.interpolate(row, size=(1, 8), align_corners=align).numpy().ravel()
    where = np.arange(4) * 2 + 0.5 if not align else np.arange(4) * 7 / 3   # input i on the output axis
    ax.plot(p, out, "o-", label="output pixels")
    ax.plot(where, [0, 10, 20, 30], "s", ms=9, mfc="none", label="input pixels")
    ax.set_title(f"align_corners={align}", fontsize=9); ax.legend(fontsize=7, loc="upper left")
axes[1].set_xlabel("output pixel"); plt.tight_layout(); plt.show()

# %% [markdown]
# Which rule is right depends on where the cells sit. Section 1 found LargeFOV's cell u at pixel
# 8u + 3.5 (pool1 to pool3 are 2x2 windows, so each cell is the centre of an 8x8 block). With
# `align_corners=False` resizing 12 cells to 96 pixels puts input position u at output pixel
# 8(u + 0.5) - 0.5 = 8u + 3.5: the same place. With `align_corners=True` it puts u at
# 95u / 11, off by up to 3.5 pixels:

# %%
u = np.arange(12)
geometry_says = [cell_centre(steps["fc8"], k) for k in u]
print("trace (fc8)          ", np.array(geometry_says))
print("align_corners=False  ", 8 * (u + 0.5) - 0.5)
print("align_corners=True   ", u * 95 / 11)

# %% [markdown]
# So minifcn's DeepLab resizes with `align_corners=False`, as PyTorch does by default. DeepLab's
# own code used `align_corners=True` and crops of 513 = 64 x 8 + 1 pixels, a size at which corner
# cells do sit on corner pixels. A rule that does not match the geometry shifts every score by a
# few pixels, exactly where the boundaries are.
#
# ## Exercise
#
# 1. **Rates for small images.** Which rates would you give ASPP for 96x96 images, so that no
#    branch degenerates? Build `models.DeepLabASPP(n_class=5, width=1 / 16, rates=...)`, check
#    every branch with `taps_inside`, and look at the receptive fields in its `minifcn.summary`.
#    From which image size on does rate 18 keep all 9 taps for at least one position?
# 2. **Dilation without pools.** Stack three 3x3 convolutions at dilation 2 on a map and count,
#    with a single impulse as input, which positions of the output it reaches (the *gridding*
#    artefact). Which dilations (1, 2, 3, as in "hybrid dilated convolution") fill the holes?
# 3. **Cheaper attention.** Write a non-local forward with a 2x2 max pool after phi and g
#    (`F.max_pool2d`), as Wang et al. do, using the block's own `theta`, `phi`, `g` and `W`
#    layers. Check that f is now HW x HW/4, and that with `W` at zero the output is still x.
# 4. **Where does a trained block look?** Train FCN-8s + non-local with `training.fit` as
#    notebook 10 trains FCN-8s (`"model": "fcn8s-nonlocal"` in the config), load it, set
#    `pool4_context.keep_attention = True` and draw rows of its `last_attention` over an image
#    as in section 4 (its map is pool4's, stride 16, and covers the padding too: use
#    `geometry.trace` to find the image's cells). Do positions on a shape look at the same
#    shape, at shapes of the same class, or at the background?
# 5. **Train them.** Compare FCN-8s with DeepLab-LargeFOV, DeepLab-ASPP and the two attention
#    nets on `shapes` (`python -m minifcn.experiments.context`; on a CPU start with one seed and
#    fewer steps, `--seeds 1 --iters 100`). Given section 3, would you expect ASPP to beat LargeFOV on
#    96x96 images? Which net draws the cross's thin arms best, and which costs the most time per
#    step?
