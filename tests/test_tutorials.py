"""The tutorials: every notebook in tutorials/ runs top to bottom, and the folder is consistent.

Each notebook NN_name.ipynb (committed with its outputs) is paired with NN_name.py, its source in
jupytext's percent format, through tutorials/jupytext.toml. The tests check:

* the folder: the required notebooks exist, numbered 01, 02, ... without gaps; README.md lists
  exactly the notebooks that exist; every .ipynb has its .py and every .py its .ipynb; and
  jupytext.toml pairs them as "ipynb,py:percent".
* each pair holds the same cells: the cell types and sources of NN_name.py and NN_name.ipynb,
  both read through jupytext, are equal and in the same order. When they are not (one of the
  two was edited alone), the message names the first differing cell and the command that
  brings them back in step, ``jupytext --sync tutorials/NN_name.py``. Skipped if jupytext is
  not installed (it comes with ``pip install -e ".[tutorials]"``, which ``[test]`` includes).
* each notebook read as JSON (no Jupyter needed): it carries its outputs and no errors, stays
  under MAX_BYTES, has no empty cells, ends with an "Exercise" cell, and its code cells use no
  private names.
* each notebook executed headlessly in a fresh Python kernel (nbclient, kernel "python3" from
  ipykernel), in a temporary copy so that the committed file and its outputs are never
  rewritten, with MPLBACKEND=Agg and MINIFCN_TUTORIAL_FAST=1 (the notebooks that train shrink
  their budgets). A cell that raises fails the test, with the cell and the traceback in the
  message. The notebooks in SLOW are marked slow.
"""
import difflib
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
            "07_metrics", "08_cuda_kernels", "09_shift_and_stitch", "10_from_a_classifier",
            "11_encoder_decoders", "12_context", "13_instances", "14_looking_inside",
            "15_data_parallel"]
# the notebooks that train or build big models: the rest of this file stays well under a minute
SLOW = {"03_pooling_and_receptive_fields", "05_convolutionalization", "06_skip_architecture",
        "09_shift_and_stitch", "10_from_a_classifier", "14_looking_inside"}
PAIRING = "ipynb,py:percent"  # the formats tutorials/jupytext.toml pairs
FAST_ENV = "MINIFCN_TUTORIAL_FAST"  # "1" shrinks the training budgets (the notebooks read it)
MAX_BYTES = 500_000  # a committed notebook with its outputs must stay under this
CELL_TIMEOUT = 600  # seconds per cell; generous, a full notebook runs in well under 2 minutes
EXECUTE_HOW = "see 'Re-executing a notebook' in tutorials/README.md"


def load(name):
    return json.loads((TUTORIALS / f"{name}.ipynb").read_text(encoding="utf-8"))


def source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def sync_command(name):
    return f"jupytext --sync tutorials/{name}.py"


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


def test_every_notebook_has_its_py_and_every_py_its_notebook():
    scripts = sorted(p.stem for p in TUTORIALS.glob("*.py"))
    no_py = [f"{n}.ipynb" for n in NOTEBOOKS if n not in scripts]
    assert not no_py, (f"{no_py} have no paired .py source: run jupytext --to py:percent "
                       "tutorials/NN_name.ipynb (jupytext.toml then keeps them paired)")
    no_ipynb = [f"{n}.py" for n in scripts if n not in NOTEBOOKS]
    assert not no_ipynb, (f"{no_ipynb} in tutorials/ have no paired .ipynb (every .py there is "
                          "a notebook's source): run jupytext --sync tutorials/NN_name.py")


def test_jupytext_toml_pairs_the_notebooks_with_their_py():
    toml = TUTORIALS / "jupytext.toml"
    assert toml.is_file(), \
        "tutorials/jupytext.toml is missing: it pairs NN_name.ipynb with NN_name.py"
    formats = re.findall(r'^\s*formats\s*=\s*"([^"]*)"', toml.read_text(encoding="utf-8"), re.M)
    assert [f.replace(" ", "") for f in formats] == [PAIRING], \
        f'tutorials/jupytext.toml must say formats = "{PAIRING}", has {formats}'
    try:
        from jupytext.config import find_jupytext_configuration_file, load_jupytext_config
        from jupytext.paired_paths import paired_paths
    except ImportError:
        return  # the text above is checked; jupytext's own reading of it needs jupytext
    assert Path(find_jupytext_configuration_file(str(TUTORIALS))) == toml
    for name in NOTEBOOKS:
        ipynb = TUTORIALS / f"{name}.ipynb"
        formats = load_jupytext_config(str(ipynb)).default_formats(str(ipynb))
        paths = [Path(p) for p, _ in paired_paths(str(ipynb), "ipynb", formats)]
        assert paths == [ipynb, TUTORIALS / f"{name}.py"], f"{name}: jupytext pairs {paths}"


# ---------------------------------------------------------------- each pair, .py and .ipynb


def describe_difference(name, py_cells, nb_cells):
    """The first cell where the two lists differ, as text for a failure message."""
    i = next((k for k, (a, b) in enumerate(zip(py_cells, nb_cells)) if a != b),
             min(len(py_cells), len(nb_cells)))
    head = (f"tutorials/{name}.py and tutorials/{name}.ipynb disagree, first at cell {i + 1} "
            f"(the .py has {len(py_cells)} cells, the .ipynb {len(nb_cells)})")
    if i >= len(py_cells) or i >= len(nb_cells):
        where, (kind, text) = ((f"{name}.ipynb", nb_cells[i]) if i >= len(py_cells)
                               else (f"{name}.py", py_cells[i]))
        lines = text.splitlines()
        body = f"only {where} has it, a {kind} cell:\n" + "\n".join(
            "    " + line for line in lines[:8]) + ("\n    ..." if len(lines) > 8 else "")
    else:
        (py_kind, py_text), (nb_kind, nb_text) = py_cells[i], nb_cells[i]
        kinds = (f"a {py_kind} cell in the .py, a {nb_kind} cell in the .ipynb"
                 if py_kind != nb_kind else f"a {py_kind} cell")
        diff = list(difflib.unified_diff(nb_text.splitlines(), py_text.splitlines(),
                                         f"{name}.ipynb", f"{name}.py", n=1, lineterm=""))
        body = kinds + (":\n" + "\n".join("    " + line for line in diff[:24]) if diff
                        else ", the same source in both")
        if len(diff) > 24:
            body += f"\n    ... ({len(diff) - 24} more diff lines)"
    return (f"{head}; {body}\nBring them back in step with: {sync_command(name)}\n"
            "(it copies the cells of whichever file was modified last into the other, and keeps "
            "the notebook's outputs)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_py_and_ipynb_hold_the_same_cells(name):
    jupytext = pytest.importorskip(
        "jupytext", reason='jupytext is not installed (pip install -e ".[tutorials]"), '
        "so the .py sources are not compared with the notebooks")
    py = TUTORIALS / f"{name}.py"
    if not py.is_file():
        pytest.fail(f"{name}.ipynb has no paired {py.name}", pytrace=False)
    notebook = jupytext.read(str(TUTORIALS / f"{name}.ipynb"))
    nb_cells = [(c.cell_type, c.source) for c in notebook.cells]
    py_cells = [(c.cell_type, c.source) for c in jupytext.read(str(py), fmt="py:percent").cells]
    if py_cells != nb_cells:
        pytest.fail(describe_difference(name, py_cells, nb_cells), pytrace=False)


# ---------------------------------------------------------------- each notebook, read as JSON


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ends_with_an_exercise(name):
    last = load(name)["cells"][-1]
    assert last["cell_type"] == "markdown", f"{name}: the last cell must be markdown"
    assert re.search(r"^#+\s*Exercise", source(last), re.MULTILINE), \
        f"{name}: the last cell must be an 'Exercise' section"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_has_no_empty_cells(name):
    empty = [i + 1 for i, c in enumerate(load(name)["cells"]) if not source(c).strip()]
    assert not empty, f"{name}: empty cells at positions {empty} (counting from 1)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_with_outputs_and_small(name):
    nb = load(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), \
        f"{name}: committed without outputs; run it and save them ({EXECUTE_HOW})"
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
    monkeypatch.setenv(FAST_ENV, "1")
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
