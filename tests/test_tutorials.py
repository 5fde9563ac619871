"""The tutorials: every notebook in tutorials/ runs top to bottom, and the folder is consistent.

Each notebook is executed headlessly in a fresh Python kernel (nbclient, kernel "python3" from
ipykernel), in a temporary copy so that the committed file and its outputs are never rewritten,
with MPLBACKEND=Agg and MINIFCN_TUTORIAL_FAST=1 (the notebooks that train shrink their budgets).
A cell that raises fails the test, with the cell and the traceback in the message.

The other tests read the notebooks as JSON (no Jupyter needed): README.md lists exactly the
notebooks that exist, each notebook ends with an "Exercise" cell, the committed files carry
their outputs (no errors) and stay small, code cells use no private names, and the committed
cells are the text of tutorials/make_notebooks.py (so the script and the files cannot drift).
"""
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
REQUIRED = ["01_autograd", "02_convolution", "03_pooling_and_receptive_fields",
            "04_transposed_convolution", "05_convolutionalization", "06_skip_architecture",
            "07_metrics", "08_cuda_kernels"]
# the notebooks that train or build big models: the rest of this file stays well under a minute
SLOW = {"03_pooling_and_receptive_fields", "05_convolutionalization", "06_skip_architecture"}
MAX_BYTES = 500_000
CELL_TIMEOUT = 600  # seconds per cell; generous, a full notebook runs in well under 2 minutes


def load(name):
    return json.loads((TUTORIALS / f"{name}.ipynb").read_text(encoding="utf-8"))


def source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


# ---------------------------------------------------------------- the folder


def test_every_required_notebook_exists():
    missing = [n for n in REQUIRED if n not in NOTEBOOKS]
    assert not missing, f"tutorials/ lacks {missing}"


def test_readme_lists_exactly_the_notebooks():
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"\b(\d\d_[A-Za-z0-9_]+)\.ipynb", readme))
    assert listed - set(NOTEBOOKS) == set(), "README.md lists notebooks that do not exist"
    assert set(NOTEBOOKS) - listed == set(), "notebooks missing from tutorials/README.md"


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(n[:2]) for n in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), f"numbering: {NOTEBOOKS}"


def builder():
    spec = importlib.util.spec_from_file_location("make_notebooks", TUTORIALS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_covers_every_notebook():
    assert sorted(builder().NOTEBOOKS) == NOTEBOOKS


def test_builder_parse_rejects_text_outside_cells():
    with pytest.raises(ValueError, match="before the first cell marker"):
        builder().parse("stray text\n%% md\n# title\n")
    with pytest.raises(ValueError, match="empty cells"):
        builder().parse("%% md\n# title\n%% code\n\n%% md\nend\n")


# ---------------------------------------------------------------- each notebook, read as JSON


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ends_with_an_exercise(name):
    last = load(name)["cells"][-1]
    assert last["cell_type"] == "markdown", f"{name}: the last cell must be markdown"
    assert re.search(r"^#+\s*Exercise", source(last), re.MULTILINE), \
        f"{name}: the last cell must be an 'Exercise' section"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_with_outputs_and_small(name):
    nb = load(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), f"{name}: committed without outputs; run " \
        "python tutorials/make_notebooks.py --execute"
    errors = [source(c)[:60] for c in code for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: committed with errors in cells {errors}"
    size = (TUTORIALS / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name}: {size} bytes, keep it under {MAX_BYTES} (smaller figures)"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_uses_no_private_names(name):
    for cell in load(name)["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = source(cell)
        private = re.findall(r"\._[A-Za-z]\w*", text)  # obj._name (dunders like .__name__ pass)
        for imported in re.findall(r"^\s*(?:from\s+\S+\s+)?import\s+([^\n]+)", text, re.MULTILINE):
            private += [n for n in re.split(r"[\s,()]+", imported) if n.startswith("_")]
        assert not private, f"{name}: private names {private} in:\n{text[:200]}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_cells_match_the_builder(name):
    mk = builder()
    cells = [(c["cell_type"], source(c)) for c in load(name)["cells"]]
    assert cells == mk.parse(mk.NOTEBOOKS[name]), (
        f"{name}.ipynb differs from make_notebooks.py: "
        "run python tutorials/make_notebooks.py --execute")


# ---------------------------------------------------------------- each notebook, executed


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NOTEBOOKS])
def test_notebook_runs(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    committed = TUTORIALS / f"{name}.ipynb"
    before = committed.read_bytes()
    copy = tmp_path / committed.name
    shutil.copyfile(committed, copy)
    shutil.copytree(TUTORIALS / "assets", tmp_path / "assets")  # weights notebook 06 loads
    # the kernel inherits this process's environment
    monkeypatch.setenv("MINIFCN_TUTORIAL_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(str(copy), as_version=4)
    for cell in nb.cells:  # start from a clean slate, as a reader pressing "run all" would
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{name}: a cell raised:\n{err}", pytrace=False)
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in ran), f"{name}: not every code cell ran"
    assert committed.read_bytes() == before, f"{name}: the committed notebook was modified"
