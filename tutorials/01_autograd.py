# %% [markdown]
# # 01 · Autograd: gradients by hand and by the engine
#
# Training an FCN means nudging millions of weights downhill on a loss. The direction comes from
# the gradient of the loss with respect to every weight, and the gradient comes from
# **reverse-mode automatic differentiation** (backpropagation). This notebook builds the idea up
# on numbers small enough to follow by hand:
#
# 1. a `Tensor` and the graph that operations record,
# 2. the chain rule by hand, then the same gradients from `Tensor.backward()`,
# 3. what happens when a value is used twice,
# 4. checking a gradient numerically with central differences, and `minifcn.gradcheck`, which
#    does that for every element (and catches a wrong backward).
#
# The engine lives in `minifcn/autograd.py` (under 300 lines); every op's backward sits next to
# its forward in `minifcn/functional.py`.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. A Tensor
#
# A `Tensor` wraps a NumPy array. `requires_grad=True` marks the values we want gradients for
# (later: the weights of a net). Numbers become `float32`, the precision nets are trained in.

# %%
a = Tensor(2.0, requires_grad=True)
b = Tensor(-3.0, requires_grad=True)
print(a, "holds", a.data)
print("leaf?", a.is_leaf, " gradient so far:", a.grad)

# %% [markdown]
# ## 2. Operations record a graph
#
# Every operation on tensors returns a new tensor that remembers which operation made it and from
# which inputs. Take
#
# $$c = a\,b, \qquad d = c + a, \qquad e = d^2 .$$
#
# The recorded graph (arrows point from inputs to outputs; note that `a` feeds two operations):
#
# ```
# a ──┬──► mul ──► c ──┐
# b ──┘                ├──► add ──► d ──► mul(d, d) ──► e
# a ───────────────────┘
# ```

# %%
c = a * b
d = c + a
e = d * d
print("c =", c.item(), " d =", d.item(), " e =", e.item())
print("e is a leaf?", e.is_leaf, "- it was made by an operation, so backward can walk from it")

# %% [markdown]
# ## 3. The chain rule, by hand
#
# Walk from `e` back to the leaves, multiplying local derivatives:
#
# * $\partial e / \partial d = 2d$
# * $d = c + a$ gives $\partial d/\partial c = 1$ and a *direct* $\partial d/\partial a = 1$
# * $c = ab$ gives $\partial c/\partial a = b$ and $\partial c/\partial b = a$
#
# `a` reaches `e` along two paths (through `c` and directly into `d`), and the two contributions
# **add**:
#
# $$\frac{\partial e}{\partial a} = 2d\,(b + 1), \qquad \frac{\partial e}{\partial b} = 2d\,a .$$

# %%
av, bv = 2.0, -3.0
dv = av * bv + av
print("by hand:  de/da =", 2 * dv * (bv + 1), "  de/db =", 2 * dv * av)

# %% [markdown]
# ## 4. The same, by the engine
#
# `e.backward()` sorts the graph so that every tensor comes after its inputs, then walks it from
# `e` backwards. At each operation it calls that operation's `backward`, which turns the gradient
# of the output into one gradient per input; when two paths reach the same tensor their gradients
# are summed. Leaves that require a gradient receive it in `.grad`.

# %%
e.backward()
print("engine:   de/da =", a.grad, "  de/db =", b.grad)

# %% [markdown]
# Two details worth seeing once:
#
# * **Gradients accumulate.** `.grad` is *added to* by each backward pass (so several losses can
#   contribute). An optimiser therefore clears the gradients before every step
#   (`model.zero_grad()` / `opt.zero_grad()`).
# * Intermediate tensors do not keep their gradient unless asked: `retain_grad()`.

# %%
e2 = (a * b + a) * (a * b + a)   # the same function, a fresh graph
e2.backward()
print("after a second backward without clearing, a.grad =", a.grad, "(twice the true value)")

a.zero_grad(); b.zero_grad()
c = a * b
d = (c + a).retain_grad()
e = d * d
e.backward()
print("cleared and recomputed: a.grad =", a.grad, "  de/dd kept on d:", d.grad, "= 2d =", 2 * d.item())

# %% [markdown]
# ## 5. A value used twice
#
# A classic bug in small autograd engines is to propagate into a reused value once per path
# *before* all its gradient has arrived. minifcn sums first, then propagates once. With
# $b = a + a$ and $c = b \cdot b$ we have $c = 4a^2$, so $dc/da = 8a$:

# %%
a = Tensor(3.0, requires_grad=True)
bb = a + a
cc = bb * bb
cc.backward()
print("engine:", a.grad, "  by hand 8a =", 8 * 3.0)

# %% [markdown]
# ## 6. Arrays: a tiny layer
#
# The same machinery works on whole arrays. One layer: $z = xW$, $y = \mathrm{relu}(z)$, and a
# scalar loss $L = \sum_{ij} g_{ij}\, y_{ij}$ for some fixed array $g$ (think of $g$ as "the gradient
# arriving from the layers above"). By hand:
#
# $$\frac{\partial L}{\partial z} = g \odot [z > 0], \qquad
# \frac{\partial L}{\partial W} = x^\top \frac{\partial L}{\partial z}, \qquad
# \frac{\partial L}{\partial x} = \frac{\partial L}{\partial z}\, W^\top .$$

# %%
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


# %% [markdown]
# ## 7. Checking a gradient numerically
#
# How do we know a hand-written backward is right? Nudge one input element by a small $\varepsilon$
# both ways and watch the loss:
#
# $$\frac{\partial L}{\partial w} \approx \frac{L(w + \varepsilon) - L(w - \varepsilon)}{2\varepsilon},$$
#
# with an error that shrinks like $\varepsilon^2$. With $\varepsilon = 10^{-6}$ this needs `float64`:
# in `float32` (7 significant digits) the difference of two nearly equal losses is mostly
# rounding noise.

# %%
def loss_of(W_array):
    return float((np.maximum(x_np @ W_array, 0) * g).sum())

eps = 1e-6
W_plus, W_minus = W_np.copy(), W_np.copy()
W_plus[1, 0] += eps
W_minus[1, 0] -= eps
numeric = (loss_of(W_plus) - loss_of(W_minus)) / (2 * eps)
print(f"dL/dW[1, 0]: numeric {numeric:.8f}   engine {W.grad[1, 0]:.8f}")


# %% [markdown]
# How small should $\varepsilon$ be? Too large and the $\varepsilon^2$ term shows; too small and
# rounding takes over. Here is the error of the central difference of $f(w) = e^w$ at $w = 1$
# (exact derivative $e$) in both precisions. The best $\varepsilon$ in `float32` still leaves an
# error around $10^{-4}$ of the value, too coarse to tell a subtly wrong gradient from a right one;
# `float64` gets to about $10^{-10}$.

# %%
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

# %% [markdown]
# `minifcn.gradcheck(fn, inputs)` does this for **every element** of every input that requires a
# gradient (and every parameter, when `fn` is a module). It contracts the output with a *random*
# upstream gradient, as we did with `g`. Summing the outputs instead would be a weaker test: the
# outputs of a softmax always sum to 1, so the gradient of their sum is zero whatever the backward
# does, and a wrong backward could pass.

# %%
x64 = Tensor(x_np, requires_grad=True)          # float64 arrays stay float64
W64 = Tensor(W_np, requires_grad=True)
print(x64.dtype, minifcn.gradcheck(lambda x, W: F.relu(x @ W), [x64, W64]))

# %% [markdown]
# ### A check must be able to fail
#
# An operation is a `Function` with a `forward` (on plain arrays) and a `backward` (output
# gradient in, input gradients out). Here is one with a deliberate bug: the derivative of $x^2$ is
# $2x$, and this backward forgets the 2. `gradcheck` says which tensor, which element, and by how
# much.

# %%
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

# %% [markdown]
# The same idea checks every op of minifcn: `python -m minifcn.gradcheck` runs it over the whole
# op table (conv, transposed conv, pooling, crop, loss, ...).
#
# ## Exercise
#
# 1. Fix `BadSquare` (call it `Square`) and show that `minifcn.gradcheck` now returns `True`.
# 2. Call `minifcn.gradcheck` with a `float32` input. What happens, and why is that the right
#    behaviour? (Try the numeric derivative of section 7 in `float32` to see the noise.)
# 3. By hand, what is $\partial e/\partial a$ for $e = (a\,b + a\,a)^2$ at $a = 2, b = -3$?
#    Check your answer with the engine.
