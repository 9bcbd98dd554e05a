"""The views of one run agree: the textbook, step, op and elided views of a run colour one
gradient alike (one scale: the same gradient norms, the same bounds, the same ramp), and list
the parameters in one order, the cell's (``named_parameters()``)."""

import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.dot


def _custom_cell():
    """Parameters declared in another order than the steps read them: the bias first, the
    state's weight W last, and the input's two weights U, V (an edge's walk back from h_next
    meets V first)."""
    cell = ug.Cell("mine")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    b = cell.param("b", np.array([0.1, -0.2]))
    U = cell.param("U", np.array([[0.5, -0.2], [0.1, 0.4]]))
    V = cell.param("V", np.array([[0.9, 0.2], [-0.1, 0.7]]))
    W = cell.param("W", np.array([[0.3, 0.1], [-0.2, 0.3]]))
    hn = ug.tanh(h @ W.T + (x @ U.T) @ V.T + b, name="h_next")
    cell.feedback(h, hn)
    cell.output("y", hn)
    return cell


_CELLS = {
    "rnn": lambda: ug.nn.RNNCell(2, 2, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(2, 2, seed=0),
    "gru": lambda: ug.nn.GRUCell(2, 2, seed=0),
    "custom": _custom_cell,
}


def _run(kind, T, seed=0, lengths=None):
    net = ug.unroll(_CELLS[kind](), steps=T)
    xs = np.random.default_rng(seed).standard_normal((T, 2, 2))
    outs, _ = net(xs, lengths=lengths)
    loss = ug.mse_loss(outs, np.zeros(outs.shape))
    loss.backward()
    return net, loss


def _fills(text: str) -> dict:
    """node id -> its fill colour, for every filled node of a DOT text."""
    return dict(re.findall(r'^\s*"([^"]+)" \[[^\n]*?fillcolor="(#[0-9a-f]{6})"', text, re.M))


def _bar(text: str) -> list:
    """The legend's colour bar: its cells' colours and their numbers."""
    legend = next(line for line in text.splitlines() if line.lstrip().startswith('"legend" ['))
    bar = legend[legend.index("gradient norm"):]
    return re.findall(r'bgcolor="(#[0-9a-f]{6})"', bar) + re.findall(
        r'<font point-size="7">([^<]*)</font>', bar)


def _views(T):
    """The views of a run of T steps (the op view op by op while it is small)."""
    out = ["textbook", "steps"]
    out += ["ops"] if T <= 4 else ["elide"]
    return out


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(_CELLS)), st.integers(1, 9), st.integers(0, 3))
def test_one_run_has_one_colour_scale_in_every_view(kind, T, seed):
    """The same bounds and the same colour bar in every view; each state drawn in the
    textbook view has the colour of the same state in the op view and (a cell of one state)
    of its step's box in the step view. The textbook view spanned its values alone, the step
    view its boxes' norms and the op view its ops': 0.248 at the top of one bar, 0.28 at
    the other's."""
    net, loss = _run(kind, T, seed)
    texts, scales = {}, {}
    for detail in _views(T):
        d = ug.render(net, loss=loss, detail=detail, **({"ends": 1} if detail == "elide"
                                                          else {}))
        texts[detail], scales[detail] = d.source, d.color_scale
    assert len(set(scales.values())) == 1, scales
    assert all(_bar(t) == _bar(texts["textbook"]) for t in texts.values())
    fills = {k: _fills(t) for k, t in texts.items()}
    g = net.graph
    (s, ns), = list(net.state_nodes.items())[-1:]
    for t in range(T):
        nid = g.id(ns[t])
        for other in fills:
            if other == "steps" and len(net.state_nodes) == 1:
                assert fills["steps"][f"step_{t}"] == fills["textbook"][nid], (s, t)
            elif other in ("ops", "elide") and nid in fills[other]:
                assert fills[other][nid] == fills["textbook"][nid], (s, t, other)


@pytest.mark.parametrize("kind", ["lstm", "custom"])
def test_a_masked_run_has_one_scale_in_every_view(kind):
    """A run with lengths=: the ops view draws the mask's where nodes too, on the run's
    scale."""
    net, loss = _run(kind, 3, lengths=[3, 1])
    scales = {d: ug.render(net, loss=loss, detail=d).color_scale
              for d in ("textbook", "steps", "ops")}
    assert len(set(scales.values())) == 1, scales


@pytest.mark.parametrize("detail", ["textbook", "steps", "ops", "elide"])
def test_a_given_colour_scale_wins_in_every_view(detail):
    net, loss = _run("lstm", 6)
    d = ug.render(net, loss=loss, detail=detail, ends=1, color_scale=(1e-3, 10.0))
    assert d.color_scale == pytest.approx((1e-3, 10.0))
    assert "beyond it takes its end colour" not in d.source  # (the user chose its ends)


def test_an_op_beyond_the_runs_scale_takes_its_end_colour_and_the_legend_says_so():
    """An LSTM's gate slices get far smaller gradients than any value of the run: the op
    view draws them in the scale's lowest colour and says why; a view that draws only the
    run's values never needs to."""
    net, loss = _run("lstm", 3)
    ops = ug.to_dot(net, loss=loss, detail="ops")
    assert "beyond it takes its end colour" in ops
    for detail in ("textbook", "steps"):
        assert "beyond it takes its end colour" not in ug.to_dot(net, loss=loss,
                                                                 detail=detail)
    low = _bar(ops)[1]  # the bar's lowest colour (after white, zero)
    lo = ug.render(net, loss=loss, detail="ops").color_scale[0]
    g = net.graph
    norms = {g.id(n): np.linalg.norm(net.last_run.grad(n)) for n in g.nodes
             if n.step is not None and net.last_run.grad(n) is not None}
    tiny = [i for i, m in norms.items() if 0 < m < lo]
    assert tiny and all(_fills(ops)[i] == low for i in tiny)


# -- one order of the parameters ------------------------------------------------------------
def _tops(text: str) -> dict:
    """node id -> its height in the layout (``dot -Tjson``)."""
    done = subprocess.run(["dot", "-Tjson"], input=text.encode(), capture_output=True,
                          check=True)
    return {o["name"]: float(o["pos"].split(",")[1])
            for o in json.loads(done.stdout)["objects"] if "pos" in o}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "custom"])
def test_the_step_and_textbook_views_list_the_parameters_in_the_cells_order(kind):
    """Top to bottom in the step view (it listed weight_ih, bias_ih, weight_hh, bias_hh) and
    in its TikZ source, row by row in the textbook view's legend."""
    net, loss = _run(kind, 3)
    order = [k for k, _ in net.cell.named_parameters()]
    assert list(net.param_nodes) == order
    text = ug.to_dot(net, loss=loss, detail="steps")
    tops = _tops(text)
    heights = [tops[net.graph.id(net.param_nodes[k])] for k in order]
    assert heights == sorted(heights, reverse=True) and len(set(heights)) == len(order), (
        dict(zip(order, heights)))
    tikz = ug.to_tikz(net, loss=loss, detail="steps")
    named = [k.replace("\\_", "_") for k in re.findall(r"[A-Za-z]+(?:\\_[a-z]+)?", tikz)]
    assert list(dict.fromkeys(k for k in named if k in order)) == order
    legend = next(line for line in ug.to_dot(net, loss=loss, detail="textbook").splitlines()
                  if line.lstrip().startswith('"legend" ['))
    rows = re.findall(r"<i>([^<]+)</i></font></td><td[^>]*><font[^>]*>∇ total", legend)
    assert rows == order


def test_the_textbook_view_names_an_edges_weights_in_the_cells_order():
    """x_t reaches h_t through U then V, declared in that order: the edge reads "U, V" (it
    read "V, U", the order a walk back from h_t meets them), in the unrolled and the folded
    picture alike."""
    net, loss = _run("custom", 3)
    for obj, kw in ((net, {"loss": loss, "folded": True}), (net.cell, {})):
        text = ug.to_dot(obj, detail="textbook", **kw)
        assert "<i>U, V</i>" in text and "<i>V, U</i>" not in text


def test_the_step_views_legend_names_the_step_box_once():
    net, loss = _run("rnn", 3)
    legend = next(line for line in ug.to_dot(net, loss=loss, detail="steps").splitlines()
                  if line.lstrip().startswith('"legend" ['))
    assert legend.count("one time step") == 1 and "one box per step" not in legend
    assert "rounded box" in legend
