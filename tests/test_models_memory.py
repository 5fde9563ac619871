"""minifcn.models.memory: the forward's peak estimated from the layers is never below the peak
tracemalloc measures; the size it says fits does; and training.limits.memory_budget sees the
address-space limit a user sets (ulimit -v)."""
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from minifcn import Tensor, no_grad
from minifcn.models import build
from minifcn.models.memory import forward_bytes, largest_fitting


def measured_peak(model, shape):
    """The most bytes NumPy and Python held at once during one forward (after a warm-up)."""
    x = Tensor(np.random.default_rng(0).normal(0, 60, shape).astype(np.float32))
    with no_grad():
        model(x)
        tracemalloc.start()
        try:
            model(x)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("name, options", [("fcn8s", {}), ("fcn32s", {"pad1": 81}),
                                           ("segnet", {}), ("fcn8s-nonlocal", {})])
def test_forward_bytes_is_never_below_the_measured_peak(name, options):
    model = build(name, n_class=5, width=1 / 32, **options).eval()
    for shape in [(1, 3, 90, 70), (2, 3, 260, 200)]:
        peak, estimate = measured_peak(model, shape), forward_bytes(model, shape)
        assert peak <= estimate <= 10 * peak, (shape, peak, estimate)


def test_largest_fitting_is_the_largest_size_within_the_budget():
    model = build("fcn8s", n_class=5, width=1 / 32).eval()
    budget = forward_bytes(model, (1, 3, 600, 900)) - 1
    h, w = largest_fitting(model, 3000, 4500, budget)
    assert abs(h / w - 3000 / 4500) < 0.01 and 500 < h < 600
    assert forward_bytes(model, (1, 3, h, w)) <= budget
    assert forward_bytes(model, (1, 3, h + 3, w + 5)) > budget
    assert largest_fitting(model, 300, 450, budget) == (300, 450)  # fits as it is
    assert largest_fitting(model, 3000, 4500, 1000) == (0, 0)  # nothing fits


def test_memory_budget_sees_the_address_space_limit():
    code = ("import resource\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.getrlimit("
            "resource.RLIMIT_AS)[1]))\n"
            "from minifcn.training.limits import memory_budget\n"
            "print(memory_budget())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert 0 < int(run.stdout) < 3 * 2**30
