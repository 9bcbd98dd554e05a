"""Graph records: immutable nodes, the iterative topological sort, text printing (one equation
per line) and networkx export with stable ids."""

from __future__ import annotations

import sys

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.graph import Node, toposort


def _small_graph():
    x = ug.tensor(np.linspace(-1.0, 1.0, 12).reshape(4, 3), name="x", requires_grad=True)
    W = ug.tensor(np.full((3, 5), 0.1), name="W", requires_grad=True)
    h = ug.tanh(x @ W, name="h")
    loss = h.sum(axis=1).mean()
    loss.name = "loss"
    return x, W, h, loss


EXPECTED = """\
x = leaf()  # shape (4, 3)
W = leaf()  # shape (3, 5)
n2 = matmul(x, W)  # shape (4, 5)
h = tanh(n2)  # shape (4, 5)
n4 = sum(h, axis=1)  # shape (4,)
loss = mean(n4)  # shape ()"""


def test_graph_prints_one_equation_per_line():
    *_, loss = _small_graph()
    assert str(ug.Graph(loss)) == EXPECTED


def test_printing_is_the_same_run_to_run():
    assert str(ug.Graph(_small_graph()[-1])) == str(ug.Graph(_small_graph()[-1]))


def test_unnamed_nodes_get_positional_ids_and_duplicate_names_are_disambiguated():
    a = ug.tensor(1.0, name="a")
    b = ug.tensor(2.0, name="a")
    text = str(ug.Graph(a + b))
    assert text.splitlines() == [
        "a#n0 = leaf()  # shape ()",
        "a#n1 = leaf()  # shape ()",
        "n2 = add(a#n0, a#n1)  # shape ()",
    ]


def test_renaming_a_tensor_after_use_shows_in_every_graph_that_reads_it():
    x = ug.tensor([1.0, 2.0], name="x")
    h = x * 2.0
    y = ug.tanh(h)
    h.name = "h"  # named after y was computed from it
    assert "n3 = tanh(h)  # shape (2,)" in str(ug.Graph(y)).splitlines()
    G = ug.to_networkx(y)
    assert G.nodes["n2"]["name"] == "h" and list(G.successors("n2")) == ["n3"]


def test_to_networkx_attributes_and_stable_ids():
    x, W, h, loss = _small_graph()
    loss.backward()
    G = ug.to_networkx(loss)
    assert isinstance(G, nx.DiGraph)
    assert list(G.nodes) == [f"n{i}" for i in range(6)]
    assert [G.nodes[n]["op"] for n in G.nodes] == ["leaf", "leaf", "matmul", "tanh", "sum",
                                                   "mean"]
    assert [G.nodes[n]["name"] for n in G.nodes] == ["x", "W", "n2", "h", "n4", "loss"]
    assert G.nodes["n3"]["shape"] == (4, 5)
    np.testing.assert_array_equal(G.nodes["n3"]["value"], h.data)
    np.testing.assert_array_equal(G.nodes["n3"]["grad"], h.grad)
    np.testing.assert_array_equal(G.nodes["n1"]["grad"], W.grad)
    assert G.nodes["n4"]["attrs"] == {"axis": 1, "keepdims": False}
    assert sorted((u, v, d["index"]) for u, v, d in G.edges(data=True)) == [
        ("n0", "n2", 0), ("n1", "n2", 1), ("n2", "n3", 0), ("n3", "n4", 0), ("n4", "n5", 0)
    ]
    # a second, identical run gives the same ids and attributes
    G2 = ug.to_networkx(_small_graph()[-1])
    assert list(G2.nodes) == list(G.nodes) and list(G2.edges) == list(G.edges)
    assert all(G2.nodes[n]["op"] == G.nodes[n]["op"] for n in G.nodes)


def test_to_networkx_before_backward_has_values_but_no_grads():
    *_, loss = _small_graph()
    G = ug.to_networkx(loss)
    assert all("value" in d and "grad" not in d for _, d in G.nodes(data=True))


def test_from_networkx_round_trip():
    *_, loss = _small_graph()
    assert str(ug.from_networkx(ug.to_networkx(loss))) == EXPECTED


def test_node_is_immutable_and_replace_copies():
    a = Node("leaf", name="a", shape=(2,))
    with pytest.raises(AttributeError, match=r"immutable; use node.replace\(op=...\)"):
        a.op = "tanh"
    b = a.replace(name="b")
    assert (a.name, b.name, b.op, b.shape) == ("a", "b", "leaf", (2,))


def test_toposort_of_a_long_chain_is_iterative():
    n = 300_000
    assert n > 100 * sys.getrecursionlimit()
    node = first = Node("leaf", name="x")
    for _ in range(n):
        node = Node("neg", (node,))
    order = toposort([node])
    assert len(order) == n + 1 and order[0] is first and order[-1] is node


def test_toposort_reports_a_cycle():
    class Obj:
        def __init__(self, name):
            self.name, self.parents = name, []

        def label(self):
            return self.name

    a, b, c = Obj("a"), Obj("b"), Obj("c")
    a.parents, b.parents, c.parents = [b], [c], [a]
    with pytest.raises(ug.CycleError, match="a -> b -> c -> a") as info:
        toposort([a], lambda o: o.parents)
    assert [o.name for o in info.value.cycle] == ["a", "b", "c"]


def test_toposort_visits_shared_nodes_once_in_order():
    x = Node("leaf", name="x")
    h = Node("tanh", (x,))
    out = Node("add", (h, Node("mul", (h, x))))
    order = toposort([out])
    assert len(order) == 4 and len({id(n) for n in order}) == 4
    pos = {id(n): i for i, n in enumerate(order)}
    assert all(pos[id(i)] < pos[id(n)] for n in order for i in n.inputs)


# -- names: checked where they enter, then carried as written ----------------------------------
def _every_door(name):
    """Give ``name`` through every place a name enters; return what each raised (or None)."""
    x = ug.tensor([1.0, 2.0])
    doors = {
        "tensor": lambda: ug.tensor(1.0, name=name),
        "op": lambda: ug.tanh(x, name=name),
        "apply": lambda: ug.sum(x, name=name),
        "where": lambda: ug.where(x > 1.0, x, x, name=name),
        "rename": lambda: setattr(ug.tanh(x), "name", name),
        "cell": lambda: ug.Cell(name),
        "nn cell": lambda: ug.nn.RNNCell(2, 2, name=name),
        "input": lambda: ug.Cell("c").input(name, (2,)),
        "state": lambda: ug.Cell("c").state(name, (2,)),
        "param": lambda: ug.Cell("c").param(name, np.zeros(2)),
        "output": lambda: _cell_with_output(name),
    }
    out = {}
    for door, call in doors.items():
        try:
            call()
            out[door] = None
        except ug.InvalidNameError as exc:
            out[door] = exc
    return out


def _cell_with_output(name):
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    cell.output(name, ug.tanh(x))


def test_a_name_that_is_not_a_string_is_refused_where_it_enters():
    for bad in (123, 0, 1.5, b"h", ["h"], object()):
        raised = _every_door(bad)
        for door, exc in raised.items():
            assert exc is not None, (door, bad)
            assert f"must be a str, got {type(bad).__name__}" in str(exc), door
            assert isinstance(exc, TypeError) and isinstance(exc, ug.UnrollGraphError)
    # None is "no name" where a name is optional
    assert ug.tensor(1.0, name=None).name is None
    with pytest.raises(ug.InvalidNameError, match="cell name must be a str, got None"):
        ug.Cell(None)


def test_empty_names_and_characters_outputs_cannot_carry_are_refused():
    for bad, what in (("", "empty string"), ("a\ud800b", "lone surrogate, U+D800"),
                      ("tab\there", "control character, U+0009"),
                      ("nul\x00", "control character, U+0000"),
                      ("esc\x1b[31m", "control character, U+001B"),
                      ("\ufffe", "non-character, U+FFFE")):
        for door, exc in _every_door(bad).items():
            assert exc is not None and what in str(exc), (door, bad)
    # the name is never changed behind the user's back: refused, or kept as written
    for ok in ("h", "a\nb", 'q"<b>&amp;\\N', "é ∑ 😀", "x" * 10_000):
        assert all(exc is None for exc in _every_door(ok).values()), ok
        assert ug.tensor(1.0, name=ok).name == ok


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=12))
def test_any_text_is_either_refused_or_printed_and_exported_as_written(name):
    from unrollgraph.graph import _BAD_NAME_CHARS

    valid = bool(name) and _BAD_NAME_CHARS.search(name) is None
    if not valid:
        with pytest.raises(ug.InvalidNameError):
            ug.tensor(1.0, name=name)
        return
    x = ug.tensor(2.0, name=name)
    y = ug.tanh(x, name=name + "!")
    text = str(ug.Graph(y))
    assert text == f"{name} = leaf()  # shape ()\n{name}! = tanh({name})  # shape ()"
    G = ug.to_networkx(y)
    assert G.nodes["n0"]["label"] == name and G.nodes["n1"]["name"] == name + "!"
    assert ug.from_networkx(G).nodes[0].name == name


def test_a_user_name_that_reads_as_an_id_keeps_it_and_the_generated_name_gives_way():
    x = ug.tensor(1.0, name="n1")
    y = x * 2.0
    assert str(ug.Graph(y)).splitlines() == [
        "n1 = leaf()  # shape ()",
        "n1′ = const()  # shape ()",
        "n2 = mul(n1, n1′)  # shape ()",
    ]
    assert str(ug.from_networkx(ug.to_networkx(y))) == str(ug.Graph(y))


_NAMES = st.sampled_from(["n0", "n1", "n2", "n3", "n2′", "n1@0", "W", "W#n1", "loss", "😀y"])


@settings(max_examples=25, deadline=None)
@given(st.lists(_NAMES, min_size=1, max_size=3, unique=True), _NAMES, st.booleans())
def test_user_names_are_printed_as_written_in_every_output(params, out, name_loss):
    """A cell's parameters, its output and the loss carry user names, some reading as
    generated ids (``n2``): each name used once is printed exactly as written in print(cell),
    the graph's text, networkx (node names and output names), and only generated names get
    a suffix; no two nodes print alike."""
    if out in params or out in ("x", "h"):
        out = out + "_out"  # a cell refuses one name for two of its items
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    ps = [cell.param(nm, np.eye(2) * 0.1 * (k + 1)) for k, nm in enumerate(params)]
    v = x
    for p in ps:
        v = v @ p.T
    nxt = ug.tanh(v + h)
    cell.feedback(h, nxt)
    cell.output(out, nxt)
    user = {id(p.node): nm for p, nm in zip(ps, params)}
    user.update({id(x.node): "x", id(h.node): "h"})
    counts = {nm: list(user.values()).count(nm) for nm in user.values()}
    g = cell.graph()
    names = [g.display_name(n) for n in g.nodes]
    assert len(set(names)) == len(names), names
    for n in g.nodes:
        if id(n) in user and counts[user[id(n)]] == 1:
            assert g.display_name(n) == user[id(n)]
    text = str(cell)
    G = ug.to_networkx(cell)
    assert sorted(d["name"] for _, d in G.nodes(data=True)) == sorted(names)
    assert G.graph["output_names"] == [out, "h"]
    assert f"{out} = " in text
    net = ug.unroll(cell, steps=2)
    o, _ = net(np.ones((2, 1, 2)))
    loss = (o * o).sum()
    if name_loss:
        loss.name = out
    loss.backward()
    G = ug.to_networkx(net, loss=loss)
    shown = [d["name"] for _, d in G.nodes(data=True)]
    assert len(set(shown)) == len(shown), shown
    assert G.graph["output_names"][:2] == [f"{out}@0", f"{out}@1"]
    if name_loss:
        assert G.graph["output_names"][-1] in (out, f"{out}#{G.graph['outputs'][-1]}")
        lid = G.graph["outputs"][-1]
        user_shown = {d["name"] for k, d in G.nodes(data=True) if d["label"] and k != lid}
        if out not in user_shown:  # only another user name can make it give way
            assert G.nodes[lid]["name"] == out
