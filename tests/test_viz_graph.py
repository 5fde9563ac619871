"""Tests of minifcn.viz.graph: the DOT text is parsed here, independently of the code that
writes it, and compared with graphs whose nodes and edges are known from the expression."""
import re
import shutil
from collections import Counter

import numpy as np
import pytest

import minifcn
import minifcn.functional as F
from minifcn import Tensor, models, nn
from minifcn.viz import graph

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)", (.*)\];$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+);$")


def parse(text):
    """({node: (label lines, attributes)}, [(tail, head)]) from DOT text; every line inside the
    braces must be a node, an edge or a graph/node default."""
    lines = text.strip().splitlines()
    assert lines[0].startswith("digraph") and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            nodes[m[1]] = (m[2].split("\\n"), m[3])
        elif m := EDGE.match(line):
            edges.append((m[1], m[2]))
        else:
            assert line.strip().startswith(("graph [", "node [")), line
    assert {n for e in edges for n in e} <= set(nodes)
    return nodes, edges


def functions(nodes):
    return {n: lab[0] for n, (lab, attrs) in nodes.items() if "shape=box" in attrs}


def acyclic(nodes, edges):
    indegree = Counter(h for _, h in edges)
    ready = [n for n in nodes if indegree[n] == 0]
    done = 0
    while ready:
        n = ready.pop()
        done += 1
        for t, h in edges:
            if t == n:
                indegree[h] -= 1
                if indegree[h] == 0:
                    ready.append(h)
    return done == len(nodes)


def small():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 3, 8, 8)))
    w = nn.Parameter(rng.standard_normal((4, 3, 3, 3)))
    b = nn.Parameter(rng.standard_normal((4, 1, 1)))
    return x, w, b, F.relu(F.conv2d(x, w) + b).sum()


def test_small_expression_has_exactly_its_functions_and_edges():
    x, w, b, y = small()
    nodes, edges = parse(graph(y, names={"w": w}))
    fns = functions(nodes)
    assert sorted(fns.values()) == ["Add", "Conv2d", "ReLU", "Sum"]
    tensors = {n: lab for n, (lab, _) in nodes.items() if n not in fns}
    assert len(tensors) == 7  # x, w, b, conv, conv + b, relu, sum
    assert len(edges) == len(set(edges)) == 10  # 6 inputs into functions, 4 outputs
    by_name = {v: k for k, v in fns.items()}
    ins = {f: sorted(" ".join(tensors[t]) for t, h in edges if h == by_name[f]) for f in fns.values()}
    outs = {f: [h for t, h in edges if t == by_name[f]] for f in fns.values()}
    assert all(len(o) == 1 for o in outs.values())
    # shapes worked out by hand: a 3x3 valid convolution takes 8x8 to 6x6
    assert ins["Conv2d"] == ["(1, 3, 8, 8) float64", "w (4, 3, 3, 3) float64"]
    assert ins["Add"] == ["(1, 4, 6, 6) float64", "(4, 1, 1) float64"]
    assert ins["ReLU"] == ["(1, 4, 6, 6) float64"]
    assert tensors[outs["Sum"][0]] == ["() float64"]
    # the chain: each function's output is the next one's input
    for a, b_ in [("Conv2d", "Add"), ("Add", "ReLU"), ("ReLU", "Sum")]:
        assert (outs[a][0], by_name[b_]) in edges
    # leaf parameters are drawn apart from the constant input and from computed tensors
    style = {" ".join(lab): attrs for lab, attrs in nodes.values()}
    assert style["w (4, 3, 3, 3) float64"] == style["(4, 1, 1) float64"]
    assert len({style["w (4, 3, 3, 3) float64"], style["(1, 3, 8, 8) float64"],
                style["() float64"]}) == 3


def test_verbose_adds_the_device_and_a_name_attribute_labels_a_tensor():
    x, w, b, y = small()
    b.name = "bias"
    nodes, _ = parse(graph(y, verbose=True))
    labels = [lab for lab, attrs in nodes.values() if "shape=box" not in attrs]
    assert all(lab[-1].startswith("cpu") for lab in labels)
    assert ["bias", "(4, 1, 1) float64", "cpu"] in labels


def test_a_leaf_is_one_node():
    nodes, edges = parse(graph(Tensor(np.zeros((2, 5), np.float32))))
    assert [lab for lab, _ in nodes.values()] == [["(2, 5) float32"]] and edges == []


def test_a_tensor_used_twice_is_drawn_once_with_both_edges():
    a = nn.Parameter(np.ones(3))
    nodes, edges = parse(graph(a * a))
    assert len(nodes) == 3 and len(edges) == 3
    (mul,) = functions(nodes)
    assert Counter(h for _, h in edges)[mul] == 2


def test_a_deep_chain_needs_no_recursion():
    t = nn.Parameter(np.ones(1))
    for _ in range(5000):
        t = t + 1.0
    nodes, edges = parse(graph(t))
    assert Counter(functions(nodes).values()) == {"Add": 5000}
    assert len(edges) == 3 * 5000  # t and the constant in, the sum out


def test_fcn8s_graph_has_its_layers_and_no_cycle():
    minifcn.manual_seed(0)
    model = models.fcn8s(n_class=3, width=0.0625, pad1=100)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    y = model(x)
    params = dict(model.named_parameters())
    nodes, edges = parse(graph(y, names=params))
    fns = Counter(functions(nodes).values())
    # counted from the model's modules, not from the graph code
    mods = Counter(type(m).__name__ for _, m in model.named_modules())
    assert fns["Conv2d"] == mods["Conv2d"] > 10
    assert fns["MaxPool2d"] == mods["MaxPool2d"] == 5
    assert fns["ConvTranspose2d"] == mods["ConvTranspose2d"] == 3
    assert {"Add", "Crop", "ReLU"} <= set(fns)
    assert acyclic(nodes, edges)
    named = {lab[0] for lab, _ in nodes.values() if len(lab) == 2}
    assert named == set(params)
    (out,) = [n for n in nodes if not any(t == n for t, _ in edges)]
    assert nodes[out][0] == [f"{tuple(y.shape)} float32"]


def test_after_backward_the_graph_is_gone():
    *_, y = small()
    y.backward()
    assert len(parse(graph(y))[0]) == 1


def test_dot_file_written_and_never_over_an_existing_one(tmp_path):
    *_, y = small()
    path = tmp_path / "g.dot"
    text = graph(y, path)
    assert path.read_text() == text
    path.write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        graph(y, path)
    assert path.read_text() == "mine"
    assert graph(y, path, overwrite=True) == path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["g.dot"]  # no temporary file left


def test_svg_without_dot_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    *_, y = small()
    with pytest.raises(RuntimeError) as e:
        graph(y, tmp_path / "g.svg")
    msg = str(e.value)
    assert "\n" not in msg and "dot" in msg and ".dot" in msg
    for how in ("apt install graphviz", "brew install graphviz", "conda install graphviz"):
        assert how in msg
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\.dot"):
        graph(Tensor(np.zeros(1)), "g.txt")
    with pytest.raises(TypeError, match="Tensor"):
        graph(np.zeros(1))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_with_dot(tmp_path):
    *_, y = small()
    graph(y, tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "Conv2d" in svg
