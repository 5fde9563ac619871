"""The computation graph behind a Tensor, as Graphviz DOT text (``minifcn.viz.graph``).

Drawn as DeZero's ``plot_dot_graph`` draws it: an ellipse per Tensor, a box per Function (its
class name: Conv2d, MaxPool2d, Add, ...), edges input -> function -> output. Call it before
``backward``: backward frees the graph as it walks it (unless ``retain_graph=True``).
Needs no matplotlib and no Graphviz, except to turn the text into a picture.
"""
import os
import shutil
import subprocess

from .autograd import Tensor

_FORMATS = (".dot", ".svg", ".png", ".pdf")
_GET_DOT = ("install Graphviz (apt install graphviz, brew install graphviz or conda install "
            "graphviz), or write a .dot file and paste its text into an online viewer such as "
            "https://dreampuf.github.io/GraphvizOnline")
# DeZero's colours: tensors orange, functions light blue; here also parameters (the leaves
# backward fills .grad of) gold, and constants (inputs that need no gradient) dashed
_TENSOR = 'shape=ellipse, style=filled, fillcolor=orange'
_PARAM = 'shape=ellipse, style=filled, fillcolor=gold, penwidth=2'
_CONST = 'shape=ellipse, style=dashed'
_FUNCTION = 'shape=box, style=filled, fillcolor=lightblue'


def graph(tensor, path=None, verbose=False, names=None, overwrite=False):
    """The graph that ``tensor.backward()`` would walk, as DOT text (returned).

    tensor: any Tensor (a leaf gives a graph of one node).
    path: also write it there: ``.dot`` writes the text; ``.svg``, ``.png`` or ``.pdf`` runs
    Graphviz's ``dot`` program on it (RuntimeError, before anything is written, if ``dot`` is
    not on PATH). Never over an existing file unless ``overwrite``; written atomically.
    verbose: tensor labels add the device and whether ``.grad`` is set.
    names: a mapping name -> Tensor (``dict(model.named_parameters())``) to label tensors by;
    a tensor with a ``name`` attribute is labelled by it too.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: expected a Tensor, got {type(tensor).__name__}")
    if path is not None:
        _check_path(path, overwrite)
    text = _dot(tensor, verbose, {id(t): n for n, t in (names or {}).items()})
    if path is not None:
        _write(text, path, overwrite)
    return text


def _dot(root, verbose, names):
    node = {}  # id(object) -> node name, in the order met (deterministic text)
    lines = ["digraph minifcn {", '  graph [rankdir=TB]; node [fontname="Helvetica"];']

    def name_of(obj):
        if id(obj) not in node:
            node[id(obj)] = f"n{len(node)}"
        return node[id(obj)]

    # iterative walk over every tensor reachable through _fn.inputs: FCN graphs are hundreds of
    # ops deep, and a tensor used twice (a skip) is met twice but drawn once
    stack, seen = [root], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        lines.append(f"  {name_of(t)} [label={_quote(_tensor_label(t, verbose, names))}, "
                     f"{_tensor_style(t)}];")
        fn = t._fn
        if fn is None:
            continue
        f = name_of(fn)
        lines.append(f"  {f} [label={_quote(type(fn).__name__)}, {_FUNCTION}];")
        lines.append(f"  {f} -> {name_of(t)};")
        for x in fn.inputs:
            lines.append(f"  {name_of(x)} -> {f};")
            stack.append(x)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _tensor_label(t, verbose, names):
    name = names.get(id(t)) or getattr(t, "name", None)
    label = f"{tuple(t.shape)} {t.dtype}"
    if verbose:
        label += f"\n{t.device}" + (", grad set" if t.grad is not None else "")
    return f"{name}\n{label}" if name else label


def _tensor_style(t):
    if t._fn is not None:
        return _TENSOR
    return _PARAM if t.requires_grad else _CONST


def _quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _check_path(path, overwrite):
    from .io.atomic import check_output  # io is a higher layer than the graph needs

    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"graph: path {os.fspath(path)} should end in one of "
                         f"{', '.join(_FORMATS)}")
    check_output(path, "graph: path", overwrite)
    if ext != ".dot" and shutil.which("dot") is None:
        raise RuntimeError(f"graph: writing {os.fspath(path)} needs Graphviz's dot program, "
                           f"which is not on PATH: {_GET_DOT}")


def _write(text, path, overwrite):
    from .io.atomic import atomic_path, check_output

    check_output(path, "graph: path", overwrite, create=True)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    with atomic_path(path) as tmp:
        if ext == ".dot":
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            return
        run = subprocess.run(["dot", f"-T{ext[1:]}", "-o", tmp], input=text, text=True,
                             capture_output=True)
        if run.returncode != 0:
            first = (run.stderr.strip().splitlines() or ["no message"])[0]
            raise RuntimeError(f"graph: dot failed on {os.fspath(path)} ({first})")
