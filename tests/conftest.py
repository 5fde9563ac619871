import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def quiet(monkeypatch):
    """No progress bars (MINIFCN_NO_PROGRESS=1), for the modules that train: they ask for it with
    ``pytestmark = pytest.mark.usefixtures("quiet")``."""
    monkeypatch.setenv("MINIFCN_NO_PROGRESS", "1")
