"""The op view of a masked run (``net(xs, lengths=...)``): the node a reader takes for the
state h_t (``h_kept``, a where op) prints and is filled by the state's gradient as
``run.state_grads()[t]`` gives it, the mask is named for what it is, and dot lays it out
without a warning."""

import html
import re
import subprocess

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot

_FLOAT = re.compile(r"[-−+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)")


def _run(kind, T, lengths, finals=False):
    net = ug.unroll(getattr(ug.nn, kind)(2, 2, seed=0), T)
    xs = np.random.default_rng(0).standard_normal((T, len(lengths), 2))
    out, state = net(xs, lengths=lengths)
    loss = ug.mse_loss(out, np.zeros(out.shape))
    if finals:  # the loss reads the final states too
        for f in state if isinstance(state, tuple) else [state]:
            loss = loss + (f * f).sum() * 0.5
    loss.backward()
    return net, loss


def _node_line(dot: str, nid: str) -> str:
    return next(line for line in dot.splitlines() if line.lstrip().startswith(f'"{nid}" ['))


def _fill(line: str) -> str:
    return re.search(r'fillcolor="([^"]+)"', line).group(1)


def _printed(line: str, head: str):
    """The numbers a row starting with ``head`` prints in a node's label, or None."""
    m = re.search(re.escape(head) + r" = ([^<]*)<", line)
    if m is None:
        return None
    return np.array([float(x.replace("−", "-")) for x in _FLOAT.findall(html.unescape(
        m.group(1)))])


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("lengths,finals", [([3, 1], False), ([3, 2], True), ([2, 0], True)])
def test_the_kept_state_prints_and_is_filled_by_the_states_gradient(kind, lengths, finals):
    """``h_kept_t`` drew the where op's own gradient (the later steps' parts alone), which no
    other view draws and ``state_grads()`` does not give; the state's gradient appeared on no
    node. It now prints both, each named, and is filled as the textbook view fills h_t."""
    net, loss = _run(kind, 3, lengths, finals)
    run = net.last_run
    ops = ug.to_dot(net, loss=loss, detail="ops", max_elements=8)
    book = ug.to_dot(net, loss=loss, detail="textbook", max_elements=8)
    drawn = run.net  # (the masked twin the run ran)
    g = drawn.graph
    for s, ns in drawn.state_nodes.items():
        for t, n in enumerate(ns):
            line = _node_line(ops, g.id(n))
            got = _printed(line, f"∂L/∂{s}<sub>{t}</sub>")
            want = run.state_grads(s)[t] if len(drawn.state_nodes) > 1 else run.state_grads()[t]
            assert got is not None, (s, t, line)
            assert np.allclose(got, np.asarray(want).reshape(-1), rtol=6e-3, atol=1e-12), (
                s, t, got, want)
            own = run.grad(n)  # (of the node: the where op's own gradient)
            mine = _printed(line, "∇")  # the where op's own gradient, named ∇ as every op's
            if own is not None:
                assert mine is not None and np.allclose(mine, np.reshape(own, -1), rtol=6e-3,
                                                        atol=1e-12), (s, t, mine, own)
            assert _fill(line) == _fill(_node_line(book, g.id(n))), (s, t)
    assert f"∂L/∂{next(iter(drawn.state_nodes))}<sub>t</sub>" in ops  # (the legend says so)


def test_the_mask_is_named_the_padding_mask_not_a_constant():
    net, loss = _run("RNNCell", 3, [3, 1])
    ops = ug.to_dot(net, loss=loss, detail="ops")
    g = net.last_run.net.graph
    masks = [n for n in g.nodes if n.role == "mask"]
    assert masks
    legend = _node_line(ops, "legend")
    assert "small rounded box titled mask" in legend
    assert "padding mask (lengths=)" in legend
    # the constant 0 the masked outputs take past a sequence's length is still a constant
    assert "small rounded box</b></font></td><td align=\"left\"><font point-size=\"9\">" \
           "constant" in legend


@pytest.mark.parametrize("rankdir", [None, "LR", "TB", "RL"])
@pytest.mark.parametrize("T,lengths,finals", [(3, [3], False), (2, [2], True),
                                              (4, [4, 1, 1], True)])
def test_the_kept_states_edges_lay_out_without_a_warning(rankdir, T, lengths, finals):
    """A kept state's level edge into the next kept state (``c_kept_{t-1}`` into
    ``c_kept_t``) went out of the top of one node and into the top of the other; a kept
    state read by the next one is read by the one after it, or by the loss, and dot warned
    "Unable to reclaim box space in spline routing" and drew the edge along the tops of
    the nodes between."""
    net, loss = _run("LSTMCell", T, lengths, finals)
    src = ug.to_dot(net, loss=loss, detail="ops", rankdir=rankdir)
    done = subprocess.run(["dot", "-Tsvg", "-o", "/dev/null"], input=src, text=True,
                          capture_output=True, check=True)
    assert done.stderr == "", done.stderr


def test_the_state_gradients_row_escapes_the_users_names():
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("<b>h", (2,))
    w = cell.param("W", np.array([[0.9, -0.4], [0.3, 0.8]]))
    nxt = ug.tanh(x @ w.T + h)
    cell.feedback(h, nxt)
    cell.output("y", nxt * 2.0)
    net = ug.unroll(cell, 2)
    out, _ = net(np.ones((2, 2, 2)), lengths=[2, 1])
    loss = (out * out).sum()
    loss.name = "J&<i>"
    loss.backward()
    text = ug.to_dot(net, loss=loss, detail="ops")
    assert "∂J&amp;&lt;i&gt;/∂&lt;b&gt;h<sub>0</sub> = " in text
    assert "∂J&amp;&lt;i&gt;/∂&lt;b&gt;h<sub>t</sub>" in _node_line(text, "legend")
    svg = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                         check=True).stdout
    assert "<b>h" not in svg and "<i>" not in svg
