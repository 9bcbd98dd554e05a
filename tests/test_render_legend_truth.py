"""Every legend tells the truth about the picture it stands in: each row naming a shape names
one drawn in the colour the row is written in, and the "no fill" row lists exactly the kinds
of node drawn unfilled (no gradient computed, the loss uncoloured), read back from the DOT."""

import re

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.render import _THEMES, _shape_words
from unrollgraph.view import view

_NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\]\s*$', re.M)
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|<.*?>(?= \w+=|$)|[^ \]]+)')
_ROW = re.compile(r'<tr><td align="right"><font point-size="9" color="([^"]+)"><b>(.*?)</b>'
                  r'</font></td><td align="left"><font point-size="9">(.*?)</font></td>')
_NOFILL = re.compile(r'<b>no fill</b></font></td><td align="left"><font point-size="9">'
                     r'(.*?)</font></td>')


def _nodes(text):
    out = {}
    for m in _NODE.finditer(text):
        if m.group(1) in ("legend", "graph", "node", "edge"):
            continue
        out[m.group(1)] = {k: v.strip('"') for k, v in _ATTR.findall(m.group(2))}
    return out


def _run(T=4, truncate=None, state=None, cell=None, lengths=None):
    cell = cell or ug.nn.RNNCell(2, 2, seed=0)
    net = ug.unroll(cell, steps=T, truncate=truncate)
    xs = np.random.default_rng(0).standard_normal((T, 2 if lengths else 1, 2))
    kw = {"lengths": lengths} if lengths else {}
    outs, _ = net(xs, state=state, **kw)
    loss = ug.mse_loss(outs, np.zeros(outs.shape))
    loss.name = "L"
    loss.backward()
    return net, loss


def _category(nid, node, v):
    """The legend's words for a node drawn unfilled, from what it is in the graph."""
    if nid.startswith("fold_"):
        return "the folded cell"
    if nid == "loss":
        return "loss"
    if nid.startswith("loss_"):
        return "part"
    if nid == "elided" or nid.startswith("dots_"):
        return "steps"
    if node is None:
        return None
    if "_out" in nid:
        return "outputs"
    op = node.op
    if op == "init":
        return "initial states unless requires_grad"
    if getattr(node, "role", None) == "mask":
        return "padding masks"
    if op == "state":
        return "states" if v.kind == "cell" else "initial states unless requires_grad"
    if v.kind == "cell" and node in [a for a, _ in v.feedback]:
        return "states"
    return {"input": "inputs", "leaf": "leaf tensors", "const": "constants",
            "param": "parameters with requires_grad off",
            "unrolled": "calls of an unrolled net"}.get(op, "ops")


def _unfilled_truth(obj, text, theme="light"):
    """The categories of the nodes drawn unfilled that have no gradient (a zero gradient is
    drawn in the zero colour, which may look the same: it is the bar's "0")."""
    v = view(obj)
    by_id = {}
    for n in v.graph.nodes:
        by_id[v.graph.id(n)] = n
    nofill = _THEMES[theme]["nofill"]
    found = set()
    for nid, a in _nodes(text).items():
        if a.get("fillcolor") != nofill or "dashed" in a.get("style", ""):
            continue
        m = re.match(r"n\d+", nid)
        n = by_id[m.group(0)] if m else None
        if n is not None and nid == m.group(0):
            g = v.grad(n)
            if g is not None and np.all(np.isfinite(g)):
                continue  # a gradient of zero, drawn in the zero colour
        cat = _category(nid, n, v)
        if cat is not None:
            found.add(cat)
    return found


def _claimed(text):
    m = _NOFILL.search(text)
    if m is None:
        return set()
    words = m.group(1).replace("&#39;", "'").replace("&#59;", ";")
    words = words.replace('<br align="left"/>', " ").strip()
    out = set()
    got = re.search(r"no gradient computed \((.*?)\)(;|$)", words)
    if got:
        out |= set(got.group(1).split(", "))
    if "not coloured: the loss and its parts" in words:
        out |= {"loss", "part"}
    elif "not coloured: the loss's parts" in words:
        out.add("part")
    elif "not coloured: the loss" in words:
        out.add("loss")
    return out


def _cases():
    net, loss = _run()
    yield "textbook", net, {"loss": loss, "detail": "textbook"}
    yield "textbook folded", net, {"loss": loss, "detail": "textbook", "folded": True}
    yield "ops", net, {"loss": loss, "detail": "ops"}
    yield "steps", net, {"loss": loss, "detail": "steps"}
    yield "no loss", net, {"detail": "textbook"}
    h0 = ug.tensor(np.zeros((1, 2)), requires_grad=True)
    net2, loss2 = _run(state={"h": h0})
    yield "h0 grad", net2, {"loss": loss2, "detail": "textbook", "folded": True}
    net3, loss3 = _run(T=30)
    yield "elided textbook", net3, {"loss": loss3, "detail": "textbook"}
    yield "elided", net3, {"loss": loss3, "detail": "elide"}
    net4, loss4 = _run(T=8, truncate=3)
    yield "truncated", net4, {"loss": loss4, "detail": "textbook", "folded": True}
    yield "truncated steps", net4, {"loss": loss4, "detail": "steps"}
    net5, loss5 = _run(cell=ug.nn.LSTMCell(2, 2, seed=0))
    yield "lstm", net5, {"loss": loss5, "detail": "textbook", "folded": True}
    yield "lstm ops", net5, {"loss": loss5, "detail": "ops"}
    yield "cell", net.cell, {}
    yield "tensor", loss, {}
    net6, loss6 = _run(lengths=[4, 2])
    yield "masked", net6, {"loss": loss6, "detail": "textbook"}
    yield "masked ops", net6, {"loss": loss6, "detail": "ops"}
    yield "dark", net, {"loss": loss, "detail": "textbook", "folded": True, "theme": "dark"}


_CASES = list(_cases())


@pytest.mark.parametrize("case", range(len(_CASES)), ids=[c[0] for c in _CASES])
def test_the_no_fill_row_lists_exactly_the_kinds_drawn_unfilled(case):
    _, obj, opts = _CASES[case]
    text = ug.to_dot(obj, **opts)
    truth = _unfilled_truth(obj, text, opts.get("theme", "light"))
    assert _claimed(text) == truth


def test_the_rnn_textbook_legend_names_the_folded_cell_not_every_output():
    net, loss = _run()
    text = ug.to_dot(net, loss=loss, detail="textbook", folded=True)
    row = _NOFILL.search(text).group(1)
    assert "outputs" not in row  # every y_t is filled: only the folded cell's y is not
    assert "the folded cell" in row and "not coloured: the loss and its parts" in row


def _alternatives(words):
    """The drawn (shape, double, thick) each alternative of a legend row's shape words names."""
    words = re.sub(r"^small ", "", words)
    words = re.sub(r" titled .*$", "", words)
    return words.split(" or ")


def _drawn_words(a):
    style = a.get("style", "")
    if a.get("peripheries") == "2":
        style += ",double"
    plain = _shape_words(a.get("shape", "ellipse"), style)
    return {plain, "thick " + plain} if float(a.get("penwidth", "1")) >= 2 else {plain}


@pytest.mark.parametrize("case", range(len(_CASES)), ids=[c[0] for c in _CASES])
def test_every_shape_row_names_a_shape_drawn_in_its_colour(case):
    _, obj, opts = _CASES[case]
    text = ug.to_dot(obj, **opts)
    nodes = _nodes(text)
    rows = _ROW.findall(text)
    assert rows
    for colour, words, _what in rows:
        words = words.replace("&#39;", "'")
        if words in ("grey", "✓, thick border"):
            continue
        for alt in _alternatives(words):
            # (a node greyed by truncation is drawn in grey: the "grey" row says so)
            assert any((a.get("color") == colour or "dashed" in a.get("style", ""))
                       and alt in _drawn_words(a)
                       for a in nodes.values()), (alt, colour)



def test_a_gradient_that_is_not_finite_is_named_in_the_no_fill_row():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(np.inf, requires_grad=True, name="w")
    b = ug.tensor(1.0, requires_grad=True, name="b")
    y = x * w + b
    y.backward()
    text = ug.to_dot(y)
    nofill = _THEMES["light"]["nofill"]
    x_node = _nodes(text)[view(y).graph.id(x.node)]
    assert x_node["fillcolor"] == nofill  # ∇x = inf: no colour on the scale
    assert "gradient not finite (nan or inf)" in _NOFILL.search(text).group(1)
