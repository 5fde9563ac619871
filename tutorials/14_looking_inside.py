# %% [markdown]
# # 14 · Looking inside: the pictures behind the numbers
#
# The earlier notebooks computed receptive fields, crop offsets, skips and bilinear kernels as
# numbers. This one draws them, with the functions of `minifcn.viz` that each return a
# matplotlib `Figure`:
#
# 1. **the coordinate map**: where every layer's pixels sit on the image, what one pixel sees,
#    and how conv1_1's padding of 100 and the crops 5 / 9 / 31 line the grids up (notebooks
#    03 and 06 derived them);
# 2. **the graph** autograd walks (notebook 01);
# 3. **activations**: the feature maps of the shipped classifier, layer by layer;
# 4. **the skips at work**: a trained FCN-8s's class scores before and after each skip is added;
# 5. **the upsampling kernels**, bilinear at the start and after training (notebook 04);
# 6. **a run folder's pictures**: the confusion matrix, IU per class, the worst images;
# 7. **what a pixel's prediction depends on**: occlusion and Grad-CAM.
#
# The trained FCN-8s is the one notebook 06 ships in `assets/` (600 steps from scratch); a
# short run below trains another, with learned upsampling, to look at its kernels and its run
# folder.

# %%
# %matplotlib inline
import io
import os
import tempfile
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display
from PIL import Image as PILImage
import minifcn
from minifcn import Tensor, nn, training, viz
from minifcn.data import Loader, Shapes, ShapesClassification, to_input
from minifcn.models import fcn8s, pretrained_classifier

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite shrinks the training
minifcn.manual_seed(0)


def show(fig, dpi=60):
    """Display a Figure of minifcn.viz at ``dpi`` in 64 colours (keeps the notebook light)."""
    drawn, small = io.BytesIO(), io.BytesIO()
    fig.savefig(drawn, format="png", dpi=dpi)
    PILImage.open(drawn).convert("RGB").quantize(colors=64).save(small, "png", optimize=True)
    display(Image(data=small.getvalue()))

# %% [markdown]
# ## 1. The coordinate map
#
# `minifcn.models.geometry.trace` runs a net's forward on shapes and coordinate maps instead of
# numbers: pixel i of each layer has its centre at image coordinate a·i + b (a: the stride in
# input pixels; b: where pixel 0 sits, negative inside conv1_1's padding) and sees rf x rf input
# pixels. `viz.layer_grids` returns those numbers per layer and `viz.layers_figure` draws them
# against the input. The geometry does not depend on the width, so a tiny FCN-8s on VGG's
# 500 x 500 input draws the paper's net:

# %%
net500 = fcn8s(n_class=21, width=1 / 64)
for g in viz.layer_grids(net500, 500):
    if g.name in ("pool1", "pool3", "pool5", "fc7", "upscore2", "score"):
        print(f"{g.name:9s} {g.size:4d} px  stride {float(g.stride):4g}  pixel 0 at "
              f"{float(g.start):7g}  rf {float(g.rf):g}")
show(viz.layers_figure(net500, 500))

# %% [markdown]
# Every line starts left of the image (the grey band): conv1_1 pads by 100, so its pixel 0 sits
# at -99 and the whole trunk computes a margin of features around the image. fc6's 7x7 window
# then eats 6 cells of pool5 (pool5's pixel 0 at -83.5, fc6's at -83.5 + 3·32 = 12.5), and the
# upsampled maps come out a little larger than the image. The crops cut them back.
#
# `viz.alignment_figure` shows how: each row is a grid, each tick a pixel centre at its image
# coordinate, and the pixels a crop drops are grey. The right half zooms on the image's first
# pixel: score_pool4's pixel 5 sits where upscore2's pixel 0 sits (-11.5), score_pool3's pixel
# 9 where upscore_pool4's pixel 0 sits (-23.5), and upscore8's pixel 31 on the image's pixel 0.
# That is where the offsets 5, 9 and 31 come from.

# %%
show(viz.alignment_figure(net500, 500))
for name, offset, stride, start, ref in viz.alignment(net500, 500):
    print(f"{name:13s} keeps from pixel {offset:2d}: {float(start):6g} + {offset:2d} x "
          f"{float(stride):2g} = {float(ref):6g}")

# %% [markdown]
# From the command line, `python -m minifcn.models fcn8s --size 500 --coords coords.png` writes
# the layer table, this alignment and one pixel's view in one picture.
#
# **One pixel.** `viz.pixel_figure` draws, for an image point, the receptive field of the
# nearest pixel of each pool and of the output. Here on a `shapes` image with the trained
# FCN-8s of notebook 06 (its conv1_1 pads by 124, see docs/experiments.md), at a pixel near the
# corner: the deep layers' fields reach far into the padding, where the image is zeros.

# %%
net8, cfg8 = training.load_model("assets/shapes-fcn8s.npz")
shapes = Shapes("val", n=8)
image, label = shapes[3]
x = to_input(image)
show(viz.pixel_figure(net8, 96, (10, 12), image))
pool3 = {g.name: g for g in viz.layer_grids(net8, 96)}["pool3"]
i = round((10 - pool3.start) / pool3.stride)
print(f"pool3 (pixel 0 at {float(pool3.start)}, stride {pool3.stride}): its pixel {i} is "
      f"centred at {float(pool3.centre(i))} and sees rows "
      f"{[float(v) for v in pool3.box(i)]}")

# %% [markdown]
# **Why pad 100?** So that any image survives the five pools and fc6's 7x7 window, and the
# upsampled scores cover the image with offsets >= 0. The smallest padding that does that for
# FCN-8s on 96 x 96 is 69, and it is cheaper; but near the border the bilinear upsampling then
# fades out. `python -m minifcn.experiments.pad_and_upsampling` measures both sides, cost and
# mean IU in a band along the image's border:
# [docs/fcn.md](../docs/fcn.md#why-pad-100-measured).
#
# ## 2. The graph that backward walks
#
# `viz.graph(tensor)` returns the computation graph behind any Tensor as Graphviz DOT text: a
# box per Function, an ellipse per Tensor with its shape, parameters in gold. Give it a path
# ending in `.svg` or `.png` to draw it, if Graphviz's `dot` program is installed
# (`apt install graphviz`, `brew install graphviz` or `conda install graphviz`).

# %%
conv = nn.Conv2d(1, 2, 3, padding=1)
inp = Tensor(np.random.default_rng(0).normal(size=(1, 1, 5, 5)))
loss = minifcn.functional.relu(conv(inp)).sum()
dot = viz.graph(loss, names=dict(conv.named_parameters()))
print(dot)

# %% [markdown]
# Each op appears once, however many times its output is used. The trained FCN-8s's forward is
# a graph of the same kind, only longer:

# %%
scores = net8(Tensor(x[None]))   # (1, 4, 96, 96), with its graph (no no_grad here)
ops = [line.split('label="')[1].split('"')[0] for line in viz.graph(scores).splitlines()
       if "shape=box" in line]
print(len(ops), "ops:", {op: ops.count(op) for op in sorted(set(ops))})

# %% [markdown]
# ## 3. What every layer computes: the classifier's feature maps
#
# `viz.feature_maps(model, x)` runs the model once and keeps each layer's output
# (`minifcn.models.record` wraps the layers, as the trace does; the net is unchanged).
# `viz.feature_maps_figure` draws a grid of channels per layer. Here the shipped classifier on a
# `shapes-cls` image, the first conv and every pool (all 21 layers make a long picture: pass
# `kinds=("conv", "pool")` for every conv):

# %%
classifier = pretrained_classifier()
cls_image, cls_label = ShapesClassification("val", n=4)[0]
maps = viz.feature_maps(classifier, to_input(cls_image), kinds=("conv1_1", "pool"))
print({name: m.shape for name, m in maps.items()})
plt.imshow(cls_image); plt.axis("off"); plt.show()
show(viz.feature_maps_figure(maps, channels=8, columns=8), dpi=50)

# %% [markdown]
# conv1_1's channels are colour and edge detectors on the image itself; by pool3 (28 x 28) each
# channel answers a part of a shape; pool5 (7 x 7) is what fc6 reads, one 7x7 window over all of
# it. The trained FCN-8s's feature maps read the same way (it started from this classifier's
# trunk in notebook 10).
#
# ## 4. The skips at work
#
# `viz.skip_scores(model, x)` keeps the score maps of an FCN on one image: the coarse scores,
# the map upsampled x2 *before* each skip is added, the skip itself, the sum *after*, and the
# final scores, with where each lies on the image. The figure draws one class's score in each,
# placed on the image (the white frame): the coarse cells are 32 pixels wide and spill past the
# image, the sums are finer.

# %%
stages = viz.skip_scores(net8, x)
cls = int(np.bincount(label[label < 255].ravel(), minlength=5)[1:].argmax()) + 1
print("class", cls, "=", shapes.class_names[cls])
for name, what, s, (a, b) in stages:
    print(f"{name:13s} {what:28s} stride {float(a):2g}: class score {s[cls].min():6.2f} ... "
          f"{s[cls].max():6.2f}")
show(viz.skip_scores_figure(stages, image, cls))

# %% [markdown]
# In this FCN-8s the coarse path says almost nothing about the rectangle: its stride-32 scores
# are slightly negative everywhere, before the pool4 skip too. The pool4 skip carries the class
# (up to about 12 on the shape), and after the sum the map is the skip's; the pool3 skip adds
# little, a small negative rim that trims the edges. Trained from scratch with the skips in
# place (notebook 06), the net found it easier to draw the shape from pool4's finer features
# than from fc7's. Compare the three nets notebook 06 ships, on the same image and class:

# %%
finals = {}
for name in ("fcn32s", "fcn16s", "fcn8s"):
    net, _ = training.load_model(f"assets/shapes-{name}.npz")
    finals[name] = viz.skip_scores(net, x)
    print(f"{name}: " + ", ".join(f"{n} {s[cls].min():.1f}..{s[cls].max():.1f}"
                                  for n, _, s, _ in finals[name]))
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.6))
for ax, (name, st) in zip(axes, finals.items()):
    ax.imshow(st[-1][2][cls], cmap="RdBu_r", vmin=-10, vmax=10)
    ax.set_title(f"{name}: final scores", fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# FCN-32s, which has only the coarse path, does put the class there, but as a blob 32 pixels
# coarse and weak. FCN-16s and FCN-8s leave the coarse path flat and draw the shape through
# pool4: the paper's "the pool4 skip is the big step" (Table 2), seen from inside.
# `viz.skip_scores_figure` draws every stage of FCN-32s and FCN-16s the same way.
#
# ## 5. The upsampling kernels
#
# Each upsampling layer starts as bilinear interpolation (notebook 04). The reference code keeps
# it fixed; `--learn-upsampling all` lets training change it. We train a FCN-8s for a short
# while with learned upsampling, from the shipped classifier; the same run writes a run folder
# (section 6).

# %%
STEPS = 4 if FAST else 50
config = training.resolve({**training.DEFAULTS, "iters": STEPS, "n_train": 400, "n_val": 40,
                           "learn_upsampling": "all", "device": "cpu"})
run_dir = tempfile.mkdtemp(prefix="fcn8s-inside-")
best = training.fit(config, run_dir, log=lambda msg: None)
model, _ = training.load_model(os.path.join(run_dir, training.BEST))
print(f"{STEPS} steps: best mean IU {best['mean_iu']:.3f}")
for name, (bilinear, learned, off) in viz.upsampling_kernels(model).items():
    print(f"{name:13s} k{bilinear.shape[0]:2d}: largest change of a class's own kernel "
          f"{np.abs(learned - bilinear).max():.4f}, largest weight across classes {off:.4f}")
show(viz.upsampling_figure(model, classes=[0, 1, 2]))

# %% [markdown]
# The score layers start at zero, so the upsampling layers get no gradient at first; in a
# short run they barely move from bilinear. The paper (section 3.3) learned the intermediate
# ones and the authors report no significant difference. On `shapes`, after 500 steps, the
# kernels do change (lower peaks, some mixing between classes) and mean IU hardly moves: see
# [docs/fcn.md](../docs/fcn.md#fixed-or-learned-upsampling) for the table and this figure at
# the end of those runs.
#
# ## 6. The run folder
#
# At each validation, `python -m minifcn.train` redraws three pictures beside its curves and
# examples: `confusion.png` (the confusion matrix, each true class's row in per cent),
# `per_class_iu.png` and `worst.png` (the validation images of highest loss, with truth and
# prediction). The same figures come from `training.validate`:

# %%
print(sorted(f for f in os.listdir(run_dir) if f.endswith(".png")))
val_loader = Loader(training.dataset(config, "val"), 16, shuffle=False)
result, val_loss, examples, worst = training.validate(model, val_loader,
                                                      model.config["n_class"], worst=3)
names = shapes.class_names
show(viz.confusion_figure(result["confusion"], names))
show(viz.per_class_iu_figure(result["per_class_iu"], names))
images, targets, preds, losses = zip(*worst)
show(viz.worst_images_figure(images, targets, preds, losses, names))

# %% [markdown]
# The diagonal of the confusion matrix is each class's accuracy, and the column of background
# shows where the missed pixels went. The worst images are where to look first (fast.ai's
# habit): after only 50 steps, pictures mostly covered by large shapes that the net still calls
# background.
#
# ## 7. What a pixel's prediction depends on
#
# **Occlusion** (Zeiler and Fergus) greys out one square at a time (0: the mean colour of the
# net's input) and records how much the chosen pixel's score drops: red where hiding the image
# hurts the prediction. One forward pass per position. **Grad-CAM** (Selvaraju et al.) needs
# one backward pass: the gradient of the pixel's score with respect to a layer's activations,
# averaged over the map, weighs each channel; the positive part of the weighted sum of the
# channels marks where the layer's features push the score up. Here at pool4 (stride 16).

# %%
rows, cols = np.nonzero(label == cls)
pixel = (int(rows[len(rows) // 2]), int(cols[len(cols) // 2]))
patch = 32 if FAST else 16
drops, tops, lefts, c = viz.occlusion(net8, x, pixel, cls, patch=patch, stride=patch)
cam, alpha, placement, _ = viz.grad_cam(net8, x, pixel, cls, layer="pool4")
print(f"pixel {pixel}: {len(tops) * len(lefts)} occluded copies, largest score drop "
      f"{drops.max():.2f}; Grad-CAM on pool4's {cam.shape[0]}x{cam.shape[1]} grid, "
      f"{(alpha > 0).sum()} of {alpha.size} channels weighted up")
spread = viz.occlusion_image(drops, tops, lefts, patch, image.shape[:2])
show(viz.saliency_figure(image, pixel, cls, spread, (cam, placement), names))

# %% [markdown]
# Both maps light up the shape under the pixel and its edges, not the far corners: the
# prediction at a pixel depends mostly on its neighbourhood, even though its receptive field
# (section 1) covers the whole image and more.
#
# ## Exercise
#
# 1. Draw `viz.pixel_figure` for the paper's net at 500 x 500 with `layers=["fc7"]` at the
#    image's corner (0, 0): how much of fc7's field lies in the padding? Redo it with
#    `fcn8s(pad1=69)`.
# 2. Draw `viz.skip_scores_figure` for the FCN-32s and FCN-16s that notebook 06 ships, on the
#    same image and class: which map of FCN-8s does each final map resemble?
# 3. Occlude with a patch of 8 and stride 4: how does the map change, and how many forward
#    passes does it cost?
