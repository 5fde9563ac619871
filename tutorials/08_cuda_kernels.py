# %% [markdown]
# # 08 · CUDA kernels: reading them, running them without a GPU, timing them on one
#
# On a GPU, minifcn keeps its arrays in CuPy and runs the few hot loops of `minifcn.primitives`
# (im2col, col2im, max pooling, the per-pixel loss) as hand-written CUDA kernels in `kernels/*.cu`.
# The matrix products stay with cuBLAS (through CuPy's `@`). This notebook
#
# 1. reads the im2col and max-pool kernels,
# 2. runs them on the CPU through minifcn's **emulator**, which compiles the very same `.cu` files
#    with a C++ compiler and plays every GPU thread in turn, and compares them with NumPy,
# 3. on a machine with a GPU (`minifcn.gpu_available()`), runs them for real and times them.
#    Without a GPU those cells say so and skip.
#
# The emulator needs a C++ compiler (`g++`); it builds the kernels once and caches the library.

# %%
# %matplotlib inline
import time
import numpy as np
import matplotlib.pyplot as plt
import minifcn
from minifcn import primitives as P
from minifcn.gpu import cuda
from minifcn.gpu.launch import BLOCK, KERNELS, kernels_dir, launch

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
print("kernel sources:", sorted(p.name for p in kernels_dir().glob("*.cu")))
print("GPU available:", minifcn.gpu_available())

# %% [markdown]
# ## 1. Reading the im2col kernel
#
# A CUDA kernel is a function that thousands of threads run at once, each on its own piece of the
# work. Each thread finds out which piece from its coordinates: `blockIdx.x * blockDim.x +
# threadIdx.x` is its global number. minifcn's kernels all follow one pattern: **one thread per
# output element**. Thread `idx` unravels `idx` into the output's coordinates, works out which
# input element that is, and writes one number. Next to each line, a comment gives the NumPy line
# of `minifcn/primitives.py` it mirrors.

# %%
print((kernels_dir() / "im2col.cu").read_text().split("// One thread per image pixel")[0])

# %% [markdown]
# Reading off the index arithmetic: the column array (N, C, kh, kw, oh, ow) is stored flat, last
# axis fastest, so `idx % ow` is the output column, `idx / ow % oh` the output row, and so on. The
# same unravelling in Python, for a few threads of a 3x3 / stride 1 / padding 1 im2col of a 4x4
# image:

# %%
h = w = 4; kh = kw = 3; sh = sw = 1; ph = pw = 1; oh = ow = 4
for idx in (0, 1, 5, 17, 80, 143):
    ox, oy = idx % ow, idx // ow % oh
    j, i = idx // (ow * oh) % kw, idx // (ow * oh * kw) % kh
    y, x = oy * sh + i - ph, ox * sw + j - pw
    where = f"reads pixel ({y}, {x})" if 0 <= y < h and 0 <= x < w else "in the padding: writes 0"
    print(f"thread {idx:3d}: tap (i, j) = ({i}, {j}), output (oy, ox) = ({oy}, {ox}) -> {where}")

# %% [markdown]
# The threads never talk to each other and never write to the same place, so the kernel needs no
# synchronisation and gives the same result on every run.
#
# ## 2. The max-pool kernel
#
# Max pooling is again one thread per output element: it scans its window, skipping positions
# that fall outside the image (the padding and the overhang of a *ceil* window, which NumPy fills
# with $-\infty$), keeps the first maximum and remembers its offset in the window (the argmax)
# for the backward pass.

# %%
source = (kernels_dir() / "pooling.cu").read_text()
start = source.index("// One thread per output element")
print(source[start:source.index("// One thread per input pixel")])

# %% [markdown]
# The backward kernel does not loop over outputs scattering gradients into the input (two windows
# could then add into the same pixel at the same time, which needs atomic additions and makes the
# order of additions, hence the last bits of the sum, vary from run to run). It runs **one thread
# per input pixel**, which gathers the gradients of the windows it won. The same trick serves
# col2im (section 3).
#
# ## 3. Running the kernels on the CPU
#
# `minifcn.gpu.cuda` has the same functions as `minifcn.primitives`. Called with CuPy arrays they run
# on the GPU; called with NumPy arrays they take the very same path (argument checks, output
# allocation, grid size) up to the last line, where `minifcn.gpu.launch` hands the arrays to the
# emulator instead of CuPy. So we can compare the kernels with NumPy here. The first call compiles
# the kernels (a few seconds, once; the library is cached).

# %%
x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
t0 = time.perf_counter()
col_kernel = cuda.im2col(x, 3, 3, 2, 2, 1, 1, 5, 4)          # (.., oh, ow) computed by the caller
print(f"first call (compiles if needed): {time.perf_counter() - t0:.2f} s")
col_numpy = P.im2col(x, 3, 3, 2, 2, 1, 1)
print("im2col:", col_kernel.shape, "identical to NumPy:", np.array_equal(col_kernel, col_numpy))

g = rng.standard_normal(col_numpy.shape).astype(np.float32)
print("col2im identical to NumPy:", np.array_equal(cuda.col2im(g, 9, 7, 2, 2, 1, 1), P.col2im(g, 9, 7, 2, 2, 1, 1)))

# %% [markdown]
# "Identical", not "close": col2im sums several column entries into each pixel, and floating
# point addition is not associative. The kernel adds them in the same order as NumPy's loop over
# kernel taps (its comments explain how), so even the last bit agrees.
#
# Max pooling with Caffe's ceil rounding, on all-negative inputs with ties (the hard cases):

# %%
xp = (rng.integers(-3, 3, (2, 3, 7, 9)) - 10).astype(np.float32)
oh, ow = P.conv_out_size(7, 2, 2, 0, ceil_mode=True), P.conv_out_size(9, 2, 2, 0, ceil_mode=True)
y_k, arg_k = cuda.maxpool_forward(xp, 2, 2, 2, 2, 0, 0, oh, ow)
y_n, arg_n = P.maxpool_forward(xp, 2, 2, 2, 2, 0, 0, True)
print("max pool", y_k.shape, " values identical:", np.array_equal(y_k, y_n), " argmax identical:", np.array_equal(arg_k, arg_n))

gy = rng.standard_normal(y_n.shape).astype(np.float32)
print("backward identical:", np.array_equal(cuda.maxpool_backward(gy, arg_k, 7, 9, 2, 2, 2, 2, 0, 0),
                                              P.maxpool_backward(gy, arg_n, 7, 9, 2, 2, 2, 2, 0, 0)))

# %% [markdown]
# ### One level down: `launch`
#
# Every kernel goes through `minifcn.gpu.launch.launch(name, total, **arguments)`: `total` threads
# (one per output element), in blocks of 256. It checks each argument against the kernel's C
# parameter list (a wrong dtype would be read as garbage bytes by the kernel, silently) and picks
# the `float` or `double` instance. Calling it directly:

# %%
print("im2col's C parameters:", KERNELS["im2col"].params)
col = np.empty((2, 3, 3, 3, 5, 4), np.float32)
launch("im2col", col.size, x=x, col=col, h=9, w=7, kh=3, kw=3, sh=2, sw=2, ph=1, pw=1,
       dh=1, dw=1, oh=5, ow=4)
print(f"{col.size} threads in {-(-col.size // BLOCK)} blocks of {BLOCK}; same result: {np.array_equal(col, col_numpy)}")
try:
    launch("im2col", col.size, x=x.astype(np.float64), col=col, h=9, w=7, kh=3, kw=3, sh=2, sw=2,
           ph=1, pw=1, dh=1, dw=1, oh=5, ow=4)
except TypeError as err:
    print("mixed dtypes are refused:", err)

# %% [markdown]
# The emulator is for correctness, not speed: it runs one thread after another on one core, while
# NumPy's im2col is a handful of vectorised slices.

# %%
x_big = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
for name, fn in (("NumPy", lambda: P.im2col(x_big, 3, 3, 1, 1, 1, 1)),
                 ("emulator", lambda: cuda.im2col(x_big, 3, 3, 1, 1, 1, 1, 64, 64))):
    t0 = time.perf_counter(); fn(); print(f"{name:9s} {1e3 * (time.perf_counter() - t0):7.1f} ms")


# %% [markdown]
# ## 4. On a GPU
#
# With CuPy arrays the same functions run the kernels on the GPU (compiled by NVRTC on first use).
# `minifcn.primitives` dispatches there by itself, and so does every op above it: a `Tensor`
# moved with `.to("cuda")` runs the whole net on the GPU. Timing GPU code needs care: a kernel
# launch returns before the kernel finishes, so we synchronise before reading the clock, and we
# run once first so that compilation is not timed.

# %%
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

# %%
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

# %% [markdown]
# The kernels are only part of a convolution; the matrix product is cuBLAS's. A whole `conv2d`
# (forward and backward) of that layer, and a small FCN's training step, CPU against GPU:

# %%
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

# %% [markdown]
# The outputs above come from a machine without a GPU. For reference, this is what the two cells
# printed on an NVIDIA H200 (CuPy 14, NumPy on that machine's 16 CPU cores), when this notebook
# was written:
#
# ```
# im2col on the GPU identical to NumPy: True
# im2col 3x3    NumPy    23.40 ms   GPU   0.587 ms   (40x)
# max pool 2x2  NumPy   138.61 ms   GPU   0.167 ms   (831x)
# conv2d 256->256 3x3 at 175x175, forward + backward: CPU 0.27 s   GPU 11.5 ms
# FCN-8s (width 0.25), batch 4 of 128x128, one SGD step on the GPU: 32.2 ms
# ```
#
# Max pooling gains the most: NumPy makes a strided pass over the whole input for each of the
# four window positions, and keeps an argmax array up to date as it goes, while the kernel reads
# each window once in one thread.
#
# ## Exercise
#
# 1. Call `launch("maxpool_backward", ...)` yourself (its parameters are in
#    `KERNELS["maxpool_backward"].params`) and check it against `P.maxpool_backward`.
# 2. In `col2im`, each thread computes the range of windows `oy_first .. oy_last` that cover its
#    pixel instead of trying every kernel row. Work out `oy_first` and `oy_last` for pixel row
#    `y = 5` with `kh = 3, sh = 2, ph = 1` by hand, then check with the thread arithmetic in Python.
# 3. Why does the emulator give the right answer for these kernels although it runs the threads
#    one at a time, in order? Describe a kernel for which running the threads in order would hide
#    a bug that a real GPU would show.
