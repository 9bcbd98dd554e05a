"""Where Graphviz puts things: positions read back from ``dot -Tjson`` of the ops and textbook
views (every step laid out alike, rows aligned, edges only where values flow)."""

import json

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot


def _custom_cell():
    cell = ug.Cell("mine")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    A = cell.param("A", np.eye(2))
    B = cell.param("B", np.eye(2) * 0.5)
    hn = ug.tanh(x @ A + ug.sigmoid(h @ B) * h, name="hn")
    cell.feedback(h, hn)
    cell.output("y", hn)
    return cell


_CELLS = {
    "rnn": lambda: ug.nn.RNNCell(2, 2, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(2, 2, seed=0),
    "gru": lambda: ug.nn.GRUCell(2, 2, seed=0),
    "custom": _custom_cell,
}


def _run(cell, T, lengths=None):
    net = ug.unroll(cell, steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 2, 2)), lengths=lengths)
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _positions(diagram) -> dict:
    layout = json.loads(diagram.pipe(format="json"))
    return {o["name"]: tuple(float(v) for v in o["pos"].split(","))
            for o in layout["objects"] if "pos" in o}


def _step_layouts(net, pos) -> dict:
    """step -> the step's ops as rows (bottom to top), each the ops' cell nodes left to
    right; the ops named by their index in the cell's graph."""
    g = net.graph
    index = {id(n): k for k, n in enumerate(net.cell.graph().nodes)}
    steps: dict = {}
    for n in g.nodes:
        if n.step is None or n.op == "input" or g.id(n) not in pos:
            continue
        key = index.get(id(n.origin), n.name or n.op)
        steps.setdefault(n.step, []).append((pos[g.id(n)], key))
    out = {}
    for t, items in steps.items():
        rows: dict = {}
        for (x, y), key in items:
            rows.setdefault(round(y), []).append((x, str(key)))
        out[t] = [[k for _, k in sorted(r)] for _, r in sorted(rows.items())]
    return out


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,lengths", [(3, None), (6, None), (4, [4, 2])])
def test_every_step_of_the_ops_view_is_laid_out_alike(name, T, lengths):
    net, loss = _run(_CELLS[name](), T, lengths)
    diagram = ug.render(net, loss=loss, detail="ops", values=False)
    net = net.last_run.net  # with lengths=, the masked twin ran and is drawn
    layouts = _step_layouts(net, _positions(diagram))
    assert sorted(layouts) == list(range(T))
    first = layouts[0]
    for t, rows in layouts.items():
        assert rows == first, f"step {t} is laid out unlike step 0"
    # rows at the same height in every step
    pos = _positions(diagram)
    g = net.graph
    index = {id(n): k for k, n in enumerate(net.cell.graph().nodes)}
    heights = {}
    for n in g.nodes:
        if n.step is not None and n.op != "input" and g.id(n) in pos:
            key = index.get(id(n.origin), (n.name, n.op))
            heights.setdefault(key, set()).add(round(pos[g.id(n)][1]))
    assert all(len(h) == 1 for h in heights.values())


def test_the_elided_ops_view_draws_its_kept_steps_alike():
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), 9)
    diagram = ug.render(net, loss=loss, detail="elide", ends=2, values=False)
    layouts = _step_layouts(net, _positions(diagram))
    assert sorted(layouts) == [0, 1, 7, 8]
    assert all(rows == layouts[0] for rows in layouts.values())


def test_the_state_comes_in_on_the_left_of_each_step():
    """h_{t-1} @ W_hh stands left of x_t @ W_ih in every step, as the state's edge comes in
    from the step before (on the left) and the input from below; the parameters' row is in
    the same order."""
    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), 5)
    pos = _positions(ug.render(net, loss=loss, detail="ops"))
    g = net.graph
    for t in range(5):
        mms = [n for n in g.nodes if n.step == t and n.op == "matmul"]
        by_state = [n for n in mms if n.inputs[0].op != "input"]
        by_input = [n for n in mms if n.inputs[0].op == "input"]
        assert len(by_state) == len(by_input) == 1
        assert pos[g.id(by_state[0])][0] < pos[g.id(by_input[0])][0]
    p = net.param_nodes
    assert pos[g.id(p["weight_hh"])][0] < pos[g.id(p["weight_ih"])][0]
