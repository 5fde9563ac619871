// Resizing on the GPU: the CUDA twins of minifcn/resize.py's bilinear_forward,
// bilinear_backward, nearest_forward and nearest_backward.
//
// Shapes (all arrays C-contiguous):
//   x, gx        (N, C, h, w)      input and its gradient
//   y, gy        (N, C, oh, ow)    output and its gradient
// The coordinate rules (PyTorch's) are worked out once per axis on the host, in resize.py's
// linear_axis / nearest_axis, and arrive as tables:
//   ry0, ry1, ly (oh)   output row oy reads input rows ry0[oy] (weight 1 - ly[oy]) and
//                       ry1[oy] (weight ly[oy]); nearest reads ry0 only
//   rx0, rx1, lx (ow)   the same for the columns
//   first_y, end_y (h)  input row i is read by the output rows first_y[i] <= oy < end_y[i]
//                       (the sources never decrease along an axis, so the readers are a run)
//   first_x, end_x (w)  the same for the columns
// So the kernels hold no floating-point coordinate arithmetic: the NumPy path and the GPU read
// the very same taps and weights.
//
// The backward kernels run one thread per input pixel, gathering from the outputs that read
// it, rather than one thread per output doing four atomicAdds (PyTorch's choice): each thread
// writes only its own pixel, so there is no zero fill, no contention where many outputs share
// an input (upsampling), and the sum is the same on every run. The work is about the same:
// the runs cover each output a bounded number of times (twice per axis for bilinear).
//
// Every kernel takes `long long total` first: the number of threads with work.

#ifndef EMULATOR_ENTRY
#define EMULATOR_ENTRY(name)  // on the GPU CuPy launches the kernel; nothing to add
#endif

// One thread per output element: the four weighted taps, combined in PyTorch's order.
template <typename T>
__device__ void resize_bilinear_forward(long long total, const T *__restrict__ x,
                                        T *__restrict__ y, const int *__restrict__ ry0,
                                        const int *__restrict__ ry1, const T *__restrict__ ly,
                                        const int *__restrict__ rx0, const int *__restrict__ rx1,
                                        const T *__restrict__ lx, int h, int w, int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over y's shape (N*C, oh, ow)
    int ox = (int)(idx % ow);
    long long rest = idx / ow;
    int oy = (int)(rest % oh);
    long long nc = rest / oh;
    const T *plane = x + nc * h * w;
    const T *top = plane + (long long)ry0[oy] * w;
    const T *bottom = plane + (long long)ry1[oy] * w;
    T l1y = ly[oy], l1x = lx[ox];
    T l0y = T(1) - l1y, l0x = T(1) - l1x;
    int c0 = rx0[ox], c1 = rx1[ox];
    y[idx] = l0y * (l0x * top[c0] + l1x * top[c1]) + l1y * (l0x * bottom[c0] + l1x * bottom[c1]);
}

// The weight output oy (or ox) gives input i: 1 - l for its first tap, l for its second,
// both when the two taps are the same input (the last row, where i1 is clamped to i0).
template <typename T>
__device__ T tap_weight(int i, int at0, int at1, T l) {
    return (at0 == i ? T(1) - l : T(0)) + (at1 == i ? l : T(0));
}

// One thread per input pixel: the adjoint of the forward, sum over the outputs that read it of
// g * (row weight) * (column weight), columns summed first within each output row.
template <typename T>
__device__ void resize_bilinear_backward(
    long long total, const T *__restrict__ gy, T *__restrict__ gx, const int *__restrict__ ry0,
    const int *__restrict__ ry1, const T *__restrict__ ly, const int *__restrict__ rx0,
    const int *__restrict__ rx1, const T *__restrict__ lx, const int *__restrict__ first_y,
    const int *__restrict__ end_y, const int *__restrict__ first_x,
    const int *__restrict__ end_x, int h, int w, int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over gx's shape (N*C, h, w)
    int xx = (int)(idx % w);
    long long rest = idx / w;
    int yy = (int)(rest % h);
    long long nc = rest / h;
    const T *g = gy + nc * oh * ow;
    T sum = T(0);
    for (int oy = first_y[yy]; oy < end_y[yy]; ++oy) {
        T row = T(0);
        for (int ox = first_x[xx]; ox < end_x[xx]; ++ox)
            row += tap_weight(xx, rx0[ox], rx1[ox], lx[ox]) * g[(long long)oy * ow + ox];
        sum += tap_weight(yy, ry0[oy], ry1[oy], ly[oy]) * row;
    }
    gx[idx] = sum;
}

// One thread per output element: copy the one input it reads.
template <typename T>
__device__ void resize_nearest_forward(long long total, const T *__restrict__ x,
                                       T *__restrict__ y, const int *__restrict__ ry0,
                                       const int *__restrict__ rx0, int h, int w, int oh,
                                       int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int ox = (int)(idx % ow);
    long long rest = idx / ow;
    int oy = (int)(rest % oh);
    long long nc = rest / oh;
    y[idx] = x[nc * h * w + (long long)ry0[oy] * w + rx0[ox]];
}

// One thread per input pixel: the sum of the gradients of the outputs that copied it (a
// rectangle of them), each output row's run first, as NumPy's np.add.reduceat over the
// columns and then the rows (which sums a long run in its own order: equal to rounding).
template <typename T>
__device__ void resize_nearest_backward(long long total, const T *__restrict__ gy,
                                        T *__restrict__ gx, const int *__restrict__ first_y,
                                        const int *__restrict__ end_y,
                                        const int *__restrict__ first_x,
                                        const int *__restrict__ end_x, int h, int w, int oh,
                                        int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int xx = (int)(idx % w);
    long long rest = idx / w;
    int yy = (int)(rest % h);
    long long nc = rest / h;
    const T *g = gy + nc * oh * ow;
    T sum = T(0);
    for (int oy = first_y[yy]; oy < end_y[yy]; ++oy) {
        T row = T(0);
        for (int ox = first_x[xx]; ox < end_x[xx]; ++ox) row += g[(long long)oy * ow + ox];
        sum += row;
    }
    gx[idx] = sum;
}

// The names CuPy and the emulator launch: one instance per floating type.
extern "C" __global__ void resize_bilinear_forward_f32(
    long long total, const float *x, float *y, const int *ry0, const int *ry1, const float *ly,
    const int *rx0, const int *rx1, const float *lx, int h, int w, int oh, int ow) {
    resize_bilinear_forward(total, x, y, ry0, ry1, ly, rx0, rx1, lx, h, w, oh, ow);
}
extern "C" __global__ void resize_bilinear_forward_f64(
    long long total, const double *x, double *y, const int *ry0, const int *ry1, const double *ly,
    const int *rx0, const int *rx1, const double *lx, int h, int w, int oh, int ow) {
    resize_bilinear_forward(total, x, y, ry0, ry1, ly, rx0, rx1, lx, h, w, oh, ow);
}
extern "C" __global__ void resize_bilinear_backward_f32(
    long long total, const float *gy, float *gx, const int *ry0, const int *ry1, const float *ly,
    const int *rx0, const int *rx1, const float *lx, const int *first_y, const int *end_y,
    const int *first_x, const int *end_x, int h, int w, int oh, int ow) {
    resize_bilinear_backward(total, gy, gx, ry0, ry1, ly, rx0, rx1, lx, first_y, end_y, first_x,
                             end_x, h, w, oh, ow);
}
extern "C" __global__ void resize_bilinear_backward_f64(
    long long total, const double *gy, double *gx, const int *ry0, const int *ry1, const double *ly,
    const int *rx0, const int *rx1, const double *lx, const int *first_y, const int *end_y,
    const int *first_x, const int *end_x, int h, int w, int oh, int ow) {
    resize_bilinear_backward(total, gy, gx, ry0, ry1, ly, rx0, rx1, lx, first_y, end_y, first_x,
                             end_x, h, w, oh, ow);
}
extern "C" __global__ void resize_nearest_forward_f32(long long total, const float *x,
                                                  float *y, const int *ry0, const int *rx0,
                                                  int h, int w, int oh, int ow) {
    resize_nearest_forward(total, x, y, ry0, rx0, h, w, oh, ow);
}
extern "C" __global__ void resize_nearest_forward_f64(long long total, const double *x,
                                                  double *y, const int *ry0, const int *rx0,
                                                  int h, int w, int oh, int ow) {
    resize_nearest_forward(total, x, y, ry0, rx0, h, w, oh, ow);
}
extern "C" __global__ void resize_nearest_backward_f32(
    long long total, const float *gy, float *gx, const int *first_y, const int *end_y,
    const int *first_x, const int *end_x, int h, int w, int oh, int ow) {
    resize_nearest_backward(total, gy, gx, first_y, end_y, first_x, end_x, h, w, oh, ow);
}
extern "C" __global__ void resize_nearest_backward_f64(
    long long total, const double *gy, double *gx, const int *first_y, const int *end_y,
    const int *first_x, const int *end_x, int h, int w, int oh, int ow) {
    resize_nearest_backward(total, gy, gx, first_y, end_y, first_x, end_x, h, w, oh, ow);
}

EMULATOR_ENTRY(resize_bilinear_forward_f32)
EMULATOR_ENTRY(resize_bilinear_forward_f64)
EMULATOR_ENTRY(resize_bilinear_backward_f32)
EMULATOR_ENTRY(resize_bilinear_backward_f64)
EMULATOR_ENTRY(resize_nearest_forward_f32)
EMULATOR_ENTRY(resize_nearest_forward_f64)
EMULATOR_ENTRY(resize_nearest_backward_f32)
EMULATOR_ENTRY(resize_nearest_backward_f64)
