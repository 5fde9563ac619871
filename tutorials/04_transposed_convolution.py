# %% [markdown]
# # 04 · Transposed convolution and bilinear upsampling
#
# An FCN's scores come out 32 times coarser than the image (notebook 03). To compare them with a
# label per pixel they must be brought back up. The paper (section 3.3) does it with a layer that
# is already in every framework: the **backward pass of a strided convolution**, run forwards.
# It is called *transposed convolution* (also "deconvolution", "backwards convolution"; `Deconvolution`
# in Caffe). This notebook shows
#
# 1. that `conv_transpose2d` is exactly the transpose (adjoint) of `conv2d` as a matrix,
# 2. that it therefore *is* conv2d's input gradient,
# 3. the **bilinear kernel** FCN initialises it with, and what it does to a coarse heatmap when
#    upsampling 2x, 8x and 32x.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor
from minifcn.models import bilinear_kernel, bilinear_weight

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A convolution is a matrix
#
# A convolution is linear in its input, so for fixed weights it is a matrix $C$ acting on the
# flattened image: $\mathrm{vec}(y) = C\,\mathrm{vec}(x)$. We can read $C$ off column by column
# by convolving each one-pixel image (each basis vector). For a 5x5 image, a 3x3 kernel and
# stride 2 the output is 2x2, so $C$ is 4x25:

# %%
w = rng.standard_normal((1, 1, 3, 3))

def matrix_of(op, in_shape):
    """The matrix of a linear op: column k is op(k-th basis array), flattened."""
    columns = []
    for k in range(int(np.prod(in_shape))):
        e = np.zeros(in_shape); e.flat[k] = 1
        columns.append(op(Tensor(e)).numpy().ravel())
    return np.stack(columns, axis=1)

C = matrix_of(lambda x: F.conv2d(x, Tensor(w), stride=2), (1, 1, 5, 5))
print("C:", C.shape)

# %% [markdown]
# `conv_transpose2d` with the same weights and stride goes the other way, 2x2 -> 5x5. Its matrix
# is 25x4, and it is exactly $C^\top$:

# %%
T = matrix_of(lambda y: F.conv_transpose2d(y, Tensor(w), stride=2), (1, 1, 2, 2))
print("T:", T.shape, "  T == C transposed:", np.allclose(T, C.T))

fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), gridspec_kw={"width_ratios": [25, 8]})
lim = np.abs(C).max()
axes[0].imshow(C, cmap="RdBu", vmin=-lim, vmax=lim); axes[0].set_title("C (conv2d, 4x25)")
axes[1].imshow(T, cmap="RdBu", vmin=-lim, vmax=lim); axes[1].set_title("T (transposed, 25x4)")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Each row of $C$ is the kernel laid over one window of the image; a stride of 2 moves the window
# by two pixels from one row to the next. Read as columns of $T$, the same numbers say: **each
# input pixel of the transposed convolution paints a copy of the kernel, scaled by its value, onto
# the output, copies two pixels apart, overlaps summed.** A stride-s convolution shrinks by s, so
# its transpose grows by s: an $H$-pixel input gives $(H-1)s - 2p + k$ output pixels.
#
# Without building any matrix, the defining property of the transpose is
# $\langle C x, y\rangle = \langle x, C^\top y\rangle$ for all $x$, $y$:

# %%
x = rng.standard_normal((2, 3, 10, 8))
W = rng.standard_normal((4, 3, 4, 4))          # conv2d weights: (C_out, C_in, kH, kW)
y = rng.standard_normal(F.conv2d(Tensor(x), Tensor(W), stride=2, padding=1).shape)
lhs = (F.conv2d(Tensor(x), Tensor(W), stride=2, padding=1).numpy() * y).sum()
rhs = (x * F.conv_transpose2d(Tensor(y), Tensor(W), stride=2, padding=1).numpy()).sum()
print(f"<conv2d(x), y>           = {lhs:.10f}\n<x, conv_transpose2d(y)> = {rhs:.10f}")

# %% [markdown]
# Note the weight layout: the same array `W` of shape (4, 3, 4, 4) is (C_out, C_in, kH, kW) for
# `conv2d` and (C_in, C_out, kH, kW) for `conv_transpose2d`, which maps 4 channels back to 3.
#
# One more subtlety: with stride 2, inputs of 10 and of 11 rows both give 5 output rows (the
# last row of 11 is never the start of a window). The transposed convolution cannot know which
# one you started from and returns the smaller size, $(5-1)\cdot 2 - 2 + 4 = 10$. FCN does not
# care, since it crops its upsampled maps anyway.
#
# ## 2. Transposed convolution is conv2d's input gradient
#
# The gradient of $L = \langle C x, g\rangle$ with respect to $x$ is $C^\top g$. So the backward pass
# of conv2d (with respect to its input) and the forward pass of conv_transpose2d are the same
# computation, and in minifcn they are literally the same function (`minifcn/conv.py`). Likewise
# the backward of conv_transpose2d is conv2d. Checked with the engine:

# %%
xt = Tensor(x, requires_grad=True)
g = rng.standard_normal(F.conv2d(xt, Tensor(W), stride=2, padding=1).shape)
F.conv2d(xt, Tensor(W), stride=2, padding=1).backward(g)
print("x.grad == conv_transpose2d(g):",
      np.allclose(xt.grad, F.conv_transpose2d(Tensor(g), Tensor(W), stride=2, padding=1).numpy()))

yt = Tensor(rng.standard_normal((1, 4, 3, 3)), requires_grad=True)
Wt = Tensor(rng.standard_normal((4, 3, 4, 4)), requires_grad=True)
print("gradcheck of conv_transpose2d:",
      minifcn.gradcheck(lambda y, w: F.conv_transpose2d(y, w, stride=2, padding=1), [yt, Wt]))

# %% [markdown]
# ## 3. The bilinear kernel
#
# If the painted kernel is a "tent" that falls linearly from its centre to zero at the next
# input pixel, the overlapping copies add up to **bilinear interpolation**. FCN starts every
# upsampling layer (kernel $k = 2s$ for stride $s$) with that kernel
# (`minifcn.models.bilinear_kernel`), following the recipe of the reference code:
#
# $$f = \lfloor (k+1)/2 \rfloor,\quad c = f - \tfrac12 \ (k\ \text{even}),\quad
# K[i, j] = \Big(1 - \frac{|i - c|}{f}\Big)\Big(1 - \frac{|j - c|}{f}\Big).$$

# %%
print("k=4 (stride 2):\n", bilinear_kernel(4))

fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, k in zip(axes[:3], (4, 16, 64)):
    ax.imshow(bilinear_kernel(k), cmap="viridis")
    ax.set_title(f"k={k} (stride {k // 2})", fontsize=9); ax.set_xticks([]); ax.set_yticks([])
for k in (4, 16, 64):
    axes[3].plot((np.arange(k) - (k - 1) / 2) / (k / 2), bilinear_kernel(k)[k // 2], ".-", ms=3, label=f"k={k}")
axes[3].set_title("middle row, in units of the stride", fontsize=9); axes[3].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Each class is upsampled on its own: the layer's weight is $(n, n, k, k)$ with the tent on the
# diagonal `[c, c]` and zeros elsewhere (`bilinear_weight`). That is what the FCN models use:

# %%
m = minifcn.models.fcn32s(n_class=3, width=1 / 16)
print(m.upscore, "\nlearned?", m.upscore.weight.requires_grad)
up = m.upscore.weight.numpy()
print("diagonal is bilinear:", all(np.array_equal(up[c, c], bilinear_kernel(64)) for c in range(3)),
      "  off-diagonal is zero:", not up[0, 1].any())

# %% [markdown]
# The reference nets keep these layers fixed at bilinear; the paper's text learns the intermediate
# ones and reports no significant difference (section 4.3 and the authors' code). minifcn follows
# the code by default (`learn_upsampling=False`). Notebook 14 draws each upsampling layer's
# kernels before and after training with `learn_upsampling` (`minifcn.viz.upsampling_figure`),
# and docs/fcn.md measures whether learning them matters.
#
# ## 4. Upsampling a coarse heatmap
#
# A 4x4 map of scores for one class, the kind `score_fr` produces. Upsample it by $s$ = 2, 8 and
# 32 with a stride-$s$ transposed convolution with the $2s$ bilinear kernel. The output has
# $(H + 1)s$ pixels; cutting $s/2$ from each side (a crop, as FCN does) leaves exactly $sH$,
# aligned so that every coarse value sits at the centre of its $s \times s$ block:

# %%
coarse = np.array([[0, 1, 1, 0],
                   [1, 4, 3, 0],
                   [0, 3, 5, 1],
                   [0, 0, 1, 2]], np.float32)[None, None]

def upsample(heat, s):
    y = F.conv_transpose2d(Tensor(heat), Tensor(bilinear_weight(1, 2 * s)), stride=s)
    size = (heat.shape[2] * s, heat.shape[3] * s)
    return F.crop(y, s // 2, size).numpy()

fig, axes = plt.subplots(1, 4, figsize=(10, 2.7))
axes[0].imshow(coarse[0, 0], cmap="magma", vmin=0, vmax=5); axes[0].set_title("4x4 scores", fontsize=9)
for ax, s in zip(axes[1:], (2, 8, 32)):
    up = upsample(coarse, s)
    ax.imshow(up[0, 0], cmap="magma", vmin=0, vmax=5)
    ax.set_title(f"x{s}: {up.shape[2]}x{up.shape[3]}", fontsize=9)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Each image is smooth inside, but look at the border: the outermost half-block is darker. There
# is no coarse value beyond the edge to interpolate towards, so the tents there sum to less than
# one. Upsampling a map of all ones shows it plainly:

# %%
ones_up = upsample(np.ones((1, 1, 4, 4), np.float32), 8)[0, 0]
print("middle row of the x8 upsampled all-ones map:\n", ones_up[16])
plt.figure(figsize=(3, 3)); plt.imshow(ones_up, cmap="gray", vmin=0, vmax=1)
plt.title("all ones, upsampled x8", fontsize=9); plt.axis("off"); plt.show()

# %% [markdown]
# FCN never shows this edge: conv1_1 pads the image by 100 pixels, so the score map reaches well
# beyond the image on every side, and the final crop (offset 19 for FCN-32s, notebook 06) keeps
# only the interior.
#
# Finally, bilinear against the simplest alternative, repeating each value in an $s \times s$
# block (nearest neighbour). A prediction made from the blocky map has the jagged outline of
# the coarse grid:

# %%
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
axes[0].imshow(np.kron(coarse[0, 0], np.ones((32, 32))), cmap="magma"); axes[0].set_title("nearest x32", fontsize=9)
axes[1].imshow(upsample(coarse, 32)[0, 0], cmap="magma"); axes[1].set_title("bilinear x32", fontsize=9)
for ax in axes:
    ax.contour(ax.images[0].get_array(), levels=[2.5], colors="cyan", linewidths=1)
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Exercise
#
# 1. Build the matrix of `conv_transpose2d` with `padding=1` (3x3 kernel, stride 2) and check that
#    it is the transpose of the matching `conv2d` matrix. What output size does the formula
#    $(H-1)s - 2p + k$ predict, and what do you get?
# 2. Show that `bilinear_kernel(k)` is the outer product of one 1-D "tent" with itself. What is the
#    tent for k = 4, and why do its two middle values add up with the outer values of the next
#    copy (two pixels away) to exactly 1?
# 3. Make an `minifcn.nn.ConvTranspose2d(1, 1, 16, stride=8, bias=False)`, set its weight to
#    `bilinear_weight(1, 16)` and check that it gives the same output as `upsample(coarse, 8)`
#    before the crop.
