// Max pooling and unpooling on the GPU: the CUDA twins of minifcn/primitives.py's
// maxpool_forward, maxpool_backward, maxunpool_forward and maxunpool_backward.
//
// Shapes (all arrays C-contiguous):
//   x, gx        (N, C, h, w)      input and its gradient
//   y, gy        (N, C, oh, ow)    output and its gradient
//   argmax       (N, C, oh, ow)    int32: the winner's tap i*kw + j inside its window
// (unpooling's shapes are given beside its kernels, at the end)
// Tap (i, j) of window (oy, ox) reads the padded input's pixel (oy*sh + i*dh, ox*sw + j*dw),
// i.e. the input's pixel (oy*sh + i*dh - ph, ox*sw + j*dw - pw); dh, dw are the dilation
// (1 = a plain window of kh x kw neighbours). The caller computes oh and ow (with ceil rounding
// for Caffe's pooling, when the last window may hang over the edge).
//
// Every kernel takes `long long total` first: the number of threads with work.

#ifndef EMULATOR_ENTRY
#define EMULATOR_ENTRY(name)  // on the GPU CuPy launches the kernel; nothing to add
#endif

// -infinity, spelled through its bits so that no math header is needed (NVRTC has none).
template <typename T>
__device__ T minus_infinity();
template <>
__device__ float minus_infinity<float>() {
    return -__int_as_float(0x7f800000);  // the bits of +inf, negated
}
template <>
__device__ double minus_infinity<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}

// One thread per output element: scan the window, keep the first maximum and its offset.
template <typename T>
__device__ void maxpool_forward(long long total, const T *__restrict__ x, T *__restrict__ y,
                                int *__restrict__ argmax, int h, int w, int kh, int kw, int sh,
                                int sw, int ph, int pw, int dh, int dw, int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over y's shape (N*C, oh, ow)
    int ox = (int)(idx % ow);
    long long rest = idx / ow;
    int oy = (int)(rest % oh);
    long long nc = rest / oh;
    const T *plane = x + nc * h * w;  // image n, channel c
    // NumPy: y = np.full(..., -np.inf); argmax = np.zeros(...)
    T best = minus_infinity<T>();
    int best_offset = 0;
    for (int i = 0; i < kh; ++i) {
        for (int j = 0; j < kw; ++j) {
            // NumPy: cand = xpad[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw]
            //        (y0, x0 = i * dh, j * dw), i.e. xpad[.., oy*sh + i*dh, ox*sw + j*dw]
            //        = x[.., oy*sh + i*dh - ph, ox*sw + j*dw - pw]
            int yy = oy * sh + i * dh - ph;
            int xx = ox * sw + j * dw - pw;
            // NumPy's xpad holds -inf outside x (padding, and the overhang of a ceil-mode
            // window), and -inf never beats best: skipping those elements is the same
            if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
            T v = plane[(long long)yy * w + xx];
            // NumPy: better = cand > y  (strict, so the earlier offset keeps a tie, and NaN,
            //        which compares false, never wins)
            if (v > best) {
                best = v;
                best_offset = i * kw + j;  // NumPy: argmax[better] = i * kw + j
            }
        }
    }
    y[idx] = best;
    argmax[idx] = best_offset;
}

// One thread per input pixel: sum the gradients of the windows whose winner is this pixel.
// Each thread writes only its own pixel: no atomics, the same result on every run.
template <typename T>
__device__ void maxpool_backward(long long total, const T *__restrict__ gy,
                                 const int *__restrict__ argmax, T *__restrict__ gx, int h, int w,
                                 int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                 int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over gx's shape (N*C, h, w)
    int xx = (int)(idx % w);
    long long rest = idx / w;
    int y = (int)(rest % h);
    long long nc = rest / h;
    // NumPy: gpad[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw] += np.where(
    //            argmax == i * kw + j, gy, 0)
    //        padded row yp = y + ph gets window row oy's gradient at tap i, yp = oy*sh + i*dh,
    //        for every oy with 0 <= i < kh (as in col2im), and only if that tap won the window
    int yp = y + ph;
    int xp = xx + pw;
    int eh = dh * (kh - 1) + 1;  // rows a window spans (its extent)
    int ew = dw * (kw - 1) + 1;
    int oy_first = yp >= eh ? (yp - eh) / sh + 1 : 0;
    int oy_last = min(yp / sh, oh - 1);
    int ox_first = xp >= ew ? (xp - ew) / sw + 1 : 0;
    int ox_last = min(xp / sw, ow - 1);
    long long plane = nc * oh * ow;  // start of image n, channel c in gy and argmax
    T sum = T(0);
    // oy downwards = i upwards: NumPy's order of additions, so the sums match bit for bit
    for (int oy = oy_last; oy >= oy_first; --oy) {
        int di = yp - oy * sh;  // = i * dh when window oy has a tap on row yp
        if (dh != 1 && di % dh != 0) continue;  // between two taps (as in col2im)
        int i = dh == 1 ? di : di / dh;
        for (int ox = ox_last; ox >= ox_first; --ox) {
            int dj = xp - ox * sw;
            if (dw != 1 && dj % dw != 0) continue;
            int j = dw == 1 ? dj : dj / dw;
            long long o = plane + (long long)oy * ow + ox;
            if (argmax[o] == i * kw + j) sum += gy[o];
        }
    }
    // NumPy: return gpad[:, :, ph : ph + h, pw : pw + w]
    gx[idx] = sum;
}

// Max unpooling, x (N, C, h, w) -> y (N, C, oh, ow), each value added at its flat position
// indices[k] = row * ow + col of its own plane of y; `in_plane` = h * w, `out_plane` = oh * ow.
// One thread per input element; y must be zeroed first. Two values sharing a position are
// summed (maxpool_backward's semantics): atomicAdd, so on a GPU their order, and a float sum's
// last bits, may change from run to run. An index outside [0, out_plane) is skipped rather than
// written outside y (F.max_unpool2d refuses one before launching).
template <typename T>
__device__ void maxunpool_forward(long long total, const T *__restrict__ x,
                                  const long long *__restrict__ indices, T *__restrict__ y,
                                  long long in_plane, long long out_plane) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long at = indices[idx];
    if (at < 0 || at >= out_plane) return;
    // NumPy: np.add.at(y, indices + plane * out_plane, x)
    atomicAdd(y + idx / in_plane * out_plane + at, x[idx]);
}

// Its adjoint, a gather: one thread per element of gx (indices' shape), each reading its own
// position of gy; no atomics, the same result on every run.
template <typename T>
__device__ void maxunpool_backward(long long total, const T *__restrict__ gy,
                                   const long long *__restrict__ indices, T *__restrict__ gx,
                                   long long in_plane, long long out_plane) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long at = indices[idx];
    // NumPy: np.take_along_axis(gy planes, indices planes, axis=1)
    gx[idx] = at < 0 || at >= out_plane ? T(0) : gy[idx / in_plane * out_plane + at];
}

// The names CuPy and the emulator launch: one instance per floating type.
extern "C" __global__ void maxpool_forward_f32(long long total, const float *x, float *y,
                                               int *argmax, int h, int w, int kh, int kw, int sh,
                                               int sw, int ph, int pw, int dh, int dw, int oh,
                                               int ow) {
    maxpool_forward(total, x, y, argmax, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void maxpool_forward_f64(long long total, const double *x, double *y,
                                               int *argmax, int h, int w, int kh, int kw, int sh,
                                               int sw, int ph, int pw, int dh, int dw, int oh,
                                               int ow) {
    maxpool_forward(total, x, y, argmax, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void maxpool_backward_f32(long long total, const float *gy,
                                                const int *argmax, float *gx, int h, int w,
                                                int kh, int kw, int sh, int sw, int ph, int pw,
                                                int dh, int dw, int oh, int ow) {
    maxpool_backward(total, gy, argmax, gx, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void maxpool_backward_f64(long long total, const double *gy,
                                                const int *argmax, double *gx, int h, int w,
                                                int kh, int kw, int sh, int sw, int ph, int pw,
                                                int dh, int dw, int oh, int ow) {
    maxpool_backward(total, gy, argmax, gx, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}

extern "C" __global__ void maxunpool_forward_f32(long long total, const float *x,
                                                 const long long *indices, float *y,
                                                 long long in_plane, long long out_plane) {
    maxunpool_forward(total, x, indices, y, in_plane, out_plane);
}
extern "C" __global__ void maxunpool_forward_f64(long long total, const double *x,
                                                 const long long *indices, double *y,
                                                 long long in_plane, long long out_plane) {
    maxunpool_forward(total, x, indices, y, in_plane, out_plane);
}
extern "C" __global__ void maxunpool_backward_f32(long long total, const float *gy,
                                                  const long long *indices, float *gx,
                                                  long long in_plane, long long out_plane) {
    maxunpool_backward(total, gy, indices, gx, in_plane, out_plane);
}
extern "C" __global__ void maxunpool_backward_f64(long long total, const double *gy,
                                                  const long long *indices, double *gx,
                                                  long long in_plane, long long out_plane) {
    maxunpool_backward(total, gy, indices, gx, in_plane, out_plane);
}

EMULATOR_ENTRY(maxpool_forward_f32)
EMULATOR_ENTRY(maxpool_forward_f64)
EMULATOR_ENTRY(maxpool_backward_f32)
EMULATOR_ENTRY(maxpool_backward_f64)
EMULATOR_ENTRY(maxunpool_forward_f32)
EMULATOR_ENTRY(maxunpool_forward_f64)
EMULATOR_ENTRY(maxunpool_backward_f32)
EMULATOR_ENTRY(maxunpool_backward_f64)
