# %% [markdown]
# # 07 · Scoring a segmentation: four metrics and a confusion matrix
#
# How good is a segmentation? The FCN paper (section 5) reports four numbers, all computed from
# one **confusion matrix** summed over the whole evaluation set. They disagree with each other on
# purpose: this notebook builds a worked example where a model that *never finds a small class*
# still gets a high pixel accuracy, and shows which metrics notice.
#
# With $n_{ij}$ the number of pixels of true class $i$ predicted as class $j$,
# $t_i = \sum_j n_{ij}$ the number of pixels of class $i$, and $n_{cl}$ classes:
#
# | metric | formula | in words |
# |---|---|---|
# | pixel accuracy | $\sum_i n_{ii} / \sum_i t_i$ | fraction of all pixels labelled right |
# | mean accuracy | $\frac{1}{n_{cl}} \sum_i n_{ii} / t_i$ | per-class recall, averaged over classes |
# | mean IU | $\frac{1}{n_{cl}} \sum_i \frac{n_{ii}}{t_i + \sum_j n_{ji} - n_{ii}}$ | intersection over union per class, averaged |
# | frequency weighted IU | $\big(\sum_k t_k\big)^{-1} \sum_i \frac{t_i\, n_{ii}}{t_i + \sum_j n_{ji} - n_{ii}}$ | IU per class, weighted by the class's size |
#
# Mean IU is the paper's headline number (e.g. 62.2 for FCN-8s on PASCAL VOC 2012 test).

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
from minifcn import metrics
from minifcn.data import Shapes

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The data: one class is small
#
# The embedded `Shapes` set has a background and four shapes; the **cross** has thin arms, so it
# covers few pixels. Counting over 60 validation images:

# %%
val = Shapes("val", n=60, size=96)
names = val.class_names
labels = [val[i][1] for i in range(len(val))]
counts = np.bincount(np.concatenate([l.ravel() for l in labels]), minlength=val.n_class)
for name, c in zip(names, counts):
    print(f"{name:10s} {c:7d} pixels  {c / counts.sum():6.1%}")

fig, axes = plt.subplots(1, 4, figsize=(8, 2.2))
for ax, i in zip(axes, range(4)):
    ax.imshow(minifcn.viz.colorize(labels[i]), interpolation="nearest"); ax.axis("off")
plt.suptitle("true labels: background black, disc red, rectangle green, triangle olive, cross blue", fontsize=9)
plt.show()


# %% [markdown]
# ## 2. Three pretend models
#
# No training is needed to see how the metrics behave; we make the predictions by hand from the
# true labels:
#
# * **perfect**: the true labels;
# * **no cross**: right everywhere, except that it never predicts the cross: cross pixels come
#   out as background (a model that ignores a small class);
# * **all background**: predicts background everywhere;
# * **coarse, no cross**: like "no cross", and in addition blocky, as if predicted at stride 8
#   (each 8x8 block gets the label of its centre pixel; notebook 03), so it also makes mistakes
#   along every outline.
#
# `metrics.RunningScore` adds each image's confusion matrix to a running total, the way an
# evaluation loop does.

# %%
def no_cross(label):
    return np.where(label == 4, 0, label)

def coarse(label, s=8):
    centres = np.minimum(np.arange(label.shape[0]) // s * s + s // 2, label.shape[0] - 1)
    return label[centres][:, centres]

models = {"perfect": lambda l: l, "no cross": no_cross, "all background": np.zeros_like,
          "coarse, no cross": lambda l: no_cross(coarse(l))}
hists = {}
for name, predict in models.items():
    running = metrics.RunningScore(val.n_class)
    for label in labels:
        running.update(label, predict(label))
    hists[name] = running.hist

print("confusion matrix of 'no cross' (rows: truth, columns: prediction):")
print(hists["no cross"])


# %% [markdown]
# ## 3. The four numbers, by hand
#
# From the matrix: the diagonal holds the right pixels, row sums are the true class sizes $t_i$,
# column sums are how often each class was predicted. Computed here with NumPy straight from the
# formulas, then compared with `metrics.scores`:

# %%
def four_metrics(hist):
    n = hist.astype(np.float64)
    diag, truth, predicted = np.diag(n), n.sum(1), n.sum(0)
    iu = diag / (truth + predicted - diag)
    return {"pixel_acc": diag.sum() / n.sum(),
            "mean_acc": np.mean(diag / truth),
            "mean_iu": np.mean(iu),
            "fw_iu": (truth * iu).sum() / n.sum()}

print(f"{'':18s}" + "".join(f"{k:>11s}" for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")))
for name, hist in hists.items():
    ours, lib = four_metrics(hist), metrics.scores(hist)
    assert all(np.isclose(ours[k], lib[k]) for k in ours)
    print(f"{name:18s}" + "".join(f"{ours[k]:11.3f}" for k in ours))

# %% [markdown]
# What the numbers say:
#
# * **pixel accuracy** of "no cross" is barely below perfect: the cross is a few percent of the
#   pixels, so missing all of it costs only those few percent. Even "all background" scores the
#   background's share.
# * **mean accuracy** and **mean IU** weigh every class equally, so a class with IU 0 removes a
#   fifth of the score (five classes): "no cross" drops to about 0.8 mean IU, "all background"
#   collapses.
# * **frequency weighted IU** weighs classes by size again; like pixel accuracy it is dominated by
#   the large background class and stays high.
# * the **coarse** model loses a little everywhere: outlines are where a stride-8 prediction goes
#   wrong, and small classes have a lot of outline for their area.
#
# This is why segmentation papers lead with mean IU: a model cannot score well on it by being
# right about the big, easy classes only. The per-class IU says where the loss is:

# %%
lib = metrics.scores(hists["no cross"])
for name, acc, iu in zip(names, lib["per_class_acc"], lib["per_class_iu"]):
    print(f"{name:10s} accuracy {acc:.3f}   IU {iu:.3f}")

# %% [markdown]
# ## 4. The confusion matrix as a picture
#
# Here is the matrix of the coarse model. Raw counts are dominated by the background (left, the
# colour is on a log scale); dividing each row by its sum (right: where did each class's pixels
# go?) makes the small classes readable. The missing cross is the bright cell in the bottom-left
# corner; the coarse outlines are the faint cells in the first row and column.

# %%
hist = hists["coarse, no cross"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
rows = hist / hist.sum(1, keepdims=True)
for ax, m, title in ((axes[0], np.log10(hist + 1), "pixel counts"), (axes[1], rows, "row-normalised")):
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(5), names, rotation=45, fontsize=8); ax.set_yticks(range(5), names, fontsize=8)
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title, fontsize=10)
    for (r, c), v in np.ndenumerate(m):
        text = (f"{hist[r, c] / 1000:.1f}k" if hist[r, c] >= 1000 else str(hist[r, c])) if ax is axes[0] else f"{v:.2f}"
        ax.text(c, r, text, ha="center", va="center", fontsize=7, color="white" if v > 0.6 * m.max() else "black")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 5. Sum first, then divide
#
# The paper sums the confusion matrix over the whole set and computes the metrics once. Averaging
# per-image scores gives a different number, because it weighs a small image (or a small object)
# as much as a large one, and because a class absent from an image has no IU there. The rules
# for absent classes, as in the reference code:
#
# * a class with no true pixels has no accuracy (NaN) and is left out of the mean accuracy;
# * a class neither present nor predicted has no IU (NaN) and is left out of the mean IU;
# * a class **predicted but absent** has IU 0, and it counts: false alarms are punished.

# %%
k = next(i for i, l in enumerate(labels) if 4 not in l)     # an image without a cross
one = labels[k]
print(f"classes in image {k}:", [names[c] for c in np.unique(one)])
s = metrics.scores(metrics.confusion_matrix(one, no_cross(one), val.n_class))
print("per-class IU of 'no cross':", s["per_class_iu"], " mean IU", round(s["mean_iu"], 3))

false_alarm = one.copy()
false_alarm[:4, :4] = 4                      # predict a small cross where there is none
s = metrics.scores(metrics.confusion_matrix(one, false_alarm, val.n_class))
print("with a false cross:        ", s["per_class_iu"], " mean IU", round(s["mean_iu"], 3))

per_image = [metrics.scores(metrics.confusion_matrix(l, no_cross(l), val.n_class))["mean_iu"] for l in labels]
print(f"'no cross', mean IU over the summed matrix {metrics.scores(hists['no cross'])['mean_iu']:.3f}"
      f" vs the average of per-image mean IUs {np.mean(per_image):.3f}")

# %% [markdown]
# Images without a cross have no cross IU, so they score a perfect 1.0 per image and pull the
# average up; over the summed matrix the cross is present, missed, and costs its full fifth.
#
# The trainer reports exactly these numbers every epoch (`python -m minifcn.train`, and
# `python -m minifcn.evaluate` for a checkpoint), from one `RunningScore` over the validation set.
#
# ## Exercise
#
# 1. Make a model that calls every **rectangle** pixel a **triangle** (the two classes confused).
#    Before computing: which of the four metrics will drop most, and which least? Check.
# 2. Make a model that is perfect except for a one-pixel-wide border of background around every
#    object (`scipy`-free hint: compare each pixel with its four neighbours using `np.roll`). Which
#    class loses the most IU, and why?
# 3. Show that pixel accuracy equals frequency weighted accuracy, i.e.
#    $\sum_i \frac{t_i}{\sum_k t_k} \cdot \frac{n_{ii}}{t_i}$. Why is there no such identity for IU?
