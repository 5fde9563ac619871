"""Max pooling: ``F.max_pool2d``.

Each window's largest value goes forward, and its position (the argmax, the winning tap inside
the window) is saved, so that backward can send the window's gradient to that one input: max
pooling's backward is a scatter by index. The loops are ``minifcn.primitives.maxpool_forward``
and ``maxpool_backward`` (CUDA twins in ``kernels/pooling.cu``); the plain version to read
first is ``minifcn.simple.max_pool2d_simple``.
"""
from . import primitives as P
from .autograd import Function
from .primitives import check_4d, check_window, pair


class MaxPool2d(Function):
    def forward(self, x, ksize, stride, padding, dilation, ceil_mode):
        y, argmax = P.maxpool_forward(x, *ksize, *stride, *padding, ceil_mode, *dilation)
        self.saved = (argmax, x.shape[2:], ksize, stride, padding, dilation)
        return y

    def backward(self, g):
        argmax, hw, ksize, stride, padding, dilation = self.saved
        return P.maxpool_backward(g, argmax, *hw, *ksize, *stride, *padding, *dilation)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling over kernel_size windows; x (N, C, H, W) -> (N, C, oh, ow).

    ceil_mode=True rounds the output size up as Caffe's pooling (FCN's nets): the last window
    may hang over the edge, and only the real elements in it compete. Padding never wins a max
    (it is -inf, not 0). Backward sends each gradient to its window's first maximum.
    dilation d: the window's taps sit d pixels apart (PyTorch's meaning and argument order, so
    ceil_mode comes after it). The plain version to read first is
    ``minifcn.simple.max_pool2d_simple``.
    """
    op = "max_pool2d"
    check_4d(op, "input", x)
    ksize = pair(kernel_size, "kernel_size", op, 1)
    stride = ksize if stride is None else pair(stride, "stride", op, 1)
    padding = pair(padding, "padding", op, 0)
    if isinstance(dilation, bool):  # ceil_mode given by position: PyTorch's order puts dilation first
        raise TypeError(f"{op}: dilation must be an int or a pair of ints, got {dilation!r} "
                        "(ceil_mode comes after dilation, as in PyTorch: pass ceil_mode=...)")
    dilation = pair(dilation, "dilation", op, 1)
    # half the kernel's taps, not of its dilated span: PyTorch's rule, dilated or not
    for k, p in zip(ksize, padding):
        if 2 * p > k:
            raise ValueError(f"{op}: padding {padding} must be at most half the kernel {ksize}")
    check_window(op, x, ksize, padding, dilation)
    return MaxPool2d.apply(x, ksize=ksize, stride=stride, padding=padding, dilation=dilation,
                           ceil_mode=ceil_mode)
