# %% [markdown]
# # 11 · After FCN: unpooling, batch normalisation, and what crosses from encoder to decoder
#
# FCN-8s ends in a short head: coarse class scores, upsampled, plus scores read off pool3 and
# pool4 (notebook 06). The nets that came next in 2015 keep FCN's idea of an encoder that shrinks
# the image, but grow it back with a **decoder** as deep as the encoder, stage by stage:
#
# * **SegNet** (Badrinarayanan et al.) remembers *where* each 2x2 pool found its maximum and, on
#   the way up, puts each value back there (**max unpooling**), then lets convolutions fill in
#   the zeros around it;
# * **U-Net** (Ronneberger et al.) hands whole encoder feature maps to the decoder and
#   concatenates them with the upsampled ones.
#
# Both put **batch normalisation** after every convolution, which trains differently from how it
# predicts. This notebook takes the two new pieces apart (unpooling, then batch normalisation)
# and then sets SegNet, FCN-8s and U-Net side by side on one image: what each one carries from
# its encoder to its decoder, and how many bytes that is.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, models, nn
from minifcn.data import get_dataset, to_input
from minifcn.models import geometry, padding

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
minifcn.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Unpooling is max pooling's backward
#
# Max pooling keeps the largest value of each window and forgets the other three. With
# `return_indices=True` it also says where each winner was: its flat position `h * W + w` in its
# own plane of the input (one plane per image and channel, so a 4x6 map has positions 0 to 23).
# A small map with no ties:

# %%
x = rng.permutation(24).astype(np.float32).reshape(1, 1, 4, 6)
y, idx = F.max_pool2d(Tensor(x), 2, return_indices=True)
print("x\n", x[0, 0])
print("y = max of each 2x2 window\n", y.numpy()[0, 0])
print("indices\n", idx.numpy()[0, 0], idx.dtype)
print("as (row, column):", [divmod(int(i), 6) for i in idx.numpy().ravel()])

# %% [markdown]
# In a picture: the windows in grey lines, each winner framed with its index.

# %%
def show_map(ax, a, title, window=1, winners=()):
    ax.imshow(a, cmap="Blues", vmin=0, vmax=50)
    for (r, c), v in np.ndenumerate(a):
        ax.text(c, r - 0.1, f"{v:g}", ha="center", va="center", fontsize=9)
    for k in range(0, a.shape[1] + 1, window):
        ax.axvline(k - 0.5, color="gray", lw=1)
    for k in range(0, a.shape[0] + 1, window):
        ax.axhline(k - 0.5, color="gray", lw=1)
    for i in winners:
        r, c = divmod(int(i), a.shape[1])
        ax.add_patch(plt.Rectangle((c - 0.42, r - 0.42), 0.84, 0.84, fill=False, ec="red", lw=2))
        ax.text(c, r + 0.3, f"#{int(i)}", color="red", fontsize=7, weight="bold", ha="center", va="center")
    ax.set_title(title, fontsize=9); ax.set_xticks([]); ax.set_yticks([])

fig, axes = plt.subplots(1, 2, figsize=(6.5, 2.4), gridspec_kw={"width_ratios": [2, 1]})
show_map(axes[0], x[0, 0], "x, 2x2 windows, winners and their indices", 2, idx.numpy().ravel())
show_map(axes[1], y.numpy()[0, 0], "max_pool2d(x, 2)")
plt.tight_layout(); plt.show()

# %% [markdown]
# `F.max_unpool2d` goes the other way: each value of a small map goes to the position its index
# names, and every other position gets zero. Unpooling the pooled map itself gives back the
# winners where they were, a **sparse** map with three zeros in every window:

# %%
u = F.max_unpool2d(y, idx, 2)
print(u.shape, "\n", u.numpy()[0, 0])
print(f"non-zero: {np.count_nonzero(u.numpy())} of {u.numpy().size}")

# %% [markdown]
# SegNet's decoder unpools its *own* values (not the encoder's) with the encoder's indices. Here
# with values 1, 2, 3 ...: each one lands where the matching window's maximum was, so the
# decoder's map keeps the fine position of every maximum, at no cost but the indices.
#
# Now the point of this section. Max pooling's backward sends each window's gradient to the input
# that won the window, and zero to the others (notebook 03). That is exactly what unpooling does
# to values. Let autograd show it: pool `x`, backpropagate the values `v` as if they were a
# gradient, and compare `x.grad` with `v` unpooled.

# %%
v = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
print("max_unpool2d(v, idx)\n", F.max_unpool2d(Tensor(v), idx, 2).numpy()[0, 0])

xt = Tensor(x, requires_grad=True)
y, idx = F.max_pool2d(xt, 2, return_indices=True)
y.backward(v)                                   # d(sum(y * v)) / dx
print("x.grad after y.backward(v)\n", xt.grad[0, 0])
print("identical:", np.array_equal(xt.grad, F.max_unpool2d(Tensor(v), idx, 2).numpy()))

# %% [markdown]
# The same operation, under two names. So unpooling's own backward is pooling's forward step
# read backwards: a **gather**, taking the gradient at each index.
#
# **Overlapping windows.** With 2x2 windows at stride 2 every input belongs to one window and the
# indices never repeat. With kernel 3 and stride 2 the windows overlap, and one large value can
# win several windows: its index appears several times. Max pooling's backward then **adds**
# the gradients that reach it, and minifcn's `max_unpool2d` does the same with values (see its
# docstring). PyTorch's `max_unpool2d` keeps only one of the values written to the same place
# instead (on the CPU the last one written, on a GPU any one); the two agree wherever the indices
# are unique.

# %%
x5 = rng.random((1, 1, 5, 5)).astype(np.float32)
x5[0, 0, 2, 2] = 9.0                            # the centre sits in all four 3x3 windows
xt5 = Tensor(x5, requires_grad=True)
y5, idx5 = F.max_pool2d(xt5, 3, stride=2, return_indices=True)
print("indices, all the centre (2 * 5 + 2):\n", idx5.numpy()[0, 0])
ones = np.ones((1, 1, 2, 2), np.float32)
print("unpooled ones, summed at the centre:\n", F.max_unpool2d(Tensor(ones), idx5, 3, stride=2).numpy()[0, 0])
y5.backward(ones)
print("and the gradient of max pooling:\n", xt5.grad[0, 0])

# %% [markdown]
# **Odd sizes.** A pool that rounds up (`ceil_mode=True`, as every net here) takes a 5x5 map to
# 3x3, and so does a pool of a 6x6 map: from the 3x3 map alone the unpooling cannot know which
# size to return to. By default it returns PyTorch's `(3 - 1) * 2 + 2 = 6`; `output_size` names
# the size the pool took in. (SegNet keeps the size of each map before its pool, `h.shape`, and hands it to its unpooling layer.)

# %%
x7 = rng.random((1, 1, 5, 5)).astype(np.float32)
p7, i7 = F.max_pool2d(Tensor(x7), 2, ceil_mode=True, return_indices=True)
print("pooled", p7.shape, "-> default", F.max_unpool2d(p7, i7, 2).shape,
      "-> output_size=(5, 5):", F.max_unpool2d(p7, i7, 2, output_size=(5, 5)).shape)

# %% [markdown]
# ## 2. Batch normalisation, in training and in evaluation
#
# `nn.BatchNorm2d(C)` normalises each channel to mean 0 and variance 1, then scales and shifts it
# by two learned numbers per channel, `weight` (gamma) and `bias` (beta). It also owns two arrays
# it does not learn, the **running statistics**, and a counter. These are its `state_dict`, under
# the names PyTorch uses (so a PyTorch `BatchNorm2d`'s state dict loads as it is):

# %%
bn = nn.BatchNorm2d(3)
for name, value in bn.state_dict().items():
    print(f"{name:20s} {value.dtype}  {value}")
print(bn)

# %% [markdown]
# A batch of 8 three-channel maps whose channels have means 3, -2 and 0.5 and standard deviations
# 2, 0.5 and 1. In **training** mode (a new module is in training mode) each channel is
# normalised by the mean and the variance of its values *in this batch*, over all images and all
# positions (8 x 6 x 6 = 288 values a channel):

# %%
mean, std = np.array([3.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
def batch(n=8, size=6):
    return (rng.standard_normal((n, 3, size, size)) * std[:, None, None]
            + mean[:, None, None]).astype(np.float32)

xb = batch()
out = bn(Tensor(xb)).numpy()
print("channel means of the output:", out.mean(axis=(0, 2, 3)))
print("channel stds of the output: ", out.std(axis=(0, 2, 3)))

# %% [markdown]
# The same forward moved the running statistics a tenth of the way (`momentum` 0.1) towards this
# batch's: `running = 0.9 * running + 0.1 * batch`. One detail: the normalisation divides by the
# batch's *biased* variance (sum of squares over 288), but the running variance takes the
# *unbiased* one (over 287), as PyTorch does. Checked by hand:

# %%
m = xb.mean(axis=(0, 2, 3))
print("running_mean", bn.running_mean.numpy(), " by hand", 0.9 * 0 + 0.1 * m)
print("running_var ", bn.running_var.numpy(), " by hand", 0.9 * 1 + 0.1 * xb.var(axis=(0, 2, 3), ddof=1))
print("num_batches_tracked", bn.num_batches_tracked.numpy())

# %% [markdown]
# Over many batches the running statistics forget their start (after k batches a share 0.9^k of
# it is left) and settle near the data's mean and variance, with some noise from the last
# batches:

# %%
history = [bn.running_mean.numpy().copy()]
for _ in range(59):
    bn(Tensor(batch()))
    history.append(bn.running_mean.numpy().copy())
plt.figure(figsize=(5, 2.3))
plt.plot(np.array(history))
for mu in mean:
    plt.axhline(mu, color="gray", lw=0.8, ls=":")
plt.xlabel("batches seen"); plt.ylabel("running_mean"); plt.show()
print("running_var", bn.running_var.numpy(), " the data's", std ** 2)

# %% [markdown]
# In **evaluation** mode (`bn.eval()`, which `model.eval()` sets in every layer) nothing moves
# and the running statistics take the batch's place: the layer is a fixed affine map per channel,
# the same for every image whatever else is in the batch.

# %%
bn.eval()
xe = batch(2)
by_hand = ((xe - bn.running_mean.numpy()[:, None, None])
           / np.sqrt(bn.running_var.numpy()[:, None, None] + bn.eps)
           * bn.weight.numpy()[:, None, None] + bn.bias.numpy()[:, None, None])
tracked = int(bn.num_batches_tracked.numpy())
print("eval output equals the affine map by hand:", np.allclose(bn(Tensor(xe)).numpy(), by_hand, atol=1e-5))
print("num_batches_tracked unchanged:", int(bn.num_batches_tracked.numpy()) == tracked)

# %% [markdown]
# **Why a batch of one image is not evaluation.** In training mode one image is normalised by
# its own statistics. Take an image and a brighter, higher-contrast copy of it (`2 * x + 3`):
# batch statistics undo exactly that, so in training mode the two come out the same (but for
# rounding and the small `eps` added to the variance). The
# running statistics do not, so in evaluation mode they stay apart, as they should.

# %%
one = batch(1)
brighter = 2 * one + 3
bn.train()
a, b = bn(Tensor(one)).numpy(), bn(Tensor(brighter)).numpy()
print("train mode, batch of one: largest difference", np.abs(a - b).max())
bn.eval()
a, b = bn(Tensor(one)).numpy(), bn(Tensor(brighter)).numpy()
print("eval mode:                 largest difference", np.abs(a - b).max())
print("and the two train-mode forwards moved the running statistics:", int(bn.num_batches_tracked.numpy()), "batches")

# %% [markdown]
# So a net with batch normalisation must predict in `eval()` mode: in training mode each
# prediction depends on what else is in the batch, a single image loses its overall level and
# contrast in every channel, and each forward also drags the running statistics towards the
# images being predicted. A single *pixel* in training mode has no variance at all, and minifcn
# refuses it:

# %%
bn.train()
try:
    bn(Tensor(np.ones((1, 3, 1, 1), np.float32)))
except ValueError as err:
    print(err)

# %% [markdown]
# ## 3. Three skips side by side
#
# Now the nets, all at 1/16 of VGG16's width and with the 5 classes of the embedded `shapes`
# data: SegNet (VGG16's 13 convolutions with batch normalisation, and a mirrored decoder),
# FCN-8s (with the conv1_1 padding that `python -m minifcn.train` picks for 64-pixel images) and
# U-Net (five stages of two convolutions, 4 to 64 channels here).

# %%
SIZE = 64
nets = {"SegNet": models.segnet(n_class=5, width=1 / 16),
        "FCN-8s": models.fcn8s(n_class=5, width=1 / 16, pad1=padding.min_pad1("fcn8s", SIZE)),
        "U-Net": models.unet(n_class=5, width=1 / 16)}
for name, net in nets.items():
    net.eval()
    n_params = sum(p.numpy().size for p in net.parameters())
    print(f"{name:7s} {n_params:8,} parameters, {len(list(net.children()))} modules")

# %% [markdown]
# `minifcn.summary` lists every layer with its output shape. Here only the rows where the encoder
# and the decoder meet. SegNet: each pool (with indices) and the unpooling that uses them.

# %%
def excerpt(net, keep):
    rows = minifcn.summary(net, (1, 3, SIZE, SIZE)).splitlines()
    print("\n".join(rows[2:4] + [r for r in rows[4:] if r.split()[:1] and keep(r.split()[0])]))

excerpt(nets["SegNet"], lambda layer: layer.startswith(("pool", "unpool")))

# %% [markdown]
# FCN-8s: pool3 and pool4 each get a 1x1 score layer (`score_pool3`, `score_pool4`), and those
# class scores, cropped, are added to the upsampled coarse scores. Note how large pool3 is for a
# 64-pixel image: the conv1_1 padding (69 here) enlarges every map (notebook 06).

# %%
excerpt(nets["FCN-8s"], lambda layer: layer in ("pool3", "pool4", "score_fr") or
        layer.startswith(("score_pool", "fuse", "upscore")))

# %% [markdown]
# U-Net: the output of each stage's second convolution (after its ReLU) is kept whole; on the
# way up, the up-convolution `upN` doubles the size and halves the channels, and `catN` joins it
# with the kept map.

# %%
excerpt(nets["U-Net"], lambda layer: layer in [f"conv{b}_2_relu" for b in range(1, 5)] or
        layer.startswith(("up", "cat")))

# %% [markdown]
# ### Counting what crosses
#
# To count it on a real forward pass we **record** the outputs of the layers where the crossing
# starts. A Module's call runs `self.forward`, so a function set as a layer's `forward` attribute
# runs in its place; ours calls the original and keeps what it returned. (`geometry.trace`,
# behind `summary`, wraps layers in a similar way, with coordinates in place of numbers.)

# %%
def record(net, names):
    """Keep the output of each layer in ``names`` in the dict returned, on every forward."""
    kept = {}
    for name in names:
        layer = getattr(net, name)
        def forward(*args, original=layer.forward, name=name):
            kept[name] = original(*args)
            return kept[name]
        layer.forward = forward
    return kept

def unrecord(net, names):
    for name in names:
        del getattr(net, name).forward      # the class's forward is back

CROSSING = {"SegNet": [f"pool{b}" for b in range(1, 6)],          # (map, indices): the indices
            "FCN-8s": ["score_pool4", "score_pool3"],             # class scores
            "U-Net": [f"conv{b}_2_relu" for b in range(1, 5)]}    # feature maps

fcn = nets["FCN-8s"]        # its score layers start at zero (notebook 06): random ones, to see them
for layer in (fcn.score_pool3, fcn.score_pool4):
    layer.weight.data = rng.normal(0, 0.1, layer.weight.shape).astype(np.float32)

val = get_dataset("shapes", "val", n=8, size=SIZE)
image, label = val[3]
kept = {}
for name, net in nets.items():
    kept[name] = record(net, CROSSING[name])
    with minifcn.no_grad():
        scores = net(Tensor(to_input(image)[None]))
    unrecord(net, CROSSING[name])
    print(f"{name:7s} scores {scores.shape}")

# %% [markdown]
# What each net keeps for its decoder on this one 64x64 image:

# %%
def crossing(name):
    """(layer, array) for what crosses from the encoder to the decoder in net ``name``."""
    if name == "SegNet":
        return [(layer, out[1].numpy()) for layer, out in kept[name].items()]   # the indices
    return [(layer, out.numpy()) for layer, out in kept[name].items()]

totals = {}
for name in nets:
    print(name)
    for layer, a in crossing(name):
        print(f"   {layer:12s} {str(a.shape):18s} {str(a.dtype):8s} {a.size:6,} values  {a.nbytes:7,} bytes")
    totals[name] = sum(a.nbytes for _, a in crossing(name))
    print(f"   {'total':40s} {sum(a.size for _, a in crossing(name)):6,} values  {totals[name]:7,} bytes")

# %% [markdown]
# Three different answers:
#
# * **SegNet** keeps one index per pooled value, at every stage: as many values as the pooled
#   maps themselves. minifcn stores them as int64, PyTorch's type, which is *more* bytes than a
#   float32 map. But an index only needs to say which of the 4 positions of its 2x2 window won:
#   **2 bits**. That is the paper's argument (section 3): the indices are cheap to keep.
# * **FCN-8s** keeps class scores, 5 channels at strides 8 and 16, whatever the width of the
#   trunk: few values, but only what the 1x1 score layers could read off pool3 and pool4.
# * **U-Net** keeps every feature map before every pool, in full, at full resolution for the
#   first: the most by far, and all of it float32.

# %%
two_bits = sum(a.size for _, a in crossing("SegNet")) * 2 / 8
bars = {"SegNet\n(int64)": totals["SegNet"], "SegNet\n(2 bits)": two_bits,
        "FCN-8s": totals["FCN-8s"], "U-Net": totals["U-Net"]}
plt.figure(figsize=(5, 2.4))
plt.bar(list(bars), [v / 1024 for v in bars.values()], color=["C0", "C0", "C1", "C2"])
for i, v in enumerate(bars.values()):
    plt.text(i, v / 1024, f"{v / 1024:.1f}", ha="center", va="bottom", fontsize=9)
plt.ylabel("KiB kept for the decoder"); plt.title("one 64x64 image, width 1/16", fontsize=9)
plt.ylim(0, max(bars.values()) / 1024 * 1.2); plt.show()

# %% [markdown]
# What these are, on the image (the nets are untrained, so look at the kind and the size of
# each, not at what it has learnt; we show the channel with the most non-zero values):
#
# * SegNet's first indices, drawn as which of the 4 positions of each window won (blue top left,
#   orange top right, green bottom left, red bottom right). Where the ReLU left a whole window at
#   zero, all four tie and the first, top left, wins;
# * FCN-8s's class scores of pool3 and pool4 for class 1. They cover the *padded* image, so they
#   are larger than SegNet's maps of the same stride;
# * U-Net's first two kept feature maps.

# %%
def liveliest(a):
    """The channel of a (1, C, H, W) array with the most non-zero values."""
    return int(np.count_nonzero(a[0], axis=(1, 2)).argmax())

pooled, indices = (t.numpy() for t in kept["SegNet"]["pool1"])
seg_idx = indices[0, liveliest(pooled)]
position = (seg_idx // SIZE % 2) * 2 + seg_idx % SIZE % 2        # row, column within the window
panels = [(image, "image", None), (position, "SegNet pool1 indices\n(position in window)", "tab10"),
          (kept["FCN-8s"]["score_pool3"].numpy()[0, 1], "FCN-8s score_pool3", "magma"),
          (kept["FCN-8s"]["score_pool4"].numpy()[0, 1], "FCN-8s score_pool4", "magma"),
          *[(a[0, liveliest(a)], f"U-Net {layer[:7]} (skip {layer[4]})", "magma")
            for layer, a in crossing("U-Net")[:2]]]
fig, axes = plt.subplots(1, len(panels), figsize=(12, 2.6))
for ax, (a, title, cmap) in zip(axes, panels):
    ax.imshow(a, cmap=cmap, interpolation="nearest", vmin=0 if cmap == "tab10" else None,
              vmax=9 if cmap == "tab10" else None)
    ax.set_title(f"{title}\n{a.shape[0]}x{a.shape[1]}", fontsize=8); ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# ### At the paper's scale
#
# The same count for a 500x500 image at full width (VOC, 21 classes) needs no forward pass: the
# shapes come from `geometry.trace`, the function that `summary` prints. Tracing the small nets
# is enough, because their channel counts are exactly 1/16 of the full nets' (SegNet's 4 ... 32
# against 64 ... 512, U-Net's 4 ... 64 against 64 ... 1024) and the map sizes do not depend on
# the width; FCN-8s's crossing has 21 channels at any width, and its reference padding is 100.

# %%
def trace_sizes(net, layers, size=500):
    return {s.name: s.shape for s in geometry.trace(net, (1, 3, size, size)) if s.name in layers}

full = {"SegNet": (models.segnet(21, 1 / 16), CROSSING["SegNet"], 16, 8),     # int64 indices
        "FCN-8s": (models.fcn8s(21, 1 / 16, pad1=100), CROSSING["FCN-8s"], 1, 4),
        "U-Net": (models.unet(21, 1 / 16), CROSSING["U-Net"], 16, 4)}
for name, (net, layers, channels, nbytes) in full.items():
    shapes = trace_sizes(net, layers)
    values = sum(channels * int(np.prod(s[1:])) for s in shapes.values())
    extra = f" ({values / 4 / 2**20:.1f} MiB at 2 bits)" if name == "SegNet" else ""
    print(f"{name:7s} {values:12,} values  {values * nbytes / 2**20:6.1f} MiB{extra}")

# %% [markdown]
# This is the trade the three designs make. U-Net gives its decoder the most to work with and
# pays for it in memory; FCN-8s passes a few score maps; SegNet passes positions only, and spends
# convolutions in the decoder to make the sparse unpooled maps dense again. (The saving is at
# prediction time: in training, every net also keeps each layer's output for the backward pass,
# far more than any of these.)
#
# ## Exercise
#
# 1. **SegNet with feature maps.** Write a subclass of `models.SegNet` whose `forward` adds the
#    encoder's map before each pool to the unpooled map (`h = unpool(h, indices, output_size=before.shape)
#    + before`), like the paper's SegNet-Basic-EncoderAddition (its Table 1). Check the shapes fit, and count with
#    `record` what it now keeps for its decoder. Then try `minifcn.cat` along the channels
#    instead: which layers must change their number of input channels?
# 2. **Count the training memory.** With `geometry.trace`, add up the values of every layer's
#    output for each net on a 500x500 image at full width (a rough count of what backward
#    keeps). How does it compare with the numbers of section 3?
# 3. **Odd sizes.** Run the three nets on a 65x67 image. Where does SegNet's unpooling need
#    `output_size`, and what goes wrong with `F.max_unpool2d` left at its default? Which crop in
#    U-Net takes up the extra pixel, and at what offset (`minifcn.summary` shows it)? What is each
#    net's `min_input_size`, and what sets each one (pools, or FCN-8s's padding and fc6)?
# 4. **Batch normalisation in a whole net.** Put SegNet in training mode and predict the image of
#    section 3 alone and then in a batch with seven others: how much do its scores change? Do the
#    same in `eval()` mode. What does `num_batches_tracked` say afterwards?
# 5. **Train them.** Fit SegNet and U-Net on `shapes` as notebook 10 fits FCN-8s
#    (`training.fit` with `"model": "segnet"` or `"unet"` in the config; U-Net starts from
#    scratch, SegNet from the shipped classifier unless `"init": "scratch"`), and put their
#    predictions next to FCN-8s's. Which one draws the cross's thin arms first?
