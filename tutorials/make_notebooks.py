"""Build the numbered tutorial notebooks (tutorials/NN_name.ipynb) from the text in this file.

    python tutorials/make_notebooks.py                     # write the notebooks, no outputs
    python tutorials/make_notebooks.py --execute           # write and run them: commit these
    python tutorials/make_notebooks.py --execute --only 03 06
    python tutorials/make_notebooks.py --check             # do the .ipynb files hold this text?

Why a script: a notebook is JSON, awkward to edit and to review in a diff. Here each notebook is
one block of plain text; a line ``%% md`` starts a markdown cell and a line ``%% code`` a code
cell. Edit the text, run ``--execute``, commit both. The committed notebooks carry their outputs
(plots included) so that a reader on the web sees them; figures are kept small (dpi 70) so that
each file stays well under 500 KB.

``--execute`` runs every notebook in a fresh Python kernel (nbclient, kernel "python3" from
ipykernel) with MPLBACKEND=Agg, at full size (MINIFCN_TUTORIAL_FAST unset), and prints the
time each took. Needs ``pip install -e ".[tutorials]"``.
"""
import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST_ENV = "MINIFCN_TUTORIAL_FAST"  # "1" shrinks the training budgets (the test suite sets it)
MAX_BYTES = 500_000  # a committed notebook with its outputs must stay under this

NOTEBOOKS = {}  # name -> text, filled in below (the text sits after the code that builds it)


def parse(text):
    """[(kind, source)] from a notebook's text; kind is 'markdown' or 'code'."""
    cells, kind, lines = [], None, []
    for line in text.strip("\n").split("\n"):
        if line.strip() in ("%% md", "%% code"):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip("\n")))
            kind, lines = ("markdown" if line.strip() == "%% md" else "code"), []
        elif kind is None:
            if line.strip():
                raise ValueError(f"make_notebooks: text before the first cell marker: {line!r}")
        else:
            lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n")))
    empty = [i for i, (_, src) in enumerate(cells) if not src.strip()]
    if empty:
        raise ValueError(f"make_notebooks: empty cells at positions {empty}")
    return cells


def build(name):
    """The notebook ``name`` (a key of NOTEBOOKS) as an nbformat v4 notebook, no outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                else nbformat.v4.new_code_cell(src) for kind, src in parse(NOTEBOOKS[name])]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding gives the same file
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb


def execute(nb, cwd, fast=False, timeout=600):
    """Run ``nb`` in place in a fresh kernel whose working folder is ``cwd``."""
    from nbclient import NotebookClient

    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop(FAST_ENV, None)
    if fast:
        env[FAST_ENV] = "1"
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def sources_of(path):
    """[(kind, source)] of the notebook file at ``path`` (outputs ignored)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [(c.cell_type, c.source) for c in nb.cells]


def main(argv=None):
    import nbformat

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--execute", action="store_true", help="run each notebook, keep the outputs")
    p.add_argument("--fast", action="store_true", help=f"with --execute: set {FAST_ENV}=1")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--check", action="store_true",
                   help="only compare the committed notebooks' cells with this text")
    p.add_argument("--only", nargs="*", default=None,
                   help="notebooks to build, by number or name (default: all)")
    args = p.parse_args(argv)
    names = list(NOTEBOOKS)
    if args.only:
        names = [n for n in names if any(n == o or n.startswith(o) for o in args.only)]
        if not names:
            p.error(f"--only {args.only}: no such notebook; have {list(NOTEBOOKS)}")
    if args.check:
        stale = [n for n in names if not (HERE / f"{n}.ipynb").is_file()
                 or sources_of(HERE / f"{n}.ipynb") != parse(NOTEBOOKS[n])]
        for n in stale:
            print(f"{n}.ipynb is missing or differs from make_notebooks.py: rebuild it")
        return 1 if stale else 0
    for name in names:
        nb = build(name)
        path = HERE / f"{name}.ipynb"
        if args.execute:
            t0 = time.perf_counter()
            try:
                execute(nb, HERE, fast=args.fast, timeout=args.timeout)
            except Exception:
                nbformat.write(nb, str(path))  # the outputs so far show where it broke
                print(f"{path.name}: a cell failed; partial outputs written", file=sys.stderr)
                raise
            took = time.perf_counter() - t0
        nbformat.write(nb, str(path))
        size = path.stat().st_size
        note = f" (over {MAX_BYTES // 1000} KB: shrink the figures)" if size > MAX_BYTES else ""
        ran = f", ran in {took:.1f} s" if args.execute else ""
        print(f"{path.name}: {len(nb.cells)} cells, {size / 1000:.0f} KB{ran}{note}")
    return 0


# ================================================================================ the notebooks

NOTEBOOKS["01_autograd"] = r'''
%% md
# 01 · Autograd: gradients by hand and by the engine

Training an FCN means nudging millions of weights downhill on a loss. The direction comes from
the gradient of the loss with respect to every weight, and the gradient comes from
**reverse-mode automatic differentiation** (backpropagation). This notebook builds the idea up
on numbers small enough to follow by hand:

1. a `Tensor` and the graph that operations record,
2. the chain rule by hand, then the same gradients from `Tensor.backward()`,
3. what happens when a value is used twice,
4. checking a gradient numerically with central differences, and `minifcn.gradcheck`, which
   does that for every element (and catches a wrong backward).

The engine lives in `minifcn/autograd.py` (under 300 lines); every op's backward sits next to
its forward in `minifcn/functional.py`.

%% code
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=4, suppress=True)

%% md
## 1. A Tensor

A `Tensor` wraps a NumPy array. `requires_grad=True` marks the values we want gradients for
(later: the weights of a net). Numbers become `float32`, the precision nets are trained in.

%% code
a = Tensor(2.0, requires_grad=True)
b = Tensor(-3.0, requires_grad=True)
print(a, "holds", a.data)
print("leaf?", a.is_leaf, " gradient so far:", a.grad)

%% md
## 2. Operations record a graph

Every operation on tensors returns a new tensor that remembers which operation made it and from
which inputs. Take

$$c = a\,b, \qquad d = c + a, \qquad e = d^2 .$$

The recorded graph (arrows point from inputs to outputs; note that `a` feeds two operations):

```
a ──┬──► mul ──► c ──┐
b ──┘                ├──► add ──► d ──► mul(d, d) ──► e
a ───────────────────┘
```

%% code
c = a * b
d = c + a
e = d * d
print("c =", c.item(), " d =", d.item(), " e =", e.item())
print("e is a leaf?", e.is_leaf, "- it was made by an operation, so backward can walk from it")

%% md
## 3. The chain rule, by hand

Walk from `e` back to the leaves, multiplying local derivatives:

* $\partial e / \partial d = 2d$
* $d = c + a$ gives $\partial d/\partial c = 1$ and a *direct* $\partial d/\partial a = 1$
* $c = ab$ gives $\partial c/\partial a = b$ and $\partial c/\partial b = a$

`a` reaches `e` along two paths (through `c` and directly into `d`), and the two contributions
**add**:

$$\frac{\partial e}{\partial a} = 2d\,(b + 1), \qquad \frac{\partial e}{\partial b} = 2d\,a .$$

%% code
av, bv = 2.0, -3.0
dv = av * bv + av
print("by hand:  de/da =", 2 * dv * (bv + 1), "  de/db =", 2 * dv * av)

%% md
## 4. The same, by the engine

`e.backward()` sorts the graph so that every tensor comes after its inputs, then walks it from
`e` backwards. At each operation it calls that operation's `backward`, which turns the gradient
of the output into one gradient per input; when two paths reach the same tensor their gradients
are summed. Leaves that require a gradient receive it in `.grad`.

%% code
e.backward()
print("engine:   de/da =", a.grad, "  de/db =", b.grad)

%% md
Two details worth seeing once:

* **Gradients accumulate.** `.grad` is *added to* by each backward pass (so several losses can
  contribute). An optimiser therefore clears the gradients before every step
  (`model.zero_grad()` / `opt.zero_grad()`).
* Intermediate tensors do not keep their gradient unless asked: `retain_grad()`.

%% code
e2 = (a * b + a) * (a * b + a)   # the same function, a fresh graph
e2.backward()
print("after a second backward without clearing, a.grad =", a.grad, "(twice the true value)")

a.zero_grad(); b.zero_grad()
c = a * b
d = (c + a).retain_grad()
e = d * d
e.backward()
print("cleared and recomputed: a.grad =", a.grad, "  de/dd kept on d:", d.grad, "= 2d =", 2 * d.item())

%% md
## 5. A value used twice

A classic bug in small autograd engines is to propagate into a reused value once per path
*before* all its gradient has arrived. minifcn sums first, then propagates once. With
$b = a + a$ and $c = b \cdot b$ we have $c = 4a^2$, so $dc/da = 8a$:

%% code
a = Tensor(3.0, requires_grad=True)
bb = a + a
cc = bb * bb
cc.backward()
print("engine:", a.grad, "  by hand 8a =", 8 * 3.0)

%% md
## 6. Arrays: a tiny layer

The same machinery works on whole arrays. One layer: $z = xW$, $y = \mathrm{relu}(z)$, and a
scalar loss $L = \sum_{ij} g_{ij}\, y_{ij}$ for some fixed array $g$ (think of $g$ as "the gradient
arriving from the layers above"). By hand:

$$\frac{\partial L}{\partial z} = g \odot [z > 0], \qquad
\frac{\partial L}{\partial W} = x^\top \frac{\partial L}{\partial z}, \qquad
\frac{\partial L}{\partial x} = \frac{\partial L}{\partial z}\, W^\top .$$

%% code
rng = np.random.default_rng(0)
x_np, W_np, g = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal((4, 2))

# by hand, in NumPy
z = x_np @ W_np
dz = g * (z > 0)
dW_hand, dx_hand = x_np.T @ dz, dz @ W_np.T

# by the engine
x = Tensor(x_np, requires_grad=True)
W = Tensor(W_np, requires_grad=True)
L = (F.relu(x @ W) * g).sum()
L.backward()
print("dL/dW engine:\n", W.grad, "\nby hand:\n", dW_hand)
print("dL/dx agrees:", np.allclose(x.grad, dx_hand))

%% md
## 7. Checking a gradient numerically

How do we know a hand-written backward is right? Nudge one input element by a small $\varepsilon$
both ways and watch the loss:

$$\frac{\partial L}{\partial w} \approx \frac{L(w + \varepsilon) - L(w - \varepsilon)}{2\varepsilon},$$

with an error that shrinks like $\varepsilon^2$. With $\varepsilon = 10^{-6}$ this needs `float64`:
in `float32` (7 significant digits) the difference of two nearly equal losses is mostly
rounding noise.

%% code
def loss_of(W_array):
    return float((np.maximum(x_np @ W_array, 0) * g).sum())

eps = 1e-6
W_plus, W_minus = W_np.copy(), W_np.copy()
W_plus[1, 0] += eps
W_minus[1, 0] -= eps
numeric = (loss_of(W_plus) - loss_of(W_minus)) / (2 * eps)
print(f"dL/dW[1, 0]: numeric {numeric:.8f}   engine {W.grad[1, 0]:.8f}")

%% md
How small should $\varepsilon$ be? Too large and the $\varepsilon^2$ term shows; too small and
rounding takes over. Here is the error of the central difference of $f(w) = e^w$ at $w = 1$
(exact derivative $e$) in both precisions. The best $\varepsilon$ in `float32` still leaves an
error around $10^{-4}$ of the value, too coarse to tell a subtly wrong gradient from a right one;
`float64` gets to about $10^{-10}$.

%% code
def central_difference(f, w, eps, dtype):
    w, eps = dtype(w), dtype(eps)
    step = (w + eps) - (w - eps)            # the step actually taken, after rounding
    return (f(w + eps) - f(w - eps)) / step if step != 0 else np.nan

epsilons = np.logspace(-12, -0.5, 60)
for dtype in (np.float32, np.float64):
    errors = [abs(central_difference(np.exp, 1.0, e, dtype) - np.e) for e in epsilons]
    plt.loglog(epsilons, np.maximum(errors, 1e-16), label=dtype.__name__)
plt.xlabel("epsilon"); plt.ylabel("|numeric - exact|"); plt.legend()
plt.title("central difference of exp at 1")
plt.show()

%% md
`minifcn.gradcheck(fn, inputs)` does this for **every element** of every input that requires a
gradient (and every parameter, when `fn` is a module). It contracts the output with a *random*
upstream gradient, as we did with `g`. Summing the outputs instead would be a weaker test: the
outputs of a softmax always sum to 1, so the gradient of their sum is zero whatever the backward
does, and a wrong backward could pass.

%% code
x64 = Tensor(x_np, requires_grad=True)          # float64 arrays stay float64
W64 = Tensor(W_np, requires_grad=True)
print(x64.dtype, minifcn.gradcheck(lambda x, W: F.relu(x @ W), [x64, W64]))

%% md
### A check must be able to fail

An operation is a `Function` with a `forward` (on plain arrays) and a `backward` (output
gradient in, input gradients out). Here is one with a deliberate bug: the derivative of $x^2$ is
$2x$, and this backward forgets the 2. `gradcheck` says which tensor, which element, and by how
much.

%% code
from minifcn.autograd import Function

class BadSquare(Function):
    def forward(self, x):
        self.saved = (x,)          # what backward will need
        return x * x

    def backward(self, grad):
        (x,) = self.saved
        return grad * x            # wrong on purpose: should be grad * 2 * x

t = Tensor(rng.standard_normal(5), requires_grad=True)
try:
    minifcn.gradcheck(lambda t: BadSquare.apply(t), [t])
except minifcn.GradcheckError as err:
    print(err)

%% md
The same idea checks every op of minifcn: `python -m minifcn.gradcheck` runs it over the whole
op table (conv, transposed conv, pooling, crop, loss, ...).

## Exercise

1. Fix `BadSquare` (call it `Square`) and show that `minifcn.gradcheck` now returns `True`.
2. Call `minifcn.gradcheck` with a `float32` input. What happens, and why is that the right
   behaviour? (Try the numeric derivative of section 7 in `float32` to see the noise.)
3. By hand, what is $\partial e/\partial a$ for $e = (a\,b + a\,a)^2$ at $a = 2, b = -3$?
   Check your answer with the engine.
'''

NOTEBOOKS["02_convolution"] = r'''
%% md
# 02 · Convolution as im2col and one matrix product

Every layer of an FCN except pooling is a convolution, so convolution is where the time goes.
minifcn computes it the way Caffe (the framework of the FCN paper) did:

1. **im2col** copies every window the kernel will visit into one column of a matrix;
2. then the whole convolution is **one matrix product** of the weights with that matrix (a GEMM,
   the operation every BLAS library and GPU is best at).

This notebook builds the column matrix for a tiny image and looks at it, computes a convolution
with it, derives the gradient of `conv2d` (which needs the opposite operation, **col2im**) and
checks it. It uses `minifcn.primitives`, the layer under the ops where these loops live.

%% code
%matplotlib inline
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

%% md
## 1. A tiny image and its windows

A 4x4 image with one channel, pixels numbered 1..16, and a 3x3 kernel with stride 1 and no
padding. The kernel fits in 2x2 positions, so the output is 2x2. Arrays are NCHW:
(batch, channels, height, width).

%% code
x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
print(x[0, 0])

%% md
`P.im2col(x, kh, kw, sh, sw, ph, pw)` returns an array of shape (N, C, kh, kw, oh, ow):
element `[n, c, i, j, y, x]` is the input pixel that kernel tap (i, j) sees when the window sits
at output position (y, x). Reshaped to (C·kh·kw, oh·ow) it is Caffe's **column matrix**: one
column per output pixel, one row per kernel tap.

%% code
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

%% md
Read the first column top to bottom: 1 2 3 5 6 7 9 10 11, the top-left 3x3 window. The next
column is the window one step right. Pixel 6 appears in all four columns, because all four
windows cover it; corner pixels appear once. im2col trades memory for speed: the matrix holds
each pixel up to kh·kw times.

With **padding 1** the kernel can also sit over the border; the taps that fall outside the
image read zeros, and the output keeps the input's size (4x4, 16 columns):

%% code
cols_padded = P.im2col(x, 3, 3, 1, 1, 1, 1).reshape(9, 16)
fig, ax = plt.subplots(figsize=(7, 3.2))
show_matrix(ax, cols_padded, "padding 1: column matrix 9x16 (zeros come from the padding)")
plt.show()

%% md
## 2. The convolution is one matrix product

A convolution with K output channels has weights of shape (K, C, kh, kw). Flatten each filter
into a row: a (K, C·kh·kw) matrix. Multiplying it by the column matrix gives every filter's
response at every position in one go: (K, C·kh·kw) @ (C·kh·kw, oh·ow) = (K, oh·ow).

Like every framework, `conv2d` computes a *cross-correlation* (the kernel is not flipped); the
name stuck.

%% code
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

%% md
With several input channels the rows of the column matrix run over (channel, i, j), so a 3x3
convolution of a C-channel image is a product with a matrix of 9C rows. For VGG16's `conv1_2`
on a 500x500 image (padded by FCN to 698x698, 64 channels) that matrix has 576 rows and
487,204 columns: 1.1 GB in `float32`, for one image. This is the price of turning convolution
into the fastest operation in linear algebra.

%% code
x3 = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
w3 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
col3 = P.im2col(x3, 3, 3, 1, 1, 1, 1)
print("col array", col3.shape, "-> matrix", col3.reshape(3 * 9, -1).shape)
y3 = (w3.reshape(4, 27) @ col3.reshape(27, 25)).reshape(1, 4, 5, 5)
print("matches F.conv2d:", np.allclose(y3, F.conv2d(Tensor(x3), Tensor(w3), padding=1).numpy(), atol=1e-5))
print("conv1_2 at 500x500:", 64 * 9 * 698 * 698 * 4 / 1e9, "GB of columns")

%% md
## 3. The gradient of conv2d

Write the forward as matrices: $Y = W_{\text{mat}}\, X_{\text{col}}$, with
$X_{\text{col}} = \text{im2col}(x)$. Given the gradient $G = \partial L / \partial Y$ arriving
from above (same shape as $Y$), the rules of a matrix product give

$$\frac{\partial L}{\partial W_{\text{mat}}} = G\, X_{\text{col}}^\top, \qquad
\frac{\partial L}{\partial X_{\text{col}}} = W_{\text{mat}}^\top\, G .$$

The second one is a gradient for the *columns*; but a pixel lives in several columns, and its
gradient is the **sum** over all the places it was copied to. Folding columns back into an image
and summing the overlaps is **col2im**, the adjoint of im2col:

$$\frac{\partial L}{\partial x} = \text{col2im}\big(W_{\text{mat}}^\top G\big).$$

How many copies does each pixel have? col2im of a column matrix full of ones counts them:

%% code
ones = np.ones_like(P.im2col(x, 3, 3, 1, 1, 1, 1))
coverage = P.col2im(ones, 4, 4, 1, 1, 1, 1)
fig, ax = plt.subplots(figsize=(3, 3))
show_matrix(ax, coverage[0, 0], "windows covering each pixel\n(3x3, stride 1, padding 1)")
plt.show()

%% md
Now the gradient by hand with the primitives, next to the one the engine computes (its
backward in `minifcn/conv.py` is made of exactly these two products and one col2im):

%% code
G = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)       # dL/dY from "above"
Xcol = col3.reshape(27, 25)
Gmat = G.reshape(4, 25)

dW_hand = (Gmat @ Xcol.T).reshape(w3.shape)
dx_hand = P.col2im((w3.reshape(4, 27).T @ Gmat).reshape(1, 3, 3, 3, 5, 5), 5, 5, 1, 1, 1, 1)

xt, wt = Tensor(x3, requires_grad=True), Tensor(w3, requires_grad=True)
F.conv2d(xt, wt, padding=1).backward(G)
print("dL/dW agrees:", np.allclose(dW_hand, wt.grad, atol=1e-4))
print("dL/dx agrees:", np.allclose(dx_hand, xt.grad, atol=1e-4))

%% md
## 4. Checking it

Two checks. First, col2im really is the adjoint of im2col: for any image $x$ and any column
array $c$, $\langle \text{im2col}(x), c\rangle = \langle x, \text{col2im}(c)\rangle$. (That is the
definition of the transpose of a linear map, and why the gradient above is right.) Here with
stride 2, where windows overlap less:

%% code
xa = rng.standard_normal((2, 3, 7, 6))
ca = rng.standard_normal(P.im2col(xa, 3, 3, 2, 2, 1, 1).shape)
lhs = (P.im2col(xa, 3, 3, 2, 2, 1, 1) * ca).sum()
rhs = (xa * P.col2im(ca, 7, 6, 2, 2, 1, 1)).sum()
print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")

%% md
Second, `minifcn.gradcheck` compares every element of the input, weight and bias gradients
with central differences (in `float64`), here for a strided, padded convolution:

%% code
xg = Tensor(rng.standard_normal((2, 3, 7, 6)), requires_grad=True)
wg = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
bg = Tensor(rng.standard_normal(4), requires_grad=True)
print(minifcn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [xg, wg, bg]))

%% md
## Exercise

1. Draw the column matrix of the 4x4 image for a 2x2 kernel with **stride 2** and no padding.
   How many columns does it have, and does any pixel appear twice?
2. Draw the coverage picture (col2im of ones) for a 3x3 kernel with stride 2 and padding 1 on a
   7x7 image. Which pixels get their gradient from more than one window?
3. Write `conv2d_gemm(x, w, stride, padding)` with `P.im2col` and one `@`, and compare it with
   `F.conv2d` on random inputs for a few strides and paddings.
'''

NOTEBOOKS["03_pooling_and_receptive_fields"] = r'''
%% md
# 03 · Max pooling, receptive fields, and why the last layer sees with stride 32

A convolution looks at a small window; stacking them lets a unit deep in the net depend on a
large region of the image, its **receptive field**. Pooling layers shrink the maps, so each step
in a deep map is a big step in the image: the **stride** (or "jump"). Both numbers matter for
segmentation, and they pull in opposite directions: a large receptive field lets a pixel's class
depend on context, a large stride makes the predictions coarse. This notebook

1. looks at max pooling with Caffe's *ceil* rounding (what FCN uses) and at its gradient,
2. computes receptive field and stride layer by layer through VGG16 and checks them against
   `minifcn.summary`,
3. shows what stride 32 costs: the best score a stride-32 prediction could ever reach.

%% code
%matplotlib inline
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
    finite = m[np.isfinite(m)]
    lo, hi = min(0, finite.min()), finite.max()
    ax.imshow(np.where(np.isfinite(m), m, np.nan), cmap="Oranges", vmin=lo, vmax=hi)
    for (r, c), v in np.ndenumerate(m):
        dark = np.isfinite(v) and v > lo + 0.6 * (hi - lo)
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=9,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]); ax.set_yticks([])

%% md
## 1. Max pooling, rounding up

A 2x2 max pool with stride 2 keeps the largest value of each 2x2 block. On a 5x5 input the
blocks do not fit exactly: there is one row and one column left over. There are two
conventions:

* **floor** (`ceil_mode=False`, the default of most frameworks): drop the leftover, output 2x2;
* **ceil** (`ceil_mode=True`, Caffe's pooling, used by all the FCN reference nets): keep a last
  window that hangs over the edge, output 3x3. Only the real pixels in it compete.

%% code
rng = np.random.default_rng(3)
x = rng.integers(0, 20, (1, 1, 5, 5)).astype(np.float32)
floor = F.max_pool2d(Tensor(x), 2, stride=2).numpy()
ceil = F.max_pool2d(Tensor(x), 2, stride=2, ceil_mode=True).numpy()

fig, axes = plt.subplots(1, 3, figsize=(8, 3))
show_matrix(axes[0], x[0, 0], "input 5x5 and the 2x2 windows")
for k in (1.5, 3.5):
    axes[0].axhline(k, color="k", lw=1.5); axes[0].axvline(k, color="k", lw=1.5)
show_matrix(axes[1], floor[0, 0], "floor: 2x2")
show_matrix(axes[2], ceil[0, 0], "ceil: 3x3")
plt.tight_layout(); plt.show()

%% md
The output size for a window k, stride s and padding p over n inputs is
$\lfloor (n + 2p - k)/s \rfloor + 1$, or the same with $\lceil\cdot\rceil$ for ceil mode
(`P.conv_out_size`). The choice changes every map size after the first odd one. Through FCN's
five pools for a 500x500 image (conv1_1 pads it to 698x698):

%% code
sizes = {"floor": [698], "ceil": [698]}
for mode in sizes:
    for _ in range(5):
        sizes[mode].append(P.conv_out_size(sizes[mode][-1], 2, 2, 0, ceil_mode=(mode == "ceil")))
    print(f"{mode:5s}: conv1 {sizes[mode][0]} -> pools {sizes[mode][1:]}")

%% md
The ceil sizes (349, 175, 88, 44, 22) are the reference nets'. With floor rounding, weights
trained in Caffe would still load, but every later map would be smaller and the crop offsets
that align the skips (notebook 06) would be wrong.

### Padding never wins

When pooling pads the input, the padding must hold $-\infty$, not 0: a zero would beat every
negative activation at the border. (Behind ReLUs activations are $\ge 0$ and nobody notices,
which is how this bug survives in some from-scratch implementations.)

%% code
neg = -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
print("input:\n", neg[0, 0])
print("3x3 max pool, stride 1, padding 1:\n", F.max_pool2d(Tensor(neg), 3, stride=1, padding=1).numpy()[0, 0])

%% md
### The gradient of max pooling

Each output is one of its window's inputs, so its gradient goes back to that one input (the
**argmax**, stored during the forward pass) and the others get zero. An input that wins two
overlapping windows collects both gradients.

%% code
xt = Tensor(x, requires_grad=True)
F.max_pool2d(xt, 2, stride=2, ceil_mode=True).backward(np.ones((1, 1, 3, 3), np.float32))
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
show_matrix(axes[0], x[0, 0], "input")
show_matrix(axes[1], xt.grad[0, 0], "gradient of sum(pool(x))")
plt.tight_layout(); plt.show()

%% md
## 2. Receptive field and stride, layer by layer

Track two numbers per layer, both measured in input pixels:

* the **jump** $j$: how far apart in the image two neighbouring units of this map are;
* the **receptive field** $r$: how wide a patch of the image one unit depends on.

A layer with kernel $k$ and stride $s$ on a map with $(j, r)$ gives

$$ j' = j\,s, \qquad r' = r + (k - 1)\,j .$$

(Each extra kernel tap reaches one more unit of the map below, which is $j$ pixels further.)
VGG16 is thirteen 3x3 convolutions (stride 1) in five blocks, each block ending in a 2x2
stride-2 pool, then `fc6`, a 7x7 convolution (notebook 05), and 1x1 layers after it:

%% code
VGG16 = ([("conv1_1", 3, 1), ("conv1_2", 3, 1), ("pool1", 2, 2),
          ("conv2_1", 3, 1), ("conv2_2", 3, 1), ("pool2", 2, 2)]
         + [(f"conv3_{i}", 3, 1) for i in (1, 2, 3)] + [("pool3", 2, 2)]
         + [(f"conv4_{i}", 3, 1) for i in (1, 2, 3)] + [("pool4", 2, 2)]
         + [(f"conv5_{i}", 3, 1) for i in (1, 2, 3)] + [("pool5", 2, 2)]
         + [("fc6", 7, 1), ("fc7", 1, 1), ("score_fr", 1, 1)])

jump, rf, by_hand = 1, 1, {}
for name, k, s in VGG16:
    rf = rf + (k - 1) * jump
    jump = jump * s
    by_hand[name] = (jump, rf)
    print(f"{name:9s} k={k} s={s}   jump {jump:3d}   receptive field {rf:4d}")

%% md
`minifcn.summary(model, input_shape)` prints the same two columns for a real model, traced
through the model's own forward pass on shapes only (no arithmetic on pixels, so it is instant
even for the full-size net). Here the full-width FCN-32s, as in the paper, on a 500x500 image:

%% code
model = minifcn.models.fcn32s(n_class=21)      # VGG16 at full width: builds in a few seconds
table = minifcn.summary(model, (1, 3, 500, 500))
print(table)

%% md
The table ends with about 134 million trainable parameters, the paper's figure for FCN-VGG16,
and a receptive field of 404 pixels, the number in the paper's Table 1. The rows come from
`minifcn.models.geometry.trace`, which returns them as data, so we can compare with our loop:

%% code
from minifcn.models import geometry

traced = {step.name: (step.jump, step.rf) for step in geometry.trace(model, (1, 3, 500, 500))}
same = all(traced[name] == by_hand[name] for name in by_hand)
print("hand computation == summary for all", len(by_hand), "layers:", same)
del model   # 540 MB of weights we no longer need

%% md
## 3. Stride 32

Five pools, each halving the map: $2^5 = 32$. One step in `fc6` (and in `score_fr`, the class
scores) is 32 pixels in the image, so the net predicts one vector of class scores per 32x32
block, and each of those is computed from a 404x404 window. The trace also gives where each
unit's window is centred (`shift` is the image coordinate of unit 0): for a 500x500 input the
16x16 score map's centres start at 12.5 and step by 32. Here they are on the image, with one
receptive field drawn:

%% code
fc6 = next(s for s in geometry.trace(minifcn.models.fcn32s(n_class=21, width=1 / 16), (1, 3, 500, 500))
           if s.name == "fc6")
centres = float(fc6.shift) + float(fc6.jump) * np.arange(fc6.shape[2])
print("fc6 map", fc6.shape[2:], " centres:", centres[:4], "...", centres[-1])

fig, ax = plt.subplots(figsize=(4, 4))
ax.add_patch(plt.Rectangle((0, 0), 500, 500, fill=False, lw=2))
cy, cx = np.meshgrid(centres, centres, indexing="ij")
ax.plot(cx.ravel(), cy.ravel(), ".", ms=3, color="tab:blue")
c = centres[5]
ax.add_patch(plt.Rectangle((c - fc6.rf / 2, c - fc6.rf / 2), fc6.rf, fc6.rf, fill=False,
                           ec="tab:red", lw=1.5, ls="--"))
ax.plot([c], [c], "o", color="tab:red")
ax.set_xlim(-150, 650); ax.set_ylim(650, -150); ax.set_aspect("equal")
ax.set_title("500x500 image: score centres (stride 32)\nand one 404x404 receptive field", fontsize=9)
plt.show()

%% md
Large receptive fields are good: whether a patch of grey is road or sky depends on its
surroundings. But 32-pixel steps are coarse. How much does that cost, at best? Take true label
maps, keep one label per s x s block (its centre pixel), blow the blocks back up, and score the
result as if it were a prediction: even a perfect stride-s net cannot do better. The metric is
the mean IU of notebook 07; here on the embedded `Shapes` data (96x96 images with a thin
cross):

%% code
from minifcn.data import Shapes
from minifcn.metrics import RunningScore

val = Shapes("val", n=60, size=96)

def best_at_stride(label, s):
    """Nearest-neighbour down- and upsampling of a label map by stride s."""
    h, w = label.shape
    ys = np.minimum(np.arange(h) // s * s + s // 2, h - 1)
    xs = np.minimum(np.arange(w) // s * s + s // 2, w - 1)
    return label[ys][:, xs]

for s in (32, 16, 8):
    score = RunningScore(val.n_class)
    for i in range(len(val)):
        _, label = val[i]
        score.update(label, best_at_stride(label, s))
    r = score.scores()
    print(f"stride {s:2d}: best possible mean IU {r['mean_iu']:.3f}   (cross: {r['per_class_iu'][4]:.3f})")

%% md
The authors report the same ceiling on PASCAL VOC: mean IU 86.1, 92.8 and 96.4 for ground truth
downsampled by 32, 16 and 8 (Long, Shelhamer, Darrell, journal version, PAMI 2016). Our shapes
are small and thin, so stride 32 hurts even more, most of all on the cross:

%% code
i = next(i for i in range(len(val)) if (val[i][1] == 4).sum() > 300)   # an image with a big cross
image, label = val[i]
fig, axes = plt.subplots(1, 5, figsize=(10, 2.3))
axes[0].imshow(image); axes[0].set_title("image", fontsize=9)
axes[1].imshow(minifcn.viz.colorize(label), interpolation="nearest")
axes[1].set_title("true labels", fontsize=9)
for ax, s in zip(axes[2:], (32, 16, 8)):
    ax.imshow(minifcn.viz.colorize(best_at_stride(label, s)), interpolation="nearest")
    ax.set_title(f"best at stride {s}", fontsize=9)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

%% md
Getting the fine detail back without giving up the large receptive field is the subject of
notebooks 04 (learned upsampling) and 06 (skips from the finer pool3 and pool4 maps).

## Exercise

1. By hand, what are the jump and receptive field at `pool4`? Check them in the summary table.
2. AlexNet-style pooling uses 3x3 windows with stride 2. Change the pools in `VGG16` above and
   recompute: how does the receptive field of `fc6` change? And the jump?
3. Compute the "best possible" mean IU at strides 4 and 2 on `Shapes`. At what stride does the
   cross stop being the hardest class?
'''

NOTEBOOKS["04_transposed_convolution"] = r'''
%% md
# 04 · Transposed convolution and bilinear upsampling

An FCN's scores come out 32 times coarser than the image (notebook 03). To compare them with a
label per pixel they must be brought back up. The paper (section 3.3) does it with a layer that
is already in every framework: the **backward pass of a strided convolution**, run forwards.
It is called *transposed convolution* (also "deconvolution", "backwards convolution"; `Deconvolution`
in Caffe). This notebook shows

1. that `conv_transpose2d` is exactly the transpose (adjoint) of `conv2d` as a matrix,
2. that it therefore *is* conv2d's input gradient,
3. the **bilinear kernel** FCN initialises it with, and what it does to a coarse heatmap when
   upsampling 2x, 8x and 32x.

%% code
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor
from minifcn.models import bilinear_kernel, bilinear_weight

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

%% md
## 1. A convolution is a matrix

A convolution is linear in its input, so for fixed weights it is a matrix $C$ acting on the
flattened image: $\mathrm{vec}(y) = C\,\mathrm{vec}(x)$. We can read $C$ off column by column
by convolving each one-pixel image (each basis vector). For a 5x5 image, a 3x3 kernel and
stride 2 the output is 2x2, so $C$ is 4x25:

%% code
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

%% md
`conv_transpose2d` with the same weights and stride goes the other way, 2x2 -> 5x5. Its matrix
is 25x4, and it is exactly $C^\top$:

%% code
T = matrix_of(lambda y: F.conv_transpose2d(y, Tensor(w), stride=2), (1, 1, 2, 2))
print("T:", T.shape, "  T == C transposed:", np.allclose(T, C.T))

fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), gridspec_kw={"width_ratios": [25, 8]})
lim = np.abs(C).max()
axes[0].imshow(C, cmap="RdBu", vmin=-lim, vmax=lim); axes[0].set_title("C (conv2d, 4x25)")
axes[1].imshow(T, cmap="RdBu", vmin=-lim, vmax=lim); axes[1].set_title("T (transposed, 25x4)")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

%% md
Each row of $C$ is the kernel laid over one window of the image; a stride of 2 moves the window
by two pixels from one row to the next. Read as columns of $T$, the same numbers say: **each
input pixel of the transposed convolution paints a copy of the kernel, scaled by its value, onto
the output, copies two pixels apart, overlaps summed.** A stride-s convolution shrinks by s, so
its transpose grows by s: an $H$-pixel input gives $(H-1)s - 2p + k$ output pixels.

Without building any matrix, the defining property of the transpose is
$\langle C x, y\rangle = \langle x, C^\top y\rangle$ for all $x$, $y$:

%% code
x = rng.standard_normal((2, 3, 10, 8))
W = rng.standard_normal((4, 3, 4, 4))          # conv2d weights: (C_out, C_in, kH, kW)
y = rng.standard_normal(F.conv2d(Tensor(x), Tensor(W), stride=2, padding=1).shape)
lhs = (F.conv2d(Tensor(x), Tensor(W), stride=2, padding=1).numpy() * y).sum()
rhs = (x * F.conv_transpose2d(Tensor(y), Tensor(W), stride=2, padding=1).numpy()).sum()
print(f"<conv2d(x), y>           = {lhs:.10f}\n<x, conv_transpose2d(y)> = {rhs:.10f}")

%% md
Note the weight layout: the same array `W` of shape (4, 3, 4, 4) is (C_out, C_in, kH, kW) for
`conv2d` and (C_in, C_out, kH, kW) for `conv_transpose2d`, which maps 4 channels back to 3.

One more subtlety: with stride 2, inputs of 10 and of 11 rows both give 5 output rows (the
last row of 11 is never the start of a window). The transposed convolution cannot know which
one you started from and returns the smaller size, $(5-1)\cdot 2 - 2 + 4 = 10$. FCN does not
care, since it crops its upsampled maps anyway.

## 2. Transposed convolution is conv2d's input gradient

The gradient of $L = \langle C x, g\rangle$ with respect to $x$ is $C^\top g$. So the backward pass
of conv2d (with respect to its input) and the forward pass of conv_transpose2d are the same
computation, and in minifcn they are literally the same function (`minifcn/conv.py`). Likewise
the backward of conv_transpose2d is conv2d. Checked with the engine:

%% code
xt = Tensor(x, requires_grad=True)
g = rng.standard_normal(F.conv2d(xt, Tensor(W), stride=2, padding=1).shape)
F.conv2d(xt, Tensor(W), stride=2, padding=1).backward(g)
print("x.grad == conv_transpose2d(g):",
      np.allclose(xt.grad, F.conv_transpose2d(Tensor(g), Tensor(W), stride=2, padding=1).numpy()))

yt = Tensor(rng.standard_normal((1, 4, 3, 3)), requires_grad=True)
Wt = Tensor(rng.standard_normal((4, 3, 4, 4)), requires_grad=True)
print("gradcheck of conv_transpose2d:",
      minifcn.gradcheck(lambda y, w: F.conv_transpose2d(y, w, stride=2, padding=1), [yt, Wt]))

%% md
## 3. The bilinear kernel

If the painted kernel is a "tent" that falls linearly from its centre to zero at the next
input pixel, the overlapping copies add up to **bilinear interpolation**. FCN starts every
upsampling layer (kernel $k = 2s$ for stride $s$) with that kernel
(`minifcn.models.bilinear_kernel`), following the recipe of the reference code:

$$f = \lfloor (k+1)/2 \rfloor,\quad c = f - \tfrac12 \ (k\ \text{even}),\quad
K[i, j] = \Big(1 - \frac{|i - c|}{f}\Big)\Big(1 - \frac{|j - c|}{f}\Big).$$

%% code
print("k=4 (stride 2):\n", bilinear_kernel(4))

fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, k in zip(axes[:3], (4, 16, 64)):
    ax.imshow(bilinear_kernel(k), cmap="viridis")
    ax.set_title(f"k={k} (stride {k // 2})", fontsize=9); ax.set_xticks([]); ax.set_yticks([])
for k in (4, 16, 64):
    axes[3].plot((np.arange(k) - (k - 1) / 2) / (k / 2), bilinear_kernel(k)[k // 2], ".-", ms=3, label=f"k={k}")
axes[3].set_title("middle row, in units of the stride", fontsize=9); axes[3].legend(fontsize=8)
plt.tight_layout(); plt.show()

%% md
Each class is upsampled on its own: the layer's weight is $(n, n, k, k)$ with the tent on the
diagonal `[c, c]` and zeros elsewhere (`bilinear_weight`). That is what the FCN models use:

%% code
m = minifcn.models.fcn32s(n_class=3, width=1 / 16)
print(m.upscore, "\nlearned?", m.upscore.weight.requires_grad)
up = m.upscore.weight.numpy()
print("diagonal is bilinear:", all(np.array_equal(up[c, c], bilinear_kernel(64)) for c in range(3)),
      "  off-diagonal is zero:", not up[0, 1].any())

%% md
The reference nets keep these layers fixed at bilinear; the paper's text learns the intermediate
ones and reports no significant difference (section 4.3 and the authors' code). minifcn follows
the code by default (`learn_upsampling=False`).

## 4. Upsampling a coarse heatmap

A 4x4 map of scores for one class, the kind `score_fr` produces. Upsample it by $s$ = 2, 8 and
32 with a stride-$s$ transposed convolution with the $2s$ bilinear kernel. The output has
$(H + 1)s$ pixels; cutting $s/2$ from each side (a crop, as FCN does) leaves exactly $sH$,
aligned so that every coarse value sits at the centre of its $s \times s$ block:

%% code
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

%% md
Each image is smooth inside, but look at the border: the outermost half-block is darker. There
is no coarse value beyond the edge to interpolate towards, so the tents there sum to less than
one. Upsampling a map of all ones shows it plainly:

%% code
ones_up = upsample(np.ones((1, 1, 4, 4), np.float32), 8)[0, 0]
print("middle row of the x8 upsampled all-ones map:\n", ones_up[16])
plt.figure(figsize=(3, 3)); plt.imshow(ones_up, cmap="gray", vmin=0, vmax=1)
plt.title("all ones, upsampled x8", fontsize=9); plt.axis("off"); plt.show()

%% md
FCN never shows this edge: conv1_1 pads the image by 100 pixels, so the score map reaches well
beyond the image on every side, and the final crop (offset 19 for FCN-32s, notebook 06) keeps
only the interior.

Finally, bilinear against the simplest alternative, repeating each value in an $s \times s$
block (nearest neighbour). A prediction made from the blocky map has the jagged outline of
the coarse grid:

%% code
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
axes[0].imshow(np.kron(coarse[0, 0], np.ones((32, 32))), cmap="magma"); axes[0].set_title("nearest x32", fontsize=9)
axes[1].imshow(upsample(coarse, 32)[0, 0], cmap="magma"); axes[1].set_title("bilinear x32", fontsize=9)
for ax in axes:
    ax.contour(ax.images[0].get_array(), levels=[2.5], colors="cyan", linewidths=1)
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

%% md
## Exercise

1. Build the matrix of `conv_transpose2d` with `padding=1` (3x3 kernel, stride 2) and check that
   it is the transpose of the matching `conv2d` matrix. What output size does the formula
   $(H-1)s - 2p + k$ predict, and what do you get?
2. Show that `bilinear_kernel(k)` is the outer product of one 1-D "tent" with itself. What is the
   tent for k = 4, and why do its two middle values add up with the outer values of the next
   copy (two pixels away) to exactly 1?
3. Make an `minifcn.nn.ConvTranspose2d(1, 1, 16, stride=8, bias=False)`, set its weight to
   `bilinear_weight(1, 16)` and check that it gives the same output as `upsample(coarse, 8)`
   before the crop.
'''

NOTEBOOKS["05_convolutionalization"] = r'''
%% md
# 05 · Convolutionalization: from a classifier to a heatmap

A classification net like VGG16 ends in **fully connected** layers: they flatten the last
feature map and multiply it by a matrix, so they only accept the one input size they were
trained on, and they output one vector of class scores per image.

The key observation of the FCN paper (section 3.1, Figure 2): a fully connected layer is a
convolution whose kernel covers its whole input. Rewrite it as one (same weights, reshaped) and
the net accepts **any input size**; on a larger input it slides the classifier over every window
in one pass and outputs a **map** of class scores, a heatmap, with the computation of
overlapping windows shared.

This notebook does that to a small digit classifier that we train here in a few seconds, then
looks at the same step in VGG16 (fc6 becomes a 7x7 convolution, fc7 a 1x1).

%% code
%matplotlib inline
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

%% md
## 1. A small classifier with fully connected layers

The data: 1797 handwritten digits from the UCI collection that ships with minifcn (8x8 grids of
ink counts 0..16), split into train and val rows.

%% code
grids, digits = load_digits()
X = (grids / 16.0).astype(np.float32)[:, None]          # (1797, 1, 8, 8), ink in 0..1
train_rows, val_rows = split_rows("train"), split_rows("val")
print("train", len(train_rows), " val", len(val_rows))

fig, axes = plt.subplots(1, 10, figsize=(8, 1.2))
for d, ax in enumerate(axes):
    ax.imshow(X[train_rows[digits[train_rows] == d][0], 0], cmap="gray_r"); ax.axis("off")
plt.show()

%% md
We will later slide the classifier over a page of digits, where most windows show blank paper
or parts of digits. So besides the ten digits it learns an eleventh class, **background**, from
such windows: a digit with neighbours at random gaps, cut at least 2 pixels off-centre. (An FCN
for segmentation has a background class for the same reason.)

%% code
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

%% md
The net: a 3x3 convolution with 16 channels (no padding, 8x8 -> 6x6), ReLU and a 2x2 max pool
(-> 3x3), then two fully connected layers, **fc6** (16·3·3 = 144 inputs -> 64) and **fc7**
(64 -> 11 classes), written out as matrix products on the flattened features. The names follow
VGG16's.

%% code
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

%% md
Training: the per-pixel loss of minifcn, `F.softmax_cross_entropy`, takes score maps
(N, classes, H, W); a classifier's scores are simply 1x1 maps. SGD with momentum, 300 steps of
40 digits and 24 background windows (fewer when the test suite runs this notebook with
`MINIFCN_TUTORIAL_FAST=1`).

%% code
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

%% md
## 2. Convolutionalize: fc6 becomes a 3x3 convolution, fc7 a 1x1

fc6 multiplies the flattened (16, 3, 3) feature map by a (64, 144) matrix. Flattening in
(channel, row, column) order is exactly how a (64, 16, 3, 3) convolution kernel is laid out, so
**reshaping the matrix gives a 3x3 convolution** that, on a 3x3 input, produces a 1x1 output
equal to the fully connected layer's. fc7 acts on a vector at one position: a 1x1 convolution.
No weight changes, only shapes.

%% code
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

%% md
## 3. Any input size: a heatmap

Now give it a 24x40 "page" with eight digits from the validation rows. The classifier would
refuse it (its flatten needs 144 numbers); the FCN slides the whole classifier over the page
with stride 2 (the pool's) and returns an 11x9x17 score map: one classification per 8x8 window.

%% code
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

%% md
Output cell (y, x) classifies the window whose top-left corner is at page pixel (2y, 2x), so
the digits placed at rows 2 and 14, columns 2, 12, 22, 32 should show up at cells (1, 1),
(1, 6), (1, 11), (1, 16) and (7, ...). Below, left: the page with every answer that is not
background, written at its window's centre; middle: the class map (background white); right:
the probability of one digit. Mistakes are possible: this is a small net trained for seconds.

%% code
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

%% md
### One pass instead of many

The same 153 answers could be had by cutting out every 8x8 window and classifying the crops.
The results agree exactly (because our classifier's convolution is unpadded: with padding, a
crop's border pixels would see zeros where the page has neighbours). But the convolutional pass
computes each shared piece once: a page pixel goes through conv1 once, not once for each of the
up to 16 windows that contain it. Counting the multiply-adds of conv1:

%% code
crops = np.stack([page[0, :, 2 * y:2 * y + 8, 2 * x:2 * x + 8]
                  for y in range(heat.shape[1]) for x in range(heat.shape[2])])
with minifcn.no_grad():
    window_scores = net(Tensor(crops)).numpy()                   # (153, 11)
print("same scores:", np.allclose(window_scores, heat.reshape(11, -1).T, atol=1e-4))
per_crop = 16 * 9 * 6 * 6                       # 16 filters x 9 taps x 6x6 outputs
print(f"conv1 multiply-adds: {len(crops) * per_crop:,} for the crops, {16 * 9 * 22 * 38:,} in one pass")

%% md
In this toy most of the work is in fc6, which is not shared, so the total saving is small. In a
deep net nearly all the work is in the convolutions, and the saving is nearly all of it: the
paper (section 3.1) measures AlexNet producing a 10x10 map of a 500x500 image in 22 ms,
against 1.2 ms for a single 227x227 window, more than 5x faster than classifying the 100
windows one by one.

%% md
## 4. The same step in VGG16

VGG16's classifier takes 224x224 images; after five 2x2 pools its last feature map is 7x7 with
512 channels, flattened into 25,088 numbers. fc6 is a 4096x25088 matrix and fc7 4096x4096. FCN
reshapes them into a **7x7** convolution (4096x512x7x7) and a **1x1** convolution (4096x4096x1x1);
this is how ImageNet weights are transplanted into an FCN (`minifcn.io` does it by layer name).
In the minifcn models they are convolutions from the start:

%% code
model = minifcn.models.fcn32s(n_class=21, width=1 / 16)      # 1/16 of VGG16's channels: quick to build
print(model.fc6)
print(model.fc7)

%% md
What size is the score map? Follow the sizes through the layers: 3x3 convolutions with padding 1
keep the size, pools halve it (rounding up), fc6 takes 6 off. With conv1_1 padding 0, a 224x224
image ends at a single 1x1 score vector: that is the classifier. FCN pads conv1_1 by 100
(notebook 06 explains why), and every extra 32 pixels of input adds one row of scores:

%% code
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

%% md
And the whole FCN, with its upsampling and crop (notebooks 04 and 06), returns scores of the
input's own size, whatever that size is:

%% code
with minifcn.no_grad():
    for shape in [(1, 3, 40, 60), (2, 3, 64, 48)]:
        print(shape, "->", model(Tensor(np.zeros(shape, np.float32))).shape)

%% md
## Exercise

1. Train `DigitClassifier` **without** the background windows (10 classes) and convolutionalize
   it again. What does the page's class map look like now, and why?
2. Place one digit at an odd offset (`left = 3`). Which windows now see it, and how confident
   are they? What does this say about the stride of the output?
3. Using `score_map_size`, find the smallest input that gives a 1x1 score map with conv1_1
   padding 0, and with padding 100.
'''

NOTEBOOKS["06_skip_architecture"] = r'''
%% md
# 06 · The skip architecture: FCN-32s, FCN-16s and FCN-8s

Notebook 03 ended on a tension: the deep layers see a lot of context but only every 32nd
pixel; the shallow layers see fine detail but little context. The FCN paper (section 4.2,
Figure 3) combines both with **skips**: predict coarse scores from the top, upsample them,
and add scores predicted from the finer pool4 and pool3 maps.

* **FCN-32s**: scores from fc7 (stride 32), upsampled 32x in one step.
* **FCN-16s**: fc7 scores upsampled 2x, plus scores from **pool4** (stride 16); the sum upsampled 16x.
* **FCN-8s**: that sum upsampled 2x again, plus scores from **pool3** (stride 8); upsampled 8x.

Every addition joins maps of slightly different sizes, computed with different paddings, so
each needs a **crop** that lines up the pixels. This notebook derives those crop offsets, shows
what each skip can add at best, and trains small versions of the three nets on the embedded
`Shapes` data to compare their predictions (the paper's Figure 4, in miniature).

%% code
%matplotlib inline
import os
import time
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, metrics, models, optim, trainer
from minifcn.data import Loader, Shapes, to_input
from minifcn.models import geometry

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite shrinks the training
minifcn.manual_seed(0)

%% md
## 1. Three heads on one trunk

The three nets share the VGG16 trunk (conv1_1 ... fc7, notebook 03) and differ only in their
head. Their layers are named as in the authors' reference nets, and printing a model lists them
in order. Here the head layers of each, at 1/16 of VGG16's width (the topology does not depend
on the width):

%% code
nets = {name: models.build(name, n_class=5, width=1 / 16) for name in ("fcn32s", "fcn16s", "fcn8s")}
trunk = {name for name, _ in nets["fcn32s"].children()} - {"upscore", "score"}
for name, net in nets.items():
    head = [f"{layer}" for layer, _ in net.children() if layer not in trunk]
    print(f"{name:7s}", " -> ".join(head))

%% md
And the shapes through the FCN-8s head for a 64x64 image, from `minifcn.summary` (the rows
after fc7; `jump` is the stride in input pixels). Note the sizes that do not match, 8 against 17
and 18 against 33, and the crop offsets in the last column:

%% code
table = minifcn.summary(nets["fcn8s"], (1, 3, 64, 64)).splitlines()
print("\n".join(table[2:4] + [row for row in table if row.split()[:1] and row.split()[0] in
      ("pool3", "pool4", "score_fr", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4", "upscore_pool4",
       "score_pool3", "score_pool3c", "fuse_pool3", "upscore8", "score")]))

%% md
## 2. Deriving the crop offsets

Why crop at all? conv1_1 pads the image by 100 pixels (so that fc6's 7x7 window fits any
input, notebook 05), which makes every map larger than its share of the image. And each map is
shifted by its layers' kernels and paddings. Which rows to keep is fixed by the layers; the
authors computed it from the layer geometry (Caffe's `coord_map`) and advise never to set it by
hand. minifcn derives it the same way (`minifcn.models.geometry`).

Each layer relates an output coordinate $x$ to an input coordinate by an affine map
$x_{in} = a\,x + b$, the same on both axes:

* convolution or pooling with kernel $k$, stride $s$, padding $p$: $a = s$, $b = (k-1)/2 - p$
  (output pixel $x$ sits at the centre of the window it reads);
* transposed convolution: the inverse of the convolution's map, $a = 1/s$, $b = (p - (k-1)/2)/s$;
* crop at offset $o$: $a = 1$, $b = o$.

Composing the maps from the image up to a layer places every pixel of that layer in image
coordinates. Here is the walk for FCN-32s, done by hand with the same helpers the models use:

%% code
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

%% md
So score_fr's pixel $x$ sits at image coordinate $32x + 12.5$. FCN-32s upsamples it with a
transposed convolution of kernel 64 and stride 32. To crop the upsampled map $U$ to the image
we need the offset $o$ at which $U[o + x]$ is image pixel $x$, i.e. where $U$'s map, composed with
the crop, becomes the identity:

%% code
upscore = score_fr.compose(geometry.deconv_map(64, 32, 0))
print("upscore:  x_image =", upscore.a, "* x +", upscore.b, " -> crop offset", -upscore.b)
print("the model says:", nets["fcn32s"].offsets)

%% md
The same rule gives every other offset. A crop of map $F$ to the size of a reference map $R$
must make $F[o + x]$ and $R[x]$ the same image point: $a_F (x + o) + b_F = a_R x + b_R$, so the
two strides must agree and $o = (b_R - b_F)/a_F$. For FCN-16s, pool4's scores are cropped to
the grid of `upscore2` (fc7's scores upsampled 2x), and the fused map's upsampling to the image:

%% code
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

%% md
These are 19 (FCN-32s), 5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s): the numbers in the
authors' reference nets. Because they are derived, changing a layer changes them consistently.
A smaller conv1_1 padding (cheaper on small images, used by the trainer on the synthetic data)
shifts the final crops by the same amount and leaves the inner ones alone; too small a padding
and the upsampled scores no longer cover the image, which the model refuses at construction:

%% code
for pad1 in (100, 90, 81):
    print(f"pad1={pad1}:", models.fcn8s(n_class=5, width=1 / 16, pad1=pad1).offsets)
try:
    models.fcn32s(n_class=5, width=1 / 16, pad1=60)
except ValueError as err:
    print("pad1=60:", err)

%% md
## 3. What each skip can add, at best

Before training anything: how good could each head be? Suppose the net predicted the
*perfect* score at the centre of every cell of its coarsest fused map (stride 32 for FCN-32s,
16 for 16s, 8 for 8s), i.e. the one-hot true label at that point of the image. Push those
scores through the net's real final upsampling layer and crop (with the derived offset), and take
the arg-max. What comes out is the best that head can draw, whatever its trunk learns. The
cell centres come from `geometry.trace`, which runs the model's forward on coordinate maps:

%% code
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

%% md
The skips raise the ceiling a lot on these small images: a 64x64 image is only two score cells
across at stride 32. Seen on a few images (the pool3 skip is what lets the cross's arms appear):

%% code
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

%% md
And why the offsets must be right: crop FCN-8s's upsampled scores a few pixels off the derived
31 and the outlines slide off the objects; the score drops although nothing else changed.

%% code
net = nets["fcn8s"]
derived = net.score.offset
for off in (derived - 6, derived, derived + 6):
    net.score.offset = off
    running = metrics.RunningScore(val.n_class)
    for i in range(len(val)):
        running.update(val[i][1], best_possible(net, "fcn8s", val[i][1]))
    print(f"final crop offset {off}: best possible mean IU {running.scores()['mean_iu']:.3f}")
net.score.offset = derived

%% md
## 4. Staged training starts where the coarser net stopped

The paper trains FCN-16s starting from a trained FCN-32s, and FCN-8s from FCN-16s (section
4.2). The new score layer (`score_pool4`, `score_pool3`) starts at **zero**, so at first the skip
adds nothing and the finer net predicts what the coarser one did; training then lets the skip
refine it. `FCN16s.from_fcn32s` copies every shared layer:

%% code
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

%% md
Close, but not bit for bit: FCN-32s upsamples once with a 64-pixel bilinear kernel, FCN-16s
twice (4, then 32), and two interpolations are not exactly one.

## 5. Training small ones

Now the three nets for real, trained from scratch (no ImageNet weights) on `Shapes`, with the
same trunk width, data, order, seed, learning rate and number of steps. The recipe is the one
`python -m minifcn.train` uses from scratch, and each choice has a reason:

* SGD with momentum 0.9 and a large learning rate, 0.08, reached over the first steps (50 in
  the trainer, 20 in these short runs; without the ramp the random trunk's first, inconsistent
  gradients throw it off; at 0.15 the nets die: every ReLU turns off and they call everything
  background);
* conv1_1 alone on a learning rate 64² times smaller: it sees pixels of spread ~64 while every
  later layer sees activations of spread ~1, so the same step would move it thousands of times
  more, relative to its weights, than the others (`optim.first_layer_lr_mult`);
* no dropout: these nets are too small to overfit in a few minutes;
* the same conv1_1 padding for all three, 124: the smallest at which each net's upsampled
  scores reach the whole image at full strength (section 6 shows why that matters).

Two minutes of CPU for the whole notebook leave about half a minute per net: 64x64 images in
batches of 4, 60 steps each (3 when the test suite runs this notebook). That is only the start
of training, so watch the loss curves.

%% code
STEPS = 3 if FAST else 60
PAD1 = max(geometry.full_cover_pad1(name, 64) for name in ("fcn32s", "fcn16s", "fcn8s"))
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
        loss = F.softmax_cross_entropy(net(Tensor(x)), y)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
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

%% md
The dotted line is the loss of a net that has learnt only how common each class is (about
three quarters of the pixels are background). A net from scratch first learns those shares and
calls every pixel background; only after some 100 to 300 steps does it start to find objects.
60 steps are the very start: these nets are not worth comparing yet.

## 6. The same three after a longer run

First, one more thing the geometry decides. The upsampling is bilinear interpolation between
score cells; beyond the outermost cell centres there is only one neighbour, and the output
fades towards zero. On a 500-pixel VOC image that rim is a thin border, but our 96-pixel
images have only a few score cells, and with the smallest padding that fits, the rim is most
of the image. `geometry.score_coverage` shows it: the net's output when score_fr says 1
everywhere (and the skips say 0).

%% code
pads = {"fcn32s": [geometry.min_pad1("fcn32s", 96), geometry.full_cover_pad1("fcn32s", 96)],
        "fcn8s": [geometry.min_pad1("fcn8s", 96), geometry.full_cover_pad1("fcn8s", 96)]}
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, (name, p) in zip(axes, [(n, p) for n, ps in pads.items() for p in ps]):
    cov = geometry.score_coverage(name, 96, p)
    ax.imshow(cov, cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"{name}, pad1 {p}\nmean {cov.mean():.2f}, min {cov.min():.2f}", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

%% md
With its minimal padding FCN-32s passes on less than half of its scores, and nothing in the
corners; a net can learn to make up for it near the borders, slowly, and FCN-32s, which has
nothing but those coarse scores, hardly does. Trained at padding 81 on these images, its
validation loss stayed above that of always predicting the class shares for 1,250 steps. So a
fair comparison pads every net by the smallest amount at which all three cover the image at
full strength (124 here): then only the strides differ.

`python -m minifcn.experiments.skip_architectures` does exactly that: the three nets, trained
as in section 5 but on 96x96 images in batches of 8, conv1_1 padding 124, 600 steps each
(about a quarter of an hour per net on two CPU cores). We ran it with
`--iters 600 --save-weights tutorials/assets` and ship the result: each net's best learned
weights in float16 (about 1 MB each). `trainer.load_model` reads them as it
reads any checkpoint (so do `python -m minifcn.evaluate` and `predict`): it builds the net from
the stored config, which rebuilds the fixed bilinear upsampling, and loads the learned layers.

%% code
val96 = Shapes("val", n=100, size=96)
vx = np.stack([to_input(val96[i][0]) for i in range(len(val96))])
vy = np.stack([val96[i][1] for i in range(len(val96))])

full = {}
for name in ("fcn32s", "fcn16s", "fcn8s"):
    full[name], cfg = trainer.load_model(f"assets/shapes-{name}.npz")
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

%% md
The predictions next to each other (the paper's Figure 4, in miniature), with each net's
probability that a pixel is *not* background: how sharply each head can draw an outline.

%% code
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

%% md
Read the pictures with section 3 in mind. FCN-32s's score map is 2x2 cells on these images
(one cell per 32 pixels, padding included): its objects are blobs, and a cross's thin arms, narrower than one of its cells, are
what it misses first. FCN-16s's pool4 skip halves the cell and FCN-8s's pool3 skip halves it
again, so their outlines follow the shapes more closely and the cross's arms begin to show. Each net here is also far
from converged (the paper trains for days from ImageNet weights), and each is a single run
(seed 0, on the CPU). Over three seeds (the README's tables), the pool4 skip is the big step, 27
-> 51 mean IU on average after 600 steps and 40 -> 60 after 1,000, while pool3 adds little:
FCN-8s is 2.8 behind FCN-16s after 600 steps and 0.6 ahead after 1,000, with several points of
spread between its seeds. The paper's own Table 2 has the same shape: pool4 added 3.0 mean IU
and pool3 only 0.3 more.

## Exercise

1. Derive by hand, with `geometry.conv_map`, `deconv_map` and `offset`, where a fourth skip
   from **pool2** would be cropped in an "FCN-4s" (upsample the FCN-8s sum 2x with a k4 s2
   transposed convolution, add scores from pool2). What is the best possible mean IU at
   stride 4 (use the method of section 3, sampling labels at the centres yourself)?
2. Set `STEPS = 1000` and rerun section 5 (a quarter of an hour or more on two cores), then
   score those nets as section 6 does. Which net is first to find the objects, and which the
   cross? Then try `LR = 0.15`, and `lr_mults` left out: what happens to the loss?
3. `FCN8s.from_fcn16s` starts FCN-8s from a trained FCN-16s. Check that its `score_pool3` is
   zero and that its first prediction is close to the FCN-16s's, as in section 4.
'''


NOTEBOOKS["07_metrics"] = r'''
%% md
# 07 · Scoring a segmentation: four metrics and a confusion matrix

How good is a segmentation? The FCN paper (section 5) reports four numbers, all computed from
one **confusion matrix** summed over the whole evaluation set. They disagree with each other on
purpose: this notebook builds a worked example where a model that *never finds a small class*
still gets a high pixel accuracy, and shows which metrics notice.

With $n_{ij}$ the number of pixels of true class $i$ predicted as class $j$,
$t_i = \sum_j n_{ij}$ the number of pixels of class $i$, and $n_{cl}$ classes:

| metric | formula | in words |
|---|---|---|
| pixel accuracy | $\sum_i n_{ii} / \sum_i t_i$ | fraction of all pixels labelled right |
| mean accuracy | $\frac{1}{n_{cl}} \sum_i n_{ii} / t_i$ | per-class recall, averaged over classes |
| mean IU | $\frac{1}{n_{cl}} \sum_i \frac{n_{ii}}{t_i + \sum_j n_{ji} - n_{ii}}$ | intersection over union per class, averaged |
| frequency weighted IU | $\big(\sum_k t_k\big)^{-1} \sum_i \frac{t_i\, n_{ii}}{t_i + \sum_j n_{ji} - n_{ii}}$ | IU per class, weighted by the class's size |

Mean IU is the paper's headline number (e.g. 62.2 for FCN-8s on PASCAL VOC 2012 test).

%% code
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
from minifcn import metrics
from minifcn.data import Shapes

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)

%% md
## 1. The data: one class is small

The embedded `Shapes` set has a background and four shapes; the **cross** has thin arms, so it
covers few pixels. Counting over 60 validation images:

%% code
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

%% md
## 2. Three pretend models

No training is needed to see how the metrics behave; we make the predictions by hand from the
true labels:

* **perfect**: the true labels;
* **no cross**: right everywhere, except that it never predicts the cross: cross pixels come
  out as background (a model that ignores a small class);
* **all background**: predicts background everywhere;
* **coarse, no cross**: like "no cross", and in addition blocky, as if predicted at stride 8
  (each 8x8 block gets the label of its centre pixel; notebook 03), so it also makes mistakes
  along every outline.

`metrics.RunningScore` adds each image's confusion matrix to a running total, the way an
evaluation loop does.

%% code
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

%% md
## 3. The four numbers, by hand

From the matrix: the diagonal holds the right pixels, row sums are the true class sizes $t_i$,
column sums are how often each class was predicted. Computed here with NumPy straight from the
formulas, then compared with `metrics.scores`:

%% code
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

%% md
What the numbers say:

* **pixel accuracy** of "no cross" is barely below perfect: the cross is a few percent of the
  pixels, so missing all of it costs only those few percent. Even "all background" scores the
  background's share.
* **mean accuracy** and **mean IU** weigh every class equally, so a class with IU 0 removes a
  fifth of the score (five classes): "no cross" drops to about 0.8 mean IU, "all background"
  collapses.
* **frequency weighted IU** weighs classes by size again; like pixel accuracy it is dominated by
  the large background class and stays high.
* the **coarse** model loses a little everywhere: outlines are where a stride-8 prediction goes
  wrong, and small classes have a lot of outline for their area.

This is why segmentation papers lead with mean IU: a model cannot score well on it by being
right about the big, easy classes only. The per-class IU says where the loss is:

%% code
lib = metrics.scores(hists["no cross"])
for name, acc, iu in zip(names, lib["per_class_acc"], lib["per_class_iu"]):
    print(f"{name:10s} accuracy {acc:.3f}   IU {iu:.3f}")

%% md
## 4. The confusion matrix as a picture

Here is the matrix of the coarse model. Raw counts are dominated by the background (left, the
colour is on a log scale); dividing each row by its sum (right: where did each class's pixels
go?) makes the small classes readable. The missing cross is the bright cell in the bottom-left
corner; the coarse outlines are the faint cells in the first row and column.

%% code
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

%% md
## 5. Sum first, then divide

The paper sums the confusion matrix over the whole set and computes the metrics once. Averaging
per-image scores gives a different number, because it weighs a small image (or a small object)
as much as a large one, and because a class absent from an image has no IU there. The rules
for absent classes, as in the reference code:

* a class with no true pixels has no accuracy (NaN) and is left out of the mean accuracy;
* a class neither present nor predicted has no IU (NaN) and is left out of the mean IU;
* a class **predicted but absent** has IU 0, and it counts: false alarms are punished.

%% code
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

%% md
Images without a cross have no cross IU, so they score a perfect 1.0 per image and pull the
average up; over the summed matrix the cross is present, missed, and costs its full fifth.

The trainer reports exactly these numbers every epoch (`python -m minifcn.train`, and
`python -m minifcn.evaluate` for a checkpoint), from one `RunningScore` over the validation set.

## Exercise

1. Make a model that calls every **rectangle** pixel a **triangle** (the two classes confused).
   Before computing: which of the four metrics will drop most, and which least? Check.
2. Make a model that is perfect except for a one-pixel-wide border of background around every
   object (`scipy`-free hint: compare each pixel with its four neighbours using `np.roll`). Which
   class loses the most IU, and why?
3. Show that pixel accuracy equals frequency weighted accuracy, i.e.
   $\sum_i \frac{t_i}{\sum_k t_k} \cdot \frac{n_{ii}}{t_i}$. Why is there no such identity for IU?
'''

NOTEBOOKS["08_cuda_kernels"] = r'''
%% md
# 08 · CUDA kernels: reading them, running them without a GPU, timing them on one

On a GPU, minifcn keeps its arrays in CuPy and runs the few hot loops of `minifcn.primitives`
(im2col, col2im, max pooling, the per-pixel loss) as hand-written CUDA kernels in `kernels/*.cu`.
The matrix products stay with cuBLAS (through CuPy's `@`). This notebook

1. reads the im2col and max-pool kernels,
2. runs them on the CPU through minifcn's **emulator**, which compiles the very same `.cu` files
   with a C++ compiler and plays every GPU thread in turn, and compares them with NumPy,
3. on a machine with a GPU (`minifcn.gpu_available()`), runs them for real and times them.
   Without a GPU those cells say so and skip.

The emulator needs a C++ compiler (`g++`); it builds the kernels once and caches the library.

%% code
%matplotlib inline
import time
import numpy as np
import matplotlib.pyplot as plt
import minifcn
from minifcn import cuda, primitives as P
from minifcn.launch import BLOCK, KERNELS, kernels_dir, launch

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
print("kernel sources:", sorted(p.name for p in kernels_dir().glob("*.cu")))
print("GPU available:", minifcn.gpu_available())

%% md
## 1. Reading the im2col kernel

A CUDA kernel is a function that thousands of threads run at once, each on its own piece of the
work. Each thread finds out which piece from its coordinates: `blockIdx.x * blockDim.x +
threadIdx.x` is its global number. minifcn's kernels all follow one pattern: **one thread per
output element**. Thread `idx` unravels `idx` into the output's coordinates, works out which
input element that is, and writes one number. Next to each line, a comment gives the NumPy line
of `minifcn/primitives.py` it mirrors.

%% code
print((kernels_dir() / "im2col.cu").read_text().split("// One thread per image pixel")[0])

%% md
Reading off the index arithmetic: the column array (N, C, kh, kw, oh, ow) is stored flat, last
axis fastest, so `idx % ow` is the output column, `idx / ow % oh` the output row, and so on. The
same unravelling in Python, for a few threads of a 3x3 / stride 1 / padding 1 im2col of a 4x4
image:

%% code
h = w = 4; kh = kw = 3; sh = sw = 1; ph = pw = 1; oh = ow = 4
for idx in (0, 1, 5, 17, 80, 143):
    ox, oy = idx % ow, idx // ow % oh
    j, i = idx // (ow * oh) % kw, idx // (ow * oh * kw) % kh
    y, x = oy * sh + i - ph, ox * sw + j - pw
    where = f"reads pixel ({y}, {x})" if 0 <= y < h and 0 <= x < w else "in the padding: writes 0"
    print(f"thread {idx:3d}: tap (i, j) = ({i}, {j}), output (oy, ox) = ({oy}, {ox}) -> {where}")

%% md
The threads never talk to each other and never write to the same place, so the kernel needs no
synchronisation and gives the same result on every run.

## 2. The max-pool kernel

Max pooling is again one thread per output element: it scans its window, skipping positions
that fall outside the image (the padding and the overhang of a *ceil* window, which NumPy fills
with $-\infty$), keeps the first maximum and remembers its offset in the window (the argmax)
for the backward pass.

%% code
source = (kernels_dir() / "pooling.cu").read_text()
start = source.index("// One thread per output element")
print(source[start:source.index("// One thread per input pixel")])

%% md
The backward kernel does not loop over outputs scattering gradients into the input (two windows
could then add into the same pixel at the same time, which needs atomic additions and makes the
order of additions, hence the last bits of the sum, vary from run to run). It runs **one thread
per input pixel**, which gathers the gradients of the windows it won. The same trick serves
col2im (section 3).

## 3. Running the kernels on the CPU

`minifcn.cuda` has the same functions as `minifcn.primitives`. Called with CuPy arrays they run
on the GPU; called with NumPy arrays they take the very same path (argument checks, output
allocation, grid size) up to the last line, where `minifcn.launch` hands the arrays to the
emulator instead of CuPy. So we can compare the kernels with NumPy here. The first call compiles
the kernels (a few seconds, once; the library is cached).

%% code
x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
t0 = time.perf_counter()
col_kernel = cuda.im2col(x, 3, 3, 2, 2, 1, 1, 5, 4)          # (.., oh, ow) computed by the caller
print(f"first call (compiles if needed): {time.perf_counter() - t0:.2f} s")
col_numpy = P.im2col(x, 3, 3, 2, 2, 1, 1)
print("im2col:", col_kernel.shape, "identical to NumPy:", np.array_equal(col_kernel, col_numpy))

g = rng.standard_normal(col_numpy.shape).astype(np.float32)
print("col2im identical to NumPy:", np.array_equal(cuda.col2im(g, 9, 7, 2, 2, 1, 1), P.col2im(g, 9, 7, 2, 2, 1, 1)))

%% md
"Identical", not "close": col2im sums several column entries into each pixel, and floating
point addition is not associative. The kernel adds them in the same order as NumPy's loop over
kernel taps (its comments explain how), so even the last bit agrees.

Max pooling with Caffe's ceil rounding, on all-negative inputs with ties (the hard cases):

%% code
xp = (rng.integers(-3, 3, (2, 3, 7, 9)) - 10).astype(np.float32)
oh, ow = P.conv_out_size(7, 2, 2, 0, ceil_mode=True), P.conv_out_size(9, 2, 2, 0, ceil_mode=True)
y_k, arg_k = cuda.maxpool_forward(xp, 2, 2, 2, 2, 0, 0, oh, ow)
y_n, arg_n = P.maxpool_forward(xp, 2, 2, 2, 2, 0, 0, True)
print("max pool", y_k.shape, " values identical:", np.array_equal(y_k, y_n), " argmax identical:", np.array_equal(arg_k, arg_n))

gy = rng.standard_normal(y_n.shape).astype(np.float32)
print("backward identical:", np.array_equal(cuda.maxpool_backward(gy, arg_k, 7, 9, 2, 2, 2, 2, 0, 0),
                                              P.maxpool_backward(gy, arg_n, 7, 9, 2, 2, 2, 2, 0, 0)))

%% md
### One level down: `launch`

Every kernel goes through `minifcn.launch.launch(name, total, **arguments)`: `total` threads
(one per output element), in blocks of 256. It checks each argument against the kernel's C
parameter list (a wrong dtype would be read as garbage bytes by the kernel, silently) and picks
the `float` or `double` instance. Calling it directly:

%% code
print("im2col's C parameters:", KERNELS["im2col"].params)
col = np.empty((2, 3, 3, 3, 5, 4), np.float32)
launch("im2col", col.size, x=x, col=col, h=9, w=7, kh=3, kw=3, sh=2, sw=2, ph=1, pw=1, oh=5, ow=4)
print(f"{col.size} threads in {-(-col.size // BLOCK)} blocks of {BLOCK}; same result: {np.array_equal(col, col_numpy)}")
try:
    launch("im2col", col.size, x=x.astype(np.float64), col=col, h=9, w=7, kh=3, kw=3, sh=2, sw=2,
           ph=1, pw=1, oh=5, ow=4)
except TypeError as err:
    print("mixed dtypes are refused:", err)

%% md
The emulator is for correctness, not speed: it runs one thread after another on one core, while
NumPy's im2col is a handful of vectorised slices.

%% code
x_big = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
for name, fn in (("NumPy", lambda: P.im2col(x_big, 3, 3, 1, 1, 1, 1)),
                 ("emulator", lambda: cuda.im2col(x_big, 3, 3, 1, 1, 1, 1, 64, 64))):
    t0 = time.perf_counter(); fn(); print(f"{name:9s} {1e3 * (time.perf_counter() - t0):7.1f} ms")

%% md
## 4. On a GPU

With CuPy arrays the same functions run the kernels on the GPU (compiled by NVRTC on first use).
`minifcn.primitives` dispatches there by itself, and so does every op above it: a `Tensor`
moved with `.to("cuda")` runs the whole net on the GPU. Timing GPU code needs care: a kernel
launch returns before the kernel finishes, so we synchronise before reading the clock, and we
run once first so that compilation is not timed.

%% code
def gpu_time(fn, repeat=20):
    """Median seconds per call of fn on the GPU, after one warm-up call."""
    import cupy as cp
    fn(); cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))

def cpu_time(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return float(np.median(times))

if not minifcn.gpu_available():
    print("No GPU here (or CuPy is not installed): the cells of this section skip.")

%% code
if minifcn.gpu_available():
    import cupy as cp
    # conv3_x of VGG16 at full width on a 500x500 image: 256 channels of 175x175
    x_cpu = rng.standard_normal((1, 256, 175, 175)).astype(np.float32)
    x_gpu = cp.asarray(x_cpu)
    same = np.array_equal(cp.asnumpy(P.im2col(x_gpu, 3, 3, 1, 1, 1, 1)), P.im2col(x_cpu, 3, 3, 1, 1, 1, 1))
    print("im2col on the GPU identical to NumPy:", same)
    rows = []
    for name, args in (("im2col 3x3", (3, 3, 1, 1, 1, 1)),):
        t_cpu = cpu_time(lambda: P.im2col(x_cpu, *args))
        t_gpu = gpu_time(lambda: P.im2col(x_gpu, *args))
        rows.append((name, t_cpu, t_gpu))
    t_cpu = cpu_time(lambda: P.maxpool_forward(x_cpu, 2, 2, 2, 2, 0, 0, True))
    t_gpu = gpu_time(lambda: P.maxpool_forward(x_gpu, 2, 2, 2, 2, 0, 0, True))
    rows.append(("max pool 2x2", t_cpu, t_gpu))
    for name, t_cpu, t_gpu in rows:
        print(f"{name:13s} NumPy {1e3 * t_cpu:8.2f} ms   GPU {1e3 * t_gpu:7.3f} ms   ({t_cpu / t_gpu:.0f}x)")

%% md
The kernels are only part of a convolution; the matrix product is cuBLAS's. A whole `conv2d`
(forward and backward) of that layer, and a small FCN's training step, CPU against GPU:

%% code
if minifcn.gpu_available():
    import minifcn.functional as F
    from minifcn import Tensor
    w_cpu = (rng.standard_normal((256, 256, 3, 3)) * 0.02).astype(np.float32)

    def conv_step(device):
        xt = Tensor(x_cpu).to(device); xt.requires_grad = True
        wt = Tensor(w_cpu, requires_grad=True).to(device)
        y = F.conv2d(xt, wt, padding=1)
        y.backward(y.data)          # any upstream gradient of the right shape
        return wt.grad

    t_cpu = cpu_time(lambda: conv_step("cpu"), repeat=1)
    t_gpu = gpu_time(lambda: conv_step("cuda"))
    print(f"conv2d 256->256 3x3 at 175x175, forward + backward: CPU {t_cpu:.2f} s   GPU {1e3 * t_gpu:.1f} ms")

    model = minifcn.models.fcn8s(n_class=21, width=0.25).to("cuda")
    opt = minifcn.optim.SGD(minifcn.optim.param_groups(model), lr=1e-3)
    xb = cp.asarray(rng.standard_normal((4, 3, 128, 128)).astype(np.float32))
    yb = cp.asarray(rng.integers(0, 21, (4, 128, 128)))

    def train_step():
        loss = F.softmax_cross_entropy(model(Tensor(xb)), yb)
        opt.zero_grad(); loss.backward(); opt.step()

    print(f"FCN-8s (width 0.25), batch 4 of 128x128, one SGD step on the GPU: {1e3 * gpu_time(train_step, 5):.1f} ms")

%% md
The outputs above come from a machine without a GPU. For reference, this is what the two cells
printed on an NVIDIA H200 (CuPy 14, NumPy on that machine's 16 CPU cores), when this notebook
was written:

```
im2col on the GPU identical to NumPy: True
im2col 3x3    NumPy    23.40 ms   GPU   0.587 ms   (40x)
max pool 2x2  NumPy   138.61 ms   GPU   0.167 ms   (831x)
conv2d 256->256 3x3 at 175x175, forward + backward: CPU 0.27 s   GPU 11.5 ms
FCN-8s (width 0.25), batch 4 of 128x128, one SGD step on the GPU: 32.2 ms
```

Max pooling gains the most: NumPy makes a strided pass over the whole input for each of the
four window positions, and keeps an argmax array up to date as it goes, while the kernel reads
each window once in one thread.

## Exercise

1. Call `launch("maxpool_backward", ...)` yourself (its parameters are in
   `KERNELS["maxpool_backward"].params`) and check it against `P.maxpool_backward`.
2. In `col2im`, each thread computes the range of windows `oy_first .. oy_last` that cover its
   pixel instead of trying every kernel row. Work out `oy_first` and `oy_last` for pixel row
   `y = 5` with `kh = 3, sh = 2, ph = 1` by hand, then check with the thread arithmetic in Python.
3. Why does the emulator give the right answer for these kernels although it runs the threads
   one at a time, in order? Describe a kernel for which running the threads in order would hide
   a bug that a real GPU would show.
'''


if __name__ == "__main__":
    sys.exit(main())
