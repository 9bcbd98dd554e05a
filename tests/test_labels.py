"""The names printed for unnamed nodes (``unrollgraph/labels.py``), in every output.

A slice reads as the user wrote it (``gates[:, 0:3]``, the step after it as the other names
have it), in the printout, networkx, the narrated walk (text, Markdown, HTML), DOT/SVG and
TikZ; no unnamed op prints an empty or placeholder label; ids are appended only where two
printed names clash.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.explain import display_names
from unrollgraph.graph import Graph
from unrollgraph.labels import index_text, op_label

# -- the index as numpy reads it ---------------------------------------------------------------

_bounds = st.one_of(st.none(), st.integers(-5, 5))
_items = st.one_of(
    st.integers(-3, 2),
    st.builds(slice, _bounds, _bounds, st.one_of(st.none(), st.integers(-3, 3).filter(bool))),
    st.just(None), st.just(Ellipsis),
    st.lists(st.integers(-3, 2), min_size=1, max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(index=st.one_of(_items, st.lists(_items, min_size=1, max_size=3).map(tuple)))
def test_the_index_text_is_what_numpy_reads_back(index):
    """``a`` followed by ``index_text(index)``, read as Python, picks what ``a[index]``
    picks: the label is the index as the user wrote it."""
    a = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    try:
        want = a[index]
    except (IndexError, TypeError, ValueError):
        return  # not an index of this array
    text = index_text(index)
    assert "\n" not in text and text.startswith("[") and text.endswith("]")
    np.testing.assert_array_equal(eval("a" + text, {"a": a}), want)  # noqa: S307


# -- every op, unnamed ------------------------------------------------------------------------

def _every_op_graph():
    """A graph of every op a tensor can hold, nothing named but the leaves."""
    x = ug.tensor(np.linspace(0.2, 1.1, 12).reshape(3, 4), requires_grad=True, name="x")
    W = ug.tensor(np.linspace(-0.5, 0.5, 16).reshape(4, 4), requires_grad=True, name="W")
    pre = x @ W.T + x - 0.5 * x / (1.0 + x * x)
    a = ug.tanh(pre) * ug.sigmoid(-pre) + ug.exp(ug.clip(pre, -1.0, 1.0)) ** 1.5
    b = ug.log(ug.sqrt(a * a + 1.0)) + ug.relu(pre) - ug.abs(x) + ug.maximum(a, x)
    b = b - ug.minimum(a, 0.3) + ((a * a + 0.5) ** ug.tanh(x * x)) + ug.where(a > 0.1, a, x)
    s = ug.softmax(b, axis=-1) + ug.log_softmax(b, axis=1) + (a >= x) + (a < x) + (a <= 0.2)
    parts = ug.concat([s[:, 0:2], s[:, ::-1][:, 2:], s[:, [3, 3]][:, :0]], axis=1)
    st_ = ug.stack([parts, s], axis=1)
    red = ug.sum(st_, axis=1) + ug.mean(st_, axis=1) + ug.max(st_, axis=1)
    loss = ug.sum(red.reshape(-1, 2).transpose(1, 0)[0]) + ug.mean(s[1]) + ug.sum(-s[..., 2])
    return loss


def test_every_unnamed_op_has_a_readable_label_in_every_name_table():
    loss = _every_op_graph()
    g = Graph([loss.node])
    ops = {n.op for n in g.nodes}
    assert {"getitem", "concat", "stack", "softmax", "transpose", "where", "gt"} <= ops
    printed = {id(n): g.display_name(n) for n in g.nodes}
    drawn = display_names(g.nodes, g.id)
    for n in g.nodes:
        for table in (printed, drawn):
            name = table[id(n)]
            assert name.strip() and "[ ]" not in name and "None" not in name.split("[")[0], (
                n.op, name)
        if n.op == "getitem":
            idx = index_text(n.attrs["index"])
            # the printout: what is sliced as it is printed, then the index
            assert printed[id(n)].startswith(printed[id(n.inputs[0])] + idx), printed[id(n)]
            base = op_label(n)
            assert base.endswith(idx) and drawn[id(n)].startswith(base)
            if n.inputs[0].name:
                assert base == n.inputs[0].name + idx
    # ids only where two drawn names clash, and every drawn name is unique
    bases = Counter(op_label(n) if not n.name else n.name for n in g.nodes)
    for n in g.nodes:
        base = n.name or op_label(n)
        assert ("#" in drawn[id(n)][len(base):]) == (bases[base] > 1), (base, drawn[id(n)])
    assert len(set(drawn.values())) == len(drawn)
    assert len(set(printed.values())) == len(printed)


def test_the_explained_walk_names_slices_as_written():
    loss = _every_op_graph()
    loss.backward()
    text = str(ug.explain(loss))
    assert "[ ]" not in text
    assert "x[1]" not in text  # (x is not sliced: the slices are of unnamed values)
    assert re.search(r"\[:, 0:2\]", text) and "[:, ::-1]" in text and "[..., 2]" in text


# -- an LSTM's gates in every output ----------------------------------------------------------

@pytest.fixture(scope="module")
def lstm():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net = ug.unroll(cell, 3)
    out, (h, c) = net(np.random.default_rng(0).normal(size=(3, 2, 2)))
    loss = (out * out).sum()
    loss.backward()
    return cell, net, loss


def test_an_lstm_gate_slice_reads_as_written_in_the_printout_and_networkx(lstm):
    cell, net, _loss = lstm
    text = str(net.graph)
    for t in range(3):
        for a, b in ((0, 3), (3, 6), (6, 9), (9, 12)):
            name = f"gates[:, {a}:{b}]@{t}"
            assert f"{name} = getitem(gates@{t}, index=[:, {a}:{b}])" in text
    assert "gates[:, 0:3] = getitem(gates, index=[:, 0:3])" in str(cell.graph())
    G = ug.to_networkx(net)
    names = {d["name"] for _k, d in G.nodes(data=True)}
    assert {"gates[:, 0:3]@0", "gates[:, 9:12]@2"} <= names
    # a printed name is a name run.value answers to
    run = net.last_run
    z = run.value("gates[:, 6:9]@1")
    np.testing.assert_array_equal(z, run.value("gates@1")[:, 6:9])


def test_an_lstm_gate_slice_reads_as_written_in_the_explained_walk(lstm):
    _cell, _net, loss = lstm
    ex = ug.explain(loss)
    for out in (str(ex), ex.to_markdown(), ex.to_html()):
        assert "[ ]" not in out and "gates[:, 0:3]@2" in out
    # a slice is one operand in a formula: no parentheses round it
    assert "sigmoid(gates[:, 0:3]@2)" in str(ex)
    # the slices of one step differ by their index: no id is needed to tell them apart
    assert not re.search(r"gates\[[^\]]*\]@\d#", str(ex))


def test_an_lstm_gate_slice_reads_as_written_in_dot_svg_and_tikz(lstm):
    _cell, net, _loss = lstm
    dot = ug.to_dot(net, detail="ops")
    assert "[ ]" not in dot and "gates[:, 0:3]" in dot
    svg = ug.render(net, detail="ops").pipe(format="svg").decode()
    assert "gates[:, 0:3]" in svg and "[ ]" not in svg
    tikz = ug.to_tikz(net, detail="ops")
    # (TeX text: a comma is followed by {}, which stops a ligature and prints nothing); the
    # slice carries its step on the value sliced, as gates itself does: gates₀[:, 0:3]
    # (the name, its step lowered and the index in one line, one box)
    lines = tikz.split("\n")
    at = [line for line in lines if line.endswith(r"\textbf{[:,{} 0:3]}}}}")]
    assert len(at) == 3 and "[ ]" not in tikz
    for t, line in enumerate(at):
        assert re.search(r"\\textbf\{gates\}\}\}\\raisebox\{-[0-9.]+bp\}\{\{\\color\[RGB\]"
                         r"\{[0-9,]+\}\\fontsize\{[0-9.]+\}\{[0-9.]+\}\\selectfont\{\\textbf\{"
                         + str(t) + r"\}\}\}\}\{", line), line
