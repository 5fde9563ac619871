"""minifcn.gradcheck must catch wrong gradients, including ones a summed output would hide."""
import re

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, gradcheck
from minifcn.autograd import Function
from minifcn.gradcheck import GradcheckError


class SoftmaxWrongBackward(Function):
    """Softmax over the last axis whose backward uses mean(g) where <g, p> belongs: right
    whenever the upstream gradient is constant, which is all that checking sum(outputs) feeds."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self.saved = e / e.sum(axis=-1, keepdims=True)
        return self.saved

    def backward(self, g):
        p = self.saved
        return p * (g - g.mean(axis=-1, keepdims=True))  # should be (g * p).sum(-1)


def test_random_upstream_catches_what_a_sum_hides():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    SoftmaxWrongBackward.apply(x).backward(np.ones((3, 4)))  # the sum's gradient ...
    np.testing.assert_allclose(x.grad, 0, atol=1e-12)  # ... is right (softmax sums to 1)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(SoftmaxWrongBackward.apply, [x])


def test_error_names_tensor_and_values():
    class Twice(Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g * 2.5

    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 of shape \(2, 2\)") as info:
        gradcheck(Twice.apply, [x])
    analytic, numeric = map(float, re.search(r"analytic (\S+) vs numeric (\S+)",
                                              str(info.value)).groups())
    assert analytic / numeric == pytest.approx(1.25, rel=1e-5)


def test_module_parameters_are_checked():
    minifcn.manual_seed(0)
    conv = minifcn.nn.Conv2d(2, 3, 3).double()
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)))  # x needs no grad
    assert gradcheck(conv, [x])
    conv.bias.data[...] = 0  # then sabotage backward of the bias only
    orig = minifcn.conv.Conv2d.backward

    def bad(self, g):
        gx, gw, gb = orig(self, g)
        return gx, gw, gb * 1.1

    minifcn.conv.Conv2d.backward = bad
    try:
        with pytest.raises(GradcheckError, match="parameter bias"):
            gradcheck(conv, [x])
    finally:
        minifcn.conv.Conv2d.backward = orig


def test_float32_refused():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda a: a * 2.0, [x])


def test_nothing_to_check():
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(lambda a: a * 2.0, [Tensor(np.ones(3))])


def test_gradcheck_table(capsys):
    from minifcn.gradcheck import run_cases
    from minifcn.opcases import CASES

    assert run_cases(CASES[:3]) == 0
    out = capsys.readouterr().out
    assert "3 passed, 0 failed" in out and "worst rel. error" in out


def test_gradcheck_table_counts_a_failure(capsys):
    from minifcn.gradcheck import run_cases

    class Thrice(Function):  # forward x * 3, backward as if x * 2
        def forward(self, x):
            return x * 3

        def backward(self, g):
            return g * 2

    def wrong(rng):
        return Thrice.apply, [Tensor(rng.standard_normal(3), requires_grad=True)]

    assert run_cases([("twice (wrong backward)", "(3,)", wrong)]) == 1
    out = capsys.readouterr().out
    assert "0 passed, 1 failed" in out and "FAIL" in out


def test_the_command_runs_and_the_function_keeps_its_name(capsys, monkeypatch):
    import runpy

    from minifcn.opcases import CASES

    monkeypatch.setattr("minifcn.opcases.CASES", CASES[:2])
    monkeypatch.setattr("sys.argv", ["python -m minifcn.gradcheck", "--seed", "1"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("minifcn.gradcheck", run_name="__main__")
    assert done.value.code == 0
    assert "2 passed, 0 failed" in capsys.readouterr().out
    x = Tensor(np.ones(3), requires_grad=True)
    assert callable(minifcn.gradcheck) and minifcn.gradcheck(lambda a: a * 2.0, [x]) is True


def test_importing_the_command_leaves_minifcn_gradcheck_the_function():
    import importlib
    import subprocess
    import sys

    importlib.import_module("minifcn.gradcheck")
    command = importlib.import_module("minifcn.gradcheck.__main__")  # imported, not run
    assert callable(command.main)
    x = Tensor(np.ones(3), requires_grad=True)
    assert minifcn.gradcheck(lambda a: a * 2.0, [x]) is True
    # python -m runs the package's __main__: no "found in sys.modules" RuntimeWarning
    run = subprocess.run([sys.executable, "-W", "error", "-m", "minifcn.gradcheck", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "central differences" in run.stdout, run.stderr


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_gradcheck_command_refuses_a_seed_numpy_cannot_take_in_one_line(capsys, seed):
    from minifcn.gradcheck.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["--seed", seed])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and err[-1].endswith(f"--seed must be an integer in "
                                                     f"0..{2**32 - 1}, got {seed}")
