# %% [markdown]
# # 02 · Convolution as im2col and one matrix product
#
# Every layer of an FCN except pooling is a convolution, so convolution is where the time goes.
# minifcn computes it the way Caffe (the framework of the FCN paper) did:
#
# 1. **im2col** copies every window the kernel will visit into one column of a matrix;
# 2. then the whole convolution is **one matrix product** of the weights with that matrix (a GEMM,
#    the operation every BLAS library and GPU is best at).
#
# This notebook builds the column matrix for a tiny image and looks at it, computes a convolution
# with it, derives the gradient of `conv2d` (which needs the opposite operation, **col2im**) and
# checks it. It uses `minifcn.primitives`, the layer under the ops where these loops live.

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
    lo, hi = min(0, m.min()), m.max()
    ax.imshow(m, cmap="Blues", vmin=lo, vmax=hi)
    for (r, c), v in np.ndenumerate(m):
        dark = v > lo + 0.6 * (hi - lo)          # white text on the dark cells
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]); ax.set_yticks([])


# %% [markdown]
# ## 1. A tiny image and its windows
#
# A 4x4 image with one channel, pixels numbered 1..16, and a 3x3 kernel with stride 1 and no
# padding. The kernel fits in 2x2 positions, so the output is 2x2. Arrays are NCHW:
# (batch, channels, height, width).

# %%
x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
print(x[0, 0])

# %% [markdown]
# `P.im2col(x, kh, kw, sh, sw, ph, pw)` returns an array of shape (N, C, kh, kw, oh, ow):
# element `[n, c, i, j, y, x]` is the input pixel that kernel tap (i, j) sees when the window sits
# at output position (y, x). Reshaped to (C·kh·kw, oh·ow) it is Caffe's **column matrix**: one
# column per output pixel, one row per kernel tap.

# %%
col = P.im2col(x, 3, 3, 1, 1, 0, 0)
print("col array:", col.shape)
cols = col.reshape(9, 4)

fig, axes = plt.subplots(1, 2, figsize=(6, 3.6))
show_matrix(axes[0], x[0, 0], "image 4x4")
show_matrix(axes[1], cols, "column matrix 9x4")
axes[1].set_xticks(range(4), ["(0,0)", "(0,1)", "(1,0)", "(1,1)"], fontsize=8, rotation=90)
axes[1].set_xlabel("output pixel (y, x)", fontsize=9)
axes[1].set_yticks(range(9), [f"({i},{j})" for i in range(3) for j in range(3)], fontsize=8)
axes[1].set_ylabel("kernel tap (i, j)", fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the first column top to bottom: 1 2 3 5 6 7 9 10 11, the top-left 3x3 window. The next
# column is the window one step right. Pixel 6 appears in all four columns, because all four
# windows cover it; corner pixels appear once. im2col trades memory for speed: the matrix holds
# each pixel up to kh·kw times.
#
# With **padding 1** the kernel can also sit over the border; the taps that fall outside the
# image read zeros, and the output keeps the input's size (4x4, 16 columns):

# %%
cols_padded = P.im2col(x, 3, 3, 1, 1, 1, 1).reshape(9, 16)
fig, ax = plt.subplots(figsize=(7, 3.2))
show_matrix(ax, cols_padded, "padding 1: column matrix 9x16 (zeros come from the padding)")
plt.show()

# %% [markdown]
# ## 2. The convolution is one matrix product
#
# A convolution with K output channels has weights of shape (K, C, kh, kw). Flatten each filter
# into a row: a (K, C·kh·kw) matrix. Multiplying it by the column matrix gives every filter's
# response at every position in one go: (K, C·kh·kw) @ (C·kh·kw, oh·ow) = (K, oh·ow).
#
# Like every framework, `conv2d` computes a *cross-correlation* (the kernel is not flipped); the
# name stuck.

# %%
rng = np.random.default_rng(0)
w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)       # K=2 filters
y_gemm = (w.reshape(2, 9) @ cols).reshape(1, 2, 2, 2)

def conv2d_loops(x, w):
    """The definition, with loops: stride 1, no padding. Slow but obviously right."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    out = np.zeros((n, k, h - kh + 1, wd - kw + 1), x.dtype)
    for o in range(k):
        for yy in range(out.shape[2]):
            for xx in range(out.shape[3]):
                out[:, o, yy, xx] = (x[:, :, yy:yy + kh, xx:xx + kw] * w[o]).sum(axis=(1, 2, 3))
    return out

y_ops = F.conv2d(Tensor(x), Tensor(w)).numpy()
print("GEMM:\n", y_gemm[0])
print("loops agree:", np.allclose(y_gemm, conv2d_loops(x, w), atol=1e-5),
      "  F.conv2d agrees:", np.allclose(y_gemm, y_ops, atol=1e-5))

# %% [markdown]
# With several input channels the rows of the column matrix run over (channel, i, j), so a 3x3
# convolution of a C-channel image is a product with a matrix of 9C rows. For VGG16's `conv1_2`
# on a 500x500 image (padded by FCN to 698x698, 64 channels) that matrix has 576 rows and
# 487,204 columns: 1.1 GB in `float32`, for one image. This is the price of turning convolution
# into the fastest operation in linear algebra.

# %%
x3 = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
w3 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
col3 = P.im2col(x3, 3, 3, 1, 1, 1, 1)
print("col array", col3.shape, "-> matrix", col3.reshape(3 * 9, -1).shape)
y3 = (w3.reshape(4, 27) @ col3.reshape(27, 25)).reshape(1, 4, 5, 5)
print("matches F.conv2d:", np.allclose(y3, F.conv2d(Tensor(x3), Tensor(w3), padding=1).numpy(), atol=1e-5))
print("conv1_2 at 500x500:", 64 * 9 * 698 * 698 * 4 / 1e9, "GB of columns")

# %% [markdown]
# That is all a convolution is. `minifcn.simple` keeps this plain version, im2col as a loop over
# the kernel offsets and one product, in a few lines each, as the code to read first:

# %%
import inspect
from minifcn import simple
print(inspect.getsource(simple.conv2d_simple).split('"""')[0] + "...")
print(inspect.getsource(simple.conv2d_simple).split('"""')[-1])
print("conv2d_simple matches F.conv2d:",
      np.allclose(simple.conv2d_simple(x3, w3, padding=1),
                  F.conv2d(Tensor(x3), Tensor(w3), padding=1).numpy(), atol=1e-5))

# %% [markdown]
# The fast `F.conv2d` computes the same numbers with more machinery, all of it for speed: it
# skips the ring of outputs that see only padding (FCN's conv1_1 pads by 100), moves whole
# blocks when the kernel is a multiple of the stride, splits the copies over threads and reuses
# one buffer for the columns. The docstring of `simple.conv2d_simple` lists where each piece
# lives, and `tests/test_simple.py` holds the fast path to the plain one.

# %% [markdown]
# ## 3. The gradient of conv2d
#
# Write the forward as matrices: $Y = W_{\text{mat}}\, X_{\text{col}}$, with
# $X_{\text{col}} = \text{im2col}(x)$. Given the gradient $G = \partial L / \partial Y$ arriving
# from above (same shape as $Y$), the rules of a matrix product give
#
# $$\frac{\partial L}{\partial W_{\text{mat}}} = G\, X_{\text{col}}^\top, \qquad
# \frac{\partial L}{\partial X_{\text{col}}} = W_{\text{mat}}^\top\, G .$$
#
# The second one is a gradient for the *columns*; but a pixel lives in several columns, and its
# gradient is the **sum** over all the places it was copied to. Folding columns back into an image
# and summing the overlaps is **col2im**, the adjoint of im2col:
#
# $$\frac{\partial L}{\partial x} = \text{col2im}\big(W_{\text{mat}}^\top G\big).$$
#
# How many copies does each pixel have? col2im of a column matrix full of ones counts them:

# %%
ones = np.ones_like(P.im2col(x, 3, 3, 1, 1, 1, 1))
coverage = P.col2im(ones, 4, 4, 1, 1, 1, 1)
fig, ax = plt.subplots(figsize=(3, 3))
show_matrix(ax, coverage[0, 0], "windows covering each pixel\n(3x3, stride 1, padding 1)")
plt.show()

# %% [markdown]
# Now the gradient by hand with the primitives, next to the one the engine computes (its
# backward in `minifcn/conv.py` is made of exactly these two products and one col2im):

# %%
G = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)       # dL/dY from "above"
Xcol = col3.reshape(27, 25)
Gmat = G.reshape(4, 25)

dW_hand = (Gmat @ Xcol.T).reshape(w3.shape)
dx_hand = P.col2im((w3.reshape(4, 27).T @ Gmat).reshape(1, 3, 3, 3, 5, 5), 5, 5, 1, 1, 1, 1)

xt, wt = Tensor(x3, requires_grad=True), Tensor(w3, requires_grad=True)
F.conv2d(xt, wt, padding=1).backward(G)
print("dL/dW agrees:", np.allclose(dW_hand, wt.grad, atol=1e-4))
print("dL/dx agrees:", np.allclose(dx_hand, xt.grad, atol=1e-4))

# %% [markdown]
# ## 4. Checking it
#
# Two checks. First, col2im really is the adjoint of im2col: for any image $x$ and any column
# array $c$, $\langle \text{im2col}(x), c\rangle = \langle x, \text{col2im}(c)\rangle$. (That is the
# definition of the transpose of a linear map, and why the gradient above is right.) Here with
# stride 2, where windows overlap less:

# %%
xa = rng.standard_normal((2, 3, 7, 6))
ca = rng.standard_normal(P.im2col(xa, 3, 3, 2, 2, 1, 1).shape)
lhs = (P.im2col(xa, 3, 3, 2, 2, 1, 1) * ca).sum()
rhs = (xa * P.col2im(ca, 7, 6, 2, 2, 1, 1)).sum()
print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")

# %% [markdown]
# Second, `minifcn.gradcheck` compares every element of the input, weight and bias gradients
# with central differences (in `float64`), here for a strided, padded convolution:

# %%
xg = Tensor(rng.standard_normal((2, 3, 7, 6)), requires_grad=True)
wg = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
bg = Tensor(rng.standard_normal(4), requires_grad=True)
print(minifcn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [xg, wg, bg]))

# %% [markdown]
# ## Exercise
#
# 1. Draw the column matrix of the 4x4 image for a 2x2 kernel with **stride 2** and no padding.
#    How many columns does it have, and does any pixel appear twice?
# 2. Draw the coverage picture (col2im of ones) for a 3x3 kernel with stride 2 and padding 1 on a
#    7x7 image. Which pixels get their gradient from more than one window?
# 3. Write `conv2d_gemm(x, w, stride, padding)` with `P.im2col` and one `@`, and compare it with
#    `F.conv2d` on random inputs for a few strides and paddings.
