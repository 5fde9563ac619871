# %% [markdown]
# # 06 · The skip architecture: FCN-32s, FCN-16s and FCN-8s
#
# Notebook 03 ended on a tension: the deep layers see a lot of context but only every 32nd
# pixel; the shallow layers see fine detail but little context. The FCN paper (section 4.2,
# Figure 3) combines both with **skips**: predict coarse scores from the top, upsample them,
# and add scores predicted from the finer pool4 and pool3 maps.
#
# * **FCN-32s**: scores from fc7 (stride 32), upsampled 32x in one step.
# * **FCN-16s**: fc7 scores upsampled 2x, plus scores from **pool4** (stride 16); the sum upsampled 16x.
# * **FCN-8s**: that sum upsampled 2x again, plus scores from **pool3** (stride 8); upsampled 8x.
#
# Every addition joins maps of slightly different sizes, computed with different paddings, so
# each needs a **crop** that lines up the pixels. This notebook derives those crop offsets, shows
# what each skip can add at best, and trains small versions of the three nets on the embedded
# `Shapes` data to compare their predictions (the paper's Figure 4, in miniature).

# %%
# %matplotlib inline
import os
import time
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, metrics, models, optim, training
from minifcn.data import Loader, Shapes, to_input
from minifcn.models import geometry, padding

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite shrinks the training
minifcn.manual_seed(0)

# %% [markdown]
# ## 1. Three heads on one trunk
#
# The three nets share the VGG16 trunk (conv1_1 ... fc7, notebook 03) and differ only in their
# head. Their layers are named as in the authors' reference nets, and printing a model lists them
# in order. Here the head layers of each, at 1/16 of VGG16's width (the topology does not depend
# on the width):

# %%
nets = {name: models.build(name, n_class=5, width=1 / 16) for name in ("fcn32s", "fcn16s", "fcn8s")}
trunk = {name for name, _ in nets["fcn32s"].children()} - {"upscore", "score"}
for name, net in nets.items():
    head = [f"{layer}" for layer, _ in net.children() if layer not in trunk]
    print(f"{name:7s}", " -> ".join(head))

# %% [markdown]
# And the shapes through the FCN-8s head for a 64x64 image, from `minifcn.summary` (the rows
# after fc7; `jump` is the stride in input pixels). Note the sizes that do not match, 8 against 17
# and 18 against 33, and the crop offsets in the last column:

# %%
table = minifcn.summary(nets["fcn8s"], (1, 3, 64, 64)).splitlines()
print("\n".join(table[2:4] + [row for row in table if row.split()[:1] and row.split()[0] in
      ("pool3", "pool4", "score_fr", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4", "upscore_pool4",
       "score_pool3", "score_pool3c", "fuse_pool3", "upscore8", "score")]))


# %% [markdown]
# ## 2. Deriving the crop offsets
#
# Why crop at all? conv1_1 pads the image by 100 pixels (so that fc6's 7x7 window fits any
# input, notebook 05), which makes every map larger than its share of the image. And each map is
# shifted by its layers' kernels and paddings. Which rows to keep is fixed by the layers; the
# authors computed it from the layer geometry (Caffe's `coord_map`) and advise never to set it by
# hand. minifcn derives it the same way (`minifcn.models.geometry`).
#
# Each layer relates an output coordinate $x$ to an input coordinate by an affine map
# $x_{in} = a\,x + b$, the same on both axes:
#
# * convolution or pooling with kernel $k$, stride $s$, padding $p$: $a = s$, $b = (k-1)/2 - p$
#   (output pixel $x$ sits at the centre of the window it reads);
# * transposed convolution: the inverse of the convolution's map, $a = 1/s$, $b = (p - (k-1)/2)/s$;
# * crop at offset $o$: $a = 1$, $b = o$.
#
# Composing the maps from the image up to a layer places every pixel of that layer in image
# coordinates. Here is the walk for FCN-32s, done by hand with the same helpers the models use:

# %%
def compose(layers):
    """Map from the last layer's coordinates to the image's, for (k, s, p) conv/pool layers."""
    m = geometry.IDENTITY
    for k, s, p in layers:
        m = m.compose(geometry.conv_map(k, s, p))
    return m

conv = (3, 1, 1)
pool = (2, 2, 0)
trunk_to_pool3 = [(3, 1, 100), conv, pool, conv, conv, pool, conv, conv, conv, pool]
pool3_to_pool4 = [conv, conv, conv, pool]
pool4_to_fc7 = [conv, conv, conv, pool, (7, 1, 0), (1, 1, 0)]

pool3 = compose(trunk_to_pool3)
pool4 = compose(trunk_to_pool3 + pool3_to_pool4)
score_fr = compose(trunk_to_pool3 + pool3_to_pool4 + pool4_to_fc7 + [(1, 1, 0)])
for name, m in (("pool3", pool3), ("pool4", pool4), ("score_fr", score_fr)):
    print(f"{name:9s} x_image = {m.a} * x + {m.b}")

# %% [markdown]
# So score_fr's pixel $x$ sits at image coordinate $32x + 12.5$. FCN-32s upsamples it with a
# transposed convolution of kernel 64 and stride 32. To crop the upsampled map $U$ to the image
# we need the offset $o$ at which $U[o + x]$ is image pixel $x$, i.e. where $U$'s map, composed with
# the crop, becomes the identity:

# %%
upscore = score_fr.compose(geometry.deconv_map(64, 32, 0))
print("upscore:  x_image =", upscore.a, "* x +", upscore.b, " -> crop offset", -upscore.b)
print("the model says:", nets["fcn32s"].offsets)


# %% [markdown]
# The same rule gives every other offset. A crop of map $F$ to the size of a reference map $R$
# must make $F[o + x]$ and $R[x]$ the same image point: $a_F (x + o) + b_F = a_R x + b_R$, so the
# two strides must agree and $o = (b_R - b_F)/a_F$. For FCN-16s, pool4's scores are cropped to
# the grid of `upscore2` (fc7's scores upsampled 2x), and the fused map's upsampling to the image:

# %%
def offset(f, r):
    assert f.a == r.a, "only maps of the same stride can be aligned"
    return (r.b - f.b) / f.a

upscore2 = score_fr.compose(geometry.deconv_map(4, 2, 0))
print("score_pool4c offset:", offset(pool4, upscore2))            # score_pool4 is 1x1: pool4's map
upscore16 = upscore2.compose(geometry.deconv_map(32, 16, 0))
print("final offset:       ", offset(upscore16, geometry.IDENTITY))

upscore_pool4 = upscore2.compose(geometry.deconv_map(4, 2, 0))   # FCN-8s: one more step
print("score_pool3c offset:", offset(pool3, upscore_pool4))
print("FCN-8s final offset:", offset(upscore_pool4.compose(geometry.deconv_map(16, 8, 0)), geometry.IDENTITY))
print("the models say:", nets["fcn16s"].offsets, nets["fcn8s"].offsets)

# %% [markdown]
# These are 19 (FCN-32s), 5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s): the numbers in the
# authors' reference nets. Because they are derived, changing a layer changes them consistently.
# (Notebook 14 draws them: `minifcn.viz.alignment_figure` puts every grid's pixel centres on the
# image, and `minifcn.viz.skip_scores_figure` a trained FCN-8s's scores before and after each
# skip is added.)
# A smaller conv1_1 padding (cheaper on small images, used by `python -m minifcn.train` on the synthetic data)
# shifts the final crops by the same amount and leaves the inner ones alone; too small a padding
# and the upsampled scores no longer cover the image, which the model refuses at construction:

# %%
for pad1 in (100, 90, 81):
    print(f"pad1={pad1}:", models.fcn8s(n_class=5, width=1 / 16, pad1=pad1).offsets)
try:
    models.fcn32s(n_class=5, width=1 / 16, pad1=60)
except ValueError as err:
    print("pad1=60:", err)

# %% [markdown]
# ## 3. What each skip can add, at best
#
# Before training anything: how good could each head be? Suppose the net predicted the
# *perfect* score at the centre of every cell of its coarsest fused map (stride 32 for FCN-32s,
# 16 for 16s, 8 for 8s), i.e. the one-hot true label at that point of the image. Push those
# scores through the net's real final upsampling layer and crop (with the derived offset), and take
# the arg-max. What comes out is the best that head can draw, whatever its trunk learns. The
# cell centres come from `geometry.trace`, which runs the model's forward on coordinate maps:

# %%
FUSED = {"fcn32s": ("score_fr", "upscore"), "fcn16s": ("fuse_pool4", "upscore16"),
         "fcn8s": ("fuse_pool3", "upscore8")}

def best_possible(net, name, label):
    """Arg-max of net's final upsampling applied to perfect scores at its fused map's centres."""
    n_class = net.config["n_class"]
    fused, final = FUSED[name]
    step = next(s for s in geometry.trace(net, (1, 3) + label.shape) if s.name == fused)
    h, w = step.shape[2:]
    ys = np.floor(float(step.shift) + float(step.jump) * np.arange(h) + 0.5).astype(int)
    xs = np.floor(float(step.shift) + float(step.jump) * np.arange(w) + 0.5).astype(int)
    inside = (ys[:, None] >= 0) & (ys[:, None] < label.shape[0]) & (xs >= 0) & (xs < label.shape[1])
    cls = np.where(inside, label[np.clip(ys, 0, label.shape[0] - 1)][:, np.clip(xs, 0, label.shape[1] - 1)], 0)
    scores = np.eye(n_class, dtype=np.float32)[cls].transpose(2, 0, 1)[None]     # one-hot (1, n, h, w)
    up = getattr(net, final)(Tensor(scores))
    return F.crop(up, net.offsets["score"], label.shape).numpy()[0].argmax(0)

val = Shapes("val", n=40, size=64)
for name, net in nets.items():
    running = metrics.RunningScore(val.n_class)
    for i in range(len(val)):
        running.update(val[i][1], best_possible(net, name, val[i][1]))
    s = running.scores()
    print(f"{name:7s} best possible mean IU {s['mean_iu']:.3f}   cross IU {s['per_class_iu'][4]:.3f}")

# %% [markdown]
# The skips raise the ceiling a lot on these small images: a 64x64 image is only two score cells
# across at stride 32. Seen on a few images (the pool3 skip is what lets the cross's arms appear):

# %%
examples = [i for i in range(len(val)) if (val[i][1] == 4).sum() > 150][:3]
fig, axes = plt.subplots(len(examples), 5, figsize=(8, 1.7 * len(examples)))
for row, i in zip(axes, examples):
    image, label = val[i]
    panels = [image, minifcn.viz.colorize(label)] + [minifcn.viz.colorize(best_possible(net, name, label))
                                                    for name, net in nets.items()]
    for ax, panel, title in zip(row, panels, ["image", "truth", "32s at best", "16s at best", "8s at best"]):
        ax.imshow(panel, interpolation="nearest"); ax.set_xticks([]); ax.set_yticks([])
        if i == examples[0]:
            ax.set_title(title, fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# And why the offsets must be right: crop FCN-8s's upsampled scores a few pixels off the derived
# 31 and the outlines slide off the objects; the score drops although nothing else changed.

# %%
net = nets["fcn8s"]
derived = net.score.offset
for off in (derived - 6, derived, derived + 6):
    net.score.offset = off
    running = metrics.RunningScore(val.n_class)
    for i in range(len(val)):
        running.update(val[i][1], best_possible(net, "fcn8s", val[i][1]))
    print(f"final crop offset {off}: best possible mean IU {running.scores()['mean_iu']:.3f}")
net.score.offset = derived

# %% [markdown]
# ## 4. Staged training starts where the coarser net stopped
#
# The paper trains FCN-16s starting from a trained FCN-32s, and FCN-8s from FCN-16s (section
# 4.2). The new score layer (`score_pool4`, `score_pool3`) starts at **zero**, so at first the skip
# adds nothing and the finer net predicts what the coarser one did; training then lets the skip
# refine it. `FCN16s.from_fcn32s` copies every shared layer:

# %%
coarse = models.fcn32s(n_class=5, width=1 / 16).eval()
rng = np.random.default_rng(0)
coarse.score_fr.weight.data = rng.normal(0, 0.05, coarse.score_fr.weight.shape).astype(np.float32)  # pretend trained
finer = models.FCN16s.from_fcn32s(coarse).eval()
print("score_pool4 starts at zero:", not finer.score_pool4.weight.numpy().any())

x = Tensor(to_input(val[0][0])[None])
with minifcn.no_grad():
    a, b = coarse(x).numpy(), finer(x).numpy()
print(f"largest score difference {np.abs(a - b).max():.4f} (scores up to {np.abs(a).max():.2f});"
      f" same arg-max on {(a.argmax(1) == b.argmax(1)).mean():.1%} of the pixels")

# %% [markdown]
# Close, but not bit for bit: FCN-32s upsamples once with a 64-pixel bilinear kernel, FCN-16s
# twice (4, then 32), and two interpolations are not exactly one.
#
# ## 5. Training small ones
#
# Now the three nets for real, trained from scratch (no ImageNet weights) on `Shapes`, with the
# same trunk width, data, order, seed, learning rate and number of steps. The recipe is the one
# `python -m minifcn.train` uses from scratch, and each choice has a reason:
#
# * SGD with momentum 0.9 and a large learning rate, 0.08, reached over the first steps (50 in
#   `python -m minifcn.train`, 20 in these short runs; without the ramp the random trunk's first, inconsistent
#   gradients throw it off; at 0.15 the nets die: every ReLU turns off and they call everything
#   background);
# * conv1_1 alone on a learning rate 64² times smaller: it sees pixels of spread ~64 while every
#   later layer sees activations of spread ~1, so the same step would move it thousands of times
#   more, relative to its weights, than the others (`optim.first_layer_lr_mult`);
# * no dropout: these nets are too small to overfit in a few minutes;
# * the same conv1_1 padding for all three, 124: the smallest at which each net's upsampled
#   scores reach the whole image at full strength (section 6 shows why that matters).
#
# Two minutes of CPU for the whole notebook leave about half a minute per net: 64x64 images in
# batches of 4, 60 steps each (3 when the test suite runs this notebook). That is only the start
# of training, so watch the loss curves.
#
# Each step is `training.train_step`, the very function that `python -m minifcn.train` calls on
# every batch: scores, loss, backward, SGD update, nothing else. Here it is:

# %%
import inspect
print(inspect.getsource(training.train_step))

# %% [markdown]
# The loop below sets the learning rate of each step from the schedule and calls it; `fit` in
# `minifcn/training/loop.py` does the same, plus validation, checkpoints and Ctrl-C.

# %%
STEPS = 3 if FAST else 60
PAD1 = max(padding.full_cover_pad1(name, 64) for name in ("fcn32s", "fcn16s", "fcn8s"))
LR, WARMUP = 0.08, 20
train_set = Shapes("train", n=2000, size=64)

def train(name):
    minifcn.manual_seed(0)                     # the same start for the shared layers
    net = models.build(name, n_class=5, width=1 / 16, pad1=PAD1, dropout=0.0)
    groups = optim.param_groups(net, lr_mults={"conv1_1.weight": optim.first_layer_lr_mult(64)})
    opt = optim.SGD(groups, lr=LR, momentum=0.9, weight_decay=5e-4)
    schedule = optim.make_schedule("poly", STEPS, warmup_iters=WARMUP)
    losses = []
    batches = Loader(train_set, batch_size=4, seed=0, flip=True).epoch(0)
    for step, (x, y) in zip(range(STEPS), batches):
        opt.lr = LR * schedule(step)
        losses.append(training.train_step(net, opt, x, y))
    return net.eval(), losses

trained, curves = {}, {}
for name in ("fcn32s", "fcn16s", "fcn8s"):
    t0 = time.perf_counter()
    trained[name], curves[name] = train(name)
    print(f"{name}: {STEPS} steps in {time.perf_counter() - t0:.0f} s, last loss {curves[name][-1]:.3f}")

plt.figure(figsize=(5, 2.5))
for name, c in curves.items():
    smooth = np.convolve(c, np.ones(10) / 10, mode="valid") if len(c) >= 10 else c
    plt.plot(smooth, label=name)
# the loss of a net that predicts only how common each class is: the entropy of the class shares
share = np.bincount(np.concatenate([train_set[i][1].ravel() for i in range(200)]), minlength=5) / (200 * 64 * 64)
prior_loss = -(share * np.log(share)).sum()
plt.axhline(prior_loss, color="gray", lw=0.8, ls=":")
plt.xlabel("step"); plt.ylabel("training loss (mean of 10)"); plt.legend(); plt.show()
print(f"class shares {np.round(share, 3)}, their entropy {prior_loss:.3f}")

# %% [markdown]
# The dotted line is the loss of a net that has learnt only how common each class is (about
# three quarters of the pixels are background). A net from scratch first learns those shares and
# calls every pixel background; only after some 100 to 300 steps does it start to find objects.
# 60 steps are the very start: these nets are not worth comparing yet.
#
# ## 6. The same three after a longer run
#
# First, one more thing the geometry decides. The upsampling is bilinear interpolation between
# score cells; beyond the outermost cell centres there is only one neighbour, and the output
# fades towards zero. On a 500-pixel VOC image that rim is a thin border, but our 96-pixel
# images have only a few score cells, and with the smallest padding that fits, the rim is most
# of the image. `padding.score_coverage` shows it: the net's output when score_fr says 1
# everywhere (and the skips say 0).

# %%
pads = {"fcn32s": [padding.min_pad1("fcn32s", 96), padding.full_cover_pad1("fcn32s", 96)],
        "fcn8s": [padding.min_pad1("fcn8s", 96), padding.full_cover_pad1("fcn8s", 96)]}
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, (name, p) in zip(axes, [(n, p) for n, ps in pads.items() for p in ps]):
    cov = padding.score_coverage(name, 96, p)
    ax.imshow(cov, cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"{name}, pad1 {p}\nmean {cov.mean():.2f}, min {cov.min():.2f}", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# With its minimal padding FCN-32s passes on less than half of its scores, and nothing in the
# corners; a net can learn to make up for it near the borders, slowly, and FCN-32s, which has
# nothing but those coarse scores, hardly does. Trained at padding 81 on these images, its
# validation loss stayed above that of always predicting the class shares for 1,250 steps. So a
# fair comparison pads every net by the smallest amount at which all three cover the image at
# full strength (124 here): then only the strides differ.
#
# `python -m minifcn.experiments.skip_architectures` does exactly that: the three nets, trained
# as in section 5 but on 96x96 images in batches of 8, conv1_1 padding 124, 600 steps each
# (about a quarter of an hour per net on two CPU cores). We ran it with
# `--iters 600 --save-weights tutorials/assets` and ship the result: each net's best learned
# weights in float16 (about 1 MB each). `training.load_model` reads them as it
# reads any checkpoint (so do `python -m minifcn.evaluate` and `predict`): it builds the net from
# the stored config, which rebuilds the fixed bilinear upsampling, and loads the learned layers.

# %%
val96 = Shapes("val", n=100, size=96)
vx = np.stack([to_input(val96[i][0]) for i in range(len(val96))])
vy = np.stack([val96[i][1] for i in range(len(val96))])

full = {}
for name in ("fcn32s", "fcn16s", "fcn8s"):
    full[name], cfg = training.load_model(f"assets/shapes-{name}.npz")
print("trained with:", {k: cfg[k] for k in ("width", "pad1", "batch_size", "iters", "lr", "warmup", "dropout")})

probs = {}
for name, net in full.items():
    with minifcn.no_grad():
        s = np.concatenate([net(Tensor(vx[i:i + 50])).numpy() for i in range(0, len(vx), 50)])
    p = np.exp(s - s.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    probs[name] = p
    r = metrics.scores(metrics.confusion_matrix(vy, p.argmax(1), val96.n_class))
    iu = "  ".join(f"{c} {v:.2f}" for c, v in zip(val96.class_names, r["per_class_iu"]))
    print(f"{name:7s} pixel acc {r['pixel_acc']:.3f}  mean IU {r['mean_iu']:.3f}   IU: {iu}")

# %% [markdown]
# The predictions next to each other (the paper's Figure 4, in miniature), with each net's
# probability that a pixel is *not* background: how sharply each head can draw an outline.

# %%
names = list(full)
shown = [i for i in range(len(val96)) if (vy[i] == 4).sum() > 300][:3]   # images with a cross
fig, axes = plt.subplots(len(shown), 8, figsize=(11, 1.45 * len(shown)))
for row, i in zip(axes, shown):
    panels = [val96[i][0], minifcn.viz.colorize(vy[i])] + [minifcn.viz.colorize(probs[n][i].argmax(0)) for n in names]
    for ax, panel in zip(row, panels):
        ax.imshow(panel, interpolation="nearest")
    for ax, n in zip(row[5:], names):
        ax.imshow(1 - probs[n][i, 0], cmap="magma", vmin=0, vmax=1)
    for ax, title in zip(row, ["image", "truth"] + names + [f"P(object) {n}" for n in names]):
        ax.set_xticks([]); ax.set_yticks([])
        if i == shown[0]:
            ax.set_title(title, fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the pictures with section 3 in mind. FCN-32s's score map is 2x2 cells on these images
# (one cell per 32 pixels, padding included): its objects are blobs, and a cross's thin arms, narrower than one of its cells, are
# what it misses first. FCN-16s's pool4 skip halves the cell and FCN-8s's pool3 skip halves it
# again, so their outlines follow the shapes more closely and the cross's arms begin to show. Each net here is also far
# from converged (the paper trains for days from ImageNet weights), and each is a single run
# (seed 0, on the CPU). Over three seeds (docs/gpu.md, "The skip architectures on the GPU"), the
# pool4 skip is the big step and pool3 adds little, with several points of spread between the
# seeds. The paper's own Table 2 has the same shape: pool4 added 3.0 mean IU and pool3 only 0.3
# more.
#
# ## Exercise
#
# 1. Derive by hand, with `geometry.conv_map`, `deconv_map` and `offset`, where a fourth skip
#    from **pool2** would be cropped in an "FCN-4s" (upsample the FCN-8s sum 2x with a k4 s2
#    transposed convolution, add scores from pool2). What is the best possible mean IU at
#    stride 4 (use the method of section 3, sampling labels at the centres yourself)?
# 2. Set `STEPS = 1000` and rerun section 5 (a quarter of an hour or more on two cores), then
#    score those nets as section 6 does. Which net is first to find the objects, and which the
#    cross? Then try `LR = 0.15`, and `lr_mults` left out: what happens to the loss?
# 3. `FCN8s.from_fcn16s` starts FCN-8s from a trained FCN-16s. Check that its `score_pool3` is
#    zero and that its first prediction is close to the FCN-16s's, as in section 4.
