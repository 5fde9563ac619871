"""minifcn.primitives: the CPU loops that split big arrays over threads give exactly the
single-thread result. (The fast path against the plain one: tests/test_simple.py; the CUDA
twins: tests/test_kernels.py.)"""
import numpy as np
import pytest


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (4, 2, 1), (2, 2, 0), (3, 2, 1)])
def test_primitives_split_over_threads_match_one_thread(rng, monkeypatch, k, s, p):
    """im2col, col2im and max pooling split big arrays over channel blocks, one per thread:
    the split must give exactly the single-thread result (each thread owns its channels)."""
    from minifcn import primitives as P

    if P._POOL is None:
        pytest.skip("one CPU: the primitives never split")
    x = rng.standard_normal((2, 5, 11, 12))
    oh, ow = P.conv_out_size(11, k, s, p), P.conv_out_size(12, k, s, p)
    col = rng.standard_normal((2, 5, k, k, oh, ow))

    def run():
        y, arg = P.maxpool_forward(x, k, k, s, s, p // 2, p // 2, True)
        return [P.im2col(x, k, k, s, s, p, p), P.col2im(col, 11, 12, s, s, p, p), y, arg,
                P.maxpool_backward(y * 0.5 + 1, arg, 11, 12, k, k, s, s, p // 2, p // 2)]

    monkeypatch.setattr(P, "_PARALLEL_MIN_BYTES", 1 << 60)
    serial = run()
    monkeypatch.setattr(P, "_PARALLEL_MIN_BYTES", 0)
    for got, want in zip(run(), serial):
        np.testing.assert_array_equal(got, want)


def test_pair_takes_numpy_integers_and_refuses_bools_and_floats():
    from minifcn.primitives import pair

    assert pair(np.int64(2), "padding", "conv2d") == (2, 2)
    assert pair((np.int32(1), 3), "stride", "conv2d", 1) == (1, 3)
    assert all(type(v) is int for v in pair(np.int64(2), "padding", "conv2d"))
    for bad in (True, np.bool_(True), 1.0, (1, 2.0), (1,), "1"):
        with pytest.raises(TypeError, match="conv2d: padding must be an int or a pair of ints"):
            pair(bad, "padding", "conv2d")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        pair(np.int64(0), "stride", "conv2d", 1)
