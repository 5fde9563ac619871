# %% [markdown]
# # 10 · Starting from a classifier: the paper's method end to end
#
# The FCN paper never trains a segmentation net from nothing. Section 4.1 takes VGG16, a net
# trained to **classify** ImageNet photos, reads its fully connected layers as convolutions
# (notebook 05), puts a new score layer on top and **fine-tunes** the whole thing for dense
# prediction. What the classifier learned about edges, textures and parts is what makes the
# segmentation net good after a short training.
#
# minifcn ships a classifier made the same way, small enough for a CPU: VGG16's topology at width
# 0.0625 (4-8-16-32-32 channels, fc 256), trained by `python -m minifcn.pretrain` on
# `shapes-cls`, 16 categories of shapes (one dominant object per 224 x 224 image). It plays
# ImageNet's part; the segmentation set `shapes` (4 classes) plays VOC's. In this notebook we:
#
# 1. classify a few held-out images with it;
# 2. convolutionalise it and look at its coarse heatmap on a larger picture;
# 3. fine-tune FCN-8s from it for a short while, next to the same net from scratch.

# %%
# %matplotlib inline
import os
import tempfile
import numpy as np
import matplotlib.pyplot as plt
import minifcn
from minifcn import Tensor, no_grad, training
from minifcn.data import Loader, Shapes, ShapesClassification, from_input
from minifcn.models import convolutionalize, fcn32s, pretrained_classifier, coarse_scores

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite shrinks the training
minifcn.manual_seed(0)

# %% [markdown]
# ## 1. The classifier
#
# `pretrained_classifier()` loads the shipped weights (float16 on disk, float32 in memory). Its
# last layer, fc8, maps fc7's 256 features to 16 class scores; the output has shape
# (N, 16, 1, 1), a "segmentation" with one pixel, which is how minifcn trains it with the same
# loop as the FCNs.

# %%
classifier = pretrained_classifier()
print(classifier.fc6, classifier.fc7, classifier.fc8, sep="\n")
val = ShapesClassification("val", n=200)
x, y = next(Loader(val, 200, shuffle=False).epoch(0))
with no_grad():
    pred = classifier(Tensor(x)).numpy().argmax(1)[:, 0, 0]
print(f"top-1 accuracy on 200 held-out images: {(pred == y[:, 0, 0]).mean():.2f} "
      f"(chance: {1 / val.n_class:.2f})")

fig, axes = plt.subplots(1, 6, figsize=(9, 2))
for i, ax in enumerate(axes):
    ax.imshow(from_input(x[i]))
    ok = pred[i] == y[i, 0, 0]
    ax.set_title(f"{val.class_names[y[i, 0, 0]]}\n-> {val.class_names[pred[i]]}", fontsize=8,
                 color="black" if ok else "red")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Convolutionalise it: a heatmap
#
# `convolutionalize(classifier, fcn)` copies conv1_1 ... conv5_3 into an FCN of the same width
# and reshapes the fully connected weights: fc6's (256, 32·7·7) matrix becomes a (256, 32, 7, 7)
# convolution, fc7's (256, 256) a 1x1 one. With `scores=True` fc8 becomes the FCN's score
# layer too, so the FCN scores the classifier's 16 classes **at every position**. (For
# segmentation we leave that out: the new score layer starts at zero, as in the paper.)
#
# On a larger picture, four classification images side by side, each fc7 position sees one
# 224-pixel window, every 32 pixels: the coarse score map is the classifier slid over the
# picture, computed in one pass.

# %%
heat_net = convolutionalize(classifier, fcn32s(n_class=16, width=0.0625, dropout=0.0),
                            scores=True).eval()
tiles = [val[i][0] for i in range(4)]
picture = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
xp = minifcn.data.to_input(picture)[None]                        # (1, 3, 448, 448)
with no_grad():
    coarse = coarse_scores(heat_net, Tensor(xp)).numpy()[0]       # (16, h, w), stride 32
print("picture", picture.shape[:2], "-> coarse scores", coarse.shape)
names = [val.class_names[val[i][1][0, 0]] for i in range(4)]
fig, axes = plt.subplots(1, 5, figsize=(11, 2.4))
axes[0].imshow(picture); axes[0].set_title("picture"); axes[0].axis("off")
for ax, name in zip(axes[1:], names):
    c = val.class_names.index(name)
    ax.imshow(coarse[c], cmap="magma"); ax.set_title(f"score of '{name}'", fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# Each class lights up where its object is (allowing for the net's stride 32 and its 404-pixel
# receptive field, which overlaps the tiles): the classifier already knows *what* and roughly
# *where*. What it lacks is the fine *where*: that is what the skips and the fine-tuning add.
#
# ## 3. Fine-tune FCN-8s from it
#
# `python -m minifcn.train` does this by default (`--init classifier`): it builds FCN-8s,
# convolutionalises the shipped classifier into it, starts the score layers at zero and trains
# on `shapes`. Here we run the same `training.fit` twice for a short while, from the classifier
# and from scratch (`--init scratch`, He's initialisation), and compare validation mean IU.

# %%
STEPS = 8 if FAST else 60
results = {}
for init in ("classifier", "scratch"):
    config = training.resolve({**training.DEFAULTS, "iters": STEPS, "n_train": 400, "n_val": 40,
                               "val_every": max(1, STEPS // 3), "init": init, "device": "cpu"})
    run_dir = tempfile.mkdtemp(prefix=f"fcn8s-{init}-")
    best = training.fit(config, run_dir, log=lambda msg: None)
    records = [r for r in training.Run(run_dir).records()]
    results[init] = ([r["iteration"] for r in records], [r["mean_iu"] for r in records], run_dir)
    print(f"from {init:10s}: best mean IU {best['mean_iu']:.3f} after {STEPS} steps")

for init, (its, ious, _) in results.items():
    plt.plot(its, ious, marker="o", label=f"from {init}")
plt.xlabel("iteration"); plt.ylabel("validation mean IU"); plt.legend(); plt.grid(alpha=0.3)
plt.show()

# %%
model, _ = training.load_model(os.path.join(results["classifier"][2], training.BEST))
shapes = Shapes("val", n=4)
xs, ys = next(Loader(shapes, 4, shuffle=False).epoch(0))
pred = training.predict_labels(model, xs)
fig, axes = plt.subplots(2, 4, figsize=(8, 4))
for i in range(4):
    axes[0, i].imshow(from_input(xs[i])); axes[0, i].axis("off")
    axes[1, i].imshow(minifcn.viz.colorize(pred[i])); axes[1, i].axis("off")
axes[0, 0].set_title("image", loc="left"); axes[1, 0].set_title("from the classifier", loc="left")
plt.show()

# %% [markdown]
# After the same few steps the net that started from the classifier is well ahead: its trunk
# already responds to edges, corners and thin bars, so the zero-initialised score layers have
# something to read from the first step, while the net from scratch first spends its steps
# predicting background everywhere. [docs/training.md](../docs/training.md) measures the
# difference over whole runs and three seeds.
#
# ## Exercise
#
# 1. Convolutionalise the classifier into FCN-16s and FCN-8s (with `scores=True`) and draw their
#    full-size outputs on the picture above: which layers did `convolutionalize` leave at zero,
#    and what does that do to the skips' contribution?
# 2. Fine-tune with `"freeze_trunk": True` in the config (the paper's "FCN-32s-fixed" idea):
#    how far does the classifier's trunk get when only the score layers learn?
