"""One rule for the numbers every node prints, in every view: every step copy of one node of
the cell prints alike, written out when that node's values and gradients have at most
max_elements elements, as norm and shape otherwise (an LSTM of two units printed all its 1×2
vectors as norms because of its 1×8 gates); a value computed once prints by its own size; the
legend says what ``‖·‖`` is wherever one is printed."""

import html
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

_CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _labels(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.match(r'^\s*"([^"]+)" \[.*label=<(.*)>', line)
        if m:
            out[m.group(1)] = html.unescape(m.group(2))  # (&#91; is a bracket)
    return out


def _norm(label: str) -> bool:
    return "‖·‖" in label


@settings(max_examples=14, deadline=None)
@given(st.sampled_from(sorted(_CELLS)), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.sampled_from(["textbook", "ops", "steps", "elide"]),
       st.integers(1, 6))
def test_every_step_copy_of_a_cell_node_prints_by_that_nodes_size(name, D, H, B, detail,
                                                                    cap):
    T = 5 if detail == "elide" else 3
    net = ug.unroll(_CELLS[name](D, H, seed=0), steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, B, D)))
    loss = (outs * outs).sum()
    loss.backward()
    text = ug.to_dot(net, loss=loss, detail=detail, ends=1, max_elements=cap)
    labels = _labels(text)
    g, run = net.graph, net.last_run
    by_origin: dict = {}
    for n in g.nodes:
        nid = g.id(n)
        if n.step is None or nid not in labels or n.op == "const":
            continue
        size = max(np.size(run.value(n)), np.size(run.grad(n)) if run.grad(n) is not None
                   else 0)
        assert _norm(labels[nid]) == (size > cap and size > 1), (nid, size, labels[nid])
        by_origin.setdefault(id(n.origin), set()).add(_norm(labels[nid]))
    assert by_origin and all(len(v) == 1 for v in by_origin.values()), by_origin
    if detail in ("ops", "elide"):  # every op of a drawn step is printed
        assert len(by_origin) > 3
    # a parameter stands alone: written out when it fits
    w = net.param_nodes["weight_hh"]
    if detail != "textbook":
        assert _norm(labels[g.id(w)]) == (np.prod(w.shape) > cap)


def test_a_small_batched_input_beside_wide_states_prints_by_its_own_size():
    """x of shape (T, 2, 2) (four numbers) beside states of (2, 3): the input is written
    out, row by row, in every view; the states print as norms, which the legend explains."""
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    outs, _ = net(np.random.default_rng(0).standard_normal((3, 2, 2)))
    (outs * outs).sum().backward()
    g = net.graph
    for detail in ("textbook", "ops", "steps"):
        text = ug.to_dot(net, detail=detail)
        labels = _labels(text)
        x0 = labels[g.id(net.input_nodes["x"][0])]
        assert "v = [[" in x0 and "‖·‖" not in x0, (detail, x0)
        h0 = labels["step_0" if detail == "steps" else g.id(net.state_nodes["h"][0])]
        assert "v = ‖·‖" in h0 and "(2×3)" in h0, (detail, h0)
        assert "(max_elements)" in labels["legend"]


def _lstm(H=2, T=2):
    net = ug.unroll(ug.nn.LSTMCell(2, H, seed=0), steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


@pytest.mark.parametrize("detail", ["ops", "elide"])
def test_an_lstm_op_view_writes_out_its_small_vectors_beside_the_gates_norms(detail):
    """An LSTM of two units: its 1×2 states, gate slices and products are written out (as
    the step and textbook views write them), only the 1×8 gates and their sums as norms."""
    net, loss = _lstm(T=5 if detail == "elide" else 2)
    text = ug.to_dot(net, loss=loss, detail=detail, ends=1)
    labels = _labels(text)
    g = net.graph
    small = wide = 0
    for n in g.nodes:
        nid = g.id(n)
        if n.step is None or nid not in labels or n.op == "const":
            continue
        size = np.size(net.last_run.value(n))
        if size == 2:
            small += 1
            assert "v = [" in labels[nid], labels[nid]
            assert ("∇ = [" in labels[nid]) == (net.last_run.grad(n) is not None), labels[nid]
            assert "‖·‖" not in labels[nid], labels[nid]
        else:
            assert size == 8 and "v = ‖·‖" in labels[nid] and "∇ = ‖·‖" in labels[nid] \
                and "(1×8)" in labels[nid] and "[" not in labels[nid], labels[nid]
            wide += 1
    assert small > 10 and wide >= 4, (small, wide)
    # the same numbers as the step view's box and the textbook view's node
    steps = _labels(ug.to_dot(net, loss=loss, detail="steps"))
    book = _labels(ug.to_dot(net, loss=loss, detail="textbook"))
    h0 = g.id(net.state_nodes["h"][0])
    v = re.search(r"v = (\[[^\]]*\])", labels[h0]).group(1)
    assert f"h: v = {v}" in steps["step_0"] and f"v = {v}" in book[h0]


_LEGEND_NORM = "the Euclidean norm √(Σ x²) and shape of an array,"


@settings(max_examples=14, deadline=None)
@given(st.sampled_from(sorted(_CELLS)), st.integers(1, 3), st.integers(1, 2),
       st.sampled_from(["textbook", "ops", "steps", "elide"]), st.integers(1, 9),
       st.booleans(), st.booleans())
def test_the_legend_says_what_a_norm_is_exactly_when_one_is_printed(name, H, B, detail, cap,
                                                                    values, backward):
    T = 5 if detail == "elide" else 3
    net = ug.unroll(_CELLS[name](2, H, seed=0), steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, B, 2)))
    loss = (outs * outs).sum()
    if backward:
        loss.backward()
    text = ug.to_dot(net, loss=loss if backward else None, detail=detail, ends=1,
                     max_elements=cap, values=values)
    labels = _labels(text)
    legend = labels.pop("legend")
    rows = re.findall(r"<tr>(.*?)</tr>", legend)
    explained = [r for r in rows if _LEGEND_NORM in r]
    printed = any(_norm(x) for x in labels.values()) or \
        any(_norm(r) for r in rows if _LEGEND_NORM not in r)
    assert len(explained) == int(printed), (printed, explained)
    if explained:
        row = re.sub(r"<[^>]*>", " ", explained[0])
        mark = re.search(r"‖·‖ \S+ \((\d+(?:×\d+)*)\)", row)
        assert mark is not None and (mark.group(0) in "".join(labels.values())
                                     or mark.group(0) in legend.replace(explained[0], "")), row
        assert f"written for more than {cap} number{'s' if cap > 1 else ''} (max_elements)" \
            in " ".join(row.split()), row


def test_the_legend_row_reaches_a_tensors_graph_and_a_folded_cell():
    x = ug.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, name="x")
    y = (x * x).sum()
    y.backward()
    assert _LEGEND_NORM in _labels(ug.to_dot(y))["legend"]
    assert _LEGEND_NORM not in _labels(ug.to_dot(y, max_elements=6))["legend"]
    assert _LEGEND_NORM in _labels(ug.to_dot(ug.nn.LSTMCell(2, 2, seed=0)))["legend"]
    assert _LEGEND_NORM not in _labels(ug.to_dot(ug.nn.RNNCell(2, 2, seed=0)))["legend"]


@pytest.mark.parametrize("detail", ["textbook", "ops"])
def test_the_gallery_nets_still_print_every_number(detail):
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=4)
    outs, _ = net(np.random.default_rng(0).standard_normal((4, 1, 2)))
    (outs * outs).sum().backward()
    assert "‖·‖" not in ug.to_dot(net, detail=detail)
