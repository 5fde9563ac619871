# %% [markdown]
# # 13 · After FCN: telling apart objects of one class
#
# FCN gives every pixel a class. When two discs touch, every pixel of both is "disc", and
# nothing in the class map says where one disc ends and the other begins. The paper says as much:
# FCN does not distinguish between individual instances of the same class. The tasks that came
# next ask for more. *Instance* segmentation wants one mask per object, and *panoptic*
# segmentation (Kirillov et al., 2019) asks for both: a class for every pixel and an object id
# for every pixel of a countable class.
#
# This notebook looks at the problem on `shapes-touching`, a variant of the `shapes` data whose
# objects of one class touch or overlap:
#
# 1. what the simplest fix (connected components of the class map) does to touching objects;
# 2. **panoptic quality**, the metric that scores instances, worked by hand on a 6x6 example;
# 3. the **discriminative loss** (De Brabandere et al., 2017): an embedding per pixel, pulled
#    to its object's mean and pushed away from the other objects' means;
# 4. **centres and offsets** (Panoptic-DeepLab, Cheng et al., 2020): a heatmap of object centres
#    and, at every pixel, the vector to its object's centre;
# 5. where these live in minifcn: FCN-8s with a second head.
#
# Sections 3 and 4 use the true targets, or embeddings optimised directly, rather than a
# trained net: the point is what the losses ask for and how the grouping reads the answer.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
import minifcn
from minifcn import Tensor, models, no_grad
from minifcn.data import ShapesTouching, to_input
from minifcn.instances import (centre_targets, cluster_embeddings, connected_components,
                               discriminative_loss, group_by_centres)
from minifcn.metrics import RunningPanoptic, panoptic_quality
from minifcn.models.instances import predict_instances
from minifcn.viz import colorize

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(linewidth=110)
minifcn.manual_seed(0)

val = ShapesTouching("val", n=20)
print(val.class_names)

# %% [markdown]
# ## 1. The merged pair
#
# `ds.item(i, instances=True)` returns an image, its class map and its **instance map**: 0 on the
# background, 1, 2, ... for the objects, numbered within the image. The data knows each object's
# visible pixels because it draws them one by one. Scene 0 holds three discs and three rectangles:

# %%
image, label, inst = val.item(0, instances=True)
print("image", image.shape, " classes", np.unique(label), " instance ids", np.unique(inst))
for k in np.unique(inst)[1:]:
    print(f"  object {k}: class {val.class_names[label[inst == k][0]]:9s} {(inst == k).sum():4d} pixels")

# %% [markdown]
# The most obvious way to get instances from a class map: call each connected region of one class
# an object. `connected_components` does exactly that (4-connectivity; the background,
# class 0, is not an object). It works on the *true* class map here, so this is the best
# this baseline can ever do:

# %%
cc = connected_components(label)
print("true objects:", inst.max(), "  connected components of the class map:", cc.max())

ids_cmap = ListedColormap(["black"] + [plt.cm.tab10(k) for k in range(10)])


def show_ids(ax, ids, title):
    ids = np.where(ids > 0, (ids - 1) % 10 + 1, 0)            # ten colours, reused past id 10
    ax.imshow(ids, cmap=ids_cmap, vmin=0, vmax=10, interpolation="nearest")
    ax.set_title(title, fontsize=9); ax.set_xticks([]); ax.set_yticks([])


fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
axes[0].imshow(image); axes[0].set_title("image", fontsize=9)
axes[1].imshow(colorize(label)); axes[1].set_title("class map", fontsize=9)
for ax in axes[:2]:
    ax.set_xticks([]); ax.set_yticks([])
show_ids(axes[2], inst, f"true instances: {inst.max()}")
show_ids(axes[3], cc, f"connected components: {cc.max()}")
plt.tight_layout(); plt.show()

# %% [markdown]
# Six objects become two regions: the three discs are one region and the three rectangles
# another. No amount of training on class labels changes this. A perfect class map still merges
# whatever touches, because the information is not in it. On the 20 validation scenes:

# %%
true_count = cc_count = 0
for i in range(len(val)):
    _, lab_i, inst_i = val.item(i, instances=True)
    true_count += inst_i.max()
    cc_count += connected_components(lab_i).max()
print(f"{true_count} objects, {cc_count} connected components")

# %% [markdown]
# ## 2. Panoptic quality, by hand
#
# Mean IU (notebook 07) counts pixels, so it cannot see a merge: the two discs' pixels are all
# "disc" whichever object they belong to. **Panoptic quality** (PQ) counts *segments*. A segment
# is the set of pixels with one class and one id. Background is "stuff" (uncountable), so it forms
# a single segment per image. The rules:
#
# * a true and a predicted segment of one class **match** when their IoU is above 0.5. The
#   segments of one map do not overlap, so at most one predicted segment can pass 0.5 with a
#   given true segment, and the other way round: each segment matches at most once;
# * matched pairs are true positives (TP), unmatched true segments false negatives (FN),
#   unmatched predicted segments false positives (FP);
# * **void** pixels (label 255) count for nothing: a predicted segment's pixels over void are left
#   out of its IoU, and a predicted segment that lies mostly over void is not a false positive;
# * per class, PQ = (sum of the matched IoUs) / (TP + FP/2 + FN/2), and the score is the mean over
#   the classes.
#
# A 6x6 example with one thing class (1) and background (0). True objects A (6 pixels), and B
# and C (4 each), which touch, plus a void corner (V). The prediction splits A into pieces of 4
# and 2, merges B and C into one segment with one background pixel added, and puts a segment D on
# the void corner:

# %%
true_class = np.array([[1, 1, 1, 0, 1, 1],
                       [1, 1, 1, 0, 1, 1],
                       [0, 0, 0, 0, 1, 1],
                       [0, 0, 0, 0, 1, 1],
                       [255, 255, 0, 0, 0, 0],
                       [255, 255, 0, 0, 0, 0]])
true_inst = np.array([[1, 1, 1, 0, 2, 2],      # A = 1, B = 2, C = 3
                      [1, 1, 1, 0, 2, 2],
                      [0, 0, 0, 0, 3, 3],
                      [0, 0, 0, 0, 3, 3],
                      [0, 0, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0, 0]])
pred_inst = np.array([[1, 1, 2, 0, 3, 3],      # A split into 1 and 2; B + C merged into 3
                      [1, 1, 2, 0, 3, 3],
                      [0, 0, 0, 0, 3, 3],
                      [0, 0, 0, 3, 3, 3],
                      [4, 4, 4, 0, 0, 0],      # D = 4, mostly over the void corner
                      [4, 4, 0, 0, 0, 0]])
pred_class = (pred_inst > 0).astype(np.int64)

fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
show_ids(axes[0], np.where(true_class == 255, 10, true_inst), "truth (void in cyan)")
show_ids(axes[1], pred_inst, "prediction")
for ax, ids in zip(axes, (np.where(true_class == 255, -1, true_inst), pred_inst)):
    for (r, c), v in np.ndenumerate(ids):
        ax.text(c, r, "V" if v < 0 else "ABC"[v - 1] if ax is axes[0] and v else str(v),
                ha="center", va="center", fontsize=8, color="white")
plt.tight_layout(); plt.show()

# %% [markdown]
# Step 1, the segments: each true or predicted id (0 is the background segment), as a boolean
# mask. Void pixels belong to no true segment.

# %%
void = true_class == 255
true_segs = {"bg": (true_class == 0), "A": true_inst == 1, "B": true_inst == 2, "C": true_inst == 3}
pred_segs = {"bg": pred_class == 0, "1": pred_inst == 1, "2": pred_inst == 2, "3": pred_inst == 3,
             "4": pred_inst == 4}
print("true areas:", {k: int(m.sum()) for k, m in true_segs.items()}, " void:", int(void.sum()))
print("predicted areas:", {k: int(m.sum()) for k, m in pred_segs.items()})

# %% [markdown]
# Step 2, the IoU of every pair. The predicted segment's pixels over void are left out of the union:

# %%
def iou(t, p):
    return (t & p).sum() / (t | (p & ~void)).sum()


print("IoU      " + "".join(f"{k:>7s}" for k in pred_segs))
for tk, t in true_segs.items():
    print(f"{tk:6s}   " + "".join(f"{iou(t, p):7.3f}" for p in pred_segs.values()))

# %% [markdown]
# Step 3, the matches, IoU > 0.5 within a class: background with background (16/18), and A with
# piece 1 (4/6). Piece 2 covers only 2 of A's 6 pixels. The merged segment 3 has 4 of B's pixels
# in a union of 9, and the same for C: 4/9 < 0.5, so neither B nor C is matched. A merge costs
# **both** objects, plus a false positive.
#
# Step 4, the counts for the thing class: TP = 1; FN = 2 (B, C); FP = 2 (pieces 2 and 3).
# Segment D is not a false positive because 4 of its 5 pixels lie over void.

# %%
d_void = (pred_segs["4"] & void).sum()
print(f"D: {d_void} of {pred_segs['4'].sum()} pixels over void -> ignored")
tp, fp, fn = 1, 2, 2
matched_iou = iou(true_segs["A"], pred_segs["1"])
pq_thing = matched_iou / (tp + fp / 2 + fn / 2)
sq, rq = matched_iou / tp, tp / (tp + fp / 2 + fn / 2)
pq_bg = iou(true_segs["bg"], pred_segs["bg"]) / 1          # one TP, nothing unmatched
print(f"thing: PQ = {matched_iou:.3f} / ({tp} + {fp}/2 + {fn}/2) = {pq_thing:.3f}"
      f"   = SQ {sq:.3f} x RQ {rq:.3f}")
print(f"background: PQ = {pq_bg:.3f}     mean over the two classes: {(pq_thing + pq_bg) / 2:.3f}")

# %% [markdown]
# PQ splits into two factors. **SQ** (segmentation quality) is the mean IoU of the matches: how
# good the matched masks are. **RQ** (recognition quality) is TP / (TP + FP/2 + FN/2), an F1
# score: how many objects were found at all. The merge and the split hurt RQ; SQ only sees
# piece 1.
#
# `minifcn.metrics.panoptic_quality` applies the same rules to (N, H, W) maps, or to one (H, W)
# map, with `stuff=(0,)` saying which classes are stuff:

# %%
pq = panoptic_quality(true_class, true_inst, pred_class, pred_inst, n_class=2, stuff=(0,))
per = pq["per_class"]
print("per class  tp", per["tp"], " fp", per["fp"], " fn", per["fn"], " pq", per["pq"].round(3))
print(f"PQ {pq['pq']:.3f}  SQ {pq['sq']:.3f}  RQ {pq['rq']:.3f}")

# %% [markdown]
# The library agrees with the hand count. (The overall SQ and RQ are means over classes, so PQ = SQ x RQ
# holds per class but not for the means.)
#
# Back on scene 0, the connected components of the *true* class map:

# %%
print("connected components of the true classes, scene 0: PQ", round(
    panoptic_quality(label, inst, label, cc, n_class=5)["pq"], 3))

# %% [markdown]
# ## 3. Embeddings: pull together, push apart
#
# De Brabandere et al. give the net D extra output channels, an **embedding** per pixel, and train
# them with a loss that needs no fixed object order. With mu_c the mean embedding of object c:
#
# * **L_var** pulls: every pixel farther than delta_v = 0.5 from its object's mean pays
#   (distance - delta_v)², averaged per object and then over the objects;
# * **L_dist** pushes: every pair of means closer than 2 delta_d = 3 pays (3 - distance)²;
# * **L_reg** keeps the means near the origin (weight 0.001).
#
# The hinges leave a pixel alone once it is close enough, and two means alone once they are far
# enough apart. With those margins, a ball of radius 2 delta_v = 1 around each mean then holds its
# own object and nothing else.
#
# Instead of a net, we make the embeddings themselves the parameters: a Tensor of shape
# (1, 2, 32, 32) for scene 0's instance map sampled every third pixel, starting at random, moved
# by plain gradient steps on `discriminative_loss`. A net would produce these values from the
# image, but the loss sees only the embeddings. Background pixels (id 0) do not enter the loss.

# %%
small = inst[::3, ::3][None]                     # (1, 32, 32): 6 objects, 13 to 59 pixels each
rng = np.random.default_rng(0)
emb = Tensor(rng.normal(0.0, 1.0, (1, 2, 32, 32)), requires_grad=True)
loss, terms = discriminative_loss(emb, small, return_terms=True)
print(f"start: loss {loss.item():.3f} =  var {terms['var'].item():.3f} + dist {terms['dist'].item():.3f}"
      f" + 0.001 x reg {terms['reg'].item():.3f}")

# %% [markdown]
# Each pixel carries a weight of 1 / (its object's pixels x the number of objects), about
# 1/200 here, so its gradient is small and the step size is large (lr 20). Sixty steps, with
# snapshots:

# %%
lr, snapshots, history = 20.0, {}, []
for step in range(61):
    loss, terms = discriminative_loss(emb, small, return_terms=True)
    history.append([terms[k].item() for k in ("var", "dist", "reg")])
    if step in (0, 3, 60):
        snapshots[step] = emb.numpy()[0].copy()
    emb.grad = None
    loss.backward()
    emb.data -= lr * emb.grad
history = np.array(history)
print("step 60: var %.4f  dist %.4f  reg %.3f" % tuple(history[-1]))

# %%
own = small[0] > 0
fig, axes = plt.subplots(1, 4, figsize=(11, 2.9))
for ax, (step, e) in zip(axes, snapshots.items()):
    ax.scatter(e[0][own], e[1][own], c=small[0][own], cmap=ids_cmap, vmin=0, vmax=10, s=6)
    ax.set_title(f"step {step}", fontsize=9); ax.set_aspect("equal")
axes[3].semilogy(history[:, 0], label="L_var (pull)")
axes[3].semilogy(history[:, 1], label="L_dist (push)")
axes[3].set_xlabel("step"); axes[3].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# At step 0 the six colours overlap in one cloud. Within a few steps each colour gathers into a
# small cluster, while L_dist pushes the clusters apart until every pair is 3 apart. Both terms then
# fall towards zero. Each cluster ends as a ring: the hinge stops pulling a pixel once it is within
# delta_v of its mean, so the pixels halt on the ring of radius 0.5 and never reach the mean itself.
# Only the tiny L_reg keeps acting, and it keeps the clusters from drifting off. The distances at
# the end:

# %%
final = snapshots[60]
means = np.array([final[:, small[0] == k].mean(1) for k in range(1, 7)])
spread = max(np.linalg.norm(final[:, small[0] == k] - means[k - 1][:, None], axis=0).max()
             for k in range(1, 7))
gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
print(f"largest pixel-to-own-mean distance {spread:.2f} (delta_v = 0.5)")
print(f"smallest distance between two means {gaps[~np.eye(6, dtype=bool)].min():.2f} (2 delta_d = 3)")

# %% [markdown]
# At inference there are no labels, so the embeddings are grouped. `cluster_embeddings` takes the
# foreground (from the class map), seeds at the first unassigned pixel, mean-shifts within a
# radius of 2 delta_v, gives the pixels within that radius a new id, and repeats until every
# foreground pixel has one. On the start and the end of the optimisation:

# %%
fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
show_ids(axes[0], small[0], "true instances (every 3rd pixel)")
for ax, step in zip(axes[1:], (0, 60)):
    ids = cluster_embeddings(snapshots[step][None], own[None])
    score = panoptic_quality(label[::3, ::3], small[0], label[::3, ::3], ids[0], n_class=5)["pq"]
    show_ids(ax, ids[0], f"clustered, step {step}: {ids.max()} ids, PQ {score:.2f}")
plt.tight_layout(); plt.show()

# %% [markdown]
# Random embeddings cluster into many small fragments. After optimisation the clustering returns
# exactly the six objects, touching or not. The ids are arbitrary, and PQ does not care which
# numbers are used, only which pixels share one.
#
# ## 4. Centres and offsets
#
# Panoptic-DeepLab predicts two things per pixel instead: a **heatmap** that peaks at every
# object's centre, and an **offset**, the vector from the pixel to its object's centre.
# `centre_targets` builds both from an instance map: a Gaussian of sigma 2 pixels at each
# object's centre of mass, and at each object pixel (cy - y, cx - x). Scene 6 is two touching discs:

# %%
image6, label6, inst6 = val.item(6, instances=True)
targets = centre_targets(inst6[None])
print("heatmap", targets.heatmap.shape, " offset", targets.offset.shape,
      " peak values", targets.heatmap.max())

yy, xx = np.mgrid[0:96:4, 0:96:4]
dy, dx = targets.offset[0, 0, ::4, ::4], targets.offset[0, 1, ::4, ::4]
on = inst6[::4, ::4] > 0
fig, axes = plt.subplots(1, 3, figsize=(9, 3.1))
axes[0].imshow(image6); axes[0].set_title("scene 6", fontsize=9)
axes[1].imshow(targets.heatmap[0, 0], cmap="magma"); axes[1].set_title("centre heatmap", fontsize=9)
show_ids(axes[2], inst6, "offsets to the centre")
axes[2].quiver(xx[on], yy[on], dx[on], dy[on], color="white", angles="xy", scale_units="xy",
               scale=1, width=0.004)
for ax in axes[:2]:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# The offsets are drawn at full length (every fourth pixel), so each arrow ends at its disc's
# centre. Where the discs meet, neighbouring arrows point in opposite directions: the offset
# field changes abruptly at the boundary that the class map cannot show.
#
# `group_by_centres` reads it back: the peaks of the heatmap (pixels equal to the maximum of their
# 7x7 neighbourhood and above 0.1) are the objects, and every foreground pixel goes to the peak
# nearest to where its offset points. Foreground comes from the class map. On the true targets,
# against connected components:

# %%
fg6 = (label6 > 0)[None]
by_centres = group_by_centres(targets.heatmap, targets.offset, fg6)[0]
cc6 = connected_components(label6)
fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
show_ids(axes[0], inst6, "true instances")
for ax, ids, name in ((axes[1], cc6, "connected components"), (axes[2], by_centres, "centres + offsets")):
    score = panoptic_quality(label6, inst6, label6, ids, n_class=5)["pq"]
    show_ids(ax, ids, f"{name}: PQ {score:.2f}")
plt.tight_layout(); plt.show()

# %% [markdown]
# The touching pair is split. Connected components still score a little on the disc class: the
# merged region covers the larger disc's 921 pixels in a union of 1685, an IoU of 0.55 > 0.5, so
# it matches that disc, and only the smaller one is a false negative. Over all 20 validation scenes, with the true class map and the true
# targets: the best each grouping can do when the head is perfect. `RunningPanoptic` adds up the
# counts over batches, as validation does:

# %%
runs = {"connected components": RunningPanoptic(5), "centres + offsets": RunningPanoptic(5)}
for i in range(len(val)):
    _, lab_i, inst_i = val.item(i, instances=True)
    t = centre_targets(inst_i[None])
    runs["connected components"].update(lab_i, inst_i, lab_i, connected_components(lab_i))
    runs["centres + offsets"].update(lab_i, inst_i, lab_i,
                                     group_by_centres(t.heatmap, t.offset, (lab_i > 0)[None])[0])
for name, run in runs.items():
    s = run.scores()
    print(f"{name:21s} PQ {s['pq']:.3f}  SQ {s['sq']:.3f}  RQ {s['rq']:.3f}   "
          f"TP {s['per_class']['tp'][1:].sum()}  FP {s['per_class']['fp'][1:].sum()}  FN {s['per_class']['fn'][1:].sum()}")

# %% [markdown]
# With perfect targets, centres and offsets recover all 77 objects, while connected components
# find 25 and lose the other 52 in merges. Perfect targets are not a guarantee, though: two
# objects whose centres of mass round to the same pixel would share one peak. None of these 20
# scenes has such a pair. A trained head's peaks are lower and uneven, and the 7x7 window then
# drops a weaker peak within 3 pixels of a stronger one; its offsets are noisy too (exercise 4).
#
# ## 5. In minifcn: FCN-8s with a second head
#
# `fcn8s-embed` and `fcn8s-centres` are FCN-8s with a second head next to the semantic one, built
# the same way (a 1x1 convolution on fc7 and on each skip, the same bilinear upsampling and crops)
# with 2 or 3 output channels. `heads(x)` returns both outputs, and `predict_instances` turns them
# into classes and instance ids. A new, untrained net on scene 6:

# %%
net = models.build("fcn8s-embed", n_class=5, width=1 / 16)
net.eval()
x6 = Tensor(to_input(image6)[None])
with no_grad():
    scores, embedding = net.heads(x6)
print("semantic scores", scores.shape, "  embeddings", embedding.shape)
print("its discriminative loss on scene 6:", round(net.instance_loss(embedding, inst6[None]).item(), 3))
classes, instances = predict_instances(net, scores, embedding)
print("predicted classes", np.unique(classes), " instances", instances.max())

# %% [markdown]
# Untrained, its score layers start at zero, as FCN's do, so every class scores 0 and the argmax
# is background everywhere: no pixel is foreground and nothing gets an id. Training minimises FCN's cross-entropy plus the
# head's loss on the same trunk (`training.train_step(..., instances=inst)`). That takes hundreds
# of steps, far more than fit in a notebook's two minutes. The instance experiment trains all
# three methods (connected components on FCN-8s, embeddings, centres) on `shapes-touching` from
# the shipped classifier and compares their PQ on separated and touching scenes:
#
# ```bash
# python -m minifcn.experiments.instances --iters 500 --seeds 1
# python -m minifcn.train --model fcn8s-embed --data shapes-touching     # one net
# python -m minifcn.evaluate runs/fcn8s-embed-shapes-touching-*/checkpoint_best.npz
# ```
#
# [docs/instances.md](../docs/instances.md) describes the heads, the losses and the learning
# rates that train stably.
#
# ## Exercise
#
# 1. **The split at 0.5.** In section 2, split A into two pieces of 3 pixels instead of 4 + 2.
#    What are TP, FP and FN now, and why does an IoU of exactly 0.5 not match? Check with
#    `panoptic_quality`.
# 2. **Harder margins.** Rerun section 3 with `delta_d=0.75` (means only 1.5 apart) and cluster
#    with the default bandwidth 2 delta_v = 1. When do two objects end up in one cluster? What
#    bandwidth would you choose instead?
# 3. **Three dimensions.** Optimise a (1, 3, 32, 32) embedding for scene 10 (five crosses) and
#    compare how fast L_dist reaches zero against 2-D. Why does the paper's 2-D choice get harder
#    as the number of objects per image grows?
# 4. **Noisy offsets.** Add Gaussian noise of standard deviation 1, 3 and 6 pixels to
#    `targets.offset` and to the heatmap before `group_by_centres`. How does PQ on the 20 scenes
#    fall, and which of the two is the grouping more sensitive to?
# 5. **Train one.** Run `python -m minifcn.train --model fcn8s-centres --data shapes-touching
#    --iters 300` and draw its heatmap and offsets for scene 6 (`net.heads`, channel 0 and
#    channels 1-2) next to the targets above.
