// Per-pixel softmax cross-entropy on the GPU (FCN's loss): the CUDA twins of
// minifcn/primitives.py's softmax_cross_entropy_forward and softmax_cross_entropy_backward.
//
// Shapes (all arrays C-contiguous; hw = H * W, the pixels of one image):
//   logits, glogits   (N, C, H, W)   scores and their gradient
//   target            (N, H, W)      int64 class indices, or ignore_index
//   loss, gloss       (N, H, W)      each pixel's loss and its upstream gradient
// Pixel p of image n reads its C scores at logits[(n*C + k)*hw + p], k = 0 .. C-1: a stride
// of hw between classes, while neighbouring threads read neighbouring pixels.
//
// A target outside [0, C) that is not ignore_index gives NaN (minifcn.functional checks the
// labels before it gets here; the NaN keeps a bad label from reading outside the array).
//
// Every kernel takes `long long total` first: the number of threads with work (pixels here).

#ifndef EMULATOR_ENTRY
#define EMULATOR_ENTRY(name)  // on the GPU CuPy launches the kernel; nothing to add
#endif

// A quiet NaN, spelled through its bits so that no math header is needed (NVRTC has none).
template <typename T>
__device__ T not_a_number();
template <>
__device__ float not_a_number<float>() {
    return __int_as_float(0x7fc00000);
}
template <>
__device__ double not_a_number<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// The largest score and the sum of exp(score - largest) of one pixel; l[k * hw] is class k.
template <typename T>
__device__ void max_and_sum_exp(const T *l, int c, long long hw, T &m, T &s) {
    // NumPy: m = logits.max(axis=1, keepdims=True)
    m = l[0];
    for (int k = 1; k < c; ++k) m = l[k * hw] > m ? l[k * hw] : m;
    // NumPy: np.exp(logits - m).sum(axis=1); subtracting the max keeps exp from overflowing
    s = T(0);
    for (int k = 0; k < c; ++k) s += exp(l[k * hw] - m);
}

// One thread per pixel: loss = log(sum_k exp(l_k)) - l_target, 0 for an ignored pixel.
template <typename T>
__device__ void softmax_cross_entropy_forward(long long total, const T *__restrict__ logits,
                                              const long long *__restrict__ target,
                                              T *__restrict__ loss, int c, long long hw,
                                              long long ignore_index) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over target's shape (N, hw)
    long long n = idx / hw;
    long long pix = idx % hw;
    const T *l = logits + n * c * hw + pix;  // l[k * hw] = logits[n, k, pix]
    long long t = target[idx];
    // NumPy: np.where(valid, lse - picked, 0) with valid = target != ignore_index
    if (t == ignore_index) {
        loss[idx] = T(0);
        return;
    }
    if (t < 0 || t >= c) {
        loss[idx] = not_a_number<T>();
        return;
    }
    T m, s;
    max_and_sum_exp(l, c, hw, m, s);
    // NumPy: lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    //        picked = np.take_along_axis(logits, t[:, None], axis=1)[:, 0]
    T lse = log(s) + m;
    loss[idx] = lse - l[t * hw];
}

// One thread per pixel: the pixel's C gradients (softmax - onehot(target)) * gloss[pixel],
// all 0 for an ignored pixel.
template <typename T>
__device__ void softmax_cross_entropy_backward(long long total, const T *__restrict__ logits,
                                               const long long *__restrict__ target,
                                               const T *__restrict__ gloss,
                                               T *__restrict__ glogits, int c, long long hw,
                                               long long ignore_index) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long n = idx / hw;
    long long pix = idx % hw;
    const T *l = logits + n * c * hw + pix;  // l[k * hw] = logits[n, k, pix]
    T *g = glogits + n * c * hw + pix;       // g[k * hw] = glogits[n, k, pix]
    long long t = target[idx];
    // NumPy: scale = np.where(valid, gloss, 0)
    if (t == ignore_index) {
        for (int k = 0; k < c; ++k) g[k * hw] = T(0);
        return;
    }
    if (t < 0 || t >= c) {
        for (int k = 0; k < c; ++k) g[k * hw] = not_a_number<T>();
        return;
    }
    T m, s;
    max_and_sum_exp(l, c, hw, m, s);
    T scale = gloss[idx];
    for (int k = 0; k < c; ++k) {
        // NumPy: p = e / e.sum(axis=1, keepdims=True); p[target] -= 1; p * scale[:, None]
        T p = exp(l[k * hw] - m) / s;
        if (k == t) p -= T(1);
        g[k * hw] = p * scale;
    }
}

// The names CuPy and the emulator launch: one instance per floating type.
extern "C" __global__ void softmax_cross_entropy_forward_f32(long long total, const float *logits,
                                                             const long long *target, float *loss,
                                                             int c, long long hw,
                                                             long long ignore_index) {
    softmax_cross_entropy_forward(total, logits, target, loss, c, hw, ignore_index);
}
extern "C" __global__ void softmax_cross_entropy_forward_f64(long long total,
                                                             const double *logits,
                                                             const long long *target,
                                                             double *loss, int c, long long hw,
                                                             long long ignore_index) {
    softmax_cross_entropy_forward(total, logits, target, loss, c, hw, ignore_index);
}
extern "C" __global__ void softmax_cross_entropy_backward_f32(long long total,
                                                              const float *logits,
                                                              const long long *target,
                                                              const float *gloss, float *glogits,
                                                              int c, long long hw,
                                                              long long ignore_index) {
    softmax_cross_entropy_backward(total, logits, target, gloss, glogits, c, hw, ignore_index);
}
extern "C" __global__ void softmax_cross_entropy_backward_f64(long long total,
                                                              const double *logits,
                                                              const long long *target,
                                                              const double *gloss,
                                                              double *glogits, int c,
                                                              long long hw,
                                                              long long ignore_index) {
    softmax_cross_entropy_backward(total, logits, target, gloss, glogits, c, hw, ignore_index);
}

EMULATOR_ENTRY(softmax_cross_entropy_forward_f32)
EMULATOR_ENTRY(softmax_cross_entropy_forward_f64)
EMULATOR_ENTRY(softmax_cross_entropy_backward_f32)
EMULATOR_ENTRY(softmax_cross_entropy_backward_f64)
