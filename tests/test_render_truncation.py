"""What a truncated net's diagram says about truncation, in every view: the value flows
forward along every edge, no gradient comes back along an edge out of a greyed node
(dotted), and the edges where truncation stops a gradient that reaches them (from a greyed
node into one that is not: the last cut state into the first kept step, a cut step into its
output) carry a bar at the greyed end, which the legend explains."""

import re

import numpy as np
import pytest

import unrollgraph as ug

_CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
_EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[(.*)\]\s*$')
_NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[(.*)\]\s*$')


def _drawing(name, detail, T=5, k=2):
    net = ug.unroll(_CELLS[name](2, 2, seed=0), steps=T, truncate=k)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    return net, ug.to_dot(net, loss=loss, detail=detail, values=False)


def _parse(text):
    grey, edges = set(), []
    for line in text.splitlines():
        m = _EDGE.match(line)
        if m:
            a, b, attrs = m.groups()
            if "style=invis" not in attrs:
                back = 'dir="back"' in attrs or ('dir="both"' in attrs
                                                 and 'arrowhead="tee"' in attrs)
                edges.append((b, a, attrs) if back else (a, b, attrs))
            continue
        m = _NODE.match(line)
        if m and "dashed" in m.group(2) and 'fillcolor="#eaeef2"' in m.group(2):
            grey.add(m.group(1))
    return grey, edges


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("detail", ["textbook", "ops", "steps"])
def test_truncation_is_drawn_as_what_it_does(name, detail):
    net, text = _drawing(name, detail)
    grey, edges = _parse(text)
    assert grey
    out = {}  # an ops view's bend: the ops it leads to
    for a, b, _ in edges:
        out.setdefault(a, []).append(b)

    def greyed(node):  # (a bend is as greyed as the ops it leads to)
        return node in grey or ("_out_row" in node and all(greyed(n) for n in out[node]))

    def source(node):  # (a bend carries its state's value)
        return node.split("_out_row")[0]

    stops = []
    for a, b, attrs in edges:
        if not greyed(source(a)):
            assert "tee" not in attrs, f"{a} -> {b}: a bar on an edge with a gradient"
            continue
        assert "dotted" in attrs, f"{a} -> {b}: solid out of a greyed node"
        barred = "tee" in attrs
        if "_out_row" in a:  # (the rest of a state's edge: the bar is on its first part)
            assert not barred
            continue
        assert barred == (not greyed(b)), f"{a} -> {b}: bar {barred}"
        stops.append((a, b))
    # the last cut state's edge into the first kept step is one of them
    g = net.graph
    first_kept = net.steps - net.truncate
    for ns in net.state_nodes.values():
        src = g.id(ns[first_kept - 1])
        if detail != "steps":
            assert any(a == src and (b.startswith(src + "_out_row") or not greyed(b))
                       for a, b in stops), (src, stops)
    assert "stops the gradient" in text
    assert "the value flows forward" in text


def test_an_untruncated_net_draws_no_bar():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=4)
    outs, _ = net(np.ones((4, 1, 2)))
    (outs * outs).sum().backward()
    text = ug.to_dot(net, detail="textbook")
    assert "tee" not in text and "stops the gradient" not in text
