# %% [markdown]
# # 05 · Convolutionalization: from a classifier to a heatmap
#
# A classification net like VGG16 ends in **fully connected** layers: they flatten the last
# feature map and multiply it by a matrix, so they only accept the one input size they were
# trained on, and they output one vector of class scores per image.
#
# The key observation of the FCN paper (section 3.1, Figure 2): a fully connected layer is a
# convolution whose kernel covers its whole input. Rewrite it as one (same weights, reshaped) and
# the net accepts **any input size**; on a larger input it slides the classifier over every window
# in one pass and outputs a **map** of class scores, a heatmap, with the computation of
# overlapping windows shared.
#
# This notebook does that to a small digit classifier that we train here in a few seconds, then
# looks at the same step in VGG16 (fc6 becomes a 7x7 convolution, fc7 a 1x1).

# %%
# %matplotlib inline
import time
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, nn, optim
from minifcn.data.digits import load_digits, split_rows

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
minifcn.manual_seed(0)

# %% [markdown]
# ## 1. A small classifier with fully connected layers
#
# The data: 1797 handwritten digits from the UCI collection that ships with minifcn (8x8 grids of
# ink counts 0..16), split into train and val rows.

# %%
grids, digits = load_digits()
X = (grids / 16.0).astype(np.float32)[:, None]          # (1797, 1, 8, 8), ink in 0..1
train_rows, val_rows = split_rows("train"), split_rows("val")
print("train", len(train_rows), " val", len(val_rows))

fig, axes = plt.subplots(1, 10, figsize=(8, 1.2))
for d, ax in enumerate(axes):
    ax.imshow(X[train_rows[digits[train_rows] == d][0], 0], cmap="gray_r"); ax.axis("off")
plt.show()

# %% [markdown]
# We will later slide the classifier over a page of digits, where most windows show blank paper
# or parts of digits. So besides the ten digits it learns an eleventh class, **background**, from
# such windows: a digit with neighbours at random gaps, cut at least 2 pixels off-centre. (An FCN
# for segmentation has a background class for the same reason.)

# %%
BACKGROUND = 10

def background_windows(rng, n, rows):
    """n windows (n, 1, 8, 8) that are not a centred digit: cut off-centre from a small page."""
    out = np.zeros((n, 1, 8, 8), np.float32)
    for k in range(n):
        canvas = np.zeros((24, 24), np.float32)           # a digit in the middle ...
        canvas[8:16, 8:16] = X[rng.choice(rows), 0]
        for sy, sx in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # ... and maybe neighbours, gaps 0..4
            if rng.random() < 0.7:
                gap = rng.integers(0, 5)
                y0, x0 = 8 + sy * (8 + gap), 8 + sx * (8 + gap)
                ys, xs = slice(max(y0, 0), min(y0 + 8, 24)), slice(max(x0, 0), min(x0 + 8, 24))
                canvas[ys, xs] = X[rng.choice(rows), 0][ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        while True:
            dy, dx = rng.integers(-8, 9, 2)
            if max(abs(dy), abs(dx)) >= 2:
                break                                     # at least 2 pixels off-centre
        out[k, 0] = canvas[8 + dy:16 + dy, 8 + dx:16 + dx]
    return out

examples = background_windows(np.random.default_rng(1), 8, train_rows)
fig, axes = plt.subplots(1, 8, figsize=(6.5, 1.1))
for ax, e in zip(axes, examples):
    ax.imshow(e[0], cmap="gray_r", vmin=0, vmax=1); ax.set_xticks([]); ax.set_yticks([])
plt.show()


# %% [markdown]
# The net: a 3x3 convolution with 16 channels (no padding, 8x8 -> 6x6), ReLU and a 2x2 max pool
# (-> 3x3), then two fully connected layers, **fc6** (16·3·3 = 144 inputs -> 64) and **fc7**
# (64 -> 11 classes), written out as matrix products on the flattened features. The names follow
# VGG16's.

# %%
class DigitClassifier(nn.Module):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.pool1 = nn.MaxPool2d(2)
        self.fc6_weight = nn.Parameter(rng.normal(0, np.sqrt(2 / 144), (64, 144)).astype(np.float32))
        self.fc6_bias = nn.Parameter(np.zeros(64, np.float32))
        self.fc7_weight = nn.Parameter(rng.normal(0, np.sqrt(1 / 64), (11, 64)).astype(np.float32))
        self.fc7_bias = nn.Parameter(np.zeros(11, np.float32))

    def forward(self, x):                      # (N, 1, 8, 8) -> (N, 11)
        h = self.pool1(F.relu(self.conv1(x)))              # (N, 16, 3, 3)
        h = h.reshape(len(x), 144)                         # flatten: only works for 8x8 inputs
        h = F.relu(h @ self.fc6_weight.T + self.fc6_bias)
        return h @ self.fc7_weight.T + self.fc7_bias

net = DigitClassifier()
print(net(Tensor(X[:2])).shape)

# %% [markdown]
# Training: the per-pixel loss of minifcn, `F.softmax_cross_entropy`, takes score maps
# (N, classes, H, W); a classifier's scores are simply 1x1 maps. SGD with momentum, 300 steps of
# 40 digits and 24 background windows (fewer when the test suite runs this notebook with
# `MINIFCN_TUTORIAL_FAST=1`).

# %%
import os
STEPS = 100 if os.environ.get("MINIFCN_TUTORIAL_FAST") == "1" else 300
opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
rng = np.random.default_rng(0)
losses = []
t0 = time.perf_counter()
for step in range(STEPS):
    rows = rng.choice(train_rows, 40)
    xb = np.concatenate([X[rows], background_windows(rng, 24, train_rows)])
    yb = np.concatenate([digits[rows], np.full(24, BACKGROUND)])
    scores = net(Tensor(xb)).reshape(64, 11, 1, 1)
    loss = F.softmax_cross_entropy(scores, yb.reshape(64, 1, 1))
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())
print(f"trained in {time.perf_counter() - t0:.1f} s")

with minifcn.no_grad():
    digit_acc = (net(Tensor(X[val_rows])).numpy().argmax(1) == digits[val_rows]).mean()
    bg = background_windows(np.random.default_rng(5), 300, val_rows)
    bg_acc = (net(Tensor(bg)).numpy().argmax(1) == BACKGROUND).mean()
print(f"val: digits {digit_acc:.3f} correct, background windows {bg_acc:.3f} correct")
plt.figure(figsize=(5, 2)); plt.plot(losses); plt.yscale("log"); plt.xlabel("step"); plt.ylabel("loss"); plt.show()


# %% [markdown]
# ## 2. Convolutionalize: fc6 becomes a 3x3 convolution, fc7 a 1x1
#
# fc6 multiplies the flattened (16, 3, 3) feature map by a (64, 144) matrix. Flattening in
# (channel, row, column) order is exactly how a (64, 16, 3, 3) convolution kernel is laid out, so
# **reshaping the matrix gives a 3x3 convolution** that, on a 3x3 input, produces a 1x1 output
# equal to the fully connected layer's. fc7 acts on a vector at one position: a 1x1 convolution.
# No weight changes, only shapes.

# %%
class DigitFCN(nn.Module):
    """The same weights, all convolutional: any input of at least 8x8 -> an 11-channel score map."""

    def __init__(self, classifier):
        self.conv1, self.pool1 = classifier.conv1, classifier.pool1
        self.fc6 = nn.Conv2d(16, 64, 3)
        self.fc6.weight.data = classifier.fc6_weight.data.reshape(64, 16, 3, 3)
        self.fc6.bias.data = classifier.fc6_bias.data
        self.fc7 = nn.Conv2d(64, 11, 1)
        self.fc7.weight.data = classifier.fc7_weight.data.reshape(11, 64, 1, 1)
        self.fc7.bias.data = classifier.fc7_bias.data

    def forward(self, x):                      # (N, 1, H, W) -> (N, 11, (H-2)//2 - 2, (W-2)//2 - 2)
        h = self.pool1(F.relu(self.conv1(x)))
        return self.fc7(F.relu(self.fc6(h)))

fcn = DigitFCN(net)
with minifcn.no_grad():
    a = net(Tensor(X[val_rows[:100]])).numpy()
    b = fcn(Tensor(X[val_rows[:100]])).numpy()
print("on 8x8 digits the FCN outputs", b.shape, "- same scores:", np.allclose(a, b[:, :, 0, 0], atol=1e-5))

# %% [markdown]
# ## 3. Any input size: a heatmap
#
# Now give it a 24x40 "page" with eight digits from the validation rows. The classifier would
# refuse it (its flatten needs 144 numbers); the FCN slides the whole classifier over the page
# with stride 2 (the pool's) and returns an 11x9x17 score map: one classification per 8x8 window.

# %%
page = np.zeros((1, 1, 24, 40), np.float32)
picks = [next(r for r in val_rows if digits[r] == d) for d in (3, 1, 4, 7, 5, 9, 2, 6)]
for k, row in enumerate(picks):
    top, left = 2 + 12 * (k // 4), 2 + 10 * (k % 4)          # even offsets: on the stride-2 grid
    page[0, 0, top:top + 8, left:left + 8] = X[row, 0]
print("digits on the page:", [int(digits[r]) for r in picks])

with minifcn.no_grad():
    heat = fcn(Tensor(page)).numpy()[0]
print("score map:", heat.shape)
prob = np.exp(heat - heat.max(0)); prob /= prob.sum(0)   # softmax over the 11 classes
label = prob.argmax(0)
for row in label:                                        # the class map as text, "." = background
    print(" ".join("." if v == BACKGROUND else str(v) for v in row))

# %% [markdown]
# Output cell (y, x) classifies the window whose top-left corner is at page pixel (2y, 2x), so
# the digits placed at rows 2 and 14, columns 2, 12, 22, 32 should show up at cells (1, 1),
# (1, 6), (1, 11), (1, 16) and (7, ...). Below, left: the page with every answer that is not
# background, written at its window's centre; middle: the class map (background white); right:
# the probability of one digit. Mistakes are possible: this is a small net trained for seconds.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
axes[0].imshow(page[0, 0], cmap="gray_r")
for y, x in zip(*np.nonzero(label != BACKGROUND)):
    axes[0].text(2 * x + 3.5, 2 * y + 3.5, str(label[y, x]), color="tab:red", ha="center", va="center",
                 fontsize=9, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
axes[0].set_title("page, and windows not called background", fontsize=9)
axes[1].imshow(np.ma.masked_equal(label, BACKGROUND), cmap="tab10", vmin=0, vmax=9)
for y, x in zip(*np.nonzero(label != BACKGROUND)):
    axes[1].text(x, y, str(label[y, x]), ha="center", va="center", fontsize=7, color="white")
axes[1].set_title("class map (9x17)", fontsize=9)
axes[2].imshow(prob[7], cmap="viridis", vmin=0, vmax=1)
axes[2].set_title("P(digit 7) per window", fontsize=9)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# ### One pass instead of many
#
# The same 153 answers could be had by cutting out every 8x8 window and classifying the crops.
# The results agree exactly (because our classifier's convolution is unpadded: with padding, a
# crop's border pixels would see zeros where the page has neighbours). But the convolutional pass
# computes each shared piece once: a page pixel goes through conv1 once, not once for each of the
# up to 16 windows that contain it. Counting the multiply-adds of conv1:

# %%
crops = np.stack([page[0, :, 2 * y:2 * y + 8, 2 * x:2 * x + 8]
                  for y in range(heat.shape[1]) for x in range(heat.shape[2])])
with minifcn.no_grad():
    window_scores = net(Tensor(crops)).numpy()                   # (153, 11)
print("same scores:", np.allclose(window_scores, heat.reshape(11, -1).T, atol=1e-4))
per_crop = 16 * 9 * 6 * 6                       # 16 filters x 9 taps x 6x6 outputs
print(f"conv1 multiply-adds: {len(crops) * per_crop:,} for the crops, {16 * 9 * 22 * 38:,} in one pass")

# %% [markdown]
# In this toy most of the work is in fc6, which is not shared, so the total saving is small. In a
# deep net nearly all the work is in the convolutions, and the saving is nearly all of it: the
# paper (section 3.1) measures AlexNet producing a 10x10 map of a 500x500 image in 22 ms,
# against 1.2 ms for a single 227x227 window, more than 5x faster than classifying the 100
# windows one by one.

# %% [markdown]
# ## 4. The same step in VGG16
#
# VGG16's classifier takes 224x224 images; after five 2x2 pools its last feature map is 7x7 with
# 512 channels, flattened into 25,088 numbers. fc6 is a 4096x25088 matrix and fc7 4096x4096. FCN
# reshapes them into a **7x7** convolution (4096x512x7x7) and a **1x1** convolution (4096x4096x1x1);
# this is how ImageNet weights are transplanted into an FCN (`minifcn.io` does it by layer name).
# In the minifcn models they are convolutions from the start:

# %%
model = minifcn.models.fcn32s(n_class=21, width=1 / 16)      # 1/16 of VGG16's channels: quick to build
print(model.fc6)
print(model.fc7)

# %% [markdown]
# What size is the score map? Follow the sizes through the layers: 3x3 convolutions with padding 1
# keep the size, pools halve it (rounding up), fc6 takes 6 off. With conv1_1 padding 0, a 224x224
# image ends at a single 1x1 score vector: that is the classifier. FCN pads conv1_1 by 100
# (notebook 06 explains why), and every extra 32 pixels of input adds one row of scores:

# %%
from minifcn.primitives import conv_out_size
from minifcn.models import geometry

def score_map_size(n, pad1):
    n = n + 2 * pad1 - 2                       # conv1_1: 3x3 with padding pad1
    for _ in range(5):
        n = conv_out_size(n, 2, 2, 0, ceil_mode=True)   # each block's 3x3 convs keep n; the pool halves it
    return n - 6                               # fc6: 7x7, no padding

for n in (224, 256, 320, 500):
    traced = next(s for s in geometry.trace(model, (1, 3, n, n)) if s.name == "score_fr")
    print(f"input {n}x{n}:  pad 0 -> {score_map_size(n, 0)}x{score_map_size(n, 0)}   "
          f"pad 100 -> {score_map_size(n, 100)}x{score_map_size(n, 100)} (model: {traced.shape[2]}x{traced.shape[3]})")

# %% [markdown]
# And the whole FCN, with its upsampling and crop (notebooks 04 and 06), returns scores of the
# input's own size, whatever that size is:

# %%
with minifcn.no_grad():
    for shape in [(1, 3, 40, 60), (2, 3, 64, 48)]:
        print(shape, "->", model(Tensor(np.zeros(shape, np.float32))).shape)

# %% [markdown]
# ## Exercise
#
# 1. Train `DigitClassifier` **without** the background windows (10 classes) and convolutionalize
#    it again. What does the page's class map look like now, and why?
# 2. Place one digit at an odd offset (`left = 3`). Which windows now see it, and how confident
#    are they? What does this say about the stride of the output?
# 3. Using `score_map_size`, find the smallest input that gives a 1x1 score map with conv1_1
#    padding 0, and with padding 100.
