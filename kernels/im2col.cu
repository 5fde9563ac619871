// im2col and col2im on the GPU: the CUDA twins of minifcn/primitives.py's im2col and col2im.
//
// Shapes (all arrays C-contiguous):
//   x, img  (N, C, h, w)                 the image
//   col     (N, C, kh, kw, oh, ow)       one row of columns per kernel offset (i, j)
// Element col[n, c, i, j, oy, ox] is the padded image's pixel (oy*sh + i*dh, ox*sw + j*dw), i.e.
// the image's pixel (oy*sh + i*dh - ph, ox*sw + j*dw - pw), or 0 where that falls into the
// padding. dh, dw are the dilation (PyTorch's meaning: tap i sits i*dh rows down; 1 = none).
//
// Every kernel in minifcn takes `long long total` first: the number of threads with work
// (here the number of output elements). Thread `idx` computes output element `idx`; threads of
// the last block past `total` do nothing. Indices are 64-bit because a column array at full
// width can hold more than 2^31 elements.

#ifndef EMULATOR_ENTRY
#define EMULATOR_ENTRY(name)  // on the GPU CuPy launches the kernel; nothing to add
#endif

// One thread per column element: copy one pixel (or a padding zero) into col.
template <typename T>
__device__ void im2col(long long total, const T *__restrict__ x, T *__restrict__ col, int h,
                       int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                       int oh, int ow) {
    // cast before multiplying: blockIdx.x * blockDim.x alone is 32-bit and could overflow
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over col's shape (N*C, kh, kw, oh, ow), last axis first
    long long rest = idx;
    int ox = (int)(rest % ow);
    rest /= ow;
    int oy = (int)(rest % oh);
    rest /= oh;
    int j = (int)(rest % kw);
    rest /= kw;
    int i = (int)(rest % kh);
    long long nc = rest / kh;  // n * C + c
    // NumPy: y0, x0 = i * dh, j * dw
    //        col[:, :, i, j] = xpad[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw]
    //        so col[.., i, j, oy, ox] = xpad[.., i*dh + oy*sh, j*dw + ox*sw]; xpad is x shifted
    //        by (ph, pw) with zeros around it
    int y = oy * sh + i * dh - ph;
    int xx = ox * sw + j * dw - pw;  // (xx, not x: x is the image)
    bool inside = 0 <= y && y < h && 0 <= xx && xx < w;
    col[idx] = inside ? x[(nc * h + y) * w + xx] : T(0);  // x[n, c, y, xx] in C order
}

// One thread per image pixel: gather and sum the column entries of every window that covers
// the pixel. Each thread writes only its own pixel, so no atomics are needed and the sums come
// out in the same order on every run.
template <typename T>
__device__ void col2im(long long total, const T *__restrict__ col, T *__restrict__ img, int h,
                       int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                       int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // unravel idx over img's shape (N*C, h, w)
    int xx = (int)(idx % w);
    long long rest = idx / w;
    int y = (int)(rest % h);
    long long nc = rest / h;
    // NumPy: img[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw] += col[:, :, i, j]
    //        (y0 = i * dh) on the padded canvas, so padded row yp = y + ph receives
    //        col[.., i, j, oy, ox] from every window row oy with yp = oy * sh + i * dh,
    //        0 <= i < kh, 0 <= oy < oh (and likewise for columns); solve for oy instead of
    //        trying every i, as Caffe's dilated col2im does
    int yp = y + ph;
    int xp = xx + pw;
    int eh = dh * (kh - 1) + 1;  // rows a window spans (its extent)
    int ew = dw * (kw - 1) + 1;
    int oy_first = yp >= eh ? (yp - eh) / sh + 1 : 0;  // smallest oy with yp - oy*sh < eh
    int oy_last = min(yp / sh, oh - 1);                // largest oy with yp - oy*sh >= 0
    int ox_first = xp >= ew ? (xp - ew) / sw + 1 : 0;
    int ox_last = min(xp / sw, ow - 1);
    T sum = T(0);
    // walk oy downwards so that i goes up, the order of NumPy's loop over (i, j): the float
    // additions then happen in the same order and the result matches bit for bit
    for (int oy = oy_last; oy >= oy_first; --oy) {
        int di = yp - oy * sh;  // = i * dh when window oy has a tap on row yp
        // between two taps of a dilated window: nothing lands here (dh == 1 is tested first,
        // so the undilated kernel does no division)
        if (dh != 1 && di % dh != 0) continue;
        int i = dh == 1 ? di : di / dh;
        for (int ox = ox_last; ox >= ox_first; --ox) {
            int dj = xp - ox * sw;
            if (dw != 1 && dj % dw != 0) continue;
            int j = dw == 1 ? dj : dj / dw;
            sum += col[(((nc * kh + i) * kw + j) * oh + oy) * ow + ox];  // col[n, c, i, j, oy, ox]
        }
    }
    // NumPy: return img[:, :, ph : ph + h, pw : pw + w]  (this thread's pixel is inside)
    img[idx] = sum;
}

// The names CuPy and the emulator launch: one instance per floating type.
extern "C" __global__ void im2col_f32(long long total, const float *x, float *col, int h, int w,
                                      int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                      int dw, int oh, int ow) {
    im2col(total, x, col, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void im2col_f64(long long total, const double *x, double *col, int h,
                                      int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                      int dh, int dw, int oh, int ow) {
    im2col(total, x, col, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void col2im_f32(long long total, const float *col, float *img, int h,
                                      int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                      int dh, int dw, int oh, int ow) {
    col2im(total, col, img, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}
extern "C" __global__ void col2im_f64(long long total, const double *col, double *img, int h,
                                      int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                      int dh, int dw, int oh, int ow) {
    col2im(total, col, img, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
}

EMULATOR_ENTRY(im2col_f32)
EMULATOR_ENTRY(im2col_f64)
EMULATOR_ENTRY(col2im_f32)
EMULATOR_ENTRY(col2im_f64)
